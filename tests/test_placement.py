"""Placement: every weight placed exactly once, whole rows per tile, offsets disjoint, capacity enforced."""

import re
import time

import numpy as np
import pytest

from romachip import placement as placement_rules
from romachip.compile import (
    EMBED_NAME,
    HEAD_NAME,
    TensorEntry,
    compile_placement,
    linear_name,
    model_tensors,
    place_tensors,
)
from romachip.errors import CapacityError, FormatError
from romachip.perf.mapping import PlacementView
from romachip.quant.formats import WeightFormat
from romachip.spec import load_chip, load_model_spec
from romachip.spec.chip import MeshSpec, RomArray
from romachip.tensor_bits import StoragePolicy
from romachip.workload import KvConfig, LoraConfig

ROMA = load_chip("roma")


def tiny_chip(rom_macros: int = 1, macro_rows: int = 64):
    """2x3 matrix units around one vector row; each L-Unit holds macro_rows x 64 bits per macro."""
    rom = RomArray(macro_rows=macro_rows, macro_cols=64, macros=rom_macros, brom=True, fused=True)
    return ROMA.model_copy(
        update={
            "name": "tiny",
            "mesh": MeshSpec(rows=3, cols=3, row_roles=["matrix", "vector", "matrix"]),
            "l_unit": ROMA.l_unit.model_copy(update={"rom": rom}),
        }
    )


def coverage(p, name):
    """Times each weight of `name` is covered by some tile."""
    out_f, in_f = p.tensor_entry(name).shape
    hits = np.zeros((out_f, in_f), dtype=np.int64)
    for t in p.tensor_tiles(name):
        hits[t.row_start : t.row_stop, t.col_start : t.col_stop] += 1
    return hits


@pytest.mark.parametrize("strategy", ["spread", "layer_groups"])
def test_every_weight_placed_exactly_once(strategy):
    spec = load_model_spec("smollm2-135m")
    p = compile_placement(ROMA, spec, WeightFormat(4, 128), strategy=strategy)
    names = [t.name for t in p.tensors]
    assert names[-1] == EMBED_NAME and HEAD_NAME not in names  # SmolLM2 ties its LM head: one copy, used last
    assert len(names) == 1 + 9 * spec.num_layers + 1  # table, 7 projections + 2 norms per block, final norm
    norm = "model.layers.3.post_attention_layernorm.weight"
    for name in (EMBED_NAME, linear_name(0, "k_proj"), linear_name(29, "down_proj"), norm, "model.norm.weight"):
        assert (coverage(p, name) == 1).all()
    # rows of every tensor sum to its height: nothing lost, nothing doubled
    rows = np.bincount(p.tiles["tensor"], weights=p.tiles["row_stop"] - p.tiles["row_start"])
    assert rows.tolist() == [t.shape[0] for t in p.tensors]


