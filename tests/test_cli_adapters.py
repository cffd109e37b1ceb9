"""`romachip adapters check`: bytes, ranks, scaling and fit of a PEFT adapter against a burned image."""

from __future__ import annotations

import json
import math

import pytest
from lora_helpers import burn_tiny, make_adapter, tiny_llama

from romachip.cli.main import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adapters_cli")
    burn_tiny(tiny_llama(), tmp / "tiny.rom")
    make_adapter(
        tiny_llama(), tmp / "ad", r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "down_proj"],
        rank_pattern={"down_proj": 2},
    )  # fmt: skip
    return tmp


def test_check_json_numbers_by_hand(files, capsys):
    assert main(["adapters", "check", str(files / "tiny.rom"), str(files / "ad"), "--context", "32", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    # q_proj rank 4 [32, 32] and down_proj rank 2 [32, 48] in 3 layers, FP8 bytes + two FP32 words per module
    assert r["sram_bytes"] == 3 * (4 * (32 + 32) + 8) + 3 * (2 * (32 + 48) + 8) == 1296
    assert r["params"] == 3 * 4 * 64 + 3 * 2 * 80
    assert (r["rank_min"], r["rank_max"], r["targets"], r["layers"]) == (2, 4, ["q_proj", "down_proj"], [0, 1, 2])
    assert r["use_rslora"] and r["scale_min"] == 8 / math.sqrt(4) and r["scale_max"] == pytest.approx(8 / math.sqrt(2))
    assert r["fits"] and r["precision"] == "fp8_e4m3" and r["max_context_tokens_after"] == 64  # model's limit
    assert 1e-3 < r["delta_w_rel_error"] < 0.1  # FP8 storage error, a few percent at most
    assert r["load_cycles"] >= 1 and r["load_energy_j"] == pytest.approx(1296 * 8 * 0.025e-12)


def test_check_table_and_fp16(files, capsys):
    assert main(["adapters", "check", str(files / "tiny.rom"), str(files / "ad"), "--context", "32",
                 "--precision", "fp16"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "fits" in out and "2,544 B fp16" in out and "alpha/sqrt(r) (rsLoRA)" in out


def test_check_refusals_exit_2(files, capsys):
    args = ["adapters", "check", str(files / "tiny.rom"), str(files / "ad")]
    assert main([*args, "--context", "100"]) == 2
    assert "does not fit next to a 100-token KV cache" in capsys.readouterr().err
    assert main([*args, "--precision", "int8"]) == 2
    assert main(["adapters", "check", str(files / "tiny.rom"), str(files / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
