"""`romachip vectors`: golden vectors from a burned image, checked by the independent checker; one flipped
bit in any expected-output word or ROM word is caught and named by file and word."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from engine_models import make_tiny
from lora_helpers import make_adapter, word_tokenizer_json

from romachip.cli.main import main
from romachip.errors import VectorsError
from romachip.rom import burn
from romachip.spec import load_chip
from romachip.sram.bank import AdapterBank
from romachip.vectors import check_vectors, write_vectors
from romachip.vectors.hexfile import element, format_runs, from_words, read_array, read_hex, to_words
from romachip.vectors.units import lora_a_rows, parse_selection
from romachip.workload import KvConfig

PROMPT = [1, 5, 17, 33, 2, 64, 80, 9]
UNITS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vectors")
    tiny = make_tiny("gqa_tied_g32_4bit", layers=2)
    qmodel = dataclasses.replace(tiny.quantized, tokenizer_json=word_tokenizer_json(tiny.quantized.spec.vocab_size))
    image = burn(qmodel, load_chip("roma"), tmp / "tiny.rom", chip_preset="roma")
    adapter = tmp / "lora"
    make_adapter(tiny.hf, adapter, r=4, lora_alpha=8, target_modules="all-linear")
    plain = tmp / "plain"
    write_vectors(image, PROMPT, plain, units=UNITS, layers=[0, 1], steps=1)
    lora = tmp / "lora_vectors"
    report = write_vectors(image, PROMPT, lora, units=UNITS, layers=[0, 1], steps=2, adapter=adapter)
    return tmp, image, adapter, plain, lora, report


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_vectors_pass_the_independent_check(made) -> None:
    _, _, _, plain, lora, report = made
    for folder in (plain, lora):
        r = check_vectors(folder)
        assert r.ok, r.mismatch.message()
        assert r.rom_reference == "image"
        assert r.ops_checked == len(_manifest(folder)["ops"])
    kinds = {op["kind"] for op in _manifest(lora)["ops"]}
    assert kinds >= {
        "align",
        "linear",
        "rms_norm",
        "lora_a",
        "lora_b",
        "kv_write",
        "attention_combine",
        "swiglu",
        "residual",
    }
    assert report.steps == 2 and len(report.generated_ids) == 3


def test_manifest_names_every_file_with_its_unit_op_and_section(made) -> None:
    _, image, _, _, lora, _ = made
    m = _manifest(lora)
    assert m["format"] == "romachip-vectors" and m["version"] == 1
    assert len(m["image"]["sha256"]) == 64 and m["image"]["model"] == image.spec.name
    on_disk = {p.relative_to(lora).as_posix() for p in lora.rglob("*.hex")}
    assert on_disk == {f["path"] for f in m["files"]}
    for f in m["files"]:
        assert f["section"].startswith("docs/") and f["element"] and f["shape"]
        assert "unit" in f and f["role"] in ("rom", "sram", "input", "expected")
    assert {u["unit"] for u in m["units"]} == set(UNITS)


def _flip(folder: Path, rel: str, word: int, bit: int = 0) -> int:
    """Flip one bit of word `word` (address order) of a single-run hex file; returns its line number."""
    path = folder / rel
    lines = path.read_text().splitlines()
    line = 1 + word + 1  # "@0" first, then one word per line
    value = int(lines[line - 1], 16) ^ (1 << bit)
    lines[line - 1] = f"{value:0{len(lines[line - 1])}x}"
    path.write_text("\n".join(lines) + "\n")
    return line


EXPECTED_KINDS = [
    ("align", "xi"), ("align", "exponent"), ("linear", "group_integers"), ("linear", "group_terms"),
    ("linear", "y"), ("rms_norm", "y"), ("lora_a", "u"), ("lora_b", "delta"), ("lora_b", "y"),
    ("swiglu", "y"), ("residual", "y"), ("attention_combine", "y"), ("attention_share", "scores"),
    ("attention_share", "exp"), ("attention_share", "sum"), ("attention_share", "weights"),
    ("attention_share", "partial"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "name"), EXPECTED_KINDS)
def test_one_flipped_expected_bit_is_named(made, tmp_path, kind, name) -> None:
    _, _, _, _, lora, _ = made
    folder = tmp_path / "v"
    shutil.copytree(lora, folder)
    m = _manifest(folder)
    ops = [o for o in m["ops"] if o["kind"] == kind]
    if not ops:
        pytest.skip(f"no {kind} op: this engine computes attention as one global share (no H-Unit holds it)")
    op = ops[-1]
    entry = next(f for f in m["files"] if f["key"] == op["expected"][name])
    word = int(np.prod(entry["shape"])) // 2
    line = _flip(folder, entry["path"], word, bit=entry["width_bits"] - 2)
    r = check_vectors(folder)
    assert not r.ok
    assert (r.mismatch.file, r.mismatch.word, r.mismatch.line) == (entry["path"], word, line)


def test_a_flipped_kv_word_is_named(made, tmp_path) -> None:
    folder = tmp_path / "v"
    shutil.copytree(made[4], folder)
    op = next(o for o in _manifest(folder)["ops"] if o["kind"] == "kv_write")
    entry = next(f for f in _manifest(folder)["files"] if f["key"] == op["memory"]["k"])
    d = int(np.prod(entry["shape"][1:]))
    word = op["params"]["rows_in_memory"][0] * d + 1
    line = _flip(folder, entry["path"], word)
    r = check_vectors(folder)
    assert (r.ok, r.mismatch.file, r.mismatch.word, r.mismatch.line) == (False, entry["path"], word, line)


def test_a_flipped_rom_bit_is_named_by_macro_file_and_row(made, tmp_path) -> None:
    _, image, _, plain, _, _ = made
    folder = tmp_path / "v"
    shutil.copytree(plain, folder)
    rom_file = _manifest(folder)["units"][2]["rom_files"][5]
    path = folder / rom_file["path"]
    lines = path.read_text().splitlines()  # "@0", then rows 0.. of this macro
    lines[1] = f"{int(lines[1], 16) ^ (1 << 63):016x}"
    path.write_text("\n".join(lines) + "\n")
    r = check_vectors(folder)
    assert (r.ok, r.mismatch.file, r.mismatch.word, r.mismatch.line) == (False, rom_file["path"], 0, 2)
    # without the image at hand, the per-file CRC-32 still names the file
    r = check_vectors(folder, image=None) if image.path.exists() else None
    moved = image.path.with_suffix(".away")
    image.path.rename(moved)
    try:
        r = check_vectors(folder)
    finally:
        moved.rename(image.path)
    assert (r.ok, r.mismatch.file, r.rom_reference) == (False, rom_file["path"], "crc32")
    assert "--image" in r.mismatch.message()


def test_another_image_is_refused(made, tmp_path) -> None:
    _, image, _, plain, _, _ = made
    other = tmp_path / "other.rom"
    data = bytearray(image.path.read_bytes())
    data[-1] ^= 1  # the last payload byte: the header and manifest still read
    other.write_bytes(bytes(data))
    with pytest.raises(VectorsError, match="not the image these vectors were written from"):
        check_vectors(plain, image=other)
    with pytest.raises(VectorsError, match="does not exist"):
        check_vectors(plain, image=tmp_path / "missing.rom")


def test_rom_files_hold_the_units_stored_words_at_their_macro_rows(made) -> None:
    _, image, _, plain, _, _ = made
    m = _manifest(plain)
    rom = image.chip.l_unit.rom
    for unit in m["units"]:
        stored = np.asarray(image.unit_payload(unit["unit"])).view("<u8")
        seen = 0
        for rf in unit["rom_files"]:
            text = (plain / rf["path"]).read_text()
            assert text.startswith("@") and text.endswith("\n")
            for row, (word, _) in read_hex(plain / rf["path"], 64).items():
                w = row * rom.macros + rf["macro"]  # roma interleaves words over the macros
                assert rom.word_location(w) == (rf["macro"], row)
                assert word == int(stored[w])
                seen += 1
        assert seen == stored.size == unit["rom_words"]


def test_lora_rows_follow_the_capacity_rule(made) -> None:
    _, image, adapter, _, _, _ = made
    bank = AdapterBank.for_image(image, kv=KvConfig(context_tokens=16))
    bank.load("a", adapter)
    stored = bank.stored("a")
    rows = lora_a_rows(image.placement, dict(stored.ranks))
    # the A rows dealt here, plus B rows beside the base rows, give the planner's bytes per unit
    per_unit = np.zeros(image.placement.units, dtype=np.int64)
    t = image.placement.tiles
    for m in stored.modules:
        np.add.at(per_unit, rows[m.name], m.in_features + 4 * (np.arange(m.rank) == 0))
        idx = image.placement.tile_indices(tensor=f"{m.name}.weight")
        np.add.at(per_unit, t["unit"][idx], (t["row_stop"][idx] - t["row_start"][idx]) * m.rank)
        per_unit[t["unit"][idx][np.argmin(t["row_start"][idx])]] += 4
    assert np.array_equal(per_unit, image.placement.lora_unit_bytes(stored.ranks, "fp8_e4m3"))


def test_npz_only_folder_checks_too(made, tmp_path) -> None:
    _, image, _, _, _, _ = made
    write_vectors(image, PROMPT[:3], tmp_path / "n", units=[1], layers=[1], steps=0, fmt="npz", activation="int8",
                  kv="fp16")  # fmt: skip
    assert (tmp_path / "n" / "arrays.npz").exists()
    r = check_vectors(tmp_path / "n")
    assert r.ok, r.mismatch


def test_hex_words_round_trip_every_element() -> None:
    cases = {
        "int8": np.array([-128, -1, 0, 127]), "int16": np.array([-32768, -5, 32767]),
        "int32": np.array([-(2**31), 2**31 - 1]), "int64": np.array([-(2**63), 2**63 - 1]),
        "fp32": np.array([-0.0, 1.5, np.inf], np.float32), "fp64": np.array([-0.0, 1e-300]),
        "fp16": np.array([-2.0, 65504.0], np.float16), "bf16": np.array([1.0, -3.0], np.float32),
    }  # fmt: skip
    for name, values in cases.items():
        e = element(name)
        back = from_words(to_words(values, e), e, values.shape)
        assert np.array_equal(np.asarray(back, dtype=np.float64).view(np.uint64) if name.startswith(("fp", "bf"))
                              else back, np.asarray(values, dtype=np.float64).view(np.uint64)
                              if name.startswith(("fp", "bf")) else values), name  # fmt: skip
    assert format_runs([(0, to_words(np.array([-1, 2]), element("int16")))], 16) == "@0\nffff\n0002\n"
    with pytest.raises(VectorsError, match="does not fit int8"):
        to_words(np.array([128]), element("int8"))


def test_selection_and_bad_input_errors(made, tmp_path) -> None:
    assert parse_selection("0,last", 30, "--layers") == [0, 29]
    assert parse_selection("0-3", 256, "--units") == [0, 1, 2, 3]
    with pytest.raises(VectorsError, match="out of range"):
        parse_selection("300", 256, "--units")
    with pytest.raises(VectorsError, match="not an index"):
        parse_selection("a", 4, "--layers")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(VectorsError, match="not a vector folder"):
        write_vectors(made[1], PROMPT, tmp_path / "other", units=[0], layers=[0])
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"
    with pytest.raises(VectorsError, match="not a vector folder"):
        check_vectors(tmp_path / "other")


def test_cli_writes_and_checks(made, tmp_path, capsys) -> None:
    tmp, image, _, _, _, _ = made
    out = tmp_path / "cli"
    assert main(["vectors", str(image.path), "--prompt", "w1 w5 w9", "--units", "0-1", "--layers", "last",
                 "--tokens", "0", "-o", str(out), "--json"]) == 0  # fmt: skip
    written = json.loads(capsys.readouterr().out)
    assert written["units"] == [0, 1] and written["layers"] == [1]
    assert main(["vectors", "check", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    entry = next(f for f in _manifest(out)["files"] if f["role"] == "expected")
    _flip(out, entry["path"], 0)
    assert main(["vectors", "check", str(out)]) == 1
    assert entry["path"] in capsys.readouterr().out
    assert main(["vectors", str(image.path), "--prompt", "w1", "--units", "999", "-o", str(out)]) == 2
    assert "out of range" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                    reason="no Verilog simulator installed (apt-get install iverilog; .ci/run does it)")  # fmt: skip
def test_a_real_simulator_reads_the_files_with_readmemh(made, tmp_path) -> None:
    import subprocess

    _, image, _, plain, _, _ = made
    m = _manifest(plain)
    unit = m["units"][1]
    rom_file = unit["rom_files"][3]
    macro, rows = rom_file["macro"], m["chip"]["macro_rows"]
    y = next(f for f in m["files"] if f["role"] == "expected" and f["element"] == "fp32")
    n = int(np.prod(y["shape"]))
    src = tmp_path / "tb.v"
    src.write_text(f"""module tb;
  reg [63:0] rom [0:{rows - 1}];
  reg [31:0] y [0:{n - 1}];
  initial begin
    $readmemh("{plain / rom_file["path"]}", rom);
    $readmemh("{plain / y["path"]}", y);
    $display("ROM %016h", rom[0]);
    $display("Y %08h", y[{n - 1}]);
    $finish;
  end
endmodule
""")  # fmt: skip
    subprocess.run(["iverilog", "-o", str(tmp_path / "tb"), str(src)], check=True, capture_output=True, timeout=60)
    out = subprocess.run(["vvp", str(tmp_path / "tb")], check=True, capture_output=True, text=True, timeout=60).stdout
    stored = np.asarray(image.unit_payload(unit["unit"])).view("<u8")
    assert f"ROM {int(stored[macro]):016x}" in out  # row 0 of macro k holds logical word k (interleaved)
    assert f"Y {int(read_array(plain / y['path'], element('fp32'), (n,))[-1]):08x}" in out