def test_tiles_hold_whole_rows_so_groups_never_split():
    spec = load_model_spec("smollm2-135m")
    fmt = WeightFormat(4, 64)
    p = compile_placement(ROMA, spec, fmt)
    quantized = np.array([p.tensors[i].fmt is not None for i in p.tiles["tensor"]])
    t = {k: v[quantized] for k, v in p.tiles.items()}
    widths = np.array([p.tensors[i].shape[1] for i in t["tensor"]])
    assert (t["col_start"] == 0).all() and (t["col_stop"] == widths).all()
    rows = t["row_stop"] - t["row_start"]
    groups = -(-widths // 64)
    assert (t["scale_bits"] == rows * groups * 16).all()
    assert (t["zero_bits"] == rows * groups * 4).all()
    assert (t["code_bits"] == rows * widths * 4).all()


@pytest.mark.parametrize("strategy", ["spread", "layer_groups"])
def test_rom_ranges_disjoint_word_aligned_and_inside_the_unit(strategy):
    p = compile_placement(ROMA, load_model_spec("smollm2-135m"), WeightFormat(2, 128), strategy=strategy)
    t = p.tiles
    assert p.align_bits == 4 * 64  # B-ROM groups of four 64-bit words
    assert (t["rom_offset_bits"] % p.align_bits == 0).all()
    assert (t["rom_span_bits"] >= t["code_bits"] + t["scale_bits"] + t["zero_bits"]).all()
    for u in (0, 77, p.units - 1):
        idx = p.tile_indices(unit=u)
        off, span = t["rom_offset_bits"][idx], t["rom_span_bits"][idx]
        assert off[0] == 0 and (off[1:] == off[:-1] + span[:-1]).all()  # back to back, no overlap
        assert off[-1] + span[-1] <= p.unit_rom_bits


def test_totals_agree_with_the_format():
    spec = load_model_spec("llama-3.2-3b")
    fmt = WeightFormat(4, 128)
    p = compile_placement(ROMA, spec, fmt)
    code = scale = zero = 0
    for t in model_tensors(spec, fmt):
        if t.fmt is None:  # an RMSNorm vector, FP16
            code += 16 * t.shape[1]
            continue
        tb = fmt.storage_bits(*t.shape)
        code, scale, zero = code + tb.code_bits, scale + tb.scale_bits, zero + tb.zero_bits
    got = p.bits_by_kind()
    assert (got["code_bits"], got["scale_bits"], got["zero_bits"]) == (code, scale, zero)
    assert p.unit_bits().sum() == code + scale + zero


def test_spread_balances_rom_within_one_row_per_shape():
    p = compile_placement(ROMA, load_model_spec("llama-3.2-3b"), WeightFormat(4, 128))
    used = p.unit_used_bits()
    # 3072-wide and 8192-wide rows: the imbalance is at most a handful of rows, far below 1%
    assert (used.max() - used.min()) / used.max() < 0.01
    assert p.units == 256 and set(p.unit_mesh_row.tolist()) == set(range(17)) - {8}


def test_hand_checked_tiny_placement():
    chip = tiny_chip(rom_macros=4)
    fmt = WeightFormat(4, 4)
    tensors = [TensorEntry("a", (8, 8), fmt, 0), TensorEntry("b", (3, 8), fmt, 0)]
    p = place_tensors(chip, tensors)
    assert p.units == 6 and p.unit_mesh_row.tolist() == [0, 0, 0, 2, 2, 2]
    # 8 rows over 6 units: units 0,1 get two rows; b (same width) rotates: its extra rows start at unit 2
    a = [(t.unit, t.row_start, t.row_stop) for t in p.tensor_tiles("a")]
    assert a == [(0, 0, 2), (1, 2, 4), (2, 4, 5), (3, 5, 6), (4, 6, 7), (5, 7, 8)]
    b = [(t.unit, t.row_start, t.row_stop) for t in p.tensor_tiles("b")]
    assert b == [(2, 0, 1), (3, 1, 2), (4, 2, 3)]
    t0 = p.unit_tiles(0)[0]  # 2 rows x 8 cols x 4 bits = 64 code bits; 4 groups x 16 scale, x 4 zero bits
    # three one-word segments, rounded up to a B-ROM group of four words
    assert (t0.code_bits, t0.scale_bits, t0.zero_bits, t0.rom_span_bits) == (64, 64, 16, 256)
    b2 = p.unit_tiles(2)[1]
    assert b2.tensor == "b" and b2.rom_offset_bits == 4 * 64  # after a's 1-row tile: one B-ROM group
    assert p.vector_mesh_row.tolist() == [1, 1, 1] and p.unit_vector.tolist() == [0, 1, 2, 0, 1, 2]


def test_layer_groups_keep_layers_on_their_group():
    spec = load_model_spec("smollm2-135m")
    p = compile_placement(ROMA, spec, WeightFormat(4, 128), strategy="layer_groups", num_groups=10)
    for layer in (0, 14, 29):
        units = {t.unit for t in p.tensor_tiles(linear_name(layer, "q_proj"))}
        g = (layer * 10) // spec.num_layers
        assert units <= set(range((g * 256) // 10, ((g + 1) * 256) // 10))
    assert len({t.unit for t in p.tensor_tiles(EMBED_NAME)}) == 256


def test_overflow_is_a_verdict_naming_the_unit_and_bytes():
    """An overflowing model is placed all the same (the capacity planner measures it); the Placement
    carries the verdict, and require_rom_fit() raises it."""
    spec = load_model_spec("smollm2-135m")
    p = compile_placement(tiny_chip(rom_macros=8), spec, WeightFormat(4, 128))
    assert not p.rom_fits and p.unit_used_bits().max() > p.unit_rom_bits == 4096 * 8
    pattern = r"L-Unit \d+ \(mesh row \d+, col \d+\) needs [\d,]+ bytes of ROM but holds 4,096"
    assert re.match(pattern, p.rom_overflow())
    with pytest.raises(CapacityError, match=pattern):
        p.require_rom_fit()


def test_llama_3_8b_two_bit_overflows_roma_with_embeddings_and_fits_blocks_only():
    spec = load_model_spec("llama-3-8b")
    over = compile_placement(ROMA, spec, WeightFormat(2, 128))
    assert not over.rom_fits and "256 of 256 units overflow" in over.rom_overflow()
    p = compile_placement(ROMA, spec, WeightFormat(2, 128), policy=StoragePolicy.OFF_CHIP_ALL)
    assert p.rom_fits and p.rom_overflow() is None
    assert {t.name for t in p.tensors}.isdisjoint({EMBED_NAME, HEAD_NAME})
    assert p.unit_used_bits().max() <= p.unit_rom_bits


def test_kv_and_lora_shares_sum_to_the_model_totals():
    spec = load_model_spec("llama-3.2-3b")
    lora = LoraConfig(rank=16, dtype="fp8_e4m3")
    p = compile_placement(ROMA, spec, WeightFormat(4, 128), lora=lora, kv=KvConfig(dtype="int8"))
    # KV split by token: every unit stores whole tokens (K and V of all layers, one byte each, plus a
    # 4-byte float32 scale per KV-head vector, docs/numerics.md)
    token_bytes = 2 * spec.num_layers * (spec.kv_size + 4 * spec.num_kv_heads)
    assert set(p.kv_bytes_per_token.tolist()) == {token_bytes} == {p.kv_token_bytes}
    per_layer = sum(16 * (o + i) + 2 * 4 for o, i in spec.linear_shapes().values())  # + an FP32 scale each
    assert p.lora_bytes.sum() == spec.num_layers * per_layer
    p = compile_placement(ROMA, spec, WeightFormat(4, 128), kv=KvConfig(dtype="fp16", scale_bytes_per_vector=2))
    heads = 2 * spec.num_layers * spec.num_kv_heads
    assert set(p.kv_bytes_per_token.tolist()) == {2 * 2 * spec.num_layers * spec.kv_size + 2 * heads}


def test_bad_strategy_and_policy_and_groups():
    spec = load_model_spec("smollm2-135m")
    with pytest.raises(FormatError, match="strategy 'diagonal'"):
        compile_placement(ROMA, spec, WeightFormat(), strategy="diagonal")
    with pytest.raises(FormatError, match="storage policy 'dram'; choose one of rom_weight"):
        compile_placement(ROMA, spec, WeightFormat(), policy="dram")
    with pytest.raises(FormatError, match="1..256 groups"):
        compile_placement(ROMA, spec, WeightFormat(), strategy="layer_groups", num_groups=300)


def test_llama_3_8b_compiles_fast():
    spec = load_model_spec("llama-3.1-8b")
    t0 = time.perf_counter()
    p = compile_placement(ROMA, spec, WeightFormat(2, 128), policy="off_chip_all", lora=LoraConfig())
    assert time.perf_counter() - t0 < 1.0
    assert p.num_tiles == (7 * 256 + 2) * 32 + 1  # every projection has >= 256 rows; a norm is one tile


@pytest.mark.parametrize(
    ("model", "bits", "strategy", "policy"),
    [
        ("llama-3.2-3b", 4, "spread", "rom_weight"),
        ("smollm2-135m", 2, "layer_groups", "rom_int8"),
        ("llama-3-8b", 2, "spread", "off_chip_all"),
    ],
)
def test_per_unit_view_agrees_with_the_capacity_planner(model, bits, strategy, policy):
    from romachip.capacity import lora_unit_bytes, plan

    spec, fmt, lora = load_model_spec(model), WeightFormat(bits, 128), LoraConfig(rank=16)
    p = compile_placement(ROMA, spec, fmt, strategy=strategy, policy=policy, lora=lora, kv=KvConfig())
    r = plan(ROMA, spec, fmt=fmt, lora=lora, kv=KvConfig(), policy=policy, strategy=strategy)
    assert -(-int(p.unit_bits().sum()) // 8) == r.rom.rom_bytes_needed
    assert -(-int(p.unit_used_bits().sum()) // 8) == r.rom.rom_bytes_allocated
    assert -(-int(p.unit_used_bits().max()) // 8) == r.rom.rom_unit_bytes_used_max
    assert p.kv_token_bytes == r.sram.kv_bytes_per_token and p.kv_layout == r.sram.kv_layout
    assert int(p.kv_bytes_per_token.max()) == r.sram.kv_unit_bytes_per_token_max
    assert int(p.lora_bytes.sum()) == r.sram.lora_bytes
    assert np.array_equal(p.lora_bytes, lora_unit_bytes(p, lora))


@pytest.mark.skipif(placement_rules._tiles is None, reason="the tile table's C sums are not built here")
@pytest.mark.parametrize("model,strategy", [("llama-3.2-1b", "spread"), ("smollm2-135m", "layer_groups")])
def test_the_tile_sums_in_c_are_the_numpy_ones(model, strategy, monkeypatch):
    """Each tensor's units and first-row unit, the adapters' shares and the timing view's busiest-unit figures
    come out the same from the C sums (romachip/_tiles.c) and from their NumPy forms."""
    spec = load_model_spec(model)

    def placed():
        p = compile_placement(ROMA, spec, WeightFormat(4, 128), strategy=strategy, lora=LoraConfig(rank=8))
        return p, p._tensor_units(), PlacementView(ROMA, p)

    native = placed()
    monkeypatch.setattr(placement_rules, "_tiles", None)
    plain = placed()
    (p, (first, members), view), (q, (first_q, members_q), view_q) = native, plain
    assert np.array_equal(first, first_q) and members == members_q
    assert [members.index(m) for m in members] == [members_q.index(m) for m in members_q]
    assert len({id(m) for m in members}) == len(set(members))  # equal unit sets are one tuple object
    assert np.array_equal(p.lora_bytes, q.lora_bytes) and p.lora_bytes.sum() > 0
    assert view.tensors == view_q.tensors and view.groups == view_q.groups
    assert np.array_equal(view.group_units, view_q.group_units)


@pytest.mark.skipif(placement_rules._tiles is None, reason="the tile table's C sums are not built here")
def test_the_tile_sums_refuse_what_is_not_a_tile_table():
    t = np.array([0, 1, 1], dtype=np.int64)
    with pytest.raises(ValueError, match="tensor 1 out of range"):
        placement_rules._tiles.tensor_units(t, t, t, 1, 2)
    with pytest.raises(TypeError, match="int64"):
        placement_rules._tiles.unit_row_sums(t.astype(np.int32), t, t, t, t, 2)
    with pytest.raises(ValueError, match="different lengths"):
        placement_rules._tiles.tensor_figures(t, t, t, t, t, t, t[:2], 2)
