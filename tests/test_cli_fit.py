"""`romachip fit`: JSON keys and numbers, human tables, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from romachip.cli.main import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["fit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_for_the_paper_configuration(capsys):
    code, out, _ = run(
        capsys, "--chip", "roma", "--model", "llama-3.2-3b", "--bits", "4", "--group-size", "128",
        "--lora-rank", "16", "--json",
    )  # fmt: skip
    assert code == 0
    d = json.loads(out)
    assert d["fits"] is True
    assert d["rom_bytes_available"] == 119 * 8192 * 64 // 8 * 256
    assert d["sram_bytes_available"] == 288 * 2**20
    assert d["kv_bytes_per_token"] == 2 * 28 * 8 * (128 + 4)  # int8 values + the engine's float32 scale per vector
    assert d["lora_dtype"] == "fp8_e4m3" and d["kv_dtype"] == "int8"  # the chip preset's precisions
    assert set(d["breakdown"]) >= {"attention", "mlp", "embedding", "lm_head", "norm", "lora", "kv_cache"}
    assert d["rom_bytes_needed"] == sum(d["breakdown"][k]["bytes"] for k in ("attention", "mlp", "lm_head", "norm"))


def test_options_reach_the_plan(capsys):
    base = ["--model", "llama-3.2-3b", "--json"]
    rank0 = json.loads(run(capsys, *base, "--lora-rank", "0")[1])
    rank64 = json.loads(run(capsys, *base, "--lora-rank", "64")[1])
    assert rank0["lora_bytes"] == 0 and rank0["max_context_tokens"] > rank64["max_context_tokens"]
    small = json.loads(run(capsys, *base, "--sram-mb", "64")[1])
    assert small["sram_bytes_available"] == 64 * 2**20 and not small["fits"]
    q_only = json.loads(run(capsys, *base, "--lora-targets", "q_proj,v_proj", "--lora-dtype", "fp16")[1])
    assert q_only["lora_targets"] == ["q_proj", "v_proj"]
    assert q_only["lora_bytes"] == 28 * (2 * 16 * (3072 + 3072) + 8 + 2 * 16 * (3072 + 1024) + 8)
    fp16 = json.loads(run(capsys, *base, "--kv-dtype", "fp16", "--context", "100")[1])
    assert fp16["kv_bytes_per_token"] == 2 * 2 * 28 * 8 * 128 and fp16["kv_bytes"] == 100 * fp16["kv_bytes_per_token"]
    eight_b = ["--model", "llama-3-8b", "--bits", "2", "--json"]
    off = json.loads(run(capsys, *eight_b, "--storage-policy", "off_chip_all")[1])
    assert off["policy"] == "off_chip_all" and off["breakdown"]["lm_head"]["memory"] == "host"


def test_human_output_is_a_table(capsys):
    code, out, _ = run(capsys, "--model", "smollm2-135m")
    assert code == 0
    assert "max context" in out and "where the bytes go" in out and "lm_head" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--chip", "nope"], "unknown chip 'nope'"),
        (["--model", "nope"], "unknown model 'nope'"),
        (["--bits", "3"], "3-bit weights"),
        (["--group-size", "-8"], "--group-size"),
        (["--lora-rank", "-1"], "--lora-rank"),
        (["--lora-targets", "q_proj,lm_head"], "unknown LoRA target"),
        (["--lora-dtype", "int4"], "LoRA dtype"),
        (["--kv-dtype", "int4"], "KV dtype"),
        (["--context", "-5"], "--context"),
        (["--sram-mb", "-1"], "--sram-mb"),
        (["--storage-policy", "dram"], "unknown storage policy"),
        (["--strategy", "diagonal"], "strategy 'diagonal'"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_files_exit_2(capsys, tmp_path):
    (tmp_path / "chip.yaml").write_text("mesh: [\n")
    code, _, err = run(capsys, "--chip", str(tmp_path / "chip.yaml"))
    assert code == 2 and "not valid YAML" in err
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "hidden_size": 8}')
    code, _, err = run(capsys, "--model", str(tmp_path / "config.json"))
    assert code == 2 and "model_type 'gpt2' is not supported" in err
    (tmp_path / "broken.json").write_text("{")
    code, _, err = run(capsys, "--model", str(tmp_path / "broken.json"))
    assert code == 2 and "not valid JSON" in err


def _tiny_chip_yaml(tmp_path):
    """The roma preset shrunk to 4 matrix units of 4 KiB H-Unit SRAM, so the context limit is small."""
    from importlib import resources

    import yaml

    data = yaml.safe_load((resources.files("romachip.spec") / "presets" / "roma.yaml").read_text())
    data["name"] = "tiny"
    data["mesh"] = {"rows": 3, "cols": 2, "row_roles": ["matrix", "vector", "matrix"]}
    data["l_unit"]["rom"].update(macro_rows=1024, macros=1)
    data["h_unit"]["sram"].update(macro_rows=512, macros=1)  # 4,096 bytes per H-Unit
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("rank", [0, 4])
def test_fit_max_context_is_what_the_engine_accepts(capsys, tmp_path, rank):
    """`romachip fit` and the engine size the KV cache from one definition (workload.py, the engine's
    float32 scale per INT8 vector): the same chip, model, KV and LoRA give the same maximum context, a
    prompt of exactly that many tokens runs and one token more is refused."""
    import numpy as np
    from engine_models import make_tiny

    from romachip.engine.generate import Engine
    from romachip.errors import GenerationError
    from romachip.spec.chip import load_chip
    from romachip.workload import ALL_TARGETS

    tiny = make_tiny("gqa_tied_g32_4bit", layers=1, vocab=41)
    tiny.hf.config.save_pretrained(tmp_path / "model")
    chip_path = _tiny_chip_yaml(tmp_path)
    code, out, _ = run(
        capsys, "--chip", str(chip_path), "--model", str(tmp_path / "model"), "--bits", "4", "--group-size", "32",
        "--lora-rank", str(rank), "--context", "1", "--json",
    )  # fmt: skip
    assert code == 0
    d = json.loads(out)
    assert d["kv_bytes_per_token"] == 2 * 2 * (16 + 4)  # 1 layer, K and V, 2 KV heads of 16 int8 + a float32 scale
    engine = Engine(tiny.quantized, chip=load_chip(chip_path))
    spec = tiny.quantized.spec
    shapes = spec.linear_shapes()
    rng = np.random.default_rng(0)
    adapter = {
        f"model.layers.0.{'self_attn' if m.endswith(('q_proj', 'k_proj', 'v_proj', 'o_proj')) else 'mlp'}.{m}": (
            rng.standard_normal((rank, shapes[m][1])).astype(np.float32) * 0.01,
            rng.standard_normal((shapes[m][0], rank)).astype(np.float32) * 0.01,
            1.0,
        )
        for m in ALL_TARGETS
    } if rank else None  # fmt: skip
    limit = engine.max_context(adapter)
    assert limit == d["max_context_tokens"] < spec.max_position_embeddings  # the H-Unit SRAM binds, not the model
    ids = [3 + i % 30 for i in range(limit + 1)]
    assert engine.logits(ids[:limit], adapter).shape == (limit, 41)
    with pytest.raises(GenerationError, match=f"{limit + 1} tokens of context do not fit"):
        engine.logits(ids, adapter)


def test_kv_scale_bytes_default_by_dtype_and_override(capsys):
    base = ["--model", "llama-3.2-3b", "--lora-rank", "0", "--json"]
    fp16 = json.loads(run(capsys, *base, "--kv-dtype", "fp16")[1])
    assert fp16["kv_bytes_per_token"] == 2 * 28 * 8 * 128 * 2  # the engine's FP16 cache stores no scale
    static = json.loads(run(capsys, *base, "--kv-scale-bytes", "0")[1])  # e.g. static per-layer INT8 scales
    assert static["kv_bytes_per_token"] == 2 * 28 * 8 * 128 == 57_344
    assert static["max_context_tokens"] == 1_179_648 // 57_344 * 256 == 5_120  # 20 tokens per H-Unit


def test_does_not_fit_is_a_verdict_exit_1_and_fits_exit_0(capsys):
    code, out, _ = run(capsys, "--model", "llama-3-8b", "--bits", "4", "--json")
    assert code == 1 and json.loads(out)["fits"] is False  # 8B at 4 bits overflows roma's ROM
    code, out, _ = run(capsys, "--model", "llama-3.2-3b", "--bits", "4", "--json")
    assert code == 0 and json.loads(out)["fits"] is True
    assert main(["fit", "--model", "llama-3-8b", "--bits", "4"]) == 1
    assert "- ROM: the fullest L-Unit needs" in capsys.readouterr().out  # the table, then the reasons


def test_version_prints_the_package_version(capsys):
    from romachip import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"romachip {__version__}"


def test_fit_assumes_the_default_burns_format_and_policy(capsys):
    """No --group-size / --storage-policy: what `burn` would store (capacity.choose_storage), with its notes."""
    three = json.loads(run(capsys, "--model", "llama-3.2-3b", "--json")[1])
    assert three["weight_format"] == "uint4 g128 asym fp16 scale" and three["policy"] == "rom_int8"
    assert any("group size 32 does not fit" in n for n in three["notes"])
    one = json.loads(run(capsys, "--model", "llama-3.2-1b", "--json")[1])
    assert one["weight_format"] == "uint4 g32 asym fp16 scale" and one["policy"] == "rom_int8"
    assert any("group size 32" in n and "more ROM" in n for n in one["notes"])
    given = json.loads(run(capsys, "--model", "llama-3.2-1b", "--group-size", "128", "--storage-policy",
                           "rom_weight", "--json")[1])  # fmt: skip
    assert given["weight_format"] == "uint4 g128 asym fp16 scale" and given["notes"] == []
