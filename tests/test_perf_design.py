"""Every design choice costs what it costs: logic area, clock (voltage), macro depth, bits per cell, the host
link, the floorplan's vector row, prefill batches within the vector SRAM. Each test pins a direction and a
magnitude checked by hand from the presets (roma.yaml, n7.yaml, hosts/lpddr5x.yaml)."""

import gc
import math

import pytest
import yaml

from romachip.cli.main import main
from romachip.errors import CapacityError, FormatError, SpecError
from romachip.graph import decode_ops
from romachip.perf import design
from romachip.perf.area import chip_area, l_unit_logic_um2, l_unit_um2
from romachip.perf.energy import Event, l_macs
from romachip.perf.physics import chip_physics, operating_point
from romachip.perf.simulate import ChipModel, _drop_layer
from romachip.quant.formats import WeightFormat
from romachip.spec import load_chip, load_model_spec, load_tech
from romachip.tensor_bits import StoragePolicy
from romachip.workload import LoraConfig

G128 = WeightFormat(4, 128)


@pytest.fixture(scope="module")
def roma():
    return load_chip("roma")


@pytest.fixture(scope="module")
def n7():
    return load_tech("n7")


@pytest.fixture(scope="module")
def small(roma):
    return ChipModel(roma, load_model_spec("llama-3.2-1b"), fmt=G128, lora=LoraConfig(rank=16))


def replace_in(model, path: str, value):
    """A copy of a pydantic spec with the dotted field `path` set to `value`."""
    head, _, rest = path.partition(".")
    if not rest:
        return model.model_copy(update={head: value})
    return model.model_copy(update={head: replace_in(getattr(model, head), rest, value)})


def test_more_l_unit_macs_grow_the_die(roma, n7):
    # roma's MACs fill exactly the device layer its B-ROM array leaves free (n7.yaml, calibrated), so every
    # added MAC is paid for: 2x the 4-bit MACs adds 1024 x 15.5 um^2 + 16 more 32-bit accumulators (0.52
    # um^2 per bit) per L-Unit, over a 70.22% floorplan utilisation, on 256 units
    double = replace_in(roma, "l_unit.macs_per_cycle_by_weight_bits", {4: 2048, 2: 4096, 8: 1024})
    a1, a2 = chip_area(roma, n7), chip_area(double, n7)
    added_um2 = l_unit_logic_um2(double, n7) - l_unit_logic_um2(roma, n7)
    assert added_um2 == pytest.approx(1024 * 15.5 + 32 * 32 * 0.52)
    growth = a2.total_mm2 - a1.total_mm2
    assert growth == pytest.approx(added_um2 * 256 / 0.7022 / 1e6, rel=0.01)  # ~5.9 mm^2
    assert a2.total_mm2 > a1.total_mm2 + 5
    # a fused cell still hides what fits: the same L-Unit without fusion pays for all of its logic
    unfused = replace_in(roma, "l_unit.rom", roma.l_unit.rom.model_copy(update={"fused": False}))
    assert sum(l_unit_um2(unfused, n7).values()) > sum(l_unit_um2(roma, n7).values())


def test_faster_clock_costs_voltage_and_energy(roma, n7, small):
    op500 = operating_point(roma, n7)
    assert op500.voltage_v == pytest.approx(0.55)  # 500 MHz needs less than min_v: the floor
    op1g = operating_point(roma, n7, 1.0e9)
    assert op1g.voltage_v == pytest.approx(0.75) and op1g.dynamic_energy_scale == pytest.approx(1.0)
    fast = small.chip.model_copy(update={"clock_hz": 1.0e9})
    cm = ChipModel(fast, small.spec, fmt=G128, lora=small.lora, placement=small.placement)
    slow_run, fast_run = small.decode(0), cm.decode(0)
    e_slow, e_fast = small.energy(slow_run).total_mj, cm.energy(fast_run).total_mj
    # a hop of 1.33 mm x 80 ps/mm + 30 ps fits 7 times in 1 ns at 0.75 V (8 times in 2 ns at 0.55 V), and the
    # host link's 100 ns are 100 cycles: tokens/s rise by less than 2x
    assert cm.physics.hops_per_cycle == math.floor(1000 / (cm.area.matrix_unit_pitch_mm * 80 + 30)) == 7
    speedup = (1.0e9 / fast_run.cycles) / (500e6 / slow_run.cycles)
    assert 1.8 < speedup < 2.0
    assert e_fast > 1.5 * e_slow  # dynamic energy x (0.75 / 0.55)^2 = 1.86; leakage over half the time
    with pytest.raises(SpecError, match="above what technology 'n7' meets"):
        ChipModel(roma.model_copy(update={"clock_hz": 1.2e9}), small.spec, fmt=G128, lora=None)


