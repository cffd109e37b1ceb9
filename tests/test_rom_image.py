"""ROM image: exact round trip, byte layout, checksums naming the unit, truncation, atomic writes."""

import json
import os
import struct
import zlib

import numpy as np
import pytest

from romachip.compile import compile_placement, model_tensors
from romachip.errors import CapacityError, FormatError, RomImageError
from romachip.quant.formats import WeightFormat
from romachip.quant.rtn import quantize_rtn
from romachip.quant.tensor import QuantizedModel
from romachip.rom import RomImage, burn, write_image
from romachip.rom.bits import pack_uint
from romachip.rom.brom import encode_words
from romachip.spec import load_chip
from romachip.spec.chip import MeshSpec, RomArray
from romachip.spec.model import ModelSpec

ROMA = load_chip("roma")


def tiny_chip(rom_macros: int = 64):
    """Six matrix units around one vector row; each L-Unit holds rom_macros x 64 rows x 64 bits."""
    rom = RomArray(macro_rows=64, macro_cols=64, macros=rom_macros, brom=True, fused=True)
    return ROMA.model_copy(
        update={
            "name": "tiny",
            "mesh": MeshSpec(rows=3, cols=3, row_roles=["matrix", "vector", "matrix"]),
            "l_unit": ROMA.l_unit.model_copy(update={"rom": rom}),
        }
    )


def tiny_spec(tied: bool = True, hidden: int = 96) -> ModelSpec:
    return ModelSpec(
        name="tiny",
        vocab_size=50,
        hidden_size=hidden,
        intermediate_size=80,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=hidden // 4,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        max_position_embeddings=128,
        tie_word_embeddings=tied,
        eos_token_ids=(2,),
    )


def make_model(fmt: WeightFormat, *, tied: bool = True, seed: int = 0, policy: str = "rom_weight") -> QuantizedModel:
    rng = np.random.default_rng(seed)
    spec = tiny_spec(tied)
    weights, floats = {}, {}
    names = {t.name: t for t in model_tensors(spec, fmt, policy="rom_weight")}
    if not tied:
        names["lm_head.weight"] = None
    for name, t in names.items():
        if t is not None and t.fmt is None:
            floats[name] = rng.standard_normal(t.shape[1]).astype(np.float32)
        else:
            shape = t.shape if t is not None else (spec.vocab_size, spec.hidden_size)
            weights[name] = quantize_rtn(rng.standard_normal(shape).astype(np.float32), fmt)
    return QuantizedModel(
        spec, fmt, weights, floats, tokenizer_json='{"model": "x"}', chat_template="{{ messages }}", source="test"
    )


def assert_same(a: QuantizedModel, b: QuantizedModel) -> None:
    assert a.weights.keys() == b.weights.keys()
    for k, q in a.weights.items():
        r = b.weights[k]
        assert r.fmt == q.fmt, k
        assert r.codes.dtype == q.codes.dtype and np.array_equal(r.codes, q.codes), k
        assert r.scales.dtype == q.scales.dtype and np.array_equal(r.scales, q.scales), k
        assert np.array_equal(r.zeros, q.zeros), k
    assert a.floats.keys() == b.floats.keys()
    for k, v in a.floats.items():
        assert np.array_equal(b.floats[k], v.astype(np.float16).astype(np.float32)), k  # norms burn as FP16


FORMATS = [
    WeightFormat(4, 32),
    WeightFormat(2, 64),  # ragged: 96 = 64 + 32, 80 = 64 + 16
    WeightFormat(3, 32),
    WeightFormat(8, None),
    WeightFormat(4, 32, symmetric=True),
    WeightFormat(4, 64, scale_dtype="bf16"),
    WeightFormat(2, 32, scale_dtype="fp32"),
]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.describe().replace(" ", "-"))
def test_exact_round_trip(tmp_path, fmt):
    qm = make_model(fmt)
    img = burn(qm, tiny_chip(), tmp_path / "m.rom")
    back = img.model()
    assert_same(qm, back)
    assert back.spec == qm.spec and back.fmt == fmt
    assert (back.tokenizer_json, back.chat_template, back.source) == ('{"model": "x"}', "{{ messages }}", "test")


