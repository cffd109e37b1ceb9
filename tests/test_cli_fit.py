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
    assert d["kv_bytes_per_token"] == 2 * 28 * 8 * 128
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
        (["--group-size", "-8"], "group size"),
        (["--lora-rank", "-1"], "LoRA rank"),
        (["--lora-targets", "q_proj,lm_head"], "unknown LoRA target"),
        (["--lora-dtype", "int4"], "LoRA dtype"),
        (["--kv-dtype", "int4"], "KV dtype"),
        (["--context", "-5"], "KV context"),
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