def test_clock_past_f_max_is_refused_by_the_cli(capsys, tmp_path):
    from importlib import resources

    data = yaml.safe_load((resources.files("romachip.spec") / "presets" / "roma.yaml").read_text())
    data["clock_hz"] = 2.0e9
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["simulate", "--chip", str(path), "--model", "llama-3.2-1b", "--prompt", "8", "--generate", "2"]) == 2
    assert "f_max 1,000 MHz" in capsys.readouterr().err.replace("\n", " ")


def test_deep_macros_read_with_more_energy_and_cycles(roma, n7):
    pitch = chip_area(roma, n7).matrix_unit_pitch_mm
    base = chip_physics(roma, n7, pitch)
    rom = roma.l_unit.rom
    deep = replace_in(roma, "l_unit.rom", rom.model_copy(update={"macro_rows": 8192, "macros": 119}))
    ph = chip_physics(deep, n7, pitch)
    assert deep.rom_bytes == roma.rom_bytes  # the same bits in 8x deeper macros
    # half the read energy scales with the bitline: 0.5 + 0.5 x rows / 1152
    assert base.rom_read_scale == pytest.approx(0.5 + 0.5 * 1024 / 1152)
    assert ph.rom_read_scale == pytest.approx(0.5 + 0.5 * 8192 / 1152)
    # access (300 ps + 0.15 ps/row) x 1.805 (gate delay at 0.55 V) against a 2 ns cycle: 1 cycle, then 2
    assert (base.rom_access_cycles, ph.rom_access_cycles) == (1, 2)
    assert math.ceil((300 + 0.15 * 8192) * base.op.delay_scale / 2000) == 2


