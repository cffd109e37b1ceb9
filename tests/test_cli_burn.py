"""`romachip burn` and `romachip inspect` end to end on a tiny random Hugging Face checkpoint."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from romachip.cli.main import main
from romachip.quant.formats import WeightFormat
from romachip.quant.rtn import quantize_rtn
from romachip.rom import RomImage
from romachip.spec.chip import load_chip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A 2-layer LLaMA saved by transformers (safetensors + config.json), untied, GQA 4/2 heads."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=120,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-llama"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_burn_end_to_end(tmp_path, capsys, checkpoint):
    out = tmp_path / "tiny.rom"
    code, stdout, err = run(capsys, "burn", str(checkpoint), "--chip", "roma", "--bits", "4", "--group-size", "32",
                            "--quantizer", "rtn", "-o", str(out), "--json")  # fmt: skip
    assert code == 0, err
    r = json.loads(stdout)
    assert r["fits"] is True and r["file_bytes"] == out.stat().st_size
    assert r["header_bytes"] + r["payload_bytes"] == r["file_bytes"]
    # ROM bytes by hand: 2 layers x (64*64*2 + 32*64*2 + 96*64*3) 4-bit weights, and the embedding and LM head
    # (120*64 each) at 8 bits: the default policy keeps the tables at 8 bits when they fit
    assert r["storage_policy"] == "rom_int8" and r["notes"] == []
    weights = 2 * (64 * 64 * 2 + 32 * 64 * 2 + 96 * 64 * 3)
    groups = 2 * (64 * 2 * 2 + 32 * 2 * 2 + 96 * 2 * 2 + 64 * 3)
    tables, table_groups = 2 * 120 * 64, 2 * 120 * 2
    assert r["bytes_by_kind"]["code"] == weights * 4 // 8 + tables
    assert r["bytes_by_kind"]["scale"] == (groups + table_groups) * 2
    assert r["bytes_by_kind"]["zero"] == groups * 4 // 8 + table_groups
    assert r["bytes_by_kind"]["norm"] == (2 * 2 + 1) * 64 * 2
    assert set(r["wall_s"]) == {"load_s", "quantize_s", "write_s", "verify_s", "total_s"}

    # the image holds exactly what RTN makes of the checkpoint's float weights (an independent path)
    tensors = {}
    for f in checkpoint.glob("*.safetensors"):
        tensors.update(load_file(f))
    model = RomImage.open(out).model()
    for name in ("model.layers.1.mlp.down_proj.weight", "lm_head.weight", "model.embed_tokens.weight"):
        want = quantize_rtn(tensors[name].astype(np.float32), WeightFormat(4 if "layers" in name else 8, 32))
        assert np.array_equal(model.weights[name].codes, want.codes)
        assert np.array_equal(model.weights[name].scales, want.scales)
        assert np.array_equal(model.weights[name].zeros, want.zeros)
    norm = tensors["model.norm.weight"].astype(np.float32)
    assert np.array_equal(model.floats["model.norm.weight"], norm.astype(np.float16).astype(np.float32))

    code, stdout, err = run(capsys, "inspect", str(out), "--json")
    assert code == 0, err
    s = json.loads(stdout)
    assert s["checksums"] == "ok" and s["file_bytes"] == out.stat().st_size and s["model"] == "tiny-llama"
    assert s["tensors_by_kind"] == {"embedding": 1, "attention": 8, "mlp": 6, "norm": 5, "lm_head": 1}

    code, stdout, _ = run(capsys, "inspect", str(out))
    assert code == 0 and "checksums verified" in stdout


def test_human_summary(tmp_path, capsys, checkpoint):
    out = tmp_path / "tiny.rom"
    code, stdout, err = run(capsys, "burn", str(checkpoint), "--bits", "2", "--group-size", "64", "--symmetric",
                            "--strategy", "layer_groups", "-o", str(out))  # fmt: skip
    assert code == 0, err
    assert "burned tiny-llama" in stdout and "uint2 g64 sym" in stdout and "wall time" in stdout
    img = RomImage.open(out)
    assert img.fmt == WeightFormat(2, 64, symmetric=True) and img.manifest.placement.strategy == "layer_groups"
    assert (img.model().weights["model.layers.0.mlp.up_proj.weight"].zeros == 2).all()  # 2**(bits-1), not stored


def tiny_chip_yaml(folder: Path) -> Path:
    """The roma preset shrunk to four matrix units of 512 bytes of ROM each."""
    chip = load_chip("roma")
    data = chip.model_dump(mode="json")
    data["name"] = "tiny"
    data["mesh"] = {"rows": 3, "cols": 2, "row_roles": ["matrix", "vector", "matrix"]}
    data["l_unit"]["rom"].update(macro_rows=64, macros=1)
    path = folder / "tiny.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def test_a_model_too_big_for_the_chip_is_refused_with_the_breakdown(tmp_path, capsys, checkpoint):
    out = tmp_path / "tiny.rom"
    code, stdout, err = run(capsys, "burn", str(checkpoint), "--chip", str(tiny_chip_yaml(tmp_path)), "-o", str(out))
    assert code == 2 and stdout == ""
    assert "does not fit chip 'tiny'" in err and "fullest L-Unit" in err and "attention" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


def test_corrupted_image_is_reported_by_inspect(tmp_path, capsys, checkpoint):
    out = tmp_path / "tiny.rom"
    assert run(capsys, "burn", str(checkpoint), "-o", str(out), "--group-size", "32", "--json")[0] == 0
    img = RomImage.open(out)
    u = next(u for u in img.manifest.units if u.used_bits)
    data = bytearray(out.read_bytes())
    data[img.payload_start + u.payload_offset + 3] ^= 0x10
    out.write_bytes(bytes(data))
    code, _, err = run(capsys, "inspect", str(out))
    assert code == 2 and f"L-Unit {u.index}" in err and "checksum mismatch" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bits", "3"], "runs 3-bit weights on no unit"),
        (["--quantizer", "gptq", "--calibration", "{empty}"], "calibration text is empty"),
        (["--quantizer", "gptq", "--calibration", "/nonexistent.txt"], "/nonexistent.txt does not exist"),
        (["--quantizer", "gptq", "--calibration", __file__], "needs the checkpoint's tokenizer"),
        (["--storage-policy", "dram"], "dram"),
        (["--calibration-tokens", "100"], "at least one window of 256 tokens"),
        (["--strategy", "diagonal"], "strategy 'diagonal'"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(tmp_path, capsys, checkpoint, args, message):
    out = tmp_path / "x.rom"
    (tmp_path / "empty.txt").write_text(" \n")
    args = [a.replace("{empty}", str(tmp_path / "empty.txt")) for a in args]
    code, _, err = run(capsys, "burn", str(checkpoint), "-o", str(out), *args)
    assert code == 2 and message in err
    assert not out.exists()


def test_missing_checkpoint(tmp_path, capsys):
    code, _, err = run(capsys, "burn", str(tmp_path / "nope"), "-o", str(tmp_path / "x.rom"))
    assert code == 2 and "not found" in err


def test_gptq_burn_through_the_cli(tmp_path, capsys, checkpoint):
    """GPTQ with a calibration file: the projections differ from RTN (error feedback moved codes), the
    embedding (always RTN) does not, and the manifest records the quantizer."""
    import shutil

    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path / "tiny-llama"
    shutil.copytree(checkpoint, folder)
    words = [f"w{i}" for i in range(119)]
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (folder / "tokenizer.json").write_text(tok.to_str())
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib.txt"
    calib.write_text(" ".join(words[i] for i in rng.integers(0, 119, size=600)))
    out = tmp_path / "g.rom"
    code, stdout, err = run(capsys, "burn", str(folder), "--quantizer", "gptq", "--calibration", str(calib),
                            "--group-size", "32", "-o", str(out), "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["quantizer"] == "gptq"
    model = RomImage.open(out).model()
    assert model.metadata["quantizer"] == "gptq" and model.tokenizer_json == tok.to_str()
    tensors = {}
    for f in folder.glob("*.safetensors"):
        tensors.update(load_file(f))
    fmt = WeightFormat(4, 32)
    name = "model.layers.1.mlp.down_proj.weight"
    assert not np.array_equal(model.weights[name].codes, quantize_rtn(tensors[name].astype(np.float32), fmt).codes)
    emb = "model.embed_tokens.weight"  # RTN at 8 bits (the default policy keeps the tables at 8 bits)
    want = quantize_rtn(tensors[emb].astype(np.float32), WeightFormat(8, 32)).codes
    assert np.array_equal(model.weights[emb].codes, want)


@pytest.mark.parametrize(("policy", "warned"), [("rom_weight", True), ("rom_int8", False)])
def test_two_bit_tables_are_warned_about(tmp_path, capsys, checkpoint, policy, warned):
    out = tmp_path / "two.rom"
    code, stdout, err = run(capsys, "burn", str(checkpoint), "--bits", "2", "--group-size", "32",
                            "--storage-policy", policy, "-o", str(out), "--json")  # fmt: skip
    assert code == 0, err
    warnings = json.loads(stdout)["warnings"]
    assert bool(warnings) is warned and ("rom_int8" in err) is warned
    if warned:
        assert "2 bits" in warnings[0]


def test_the_default_burn(tmp_path, capsys, checkpoint):
    """No options: GPTQ calibrated on the model's own samples, g32 (the tiny model fits the ROM at it), 8-bit
    tables, each said in a note; no warnings; and the same image twice (a pure function of the checkpoint)."""
    code, stdout, err = run(capsys, "burn", str(checkpoint), "-o", str(tmp_path / "four.rom"), "--json")
    assert code == 0, err
    r = json.loads(stdout)
    assert r["warnings"] == [] and "warning" not in err
    assert r["quantizer"] == "gptq" and r["weight_format"] == "uint4 g32 asym fp16 scale"
    assert r["storage_policy"] == "rom_int8"
    assert any("group size 32" in n and "more ROM" in n for n in r["notes"])
    assert any("samples itself" in n for n in r["notes"]) and "note:" in err
    model = RomImage.open(tmp_path / "four.rom").model()
    assert model.metadata["calibration"] == "16 sequences x 256 tokens sampled from the model, seed 0"
    assert run(capsys, "burn", str(checkpoint), "-o", str(tmp_path / "again.rom"))[0] == 0
    assert (tmp_path / "four.rom").read_bytes() == (tmp_path / "again.rom").read_bytes()


def test_rtn_search_burn_weighs_columns_by_the_norm_gain(tmp_path, capsys, checkpoint):
    from romachip.quant.rtn_search import quantize_rtn_search

    out = tmp_path / "s.rom"
    code, _, err = run(capsys, "burn", str(checkpoint), "--quantizer", "rtn-search", "--group-size", "32",
                       "-o", str(out), "--json")  # fmt: skip
    assert code == 0, err
    tensors = {}
    for f in checkpoint.glob("*.safetensors"):
        tensors.update(load_file(f))
    model = RomImage.open(out).model()
    gain = tensors["model.layers.1.post_attention_layernorm.weight"].astype(np.float64)
    up, down = "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight"
    want = quantize_rtn_search(tensors[up].astype(np.float32), WeightFormat(4, 32), column_weights=gain * gain)
    assert np.array_equal(model.weights[up].codes, want.codes) and np.array_equal(model.weights[up].scales, want.scales)
    plain = quantize_rtn(tensors[down].astype(np.float32), WeightFormat(4, 32))  # no norm in front: plain RTN
    assert np.array_equal(model.weights[down].codes, plain.codes)
