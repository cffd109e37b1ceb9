"""A battery of bad inputs through the CLI (issue 13, classes 2, 3, 5 and 9; test_bad_paths.py holds the
path classes): non-finite and out-of-range numbers in every numeric option and in spec fields, degenerate
and enormous chips, hostile adapter configs. Each case exits 2, prints no traceback, names the option or
field, and leaves no file behind. In-process (romachip.cli.main.main) to stay quick."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml

from romachip.cli.app import app
from romachip.cli.main import COMMAND_MODULES, load_commands, main

ROMA_YAML = Path(__file__).parents[1] / "src" / "romachip" / "spec" / "presets" / "roma.yaml"
FIT = ["fit", "--model", "llama-3.2-1b", "--json"]


def _run(capsys, argv: list[str]) -> tuple[int, str]:  # noqa: ANN001
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


def _assert_refused(code: int, out: str, *words: str) -> None:
    assert code == 2, out
    assert "Traceback" not in out, out
    for w in words:
        assert w in out, (w, out)


# -- class 2: every numeric option of every command refuses NaN, infinities and negative numbers ----------


def _numeric_options() -> list:
    load_commands([])  # every command module
    root = typer.main.get_command(app)
    cases = []

    def walk(cmd, path: list[str]) -> None:  # noqa: ANN001 (typer's own click types)
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
            return
        args = ["x" for p in cmd.params if p.param_type_name == "argument"]
        for p in cmd.params:
            if p.param_type_name != "option" or p.is_flag:
                continue
            flag = max(p.opts, key=len)
            kind = p.bare_type()
            if kind == "float":
                values = ["nan", "inf", "-inf", "-1"]
            elif kind == "int":
                values = ["-1", "1.5"]
            else:
                continue
            for v in values:
                cases.append(pytest.param([*path, *args, flag, v], flag, id=f"{' '.join(path)} {flag} {v}"))

    walk(root, [])
    return cases


@pytest.mark.parametrize(("argv", "flag"), _numeric_options())
def test_every_numeric_option_refuses_nonsense(capsys, argv, flag) -> None:  # noqa: ANN001
    code, out = _run(capsys, argv)
    _assert_refused(code, out)
    # typer names the option; a check in the command may name it in words ("group size must be ...")
    assert f"'{flag}'" in out or flag.strip("-").replace("-", " ") in out, out


def test_the_battery_reaches_every_numeric_option() -> None:
    flags = {c.values[1] for c in _numeric_options()}
    assert {"--temperature", "--top-p", "--sram-mb", "--tokens-per-s", "--max-tokens", "--port"} <= flags
    assert set(COMMAND_MODULES) >= {"run", "fit", "serve"}


# -- classes 2, 3 and 9: chip and technology fields, through `fit` (chip) and `simulate` (technology) -------


def _chip(tmp: Path, name: str, edit) -> Path:  # noqa: ANN001
    data = yaml.safe_load(ROMA_YAML.read_text())
    edit(data)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _set(path: str, value):  # noqa: ANN001, ANN202
    keys = path.split(".")

    def edit(d: dict) -> None:
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return edit


NAN, INF = float("nan"), float("inf")
# (field, value) -> words the message must hold (the field, and the limit or the cause)
BAD_CHIP_FIELDS = [
    ("clock_hz", NAN, ["clock_hz", "finite"]),
    ("clock_hz", INF, ["clock_hz"]),
    ("clock_hz", -1.0, ["clock_hz", "greater than 0"]),
    ("clock_hz", 0, ["clock_hz", "greater than 0"]),
    ("clock_hz", 1e15, ["clock_hz", "100000000000"]),
    ("mesh.rows", 0, ["mesh.rows"]),
    ("mesh.rows", 100_000, ["mesh.rows", "256"]),
    ("mesh.cols", 10**6, ["mesh.cols", "256"]),
    ("mesh.cols", -3, ["mesh.cols"]),
    ("mesh.rows", "many", ["mesh.rows"]),
    ("l_unit.rom.macro_rows", 2**30, ["l_unit.rom.macro_rows", "1048576"]),
    ("l_unit.rom.macro_rows", 0, ["l_unit.rom.macro_rows"]),
    ("l_unit.rom.macros", 10**9, ["l_unit.rom.macros", "65536"]),
    ("l_unit.rom.macro_cols", 10**6, ["l_unit.rom.macro_cols", "4096"]),
    ("l_unit.rom.bits_per_cell", 64, ["l_unit.rom.bits_per_cell", "8"]),
    ("h_unit.sram.macro_rows", 2**40, ["h_unit.sram.macro_rows"]),
    ("h_unit.sram.macros", 0, ["h_unit.sram.macros"]),
    ("vector_unit.sram.macro_cols", -64, ["vector_unit.sram.macro_cols"]),
    ("vector_unit.lanes", 0, ["vector_unit.lanes"]),
    ("noc.link_width_bits", 0, ["noc.link_width_bits"]),
    ("noc.hop_latency_cycles", -1, ["noc.hop_latency_cycles"]),
    ("floorplan.l_unit_utilization", NAN, ["floorplan.l_unit_utilization"]),
    ("floorplan.l_unit_utilization", 2.0, ["floorplan.l_unit_utilization"]),
    ("floorplan.control_area_mm2", INF, ["floorplan.control_area_mm2", "finite"]),
    ("floorplan.control_area_mm2", -1.0, ["floorplan.control_area_mm2"]),
    ("precision.weight_bits", [], ["precision.weight_bits", "at least 1"]),
    ("precision.weight_bits", [0], ["precision.weight_bits"]),
    ("precision.kv", "int3", ["precision.kv"]),
    ("process_node_nm", 0, ["process_node_nm"]),
    ("tech", "no-such-tech", ["'tech'", "no-such-tech", "neither a preset"]),
    ("tech", "missing/tech.yaml", ["'tech'", "neither a preset"]),
    ("host_link", "no-such-link", ["'host_link'", "neither a preset"]),
    ("mesh.row_roles", ["matrix"] * 17, ["row_roles", "no 'vector' row"]),
    ("mesh.row_roles", ["vector"] * 17, ["row_roles", "no 'matrix' row"]),
    ("mesh.row_roles", ["matrix"] * 3, ["row_roles lists 3 roles for 17 rows"]),
    ("l_unit.prefill_token_batch", 0, ["l_unit.prefill_token_batch"]),
]


@pytest.mark.parametrize(
    ("field", "value", "words"), BAD_CHIP_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in BAD_CHIP_FIELDS]
)
def test_bad_chip_fields_are_refused_naming_the_field(tmp_path, capsys, field, value, words) -> None:  # noqa: ANN001
    chip = _chip(tmp_path, "bad", _set(field, value))
    before = set(tmp_path.iterdir())
    code, out = _run(capsys, ["fit", "--chip", str(chip), "--model", "llama-3.2-1b"])
    _assert_refused(code, out, *words)
    assert set(tmp_path.iterdir()) == before


def _tech(tmp: Path, field: str, value) -> Path:  # noqa: ANN001
    from romachip.spec.tech import load_tech

    data = json.loads(load_tech("n7").model_dump_json())
    _set(field, value)(data)
    path = tmp / "tech.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BAD_TECH_FIELDS = [
    ("energy.rom_read_pj_per_bit", NAN, "energy.rom_read_pj_per_bit"),
    ("energy.sram_write_pj_per_bit", INF, "energy.sram_write_pj_per_bit"),
    ("energy.router_pj_per_bit", -1.0, "energy.router_pj_per_bit"),
    ("leakage_mw_per_mm2", NAN, "leakage_mw_per_mm2"),
    ("leakage_mw_per_mm2", 0, "leakage_mw_per_mm2"),
    ("sram_bitcell_um2", -0.02, "sram_bitcell_um2"),
    ("brom_area_factor", INF, "brom_area_factor"),
    ("fused_logic_share", 1.5, "fused_logic_share"),
    ("wire_delay_ps_per_mm", NAN, "wire_delay_ps_per_mm"),
    ("voltage.alpha", NAN, "voltage.alpha"),
    ("voltage.f_max_hz", INF, "voltage.f_max_hz"),
    ("voltage.min_v", 5.0, "min_v <= nominal_v"),
]


@pytest.mark.parametrize(
    ("field", "value", "words"), BAD_TECH_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in BAD_TECH_FIELDS]
)
def test_bad_tech_fields_are_refused_naming_the_field(tmp_path, capsys, field, value, words) -> None:  # noqa: ANN001
    tech = _tech(tmp_path, field, value)
    chip = _chip(tmp_path, "chip", _set("tech", str(tech)))
    argv = ["simulate", "--chip", str(chip), "--model", "llama-3.2-1b", "--prompt", "4", "--generate", "2"]
    code, out = _run(capsys, [*argv, "--trace", str(tmp_path / "t.json")])
    _assert_refused(code, out, words)
    assert not (tmp_path / "t.json").exists()


BAD_MODEL_FIELDS = [
    ("hidden_size", 0, "hidden_size"),
    ("hidden_size", -64, "hidden_size"),
    ("num_hidden_layers", 0, "num_layers"),
    ("rms_norm_eps", NAN, "rms_norm_eps"),
    ("rms_norm_eps", INF, "rms_norm_eps"),
    ("rope_theta", NAN, "rope_theta"),
    ("rope_theta", -1.0, "rope_theta"),
    ("vocab_size", 0, "vocab_size"),
    ("model_type", "gpt2", "model_type"),
    ("hidden_act", "gelu", "hidden_act"),
]


@pytest.mark.parametrize(
    ("field", "value", "words"), BAD_MODEL_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in BAD_MODEL_FIELDS]
)
def test_bad_model_config_fields_are_refused(tmp_path, capsys, field, value, words) -> None:  # noqa: ANN001
    from romachip.spec import load_model_spec  # noqa: F401 (the registry the named configs come from)

    config = {
        "model_type": "llama", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 256, "tie_word_embeddings": True,
    }  # fmt: skip
    config[field] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, out = _run(capsys, ["fit", "--model", str(tmp_path / "config.json")])
    _assert_refused(code, out, words)


# -- class 5: untrusted adapter configs --------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter_world(tmp_path_factory) -> Path:  # noqa: ANN001
    from lora_helpers import burn_tiny, make_adapter, tiny_llama, word_tokenizer_json

    tmp = tmp_path_factory.mktemp("bad_adapters")
    vocab = tiny_llama().config.vocab_size
    burn_tiny(tiny_llama(), tmp / "tiny.rom", tokenizer_json=word_tokenizer_json(vocab))
    make_adapter(tiny_llama(), tmp / "good", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    return tmp


BAD_ADAPTER_FIELDS = [
    ("target_modules", "(a+)+b", ["target_modules", "nests a repeat"]),
    ("target_modules", r"(\w*\.?)*q_proj", ["target_modules", "exponential"]),
    ("target_modules", "((q|k)*)*_proj", ["target_modules", "nests a repeat"]),
    ("target_modules", "x" * 5000, ["target_modules", "1,024"]),
    ("target_modules", "[", ["target_modules", "not a valid regular expression"]),
    ("target_modules", "", ["target_modules", "empty"]),
    ("target_modules", [], ["target_modules", "empty"]),
    ("target_modules", 7, ["target_modules"]),
    ("exclude_modules", "(x+)*", ["exclude_modules", "nests a repeat"]),
    ("layers_pattern", "(l+)+", ["layers_pattern", "nests a repeat"]),
    ("rank_pattern", {"(a*)*": 2}, ["rank_pattern", "nests a repeat"]),
    ("alpha_pattern", {"q_proj": float("nan")}, ["alpha_pattern", "positive number"]),
    ("lora_alpha", float("nan"), ["lora_alpha", "positive number", "nan"]),
    ("lora_alpha", float("inf"), ["lora_alpha", "positive number"]),
    ("lora_alpha", -8, ["lora_alpha", "positive number"]),
    ("r", float("nan"), ["'r'", "whole number"]),
    ("r", 0, ["'r'", "whole number"]),
    ("r", 2.5, ["'r'", "whole number"]),
    ("peft_type", "IA3", ["peft_type"]),
    ("bias", "all", ["bias"]),
    ("layers_to_transform", "0", ["layers_to_transform"]),
]


@pytest.mark.parametrize(
    ("field", "value", "words"), BAD_ADAPTER_FIELDS, ids=[f"{f}={str(v)[:20]!r}" for f, v, _ in BAD_ADAPTER_FIELDS]
)
def test_hostile_adapter_configs_are_refused_quickly(adapter_world, tmp_path, capsys, field, value, words) -> None:  # noqa: ANN001
    folder = tmp_path / "ad"
    folder.mkdir()
    for f in (adapter_world / "good").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "adapter_config.json").read_text())
    config[field] = value
    (folder / "adapter_config.json").write_text(json.dumps(config))  # NaN written as JSON's NaN
    code, out = _run(capsys, ["adapters", "check", str(adapter_world / "tiny.rom"), str(folder)])
    _assert_refused(code, out, *words)


def test_an_adapter_path_that_is_a_file_is_named_as_such(adapter_world, capsys) -> None:  # noqa: ANN001
    rom = str(adapter_world / "tiny.rom")
    code, out = _run(capsys, ["adapters", "check", rom, rom])
    _assert_refused(code, out, "is a file, not a folder")


# -- quick to start: the light commands import no torch, transformers or plotting --------------------------

PROBE = """
import sys
from romachip.cli.main import main
rc = main({argv!r})
heavy = sorted(m for m in ("torch", "transformers", "matplotlib", "safetensors", "peft") if m in sys.modules)
print("HEAVY", ",".join(heavy))
"""


@pytest.mark.parametrize("argv", [["fit", "--help"], ["presets"], ["simulate", "--help"], ["models"]])
def test_light_commands_start_without_heavy_imports(argv) -> None:  # noqa: ANN001
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "HEAVY", out.stdout


# -- class 7: garbage a checkpoint can hold is refused by burn before anything is written ------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:  # noqa: ANN001
    from lora_helpers import tiny_llama, word_tokenizer_json

    folder = tmp_path_factory.mktemp("tiny_ckpt")
    tiny_llama().save_pretrained(folder)
    (folder / "tokenizer.json").write_text(word_tokenizer_json(64))
    return folder


def _spoiled(src: Path, dst: Path, *, tensor=None, config=None, tokenizer=None) -> Path:  # noqa: ANN001
    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    if tensor is not None:
        tensors = load_file(dst / "model.safetensors")
        name, fn = tensor
        tensors[name] = fn(tensors[name], torch)
        save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    if config is not None:
        data = json.loads((dst / "config.json").read_text())
        data.update(config)
        (dst / "config.json").write_text(json.dumps(data))
    if tokenizer is not None:
        (dst / "tokenizer.json").write_text(tokenizer)
    return dst


def _nan_at(t, torch):  # noqa: ANN001, ANN202
    t = t.clone()
    t.view(-1)[3] = float("nan")
    return t


def _inf_at(t, torch):  # noqa: ANN001, ANN202
    t = t.clone()
    t.view(-1)[0] = float("-inf")
    return t


BAD_CHECKPOINTS = [
    ("nan in a projection", {"tensor": ("model.layers.0.self_attn.q_proj.weight", _nan_at)}, ["q_proj", "NaN"]),
    ("inf in a projection", {"tensor": ("model.layers.1.mlp.down_proj.weight", _inf_at)}, ["down_proj", "non-finite"]),
    ("nan in a norm", {"tensor": ("model.layers.0.input_layernorm.weight", _nan_at)}, ["input_layernorm", "NaN"]),
    ("inf in the final norm", {"tensor": ("model.norm.weight", _inf_at)}, ["model.norm.weight", "non-finite"]),
    ("nan in the embedding", {"tensor": ("model.embed_tokens.weight", _nan_at)}, ["embed_tokens", "NaN"]),
    ("int8 weights", {"tensor": ("model.layers.0.self_attn.k_proj.weight", lambda t, torch: t.to(torch.int8))},
     ["k_proj", "integer dtype int8"]),
    ("int32 norm", {"tensor": ("model.norm.weight", lambda t, torch: t.to(torch.int32))}, ["integer dtype int32"]),
    ("a GPT-2 class", {"config": {"architectures": ["GPT2LMHeadModel"]}}, ["architectures", "GPT2LMHeadModel"]),
    ("a Mistral class", {"config": {"architectures": ["MistralForCausalLM"]}}, ["architectures", "LlamaForCausalLM"]),
    ("a bare string", {"config": {"architectures": "LlamaModel"}}, ["architectures"]),
    ("tokenizer not JSON", {"tokenizer": "{not json"}, ["tokenizer.json", "not a valid"]),
    ("tokenizer without a model", {"tokenizer": '{"version": "1.0"}'}, ["tokenizer.json", "not a valid"]),
    ("tokenizer of the wrong kind", {"tokenizer": '{"model": {"type": "Nope"}}'}, ["tokenizer.json"]),
    ("tokenizer a list", {"tokenizer": "[1, 2, 3]"}, ["tokenizer.json"]),
]  # fmt: skip


@pytest.mark.parametrize(("what", "spoil", "words"), BAD_CHECKPOINTS, ids=[c[0] for c in BAD_CHECKPOINTS])
def test_burn_refuses_garbage_before_writing(tiny_folder, tmp_path, capsys, what, spoil, words) -> None:  # noqa: ANN001
    folder = _spoiled(tiny_folder, tmp_path / "ckpt", **spoil)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out = _run(capsys, ["burn", str(folder), "-o", str(out_dir / "x.rom")])
    _assert_refused(code, out, *words)
    assert list(out_dir.iterdir()) == []


BAD_BURN_OPTIONS = [
    (["--bits", "3"], ["3-bit", "2, 4-bit codes", "precision.weight_bits"]),
    (["--bits", "5"], ["5-bit", "2, 4-bit codes"]),
    (["--quantizer", "awq"], ["unknown quantizer 'awq'"]),
    (["--calibration-tokens", "100"], ["--calibration-tokens", "one window of 256 tokens"]),
    (["--storage-policy", "cloud"], ["unknown storage policy 'cloud'"]),
]


@pytest.mark.parametrize(("opts", "words"), BAD_BURN_OPTIONS, ids=[" ".join(o) for o, _ in BAD_BURN_OPTIONS])
def test_burn_checks_its_options_before_loading(tmp_path, capsys, opts, words) -> None:  # noqa: ANN001
    # a checkpoint path that does not exist: the option is refused before burn would look at it
    code, out = _run(capsys, ["burn", str(tmp_path / "no-such-ckpt"), "-o", str(tmp_path / "x.rom"), *opts])
    _assert_refused(code, out, *words)
    assert list(tmp_path.iterdir()) == []


# -- class 6: images that lie consistently (manifest edited, its CRC recomputed) ---------------------------


def _forge(src: Path, dst: Path, edit) -> Path:  # noqa: ANN001
    import zlib

    from romachip.rom.layout import HEADER_BYTES, pack_header, unpack_header

    data = src.read_bytes()
    _, _, mlen = unpack_header(data[:HEADER_BYTES], str(src))
    manifest = json.loads(data[HEADER_BYTES : HEADER_BYTES + mlen])
    manifest["chip"]["spec"]["description"] = ""  # room for edits that lengthen a number
    edit(manifest)
    text = json.dumps(manifest, separators=(",", ":")).encode()
    assert len(text) <= mlen, "the forged manifest must fit the original's bytes"
    text += b" " * (mlen - len(text))  # JSON allows trailing blanks: the payload stays where it was
    dst.write_bytes(pack_header(zlib.crc32(text), mlen) + text + data[HEADER_BYTES + mlen :])
    return dst


def _tile(name: str, key: str, value, i: int = 0):  # noqa: ANN001, ANN202
    def edit(m: dict) -> None:
        t = next(t for t in m["tensors"] if t["name"] == name)
        t["tiles"][key][i] = value

    return edit


def _model(key: str, value):  # noqa: ANN001, ANN202
    def edit(m: dict) -> None:
        m["model"][key] = value

    return edit


Q0 = "model.layers.0.self_attn.q_proj.weight"
LYING_IMAGES = [
    ("fewer layers", _model("num_layers", 2), ["holds tensor", "model.layers.2", "lies about its model"]),
    ("another width", _model("intermediate_size", 40), ["mlp", "the model implies"]),
    ("another vocabulary", _model("vocab_size", 50), ["embed_tokens", "the model implies"]),
    ("a tensor dropped", lambda m: m["tensors"].pop(3), ["lacks tensor", "lies about its model"]),
    ("a tile outside its unit", _tile(Q0, "rom_offset_bits", 10**9), ["q_proj", "outside L-Unit"]),
    ("a tile on no unit", _tile(Q0, "unit", 999), ["q_proj", "L-Unit 999"]),
    ("a gap in the rows", _tile(Q0, "row_start", 1), ["q_proj", "exactly once"]),
    ("rows beyond the tensor", _tile(Q0, "row_stop", 33, -1), ["q_proj", "rows"]),
    ("a partial row", _tile(Q0, "col_stop", 5), ["q_proj", "whole rows"]),
    ("a negative offset", _tile(Q0, "rom_offset_bits", -64), ["q_proj", "outside"]),
    ("a tile count", lambda m: m["placement"].update(tiles=m["placement"]["tiles"] + 1), ["tiles", "placement"]),
    ("a short column", lambda m: m["tensors"][0]["tiles"]["crc32"].pop(), ["tile table"]),
]


@pytest.mark.parametrize(("what", "edit", "words"), LYING_IMAGES, ids=[c[0] for c in LYING_IMAGES])
def test_an_image_that_lies_consistently_is_refused(adapter_world, tmp_path, capsys, what, edit, words) -> None:  # noqa: ANN001
    forged = _forge(adapter_world / "tiny.rom", tmp_path / "forged.rom", edit)
    for argv in (["inspect", str(forged)], ["run", str(forged), "--prompt", "w1 w2", "--max-tokens", "1"]):
        code, out = _run(capsys, argv)
        _assert_refused(code, out, *words)


def test_inspect_prints_the_digest_run_checks_it(adapter_world, capsys) -> None:  # noqa: ANN001
    import hashlib

    rom = adapter_world / "tiny.rom"
    digest = hashlib.sha256(rom.read_bytes()).hexdigest()
    assert main(["inspect", str(rom), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sha256"] == digest
    run = ["run", str(rom), "--prompt", "w1 w2", "--max-tokens", "1", "--json"]
    assert main([*run, "--expect-digest", f"sha256:{digest.upper()}"]) == 0
    capsys.readouterr()
    for bad, words in ((("0" * 64), ["SHA-256", digest, "not the expected"]), ("abc", ["not a SHA-256"])):
        code, out = _run(capsys, [*run, "--expect-digest", bad])
        _assert_refused(code, out, *words)