def test_round_trip_on_roma_untied_layer_groups(tmp_path):
    qm = make_model(WeightFormat(4, 32), tied=False, seed=3)
    img = burn(qm, ROMA, tmp_path / "m.rom", strategy="layer_groups", chip_preset="roma")
    assert_same(qm, img.model())
    assert img.manifest.chip.preset == "roma" and img.chip == ROMA


def test_off_chip_tables_go_to_the_host_region(tmp_path):
    qm = make_model(WeightFormat(4, 32), tied=False, seed=4)
    img = burn(qm, tiny_chip(), tmp_path / "m.rom", policy="off_chip")
    where = {t.name: t.location for t in img.manifest.tensors}
    assert where["model.embed_tokens.weight"] == "host" and where["lm_head.weight"] == "rom"
    assert img.manifest.host.payload_bytes > 0
    assert "model.embed_tokens.weight" not in {t.name for t in img.placement.tensors}
    assert_same(qm, img.model())
    path = tmp_path / "m.rom"
    bad = bytearray(path.read_bytes())
    bad[img.payload_start + img.manifest.host.payload_offset + 7] ^= 0x80
    path.write_bytes(bytes(bad))
    with pytest.raises(RomImageError, match=r"mismatch in the host region: .*tensor\(s\) model.embed_tokens.weight;"):
        RomImage.open(path)


def test_layout_header_plus_payload_is_the_file(tmp_path):
    path = tmp_path / "m.rom"
    report = write_image(path, make_model(WeightFormat(4, 32)), tiny_chip())
    data = path.read_bytes()
    magic, version, crc, mlen = struct.unpack("<8sIIQ", data[:24])
    assert (magic, version) == (b"ROMACHIP", 1)
    manifest = json.loads(data[24 : 24 + mlen])
    assert zlib.crc32(data[24 : 24 + mlen]) == crc
    assert (24 + mlen) % 64 == 0 and 24 + mlen + manifest["payload_bytes"] == len(data) == report.file_bytes
    units = manifest["units"]
    assert [u["payload_offset"] for u in units] == list(np.cumsum([0] + [u["payload_bytes"] for u in units[:-1]]))
    assert all(u["payload_bytes"] % 64 == 0 for u in units)
    assert sum(report.bytes_by_kind.values()) == report.payload_bytes


