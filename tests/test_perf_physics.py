"""Physics of the timing, energy and area models on the roma preset: more MACs never slow anything,
2-bit weights decode faster than 4-bit, decode slows as the KV cache grows, LoRA rank costs time, energy
is the sum of its parts, a chip without B-ROM is larger; and the timing model counts what the graph does."""

import pytest

from romachip.graph import OpKind, decode_ops, totals
from romachip.perf.area import chip_area, fused_area_um2, macro_model, memory_area_um2
from romachip.perf.energy import Event, l_macs
from romachip.perf.rates import l_unit_cycles
from romachip.perf.simulate import ChipModel, report
from romachip.quant.formats import WeightFormat
from romachip.spec import load_chip, load_model_spec, load_tech
from romachip.workload import LoraConfig

G128 = WeightFormat(4, 128)


@pytest.fixture(scope="module")
def roma():
    return load_chip("roma")


@pytest.fixture(scope="module")
def small(roma):
    """Llama-3.2-1B, 4-bit, rank-16 LoRA: the smallest shipped LLaMA-3 model, fast to simulate."""
    return ChipModel(roma, load_model_spec("llama-3.2-1b"), fmt=G128, lora=LoraConfig(rank=16))


def with_macs(chip, factor):
    macs = {b: n * factor for b, n in chip.l_unit.macs_per_cycle_by_weight_bits.items()}
    return chip.model_copy(update={"l_unit": chip.l_unit.model_copy(update={"macs_per_cycle_by_weight_bits": macs})})


def test_l_unit_cycles_by_hand(roma):
    # 12 rows x 3072 inputs at 1024 4-bit MACs/cycle = 36 cycles, + 4 pipeline
    assert l_unit_cycles(roma, 12, 3072, 4, 1, 1) == (40, "macs")
    # 2-bit codes: 2048 MACs/cycle, half the cycles
    assert l_unit_cycles(roma, 12, 3072, 2, 1, 1) == (22, "macs")
    # a ROM that delivers one row per 100 cycles bounds the op
    assert l_unit_cycles(roma, 12, 3072, 4, 1, 100) == (104, "rom")


def test_doubling_macs_never_slows_and_speeds_prefill(roma, small):
    fast = ChipModel(with_macs(roma, 2), small.spec, fmt=G128, lora=small.lora)
    for ctx in (0, 300, 2000):
        assert fast.decode(ctx).cycles <= small.decode(ctx).cycles
    slow_pre, fast_pre = small.prefill(64), fast.prefill(64)
    assert small.prefill(64).bound_shares()["macs"] > 0.9  # prefill is MAC-bound ...
    assert fast_pre.cycles < 0.6 * slow_pre.cycles  # ... so twice the MACs nearly halves it


def test_two_bit_decodes_faster_than_four_bit(roma, small):
    two = ChipModel(roma, small.spec, fmt=WeightFormat(2, 128), lora=small.lora)
    for ctx in (0, 1024):
        assert two.decode(ctx).cycles < small.decode(ctx).cycles


def test_decode_rate_falls_monotonically_with_context(small):
    cycles = [small.decode(c).cycles for c in range(0, 4097, 256)]
    assert all(b >= a for a, b in zip(cycles, cycles[1:], strict=False))
    assert cycles[-1] > 1.3 * cycles[0]


def test_lora_rank_costs_decode_time(roma, small):
    rates = []
    for rank in (0, 16, 64):
        cm = ChipModel(roma, small.spec, fmt=G128, lora=LoraConfig(rank=rank))
        rates.append(cm.decode(0).cycles)
    assert rates[0] < rates[1] < rates[2]


def test_composed_decode_equals_whole_simulation(small):
    for ctx in (0, 777):
        composed, whole = small.decode(ctx), small.decode(ctx, every_layer=True)
        assert composed.cycles == whole.cycles
        assert composed.events == pytest.approx(whole.events, rel=1e-12)


def test_energy_per_token_is_the_sum_of_its_parts(small):
    r = report(small, 64, 8)
    assert r.energy_per_token_mj == pytest.approx(sum(r.energy_per_token_by_part_mj.values()), rel=1e-12)
    e = small.energy(small.decode(0))
    assert e.total_mj == pytest.approx(sum(e.by_unit_mj().values()), rel=1e-12)
    assert e.total_mj == pytest.approx(sum(e.by_event_mj().values()), rel=1e-12)
    # one part by hand: ROM bits read x fused-cell energy per bit (pJ -> mJ)
    bits = small.decode(0).count(Event.ROM_BITS)
    ph = small.physics  # at 500 MHz the chip runs at 0.55 V: (0.55 / 0.75)^2 of the nominal-voltage table
    assert ph.op.dynamic_energy_scale == pytest.approx((0.55 / 0.75) ** 2)
    pj = small.tech.energy.fused_read_pj_per_bit * ph.rom_read_scale * ph.op.dynamic_energy_scale
    assert e.parts_mj[("l_units", "rom_read")] == pytest.approx(bits * pj * 1e-9)


def test_no_brom_is_larger(roma):
    tech = load_tech("n7")
    rom = roma.l_unit.rom
    plain = roma.model_copy(
        update={
            "l_unit": roma.l_unit.model_copy(update={"rom": rom.model_copy(update={"brom": False, "fused": False})})
        }
    )
    unfused = roma.model_copy(
        update={"l_unit": roma.l_unit.model_copy(update={"rom": rom.model_copy(update={"fused": False})})}
    )
    a_fused, a_brom, a_plain = (chip_area(c, tech).total_mm2 for c in (roma, unfused, plain))
    assert a_fused < a_brom < a_plain


