"""The two layout rules the functional side and the timing side share, checked against brute force:

- KV cache: token_round_robin (placement.py). Token t of a layer lives in the unit of rank t mod n of the
  layer's ring (the units holding its tiles); the capacity planner, the adapter bank and the timing model
  all read it from the Placement.
- ROM words: `RomArray.word_location` maps a unit's logical word address to (macro, row); the timing
  model's ROM rows per tile (`macro_words_max`) is the closed form of counting it.
"""

from __future__ import annotations

import numpy as np
import pytest

from romachip.capacity import lora_unit_bytes, plan
from romachip.compile import compile_placement
from romachip.errors import CapacityError
from romachip.graph import OpKind, decode_ops, prefill_ops
from romachip.perf.event_kernel import Simulator
from romachip.perf.mapping import PlacementView
from romachip.perf.simulate import ChipModel
from romachip.perf.timing import PhaseBuilder
from romachip.quant.formats import WeightFormat
from romachip.spec import load_chip, load_model_spec
from romachip.spec.chip import RomArray
from romachip.workload import KvConfig, LoraConfig

ROMA = load_chip("roma")
G128 = WeightFormat(4, 128)


def with_rom(chip, **update):
    rom = chip.l_unit.rom.model_copy(update=update)
    return chip.model_copy(update={"l_unit": chip.l_unit.model_copy(update={"rom": rom})})


# --- ROM words: address -> (macro, row, column) ---------------------------------------------------------