def test_two_bit_cells_shrink_the_rom_but_pay_for_sensing(roma, n7):
    rom = roma.l_unit.rom
    mlc = replace_in(roma, "l_unit.rom", rom.model_copy(update={"bits_per_cell": 2, "macros": rom.macros // 2}))
    assert mlc.rom_bytes == roma.rom_bytes
    one, two = sum(l_unit_um2(roma, n7).values()), sum(l_unit_um2(mlc, n7).values())
    # half the cells, but each column senses 3 levels (mlc_sense_area_factor 0.5 x 2 extra levels), and a
    # 1024-row macro is mostly column periphery (2111 of 2980 um^2 per 64 columns in the n7 fit):
    # (2 x 2111.1 + 869.1) / 2 / (2111.1 + 869.1) = 0.854 of the area
    assert two / one == pytest.approx(0.854, abs=0.01)


def test_off_chip_lm_head_costs_host_time_and_energy(roma):
    spec = load_model_spec("llama-3.2-1b")
    kw = {"fmt": G128, "lora": None}
    on = ChipModel(roma, spec, **kw)
    off = ChipModel(roma, spec, policy="off_chip_all", **kw)  # the same strings `plan` takes
    run_on, run_off = on.decode(0), off.decode(0)
    head_bytes = G128.storage_bits(spec.vocab_size, spec.hidden_size).total_bits / 8
    assert off.policy is StoragePolicy.OFF_CHIP_ALL
    # the table crosses LPDDR5X at 68.3 GB/s = 136.6 B per 500 MHz cycle, + 100 ns latency
    host_cycles = head_bytes / (68.3e9 / 500e6)
    assert run_off.cycles > run_on.cycles + 0.9 * host_cycles
    host_bits = run_off.count(Event.HOST_BITS)  # the head, the final hidden state, an embedding row, token ids
    assert 8 * head_bytes < host_bits < 8 * head_bytes * 1.01
    assert off.energy(run_off).parts_mj[("host", "link")] == pytest.approx(host_bits * 6.0e-9)  # 6 pJ/bit
    assert off.energy(run_off).total_mj > on.energy(run_on).total_mj
    with pytest.raises(FormatError, match="unknown storage policy .rom_only."):
        ChipModel(roma, spec, policy="rom_only", **kw)


def test_vector_row_at_the_edge_moves_bits_over_the_real_floorplan(roma):
    spec = load_model_spec("llama-3.2-1b")
    edge = replace_in(roma, "mesh.row_roles", ["vector"] + ["matrix"] * 16)
    cm = ChipModel(edge, spec, fmt=G128, lora=None)
    mid = ChipModel(roma, spec, fmt=G128, lora=None)
    # a broadcast crosses a tree spanning the 17 x 16 nodes wherever the vector row is: 271 links
    assert cm.view.mesh.spanning_links == mid.view.mesh.spanning_links == 17 * 16 - 1
    # a gather travels each unit's own distance to the vector row: mean 8.5 hops from the edge, 4.5 mid-die
    assert cm.view.mesh.column_hops_mean == pytest.approx(8.5)
    assert mid.view.mesh.column_hops_mean == pytest.approx(4.5)
    e_edge, e_mid = cm.decode(0).count(Event.NOC_BIT_HOPS), mid.decode(0).count(Event.NOC_BIT_HOPS)
    assert e_mid < e_edge < 1.31 * e_mid  # the old formula's nodes = cols x (1 + 2 x 16) gave +31% and more


def test_prefill_batches_fit_the_vector_and_h_unit_sram_and_attention_shows(small):
    spec, pl = small.spec, small.placement

    def by_hand(tokens):
        # vector SRAM: two batches in flight, each with its score tile (32 heads x keys x 2 bytes) + activations
        per_token = spec.num_heads * tokens * 2
        per_token += (2 * spec.hidden_size + 2 * spec.intermediate_size + spec.q_size + 2 * spec.kv_size) * 2
        vector = 16 * 2**20 // (2 * per_token)
        # H-Unit SRAM beside the adapters and the KV cache: the busiest unit's scores over the keys it holds
        held = pl.kv_tokens(tokens)
        free = (small.chip.h_unit.sram.bytes - pl.lora_bytes - held * pl.kv_bytes_per_token)[pl.kv_ring >= 0].min()
        h_unit = max(1, int(free) // (32 * int(held.max()) * 2))
        return vector, h_unit

    assert by_hand(2048)[0] > 32 and small.prefill_token_batch(2048) == 32  # the L-Unit's own batch
    assert by_hand(8192) == (14, 282) and small.prefill_token_batch(8192) == 14  # the vector SRAM binds
    vector, h_unit = by_hand(16384)  # near the maximum context (16,640) the KV cache fills the H-Units
    assert h_unit < vector and small.prefill_token_batch(16384) == h_unit
    with pytest.raises(CapacityError, match="vector-unit SRAM"):
        small.prefill_token_batch(10**7)
    # causal attention is O(P^2) and a batch's attention waits for its own Q/K/V: TTFT grows faster than P
    t256, t1k = small.prefill(256).cycles, small.prefill(1024).cycles
    assert t1k > 4.2 * t256


def test_prefill_composed_from_layers_equals_the_whole(small, roma):
    for tokens in (96, 700):
        whole = small.prefill(tokens, every_layer=True).cycles
        assert small.prefill(tokens).cycles == whole == small.prefill_cycles(tokens)  # the TTFT-only path too
    groups = ChipModel(roma, load_model_spec("smollm2-135m"), fmt=G128, lora=None, strategy="layer_groups")
    assert groups.view.groups > 1 and groups.prefill_cycles(40) == groups.prefill(40).cycles


@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_one_layer_graph_derived_from_the_two_layer_build_is_the_one_built_alone(small, phase):
    """The composed phases take their one-layer graph from the two-layer build (Simulator.without): the same
    tasks in the same order, the same dependencies, schedule and counted events as building it alone."""
    two_layers = small.spec.model_copy(update={"num_layers": 2})
    if phase == "decode":
        two = [decode_ops(two_layers, 300, **small._graph_kwargs())]
    else:
        two = small._prefill_batches(two_layers, 700)
        assert len(two) > 2  # batches that wait for the batch before the last
    (derived, built_apart), (_, builder) = small._one_and_two_layers(two)
    assert built_apart is None and builder.dropped  # derived, not built apart
    alone, alone_builder = small._schedule([_drop_layer(ops, 1) for ops in two])
    d, a = derived.graph, alone.graph
    for column in ("name", "dur", "bound", "prio", "after", "stream", "lag", "end_lag", "op"):
        assert getattr(d, column) == getattr(a, column), column
    assert [d.resources[r] for r in d.res] == [a.resources[r] for r in a.res]
    assert (derived.start, derived.end, derived.cause, derived.stretched_by) == (
        alone.start, alone.end, alone.cause, alone.stretched_by
    )  # fmt: skip
    assert list(derived.busy_cycles.items()) == list(alone.busy_cycles.items())
    assert list(builder.events_without.items()) == list(alone_builder.events.items())
    assert list(builder.lora_events_without.items()) == list(alone_builder.lora_events.items())


def test_a_design_point_leaves_no_reference_cycles(roma):
    """A sweep's design points are freed as they go: no placement <-> view or builder <-> handler cycle left
    for the cyclic collector (a dropped placement would keep its ~4 MB tile table until a full collection)."""
    spec = load_model_spec("llama-3.2-1b")
    design.design_point(roma, spec, fmt=G128, lora=LoraConfig(rank=16))  # the model's caches, once
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        design._PLACEMENTS.clear()  # a new organisation: compiled, then dropped
        design.design_point(roma, spec, fmt=G128, lora=LoraConfig(rank=16))
        design._PLACEMENTS.clear()
        assert gc.collect() == 0
    finally:
        if enabled:
            gc.enable()


def test_any_weight_width_has_an_energy(roma, small):
    # a 6-bit code runs on the next wider MAC the technology lists (bfp16_int8), not a KeyError
    assert small.energy_model.pj(l_macs(6)) == small.energy_model.pj(l_macs(8))


def test_presets_show_prints_a_yaml_to_start_from(capsys):
    assert main(["presets", "--show", "n5"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["name"] == "n5" and "[published]" in out
    assert main(["presets", "--show", "roma", "--json"]) == 0
    assert '"kind": "chip"' in capsys.readouterr().out
    assert main(["presets", "--show", "nope"]) == 2
    assert "no preset named 'nope'" in capsys.readouterr().err


def test_perf_simulate_is_the_module():
    import importlib

    mod = importlib.import_module("romachip.perf.simulate")
    import romachip.perf

    assert romachip.perf.simulate is mod and callable(mod.simulate)


@pytest.mark.parametrize("tech", ["n5", "n3", "n28"])
def test_tech_presets_load_and_price_a_chip(roma, tech):
    t = load_tech(tech)
    chip = roma.model_copy(update={"tech": tech, "clock_hz": min(roma.clock_hz, t.voltage.f_max_hz)})
    area = chip_area(chip, t).total_mm2
    assert (area < 503.8) if tech != "n28" else (area > 2000)  # denser nodes shrink ROMA; 28 nm is ~5x


def test_design_point_is_the_chip_models_numbers_and_keeps_its_shape(roma, small):
    from romachip.perf.design import design_point

    p = design_point(roma, small.spec, fmt=G128, lora=small.lora, contexts=(0, 512), prompt_tokens=64)
    assert p.fits and p.decode_tokens_per_s[512] == roma.clock_hz / small.decode(512).cycles
    assert p.ttft_ms == small.prefill(64).cycles / roma.clock_hz * 1e3
    assert p.area_mm2 == small.area.total_mm2 and p.voltage_v == pytest.approx(0.55)
    tiny = replace_in(roma, "h_unit.sram.macros", 1)  # 64 KiB per H-Unit: a 64K context cannot fit
    q = design_point(tiny, small.spec, fmt=G128, lora=small.lora, contexts=(0, 65536))
    assert not q.fits and q.reasons and math.isnan(q.ttft_ms) and q.decode_tokens_per_s == {}


def test_fit_and_simulate_report_the_host_bandwidth_a_rate_needs(capsys):
    import json

    args = ["--model", "llama-3.2-1b", "--group-size", "128", "--storage-policy", "off_chip_all", "--json"]
    assert main(["fit", *args, "--tokens-per-s", "1000"]) == 0
    host = json.loads(capsys.readouterr().out)["host_link"]
    assert main(["simulate", *args, "--prompt", "8", "--generate", "3"]) == 0
    sim = json.loads(capsys.readouterr().out)
    # the same bytes per token both ways: the LM head's table + its input, an embedding row, 8 bytes of ids
    assert host["bytes_per_token"] == sim["host_bytes_per_token"] > 100e6
    assert host["bandwidth_needed_bytes_per_s"] == 1000 * host["bytes_per_token"]
    assert sim["host_bandwidth_needed_bytes_per_s"] == pytest.approx(
        sim["host_bytes_per_token"] * sim["decode_tokens_per_s"]
    )
    assert main(["fit", *args, "--tokens-per-s", "-1"]) == 2
