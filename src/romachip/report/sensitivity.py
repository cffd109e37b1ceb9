"""One-at-a-time sensitivity of the model's predictions to its uncalibrated assumptions.

Each assumption (a preset number tagged [assumption] or [derived], never a [calibrated] one) is moved by
-20% and +20% alone, and the change of three predictions is reported: decode tokens/s and energy per token
at a context no figure of the paper fixes, and the die area. The placement is the same for every
perturbation (none of these numbers moves a tensor), so each row costs one decode step.
"""

from __future__ import annotations

from dataclasses import dataclass

from romachip.perf.simulate import ChipModel

STEP = 0.20
#: (spec, dotted field, what it is): the uncalibrated numbers the timing, energy and area models read.
ASSUMPTIONS = (
    ("tech", "energy.wire_pj_per_bit_mm", "on-chip wire energy"),
    ("tech", "energy.mac_pj.bfp16_int4", "L-Unit MAC energy (bf16 x 4-bit)"),
    ("tech", "energy.mac_pj.fp8_e4m3", "LoRA MAC energy (FP8)"),
    ("tech", "energy.mac_pj.int8", "attention MAC energy (INT8 KV)"),
    ("tech", "energy.vector_op_pj", "vector-unit op energy"),
    ("tech", "energy.sram_write_pj_per_bit", "SRAM write energy"),
    ("tech", "leakage_mw_per_mm2", "leakage power density"),
    ("tech", "voltage.f_max_hz", "f_max at nominal voltage"),
    ("tech", "voltage.threshold_v", "threshold voltage"),
    ("tech", "voltage.min_v", "minimum operating voltage"),
    ("tech", "wire_delay_ps_per_mm", "repeated-wire delay"),
    ("tech", "rom_physics.bitline_energy_share", "ROM bitline share of read energy"),
    ("tech", "sram_physics.bitline_energy_share", "SRAM bitline share of read energy"),
    ("tech", "mac_area_um2.bfp16_int4", "L-Unit MAC area"),
    ("tech", "flop_um2_per_bit", "flip-flop area"),
    ("chip", "l_unit.pipeline_depth_cycles", "L-Unit pipeline depth"),
    ("chip", "h_unit.lora_macs_per_cycle", "LoRA MACs per cycle"),
    ("chip", "h_unit.pipeline_depth_cycles", "H-Unit pipeline depth"),
    ("chip", "vector_unit.lanes", "vector lanes per unit"),
    ("chip", "floorplan.control_area_mm2", "control and I/O area"),
)


@dataclass(frozen=True)
class SensitivityRow:
    spec: str  # chip or tech
    field: str
    what: str
    value: float
    change_pct: dict[str, tuple[float, float]]  # prediction -> (% change at -20%, at +20%)


def _scaled(model, path: str, factor: float):
    """A copy of a pydantic spec with the number at dotted `path` (dict keys included) times `factor`."""
    data = model.model_dump()
    *heads, last = path.split(".")
    node = data
    for h in heads:
        node = node[h]
    old = node[last]
    node[last] = max(1, round(old * factor)) if isinstance(old, int) else old * factor
    return type(model).model_validate(data)


def _predict(cm: ChipModel, context: int) -> dict[str, float]:
    run = cm.decode(context)
    return {
        "tokens_per_s": cm.chip.clock_hz / run.cycles,
        "mj_per_token": cm.energy(run).total_mj,
        "area_mm2": cm.area.total_mm2,
    }


def sensitivity(cm: ChipModel, context: int = 4096) -> tuple[dict[str, float], list[SensitivityRow]]:
    """(the predictions at the preset, one row per assumption) for `cm`'s chip, model and workload."""
    base = _predict(cm, context)
    rows = []
    for spec, path, what in ASSUMPTIONS:
        source = cm.tech if spec == "tech" else cm.chip
        change: dict[str, list[float]] = {k: [] for k in base}
        for factor in (1 - STEP, 1 + STEP):
            moved = _scaled(source, path, factor)
            chip, tech = (cm.chip, moved) if spec == "tech" else (moved, cm.tech)
            other = ChipModel(
                chip, cm.spec, fmt=cm.fmt, lora=cm.lora, tech=tech, placement=cm.placement, policy=cm.policy,
                host=cm.host,
            )  # fmt: skip
            for k, v in _predict(other, context).items():
                change[k].append(100 * (v / base[k] - 1))
        value = source.model_dump()
        for part in path.split("."):
            value = value[part]
        rows.append(SensitivityRow(spec, path, what, float(value), {k: (v[0], v[1]) for k, v in change.items()}))
    return base, rows