def test_word_location_by_hand():
    inter = RomArray(macro_rows=4, macro_cols=64, macros=3, brom=True, fused=True, word_interleave=True)
    contig = inter.model_copy(update={"word_interleave": False})
    assert [tuple(map(int, inter.word_location(w))) for w in (0, 1, 2, 3, 7, 11)] == [
        (0, 0), (1, 0), (2, 0), (0, 1), (1, 2), (2, 3)  # macro w % 3, row w // 3
    ]  # fmt: skip
    assert [tuple(map(int, contig.word_location(w))) for w in (0, 1, 3, 4, 7, 11)] == [
        (0, 0), (0, 1), (0, 3), (1, 0), (1, 3), (2, 3)  # macro w // 4, row w % 4
    ]  # fmt: skip
    roma = ROMA.l_unit.rom  # docs/rom-format.md's example: 952 macros of 1024 rows
    assert tuple(map(int, roma.word_location(1000))) == (1000 % 952, 1000 // 952) == (48, 1)
    assert tuple(map(int, with_rom(ROMA, word_interleave=False).l_unit.rom.word_location(1000))) == (0, 1000)
    two_bit = inter.model_copy(update={"bits_per_cell": 2})  # 128-bit words, 2 bits per column
    assert two_bit.word_bits == 128
    assert tuple(map(int, two_bit.bit_location(128 * 7 + 9))) == (1, 2, 4)  # word 7, bit 9 -> column 4


@pytest.mark.parametrize("interleave", [True, False])
def test_word_location_is_a_bijection_onto_macro_rows(interleave):
    rom = RomArray(macro_rows=8, macro_cols=64, macros=5, brom=False, fused=False, word_interleave=interleave)
    macro, row = rom.word_location(np.arange(rom.words))
    assert macro.min() == 0 and macro.max() == 4 and row.min() == 0 and row.max() == 7
    assert len(set(zip(macro.tolist(), row.tolist(), strict=True))) == rom.words == 40


def test_word_outside_the_rom_is_refused():
    rom = RomArray(macro_rows=8, macro_cols=64, macros=5, brom=False, fused=False)
    with pytest.raises(CapacityError, match=r"ROM word 40 is outside an L-Unit ROM of 40 words \(5 macros x 8 rows\)"):
        rom.word_location([3, 40])
    with pytest.raises(CapacityError, match="ROM word -1"):
        rom.word_location(-1)


def busiest_macro_rows_brute(rom: RomArray, first: int, words: int) -> int:
    """Count, per macro, the words of [first, first + words) that word_location puts there."""
    macro, _ = rom.word_location(np.arange(first, first + words))
    return int(np.bincount(macro, minlength=rom.macros).max()) if words else 0


@pytest.mark.parametrize("interleave", [True, False])
def test_macro_words_max_is_word_location_counted(interleave):
    rom = RomArray(macro_rows=16, macro_cols=64, macros=6, brom=True, fused=True, word_interleave=interleave)
    rng = np.random.default_rng(0)
    firsts = rng.integers(0, rom.words, 300)
    counts = np.minimum(rng.integers(1, 60, 300), rom.words - firsts)
    want = [busiest_macro_rows_brute(rom, int(f), int(n)) for f, n in zip(firsts, counts, strict=True)]
    assert rom.macro_words_max(firsts, counts).tolist() == want


@pytest.mark.parametrize("interleave", [True, False])
def test_perf_rom_rows_agree_with_the_word_mapping(interleave):
    """Per tensor, the timing model's ROM rows (busiest unit, busiest macro) equal counting word_location
    over every tile's words of the real SmolLM2 placement; a contiguous layout makes the decode q_proj
    ROM-bound, and its simulated task lasts exactly those rows plus the pipeline fill."""
    chip = with_rom(ROMA, word_interleave=interleave)
    spec = load_model_spec("smollm2-135m")
    p = compile_placement(chip, spec, G128)
    view = PlacementView(chip, p)
    rom, t = chip.l_unit.rom, p.tiles
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.7.mlp.down_proj.weight"):
        per_unit = {}
        for i in p.tile_indices(tensor=name):
            first, words = int(t["rom_offset_bits"][i]) // p.word_bits, -(-int(t["rom_span_bits"][i]) // p.word_bits)
            u = int(t["unit"][i])
            per_unit[u] = per_unit.get(u, 0) + busiest_macro_rows_brute(rom, first, words)
        assert view.tensor(name).rom_rows_max == max(per_unit.values())
    model = ChipModel(chip, spec, fmt=G128, lora=None)
    task = next(k for k in model.decode(5, every_layer=True).schedule.tasks if k.name == "layers.0.q_proj")
    rows = view.tensor("model.layers.0.self_attn.q_proj.weight").rom_rows_max
    assert task.bound == ("macs" if interleave else "rom")
    if not interleave:
        assert task.duration_cycles == rows + chip.l_unit.pipeline_depth_cycles


# --- KV cache: token round robin ------------------------------------------------------------------------


def kv_tokens_brute(p, layer: int, keys: int) -> dict[int, int]:
    """Tokens per unit of one layer, token by token: the ring is the units holding the layer's tiles."""
    layer_of = np.array([e.layer for e in p.tensors])
    ring = sorted(set(p.tiles["unit"][layer_of[p.tiles["tensor"]] == layer].tolist()))
    held = dict.fromkeys(ring, 0)
    for tok in range(keys):
        held[ring[tok % len(ring)]] += 1
    return held


@pytest.mark.parametrize("strategy", ["spread", "layer_groups"])
def test_placement_kv_rule_is_token_round_robin(strategy):
    spec = load_model_spec("smollm2-135m")
    p = compile_placement(ROMA, spec, G128, strategy=strategy)
    assert p.kv_layout == "token_round_robin" == p.summary()["kv_layout"]
    per_layer = 2 * spec.num_kv_heads * (spec.head_dim + 4)  # K and V of one layer, int8 + f32 scale: 408
    for layer in (0, 13, 29):
        for keys in (1, 7, 300, 1001):
            held = kv_tokens_brute(p, layer, keys)
            tokens = p.kv_tokens(keys)
            assert {u: int(tokens[u]) for u in held} == held
            assert all(p.kv_unit_of(tok, layer) in held for tok in (0, keys - 1))
        ring = list(held)
        layers_in_ring = spec.num_layers if strategy == "spread" else 1
        assert set(p.kv_bytes_per_token[ring].tolist()) == {layers_in_ring * per_layer}
    assert p.kv_token_bytes == spec.num_layers * per_layer == p.summary()["kv_bytes_per_token"]
    assert p.summary()["kv_rings"] == (1 if strategy == "spread" else spec.num_layers)


@pytest.mark.parametrize("strategy", ["spread", "layer_groups"])
def test_perf_kv_tokens_per_unit_are_the_placements(strategy):
    """The keys the timing model charges the busiest H-Unit of a layer == the Placement's tokens of the
    busiest unit of that layer's ring, for decode and prefill ops; the decode signature too."""
    spec = load_model_spec("smollm2-135m")
    model = ChipModel(ROMA, spec, fmt=G128, lora=None, strategy=strategy)
    p = model.placement
    builder = PhaseBuilder(Simulator(), ROMA, model.view)
    ops = decode_ops(spec, 700, fmt=G128) + prefill_ops(spec, 40, past_tokens=100, fmt=G128)
    attention = [op for op in ops if op.kind in (OpKind.ATTENTION_SCORE, OpKind.ATTENTION_VALUE)]
    for op in attention[:: max(1, len(attention) // 12)]:
        held = kv_tokens_brute(p, op.layer, op.context)
        _, _, keys_u, holders = builder._attention_unit_work(op)
        assert keys_u == max(held.values()) and holders == sum(v > 0 for v in held.values())
    fit = plan(ROMA, spec, fmt=G128, lora=LoraConfig(rank=0), kv=KvConfig(context_tokens=700), strategy=strategy)
    assert fit.sram.kv_unit_tokens_max == max(model.view.kv_keys(layer, 700)[0] for layer in range(spec.num_layers))
    sig = model.context_signature(700)[:-1]  # last entry: softmax cycles
    rings = int(p.kv_ring.max()) + 1
    assert sig == tuple(int(p.kv_tokens(701)[p.kv_ring == r].max()) for r in range(rings))


@pytest.mark.parametrize(
    ("model", "strategy", "rank", "sram_mib"),  # SRAM small enough that the H-Units limit the context
    [("llama-3.2-3b", "spread", 16, 64), ("smollm2-135m", "layer_groups", 8, 32), ("smollm2-135m", "spread", 4, 32)],
)
def test_max_context_is_tight_under_the_kv_rule(model, strategy, rank, sram_mib):
    """At the planner's maximum L every H-Unit's LoRA + its tokens' K/V fit its SRAM; at L + 1 one does not."""
    spec, lora = load_model_spec(model), LoraConfig(rank=rank)
    sram = sram_mib * 2**20
    r = plan(ROMA, spec, fmt=G128, lora=lora, strategy=strategy, sram_bytes=sram)
    p = compile_placement(ROMA, spec, G128, strategy=strategy, lora=lora, kv=KvConfig())
    lora_u = -(-lora_unit_bytes(p, lora) // 8) * 8  # whole 64-bit SRAM words
    unit = sram // ROMA.matrix_units

    def fits(n: int) -> bool:
        return bool((lora_u + p.kv_tokens(n) * p.kv_bytes_per_token <= unit).all())

    L = r.context.max_context_tokens
    assert 0 < L < spec.max_position_embeddings and fits(L) and not fits(L + 1)
