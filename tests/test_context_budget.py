"""The bank decides the context, the engine computes: engine, adapter bank and `fit` (capacity.plan) give
the same maximum context on a grid of adapters (uniform ranks, ranks per module, layer subsets) and SRAM
sizes, because the engine asks the bank and the bank and `plan` share one rule (Placement.lora_unit_bytes,
context_limit). Before this, the engine planned on its own with one rank over every layer."""

from __future__ import annotations

import numpy as np
import pytest
from engine_models import make_tiny

from romachip.capacity import plan
from romachip.engine.generate import Engine
from romachip.errors import GenerationError
from romachip.names import PROJECTIONS, projection_module
from romachip.quant.formats import WeightFormat
from romachip.spec.chip import MeshSpec, load_chip
from romachip.spec.model import load_model_spec
from romachip.sram.bank import AdapterBank
from romachip.workload import KvConfig, LoraConfig

ROMA = load_chip("roma")
KV = KvConfig(dtype="int8", context_tokens=0)
LAYERS = 4


def small_chip(sram_unit_bytes: int):
    """Six matrix units (3x3 mesh around one vector row) of `sram_unit_bytes` H-Unit SRAM each."""
    sram = ROMA.h_unit.sram.model_copy(update={"macros": 1, "macro_rows": sram_unit_bytes // 8})  # 64-bit words
    return ROMA.model_copy(
        update={
            "name": f"small-{sram_unit_bytes}",
            "mesh": MeshSpec(rows=3, cols=3, row_roles=["matrix", "vector", "matrix"]),
            "h_unit": ROMA.h_unit.model_copy(update={"sram": sram}),
        }
    )


@pytest.fixture(scope="module")
def tiny():
    return make_tiny("gqa_tied_g32_4bit", layers=LAYERS, vocab=41)


def adapter_of(spec, ranks: dict[str, int], seed: int = 0):
    """An engine adapter mapping with these per-module ranks (small random A and B)."""
    rng = np.random.default_rng(seed)
    shapes = spec.linear_shapes()
    out = {}
    for module, r in ranks.items():
        o, i = shapes[module.rsplit(".", 1)[1]]
        out[module] = (rng.standard_normal((r, i)).astype(np.float32) * 0.01,
                       rng.standard_normal((o, r)).astype(np.float32) * 0.01, 1.0)  # fmt: skip
    return out


def uniform(rank: int, targets=PROJECTIONS, layers=range(LAYERS)) -> dict[str, int]:
    return {projection_module(layer, p): rank for layer in layers for p in targets}


# (name, per-module ranks, the LoraConfig `fit` expresses it with, or None when fit cannot: layer subsets)
GRID = [
    ("rank 2, all", uniform(2), LoraConfig(rank=2)),
    ("rank 8, all", uniform(8), LoraConfig(rank=8)),
    ("rank 8 q/v", uniform(8, ("q_proj", "v_proj")), LoraConfig(rank=8, targets=("q_proj", "v_proj"))),
    ("ranks per module", {**uniform(8, ("q_proj",)), **uniform(2, ("down_proj",))}, None),
    ("rank 8 q/v, layers 0-1", uniform(8, ("q_proj", "v_proj"), range(2)), None),
    ("rank 16 mlp, layer 3", uniform(16, ("gate_proj", "up_proj", "down_proj"), [3]), None),
]


@pytest.mark.parametrize("sram_unit_bytes", [2048, 4096, 8192])
def test_engine_bank_and_fit_agree_on_a_grid(tiny, sram_unit_bytes):
    chip = small_chip(sram_unit_bytes)
    spec, fmt = tiny.quantized.spec, tiny.quantized.fmt
    engine = Engine(tiny.quantized, chip=chip)  # its own (default) bank of this chip
    bank = AdapterBank(chip, spec, fmt=fmt, kv=KV)
    base = plan(chip, spec, fmt=fmt, lora=LoraConfig(rank=0), kv=KV).context.max_context_tokens
    assert engine.max_context() == bank.max_context_tokens == base < spec.max_position_embeddings  # SRAM binds
    for name, ranks, lora in GRID:
        adapter = adapter_of(spec, ranks)
        by_bank = bank.what_if(ranks).max_context_after
        assert engine.max_context(adapter) == bank.context_for(adapter) == by_bank, name
        if lora is not None:
            assert by_bank == plan(chip, spec, fmt=fmt, lora=lora, kv=KV).context.max_context_tokens, name
        else:  # the old engine's rule: the largest rank on every adapted projection of every layer
            rank = max(ranks.values())
            targets = tuple(p for p in PROJECTIONS if any(m.endswith(p) for m in ranks))
            everywhere = plan(chip, spec, fmt=fmt, lora=LoraConfig(rank=rank, targets=targets), kv=KV)
            assert everywhere.context.max_context_tokens <= by_bank <= base, name


def test_the_engine_admits_what_the_bank_admits_and_refuses_one_more(tiny):
    chip = small_chip(4096)
    engine = Engine(tiny.quantized, chip=chip)
    adapter = adapter_of(tiny.quantized.spec, uniform(8, ("q_proj", "v_proj"), range(2)))
    limit = engine.max_context(adapter)
    everywhere = plan(chip, tiny.quantized.spec, fmt=tiny.quantized.fmt, kv=KV,
                      lora=LoraConfig(rank=8, targets=("q_proj", "v_proj"))).context.max_context_tokens  # fmt: skip
    assert limit > everywhere  # the bug: the engine used to refuse every context above `everywhere`
    ids = [3 + i % 30 for i in range(limit + 1)]
    assert engine.logits(ids[:limit], adapter).shape == (limit, 41)
    with pytest.raises(GenerationError, match=f"{limit + 1} tokens of context do not fit"):
        engine.logits(ids, adapter)


def test_resident_adapters_share_the_budget_the_engine_uses(tiny):
    """With the bank given, the engine's context is the bank's with every resident adapter counted once."""
    from lora_helpers import random_adapter

    chip = small_chip(8192)
    spec = tiny.quantized.spec
    bank = AdapterBank(chip, spec, fmt=tiny.quantized.fmt, kv=KV)
    engine = Engine(tiny.quantized, chip=chip, bank=bank)
    before = engine.max_context()
    bank.load("a", random_adapter(spec, 8, seed=1))
    view = bank.view("a")
    assert engine.max_context(view) == engine.max_context() == bank.max_context_tokens < before
    with pytest.raises(GenerationError, match="adapter bank is for"):
        Engine(tiny.quantized, chip=chip, kv="fp16", bank=bank)  # an int8 bank sizes no fp16 cache


def test_smollm2_measured_case():
    """The issue's measurement: SmolLM2, H-Unit SRAM cut to 16 MiB, a rank-64 q/v adapter on layers 0-3.
    The old engine planned it as rank 64 on all 30 layers (569 tokens); the bank, and now the engine,
    count the four layers it has (1,280 tokens, the same as no adapter: the limiting H-Unit holds none)."""
    spec, fmt, sram = load_model_spec("smollm2-135m"), WeightFormat(4, 128), 16 * 2**20
    bank = AdapterBank(ROMA, spec, fmt=fmt, kv=KV, sram_bytes=sram)
    ranks = uniform(64, ("q_proj", "v_proj"), range(4))
    assert bank.context_for(adapter_of(spec, ranks)) == bank.what_if(ranks).max_context_after == 1280
    qv = LoraConfig(rank=64, targets=("q_proj", "v_proj"))
    assert plan(ROMA, spec, fmt=fmt, lora=qv, kv=KV, sram_bytes=sram).context.max_context_tokens == 569