def test_payload_bytes_are_the_b_rom_encoding_of_the_packed_codes(tmp_path):
    """Rebuild one tile's bytes by hand from the format spec and compare with the file."""
    qm = make_model(WeightFormat(4, 32))
    path = tmp_path / "m.rom"
    write_image(path, qm, tiny_chip())
    img = RomImage.open(path)
    t = next(t for t in img.manifest.tensors if t.name == "model.layers.1.mlp.down_proj.weight")
    i = 0
    u, r0, r1, off = (t.tiles.column(k)[i] for k in ("unit", "row_start", "row_stop", "rom_offset_bits"))
    q = qm.weights[t.name]
    codes = pack_uint(q.codes[r0:r1], 4)
    rom = img.unit_rom(u)
    assert np.array_equal(rom[off // 8 : off // 8 + codes.size], codes)
    assert np.array_equal(encode_words(rom, 64), np.asarray(img.unit_payload(u)))


def test_placement_read_back_equals_the_compiled_one(tmp_path):
    qm = make_model(WeightFormat(4, 32))
    img = burn(qm, tiny_chip(), tmp_path / "m.rom")
    want = compile_placement(tiny_chip(), qm.spec, qm.fmt)
    got = img.placement
    assert [t.name for t in got.tensors] == [t.name for t in want.tensors]
    for k, v in want.tiles.items():
        assert np.array_equal(got.tiles[k], v), k
    assert np.array_equal(got.kv_bytes_per_token, want.kv_bytes_per_token)
    for k in ("kv_ring", "kv_rank", "kv_layer_ring"):  # the KV rule is rebuilt from the tiles alone
        assert np.array_equal(getattr(got, k), getattr(want, k)), k
    assert got.kv_layout == want.kv_layout == img.manifest.placement.kv_layout


def test_memory_map_is_read_only(tmp_path):
    img = burn(make_model(WeightFormat(4, 32)), tiny_chip(), tmp_path / "m.rom")
    payload = img.unit_payload(0)
    with pytest.raises(ValueError):
        payload[0] = 1


def _unit_tensors(img: RomImage, unit: int) -> set[str]:
    return {t.name for t in img.manifest.tensors if unit in t.tiles.unit}


def test_a_flipped_bit_anywhere_in_a_unit_names_the_unit_and_its_tensor(tmp_path):
    path = tmp_path / "m.rom"
    burn(make_model(WeightFormat(4, 32)), tiny_chip(), path)
    good = path.read_bytes()
    img = RomImage.open(path)
    rng = np.random.default_rng(5)
    for unit in range(6):
        start = img.payload_start + img.manifest.units[unit].payload_offset
        used = img.manifest.units[unit].used_bits // 8
        pos = start + int(rng.integers(0, used))
        bad = bytearray(good)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(bad))
        with pytest.raises(RomImageError, match=rf"checksum mismatch in L-Unit {unit}: .*tensor\(s\) (\S+)") as e:
            RomImage.open(path)
        named = e.value.args[0].split("tensor(s) ")[1].split(";")[0].split(", ")
        assert set(named) <= _unit_tensors(img, unit) and len(named) == 1


def test_a_flipped_bit_in_the_manifest_is_caught(tmp_path):
    path = tmp_path / "m.rom"
    burn(make_model(WeightFormat(4, 32)), tiny_chip(), path)
    bad = bytearray(path.read_bytes())
    bad[100] ^= 0x04
    path.write_bytes(bytes(bad))
    with pytest.raises(RomImageError, match="manifest is corrupted"):
        RomImage.open(path)


def test_truncation_names_the_units_cut_off(tmp_path):
    path = tmp_path / "m.rom"
    burn(make_model(WeightFormat(4, 32)), tiny_chip(), path)
    data = path.read_bytes()
    img = RomImage.open(path)
    last = img.manifest.units[-1]
    path.write_bytes(data[: img.payload_start + last.payload_offset + 10])
    with pytest.raises(RomImageError, match=r"truncated: .* L-Unit 5 cut off \(tensors model\."):
        RomImage.open(path)
    path.write_bytes(data[:200])
    with pytest.raises(RomImageError, match="truncated inside the manifest"):
        RomImage.open(path)
    path.write_bytes(data[:10])
    with pytest.raises(RomImageError, match="truncated: the file has 10 bytes"):
        RomImage.open(path)
    path.write_bytes(data + b"\0")
    with pytest.raises(RomImageError, match="1 unexpected bytes after the payload"):
        RomImage.open(path)


def test_bad_magic_and_version(tmp_path):
    path = tmp_path / "m.rom"
    burn(make_model(WeightFormat(4, 32)), tiny_chip(), path)
    data = path.read_bytes()
    path.write_bytes(b"GGUF" + data[4:])
    with pytest.raises(RomImageError, match="not a romachip ROM image"):
        RomImage.open(path)
    path.write_bytes(data[:8] + struct.pack("<I", 2) + data[12:])
    with pytest.raises(RomImageError, match="version 2 is not supported .* newer romachip"):
        RomImage.open(path)
    with pytest.raises(RomImageError, match="missing.rom does not exist"):
        RomImage.open(tmp_path / "missing.rom")


def test_overflow_is_refused_before_any_file_exists(tmp_path):
    with pytest.raises(CapacityError, match=r"L-Unit \d+ .* needs"):
        write_image(tmp_path / "m.rom", make_model(WeightFormat(8, 32)), tiny_chip(rom_macros=1))
    assert list(tmp_path.iterdir()) == []


def test_invalid_model_writes_nothing(tmp_path):
    qm = make_model(WeightFormat(4, 32))
    qm.weights["model.layers.1.mlp.up_proj.weight"].codes[3, 3] = 16  # not a 4-bit code
    with pytest.raises(FormatError, match="up_proj.weight: codes exceed 4 bits"):
        write_image(tmp_path / "m.rom", qm, tiny_chip())
    del qm.weights["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(FormatError, match="up_proj.weight': expected \\[80, 96\\], missing"):
        write_image(tmp_path / "m.rom", qm, tiny_chip())
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_write_leaves_no_file(tmp_path, monkeypatch):
    qm = make_model(WeightFormat(4, 32))

    def stop(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "m.rom", qm, tiny_chip(), progress=stop)
    assert list(tmp_path.iterdir()) == []

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(RomImageError, match="cannot write ROM image .*No space left"):
        write_image(tmp_path / "m.rom", qm, tiny_chip())
    assert list(tmp_path.iterdir()) == []


def test_an_existing_image_survives_a_failed_rewrite(tmp_path, monkeypatch):
    path = tmp_path / "m.rom"
    write_image(path, make_model(WeightFormat(4, 32)), tiny_chip())
    before = path.read_bytes()
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(RomImageError):
        write_image(path, make_model(WeightFormat(4, 32), seed=9), tiny_chip())
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.rom"]


def test_unwritable_target_directory(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")  # a file where the directory should be (fails even for root, unlike chmod)
    with pytest.raises(RomImageError, match="cannot write ROM image .* writable"):
        write_image(blocker / "m.rom", make_model(WeightFormat(4, 32)), tiny_chip())
    assert [p.name for p in tmp_path.iterdir()] == ["not-a-dir"]


def _with_manifest(data: bytes, manifest: dict) -> bytes:
    """`data` with its manifest replaced by `manifest`, re-padded and with a matching CRC."""
    _, _, _, mlen = struct.unpack("<8sIIQ", data[:24])
    text = json.dumps(manifest).encode()
    text += b" " * ((-(24 + len(text))) % 64)
    return struct.pack("<8sIIQ", b"ROMACHIP", 1, zlib.crc32(text), len(text)) + text + data[24 + mlen :]


def test_fuzzed_images_only_ever_raise_rom_image_error(tmp_path):
    """Random byte flips, truncations and structurally wrong manifests with valid CRCs: the reader
    either refuses with RomImageError or, for the model, gives back exactly the burned weights."""
    path = tmp_path / "m.rom"
    qm = make_model(WeightFormat(4, 32))
    burn(qm, tiny_chip(), path)
    good = path.read_bytes()
    manifest = json.loads(good[24 : 24 + struct.unpack("<Q", good[16:24])[0]])
    rng = np.random.default_rng(7)
    for _ in range(60):
        bad = bytearray(good)
        for pos in rng.integers(0, len(bad), size=int(rng.integers(1, 4))):
            bad[int(pos)] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(bad[: int(rng.integers(1, len(bad) + 1))] if rng.random() < 0.3 else bad))
        with pytest.raises(RomImageError):
            RomImage.open(path).model()
    edits = [
        lambda m: m.pop("units"),
        lambda m: m["units"][2].pop("crc32"),
        lambda m: m["units"].__setitem__(0, "x"),
        lambda m: m.__setitem__("payload_bytes", "many"),
        lambda m: m["tensors"][3]["tiles"].pop("row_stop"),
        lambda m: m["tensors"][3]["tiles"]["row_stop"].__setitem__(0, 10**6),
        lambda m: m["tensors"][0].__setitem__("format", {"format_id": 9}),
        lambda m: m["model"].__setitem__("hidden_size", -1),
        lambda m: m.__setitem__("encoding", None),
    ]
    for edit in edits:
        m = json.loads(json.dumps(manifest))
        edit(m)
        path.write_bytes(_with_manifest(good, m))
        with pytest.raises(RomImageError):
            img = RomImage.open(path)
            img.model(), img.placement  # noqa: B018
    path.write_bytes(_with_manifest(good, [1, 2]))
    with pytest.raises(RomImageError, match="malformed manifest"):
        RomImage.open(path)
