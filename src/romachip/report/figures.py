"""The figures of ROMA.md that the model can produce, beside the paper's, and the model's predictions.

Every model number here comes from the timing, energy and area models and the presets; the paper's
numbers appear only as the reference column. A figure is *calibrated* when a preset parameter was set
to reproduce it (the parameter is named), *derived-from-calibrated* when it is arithmetic on calibrated
figures (energy per token = calibrated power / calibrated throughput; die area = the sum of fitted
shares), and *predicted* otherwise (the prediction tables, with their sensitivity to the assumptions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from romachip.baselines import CALIBRATION_CONTEXT, baseline, load_devices
from romachip.capacity import max_context_tokens
from romachip.perf.area import l_unit_study, rom_macro_model
from romachip.perf.simulate import ChipModel
from romachip.quant.formats import WeightFormat
from romachip.spec import load_chip, load_model_spec
from romachip.tensor_bits import StoragePolicy
from romachip.workload import KvConfig, LoraConfig

MIB = 2**20
CONTEXTS = (256, 512, 1024, 2048, 4096)
PROMPTS = (256, 512, 1024, 2048, 4096)
SRAM_MB = (64, 128, 256, 288)
RANKS = (0, 16, 64)


@dataclass(frozen=True)
class Figure:
    """One reported number: the paper's value, the model's, and how the model's relates to it."""

    name: str
    unit: str
    paper: float
    model: float
    kind: str  # calibrated, derived-from-calibrated, predicted
    fitted_by: str  # the preset parameter set from this figure ("" when none)

    @property
    def rel_error(self) -> float:
        return (self.model - self.paper) / self.paper


@dataclass(frozen=True)
class Setup:
    """A model configuration the report simulates."""

    label: str
    model: str
    bits: int
    policy: StoragePolicy


SETUP_3B = Setup("Llama-3.2-3B, 4-bit", "llama-3.2-3b", 4, StoragePolicy.ROM_WEIGHT)
# the 2-bit 8B fits only with the embedding table and LM head on the host (docs/capacity.md)
SETUP_8B = Setup("Llama-3-8B, 2-bit", "llama-3-8b", 2, StoragePolicy.OFF_CHIP_ALL)


def chip_model(setup: Setup, rank: int = 16, chip_name: str = "roma") -> ChipModel:
    chip = load_chip(chip_name)
    return ChipModel(
        chip, load_model_spec(setup.model), fmt=WeightFormat(setup.bits, 128), lora=LoraConfig(rank=rank),
        policy=setup.policy,
    )  # fmt: skip


