"""`romachip adapters check`: bytes, ranks, scaling and fit of a PEFT adapter against a burned image."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from engine_models import make_tiny
from lora_helpers import burn_tiny, make_adapter, tiny_llama, word_tokenizer_json
from transformers import LlamaForCausalLM

from romachip.cli.main import main
from romachip.engine.generate import Engine
from romachip.sram.bank import AdapterBank
from romachip.workload import KvConfig


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
    # SRAM writes at the 0.55 V operating point + the bytes over the LPDDR5X host link (6 pJ/bit)
    assert r["load_cycles"] >= 1 and r["load_energy_j"] == pytest.approx(
        1296 * 8 * (0.025 * (0.55 / 0.75) ** 2 + 6) * 1e-12
    )


def test_check_table_and_fp16(files, capsys):
    assert main(["adapters", "check", str(files / "tiny.rom"), str(files / "ad"), "--context", "32",
                 "--precision", "fp16"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "fits" in out and "2,544 B fp16" in out and "alpha/sqrt(r) (rsLoRA)" in out


def test_does_not_fit_exits_1_and_refusals_exit_2(files, capsys):
    args = ["adapters", "check", str(files / "tiny.rom"), str(files / "ad")]
    assert main([*args, "--context", "100"]) == 1  # a verdict: does not fit
    assert "a 100-token KV cache does not fit even before adapter" in capsys.readouterr().err
    assert main([*args, "--precision", "int8"]) == 2
    assert main(["adapters", "check", str(files / "tiny.rom"), str(files / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture(scope="module")
def talking(tmp_path_factory):
    """A tiny image with a word-level tokenizer (so run/eval take text) and two strong adapters."""
    tmp = tmp_path_factory.mktemp("adapters_run")
    tiny = make_tiny("gqa_tied_g32_4bit", layers=2)  # large weights: peaked logits an adapter can move
    image = burn_tiny(tiny.hf, tmp / "talk.rom", tokenizer_json=word_tokenizer_json(101))
    cfg = tiny.hf.config
    make_adapter(LlamaForCausalLM(cfg), tmp / "a", seed=1, b_std=0.5, target_modules="all-linear")
    make_adapter(LlamaForCausalLM(cfg), tmp / "b", seed=2, b_std=0.5, r=2, target_modules=["q_proj", "up_proj"])
    rng = np.random.default_rng(0)
    (tmp / "text.txt").write_text(" ".join(f"w{i}" for i in rng.integers(1, 101, 80)))
    return tmp, image


def _alone_tokens(image, folder, prompt_ids, max_tokens):
    bank = AdapterBank.for_image(image, kv=KvConfig(context_tokens=32))
    bank.load("x", folder)
    return Engine(image.model()).generate(prompt_ids, max_tokens=max_tokens, adapter=bank.view("x")).token_ids


def test_run_with_two_adapters_uses_the_named_one(talking, capsys):
    tmp, image = talking
    args = ["run", str(tmp / "talk.rom"), "--prompt", "w5 w9 w17 w33", "--max-tokens", "4", "--json"]
    args += ["--adapter", f"a={tmp / 'a'}", "--adapter", f"b={tmp / 'b'}"]
    outs = {}
    for use in ("a", "b", "none"):
        assert main([*args, "--use", use]) == 0
        outs[use] = json.loads(capsys.readouterr().out)
    ids = [5, 9, 17, 33]
    assert outs["a"]["token_ids"] == _alone_tokens(image, tmp / "a", ids, 4)
    assert outs["b"]["token_ids"] == _alone_tokens(image, tmp / "b", ids, 4)
    assert outs["none"]["token_ids"] == Engine(image.model()).generate(ids, max_tokens=4).token_ids
    assert outs["b"]["adapter"] == "b" and outs["none"]["adapter"] is None
    loads = outs["a"]["adapter_loads"]
    assert [x["adapter"] for x in loads] == ["a", "b"] and loads[0]["sram_bytes_written"] > 0
    assert main(args) == 2  # two adapters and no --use
    assert "--use" in capsys.readouterr().err
    assert main([*args, "--use", "a", "--max-tokens", "300"]) == 2  # 304 tokens > the model's 256
    assert "a 304-token KV cache does not fit even before adapter 'a'" in capsys.readouterr().err
    assert main(["run", str(tmp / "talk.rom"), "--prompt", "w1", "--use", "a"]) == 2


def test_eval_with_adapter_and_peft_reference(talking, capsys):
    tmp, _ = talking
    base = ["eval", str(tmp / "talk.rom"), "--text", str(tmp / "text.txt"), "--window", "40", "--reference", "--json"]
    assert main(base) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*base, "--adapter", str(tmp / "a")]) == 0
    adapted = json.loads(capsys.readouterr().out)
    assert adapted["adapter"] == str(tmp / "a") and adapted["lora_precision"] == "fp8_e4m3"
    # the chip (bf16 activations, INT8 KV) and PEFT on the dequantized base agree closely with the adapter ...
    assert adapted["perplexity"] == pytest.approx(adapted["reference_perplexity"], rel=0.005)
    # ... and the adapter changes the perplexity by far more than that
    assert abs(adapted["reference_perplexity"] / plain["reference_perplexity"] - 1) > 0.1