def test_macro_model_density_falls_for_shallow_macros():
    tech = load_tech("n7")
    m = macro_model(tech.rom_macro)
    dens = [m.density_mbit_per_mm2(r) for r in (512, 1024, 2048, 4096, 8192, 16384)]
    assert dens == sorted(dens)
    # SRAM of the same organisation is larger than ROM; B-ROM is 0.6 of ROM; a fused cell is no larger
    assert memory_area_um2(tech, "sram", 1024, 64, 1) > memory_area_um2(tech, "rom", 1024, 64, 1)
    brom = memory_area_um2(tech, "brom", 1024, 64, 1)
    assert brom == pytest.approx(0.6 * memory_area_um2(tech, "rom", 1024, 64, 1))
    assert fused_area_um2(tech, brom, 100.0) < brom + 100.0


def test_timing_counts_what_the_graph_counts(small):
    """The timing model's ROM bits, MACs and KV bytes per decoded token agree with the op graph."""
    ctx = 500
    run = small.decode(ctx, every_layer=True)
    ops = decode_ops(
        small.spec, ctx, fmt=G128, lora=small.lora, kv_scale_bytes_per_vector=small.kv.scale_bytes_per_vector
    )
    t = totals(ops)
    rom_kinds = (OpKind.PROJECTION, OpKind.LM_HEAD, OpKind.EMBEDDING)
    assert run.count(Event.ROM_BITS) == sum(op.weight_bits_read for op in ops if op.kind in rom_kinds)
    assert run.count(l_macs(4)) == run.count(Event.L_MACS) == t.weight_macs
    assert run.count(Event.LORA_MACS) == t.lora_macs
    assert run.count(Event.ATTENTION_MACS) == t.attention_macs
    lora_bits = sum(op.weight_bits_read for op in ops if op.kind in (OpKind.LORA_A, OpKind.LORA_B))
    assert run.count(Event.H_SRAM_READ_BITS) == 8 * t.kv_bytes_read + lora_bits
    assert run.count(Event.H_SRAM_WRITE_BITS) == 8 * t.kv_bytes_written
    # the busiest unit's share of a projection covers the op, to within one row per unit
    for name, work in small.view.tensors.items():
        if ".q_proj." in name:
            assert work.rows_max * work.units >= work.out_features
            assert (work.rows_max - 1) * work.units < work.out_features


def test_simulate_api_refuses_empty_requests_and_reports(roma):
    from romachip.errors import CapacityError
    from romachip.perf.simulate import simulate

    spec = load_model_spec("llama-3.2-1b")
    with pytest.raises(CapacityError, match="at least 1 token, got 0/4"):
        simulate(roma, spec, fmt=G128, prompt_tokens=0, generate_tokens=4)
    r = simulate(roma, spec, fmt=G128, lora=LoraConfig(rank=16), prompt_tokens=16, generate_tokens=4)
    assert r.lora_rank == 16 and r.weight_bits == 4 and r.ttft_ms > 0
    assert set(r.decode_tokens_per_s_by_context) == {16, 18}  # first and last context of the run


def test_l_unit_study_needs_a_reference_unit(roma):
    from romachip.perf.area import l_unit_study

    bare = roma.model_copy(update={"l_unit_study": None})
    with pytest.raises(ValueError, match="defines no l_unit_study"):
        l_unit_study(bare, load_tech("n7"))


def test_activation_precision_drives_noc_bytes_and_l_unit_macs(roma, small):
    """bf16 activations (the preset's, as the engine computes) move 2 bytes per element and take the
    block-floating-point MAC (16-bit aligned integer x 4-bit code); an int8 chip moves 1 byte and takes int4."""
    from romachip.errors import SpecError
    from romachip.perf.area import l_unit_logic_um2

    tech = load_tech(roma.tech)
    assert roma.precision.activation == "bf16"
    int8 = roma.model_copy(update={"precision": roma.precision.model_copy(update={"activation": "int8"})})
    dyn = small.physics.op.dynamic_energy_scale
    assert small.energy_model.pj(l_macs(4)) == pytest.approx(tech.energy.mac_pj["bfp16_int4"] * dyn)
    assert tech.energy.mac_pj["bfp16_int4"] == 0.050
    int8_model = ChipModel(int8, small.spec, fmt=G128, lora=small.lora, placement=small.placement)
    assert int8_model.energy_model.pj(l_macs(4)) == pytest.approx(tech.energy.mac_pj["int4"] * dyn)
    # the L-Unit MAC array is sized for its widest use: 1024 4-bit MACs of 15.5 um^2 = 2048 2-bit ones of 7.75,
    # plus 2048 / 64 adder trees' 32-bit accumulators (flop 0.25 + adder 0.27 um^2 per bit)
    assert l_unit_logic_um2(roma, tech) == pytest.approx(max(1024 * 15.5, 2048 * 7.75, 512 * 31.0) + 32 * 32 * 0.52)
    bf16_run = small.decode(0, every_layer=True)
    int8_run = int8_model.decode(0, every_layer=True)
    assert bf16_run.count(Event.VECTOR_SRAM_READ_BITS) == 2 * int8_run.count(Event.VECTOR_SRAM_READ_BITS)
    assert bf16_run.count(Event.NOC_BIT_HOPS) > int8_run.count(Event.NOC_BIT_HOPS)
    assert bf16_run.cycles >= int8_run.cycles
    no_bfp = tech.model_copy(update={"mac_area_um2": {k: v for k, v in tech.mac_area_um2.items() if "bfp" not in k}})
    with pytest.raises(SpecError, match="no L-Unit MAC entry for bf16 activations x 4-bit weights"):
        l_unit_logic_um2(roma, no_bfp)
