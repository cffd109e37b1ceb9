"""The adapter bank: SRAM accounting agrees with the capacity planner and `romachip fit`, loads are refused
with the budget shown, views are immutable and isolated, and load costs are counted by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from lora_helpers import random_adapter

from romachip.capacity import plan
from romachip.cli.main import main
from romachip.errors import AdapterError, CapacityError
from romachip.quant.formats import WeightFormat
from romachip.spec import load_chip, load_model_spec
from romachip.sram.bank import AdapterBank
from romachip.sram.peft_import import uniform_ranks
from romachip.workload import KvConfig, LoraConfig

ROMA = load_chip("roma")
G128 = WeightFormat(4, 128)


def fit_json(capsys, *args):
    code = main(["fit", "--json", *args])
    report = json.loads(capsys.readouterr().out)
    assert code == (0 if report["fits"] else 1)  # "does not fit" is a verdict (exit 1), not bad input
    return report


@pytest.mark.parametrize("context", [3000, 4096])
def test_llama3b_rank64_costs_context_and_fit_agrees(capsys, context):
    spec = load_model_spec("llama-3.2-3b")
    bank = AdapterBank(ROMA, spec, fmt=G128, kv=KvConfig(context_tokens=context))
    verdicts = {r: bank.what_if(uniform_ranks(spec, r)) for r in (16, 64)}
    assert verdicts[64].max_context_after < verdicts[16].max_context_after < verdicts[16].max_context_before
    for r, v in verdicts.items():
        report = fit_json(capsys, "--model", "llama-3.2-3b", "--bits", "4", "--lora-rank", str(r), "--context",
                          str(context))  # fmt: skip
        assert v.max_context_after == report["max_context_tokens"]
        assert v.fits == report["fits"]
        assert v.adapter_bytes == report["lora_bytes"]
    # at 4K tokens rank 64 on all seven projections no longer fits; at 3000 it does
    assert verdicts[64].fits == (context == 3000) and verdicts[16].fits


def test_real_loads_account_like_the_planner():
    spec = load_model_spec("smollm2-135m")
    sram = 16 * 2**20  # a small SRAM, so that the H-Units limit the context rather than the model's 8K
    kv = KvConfig(context_tokens=256)
    bank = AdapterBank(ROMA, spec, fmt=G128, kv=kv, sram_bytes=sram)
    empty = bank.max_context_tokens
    base = plan(ROMA, spec, fmt=G128, lora=LoraConfig(rank=0), kv=kv, sram_bytes=sram)
    assert empty == base.context.max_context_tokens
    op = bank.load("a", random_adapter(spec, 4))
    ref = plan(ROMA, spec, fmt=G128, lora=LoraConfig(rank=4), kv=kv, sram_bytes=sram)
    assert op.max_context_tokens == ref.context.max_context_tokens < empty
    assert op.sram_bytes_written == ref.sram.lora_bytes == bank.stored("a").nbytes
    # a second adapter lowers the context again; unloading gives it back. A unit holds whole tokens (30 x 2
    # x 192 = 11,520 bytes of K/V each), so the adapter must take a token's worth from the limiting unit
    # (unit 0, 3 tokens -> 768 = 3 x 256): rank 2 on every projection does, q/v of ten layers does not.
    op2 = bank.load("b", random_adapter(spec, 2, seed=1))
    assert op2.max_context_tokens < op.max_context_tokens and op2.lora_bytes_resident == bank.lora_bytes
    assert bank.unload("b").max_context_tokens == op.max_context_tokens
    assert bank.unload("a").max_context_tokens == empty and bank.names == []


def test_load_cost_by_hand():
    spec = load_model_spec("smollm2-135m")
    bank = AdapterBank(ROMA, spec, fmt=G128, kv=KvConfig(context_tokens=1024))
    op = bank.load("a", random_adapter(spec, 8))
    # SmolLM2 per layer: (576+576)+(576+192)*2+(576+576)+(576+1536)*3 = 10176 elements per unit of rank
    assert op.sram_bytes_written == 30 * (8 * 10176 + 7 * 8)
    # SRAM writes at 0.025 pJ/bit x (0.55 / 0.75)^2 (roma's 500 MHz voltage) + LPDDR5X's 6 pJ/bit on the way in
    assert op.write_energy_j == pytest.approx(op.sram_bytes_written * 8 * (0.025 * (0.55 / 0.75) ** 2 + 6.0) * 1e-12)
    word_bits_per_cycle = 64 * 18  # one 64-bit word per macro per cycle, 18 macros per H-Unit
    assert op.write_cycles >= math.ceil(op.sram_bytes_written * 8 / ROMA.matrix_units / word_bits_per_cycle)
    # the host link is the slower: 100 ns + the bytes at 68.3 GB/s
    assert op.write_cycles == math.ceil((100e-9 + op.sram_bytes_written / 68.3e9) * 500e6)
    assert op.write_s == op.write_cycles / 500e6
    assert op.sram_bytes_freed == 0 and bank.unload("a").sram_bytes_written == 0


def test_refusal_shows_the_budget_and_changes_nothing():
    spec = load_model_spec("smollm2-135m")
    bank = AdapterBank(ROMA, spec, fmt=G128, kv=KvConfig(context_tokens=1024), sram_bytes=16 * 2**20)
    bank.load("small", random_adapter(spec, 1, targets=("q_proj",)))
    before = bank.max_context_tokens
    budget = r"does not fit next to a 1,024-token KV cache: H-Unit \d+ holds 65,536 bytes"
    with pytest.raises(CapacityError, match=budget):
        bank.load("big", random_adapter(spec, 24))
    assert bank.names == ["small"] and bank.max_context_tokens == before


def test_swap_and_views_are_isolated():
    spec = load_model_spec("smollm2-135m")
    bank = AdapterBank(ROMA, spec, fmt=G128, kv=KvConfig(context_tokens=512), precision="fp16")
    bank.load("x", random_adapter(spec, 2, seed=1, targets=("q_proj",)))
    bank.load("y", random_adapter(spec, 2, seed=2, targets=("v_proj",)))
    vx, vy = bank.view("x"), bank.view("y")
    assert set(vx).isdisjoint(vy) and bank.view(None) is None
    held = vx["model.layers.0.self_attn.q_proj"][0].copy()
    op = bank.swap("x", "z", random_adapter(spec, 2, seed=3, targets=("q_proj",)))
    assert op.op == "swap" and op.sram_bytes_freed == op.sram_bytes_written == bank.stored("z").nbytes
    assert bank.names == ["y", "z"]
    np.testing.assert_array_equal(vx["model.layers.0.self_attn.q_proj"][0], held)  # the old request is unchanged
    assert not np.array_equal(bank.view("z")["model.layers.0.self_attn.q_proj"][0], held)
    with pytest.raises(ValueError):
        vy["model.layers.0.self_attn.v_proj"][1][0, 0] = 1.0


def test_bank_errors():
    spec = load_model_spec("smollm2-135m")
    bank = AdapterBank(ROMA, spec, fmt=G128, kv=KvConfig(context_tokens=512))
    bank.load("x", random_adapter(spec, 1, targets=("q_proj",)))
    with pytest.raises(AdapterError, match="already loaded"):
        bank.load("x", random_adapter(spec, 1, targets=("q_proj",)))
    with pytest.raises(AdapterError, match=r"no adapter named 'nope' is loaded \(loaded: x\)"):
        bank.view("nope")
    with pytest.raises(AdapterError, match="not supported"):
        AdapterBank(ROMA, spec, fmt=G128, precision="int8")
    with pytest.raises(AdapterError, match="does not exist"):
        bank.load("y", "/nonexistent/adapter")


def test_for_image_follows_the_images_layer_groups(tmp_path):
    from lora_helpers import quantize_tiny, tiny_llama

    from romachip.rom import burn

    image = burn(quantize_tiny(tiny_llama()), ROMA, tmp_path / "g.rom", strategy="layer_groups", num_groups=2)
    bank = AdapterBank.for_image(image, kv=KvConfig(context_tokens=16))
    np.testing.assert_array_equal(bank.placement.tiles["unit"], image.placement.tiles["unit"])
    np.testing.assert_array_equal(bank.placement.kv_bytes_per_token, image.placement.kv_bytes_per_token)