def calibration_figures(cm: ChipModel) -> list[Figure]:
    """The reported figures of ROMA.md for 4-bit Llama-3.2-3B with rank-16 LoRA on the roma preset."""
    chip, tech, clock = cm.chip, cm.tech, cm.chip.clock_hz
    d0, d1k = cm.decode(0), cm.decode(1024)
    e0 = cm.energy(d0)
    area = cm.area
    shares = area.shares()
    figs = [
        Figure("decode, empty KV cache", "tok/s", 31.8e3, clock / d0.cycles, "calibrated", "noc.link_width_bits"),
        Figure("decode, 1K tokens in KV", "tok/s", 24.6e3, clock / d1k.cycles, "calibrated",
               "h_unit.attention_macs_per_cycle"),
        Figure("TTFT, 256-token prompt", "ms", 5.6, cm.prefill(256).cycles / clock * 1e3, "calibrated",
               "l_unit.macs_per_cycle_by_weight_bits[4]"),
        Figure("power (decode, empty KV)", "W", 33.1, e0.power_w, "calibrated", "energy.router_pj_per_bit"),
        Figure("energy per token (33.1 W / 31.8K) [I]", "mJ", 33.1 / 31.8e3 * 1e3, e0.total_mj,
               "derived-from-calibrated", "power / decode rate"),
        Figure("die area", "mm²", 503.7, area.total_mm2, "derived-from-calibrated", "sum of the four shares"),
        Figure("L-Unit share", "%", 73.2, 100 * shares["l_units"], "calibrated", "floorplan.l_unit_utilization"),
        Figure("H-Unit share", "%", 16.6, 100 * shares["h_units"], "calibrated", "sram_macro (8192 rows)"),
        Figure("vector-unit share", "%", 1.4, 100 * shares["vector_units"], "calibrated", "vector_lane_area_um2"),
        Figure("NoC + control share (100 − itemised)", "%", 8.8, 100 * shares["noc_and_control"], "calibrated",
               "router_area_um2_per_link_bit"),
    ]  # fmt: skip
    paper_lunit = {"sram": (59.7, 36.7), "rom": (19.2, 26.0), "brom": (11.4, 22.5), "fused": (6.9, 6.8)}
    fits = {"sram": "sram_macro (fit)", "rom": "l_unit_study", "brom": "brom_area_factor", "fused": "fused_logic_share"}
    for v in l_unit_study(chip, tech):
        a, p = paper_lunit[v.kind]
        figs.append(Figure(f"L-Unit area, {v.kind}", "k µm²", a, v.area_um2 / 1e3, "calibrated", fits[v.kind]))
        figs.append(Figure(f"L-Unit power, {v.kind}", "mW", p, v.power_mw, "calibrated", f"energy.{v.kind} read"))
    rom = rom_macro_model(tech)
    for rows, dens in sorted(tech.rom_macro.mbit_per_mm2_by_rows.items()):
        src = "reported" if rows == 8192 else "read off a figure"
        figs.append(Figure(f"ROM macro density, {rows}x64 ({src})", "Mbit/mm²", dens, rom.density_mbit_per_mm2(rows),
                           "calibrated", "macro model (2 constants, fit)"))  # fmt: skip
    spec = cm.spec
    for dev in load_devices():
        if dev.measured_tokens_per_s is None:
            continue
        b = baseline(dev, spec, cm.fmt, CALIBRATION_CONTEXT)
        figs.append(Figure(f"{dev.name} decode (256-token input)", "tok/s", dev.measured_tokens_per_s,
                           b.tokens_per_s, "calibrated", f"efficiency {b.efficiency:.3f}"))  # fmt: skip
    return figs


def decode_and_ttft(cm: ChipModel, progress: Callable[[], None] | None = None) -> dict[str, dict[int, float]]:
    """Decode tok/s at CONTEXTS (and 0) and TTFT (ms) at PROMPTS for one setup."""
    clock = cm.chip.clock_hz
    out: dict[str, dict[int, float]] = {"decode_tokens_per_s": {}, "ttft_ms": {}, "energy_per_token_mj": {}}
    for c in (0, *CONTEXTS):
        run = cm.decode(c)
        out["decode_tokens_per_s"][c] = clock / run.cycles
        out["energy_per_token_mj"][c] = cm.energy(run).total_mj
    for p in PROMPTS:
        out["ttft_ms"][p] = cm.prefill(p).cycles / clock * 1e3
        if progress:
            progress()
    return out


def max_context_table(setup: Setup) -> dict[int, dict[int, int]]:
    """rank -> SRAM MiB -> longest context (tokens) that fits beside the adapters (romachip.capacity)."""
    chip, spec = load_chip("roma"), load_model_spec(setup.model)
    fmt = WeightFormat(setup.bits, 128)
    out: dict[int, dict[int, int]] = {}
    for rank in (16, 64):
        lora = LoraConfig(rank=rank, dtype=chip.precision.lora)
        kv = KvConfig(dtype=chip.precision.kv)
        out[rank] = {
            mb: max_context_tokens(chip, spec, fmt=fmt, lora=lora, kv=kv, policy=setup.policy, sram_bytes=mb * MIB)
            for mb in SRAM_MB
        }
    return out


def rank_sweep(setup: Setup) -> dict[int, dict[str, float]]:
    """Decode tok/s at contexts 0 and 1K and TTFT at 256 for LoRA ranks 0 / 16 / 64."""
    out = {}
    for rank in RANKS:
        cm = chip_model(setup, rank)
        clock = cm.chip.clock_hz
        out[rank] = {
            "decode_ctx0": clock / cm.decode(0).cycles,
            "decode_ctx1024": clock / cm.decode(1024).cycles,
            "ttft_256_ms": cm.prefill(256).cycles / clock * 1e3,
        }
    return out


def baseline_table(setup: Setup, context: int = CALIBRATION_CONTEXT) -> list[dict]:
    spec = load_model_spec(setup.model)
    return [asdict(baseline(dev, spec, WeightFormat(setup.bits, 128), context)) for dev in load_devices()]
