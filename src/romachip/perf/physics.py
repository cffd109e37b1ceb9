"""Operating point and memory physics: what the clock costs in voltage, what a macro's depth costs.

- **Voltage/frequency** (TechSpec `voltage`, the alpha-power law of Sakurai & Newton 1990): a gate's speed
  goes as (V - V_t)^alpha / V, with `f_max_hz` met at `nominal_v`. The chip runs at the lowest voltage
  (never below `min_v`) whose speed meets `clock_hz`; a clock above `f_max_hz` is refused. Dynamic energy
  scales as (V / nominal_v)^2 (C V^2 per switched node), leakage power as V / nominal_v (to first order;
  DIBL makes it steeper, which the model does not capture), delays as speed(nominal_v) / speed(V).
- **Wires**: one mesh hop is a repeated wire of one unit pitch (from the area model) plus a bypassed
  router; `hops_per_cycle` is how many fit in a clock period at the operating voltage, unless pinned.
- **Macro depth** (TechSpec `rom_physics`, `sram_physics`): a read discharges a bitline whose capacitance
  grows with the rows on it, so `bitline_energy_share` of the read energy (at `energy_ref_rows`) scales
  with rows; the access time is a fixed part (decode, word line, sensing) plus a per-row bitline delay,
  and a macro whose access does not fit one clock period takes ceil(access / period) cycles per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from romachip.errors import SpecError
from romachip.spec.chip import ChipSpec
from romachip.spec.tech import MemoryPhysics, TechSpec, VoltageSpec


def _speed(v: VoltageSpec, volts: float) -> float:
    return (volts - v.threshold_v) ** v.alpha / volts


@dataclass(frozen=True)
class OperatingPoint:
    """The chip's supply voltage at its clock and what it scales (factors against the nominal voltage)."""

    clock_hz: float
    voltage_v: float
    dynamic_energy_scale: float  # (V / nominal)^2
    leakage_scale: float  # V / nominal
    delay_scale: float  # gate delay at V / at nominal (>= 1 below nominal)
    f_max_hz: float | None

    @property
    def period_ps(self) -> float:
        return 1e12 / self.clock_hz


def operating_point(chip: ChipSpec, tech: TechSpec, clock_hz: float | None = None) -> OperatingPoint:
    """The lowest voltage meeting the clock; SpecError above the technology's f_max."""
    f = chip.clock_hz if clock_hz is None else clock_hz
    v = tech.voltage
    if v is None:
        return OperatingPoint(f, 0.0, 1.0, 1.0, 1.0, None)
    if f > v.f_max_hz * (1 + 1e-9):
        raise SpecError(
            f"clock_hz {f / 1e6:,.0f} MHz is above what technology {tech.name!r} meets at its nominal "
            f"{v.nominal_v} V (f_max {v.f_max_hz / 1e6:,.0f} MHz); lower clock_hz or pick a faster node"
        )
    need = f / v.f_max_hz * _speed(v, v.nominal_v)
    lo, hi = v.min_v, v.nominal_v
    if _speed(v, lo) >= need:
        volts = lo
    else:
        for _ in range(60):  # speed is increasing in V above V_t: bisect
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _speed(v, mid) < need else (lo, mid)
        volts = hi
    return OperatingPoint(
        clock_hz=f,
        voltage_v=volts,
        dynamic_energy_scale=(volts / v.nominal_v) ** 2,
        leakage_scale=volts / v.nominal_v,
        delay_scale=_speed(v, v.nominal_v) / _speed(v, volts),
        f_max_hz=v.f_max_hz,
    )


def derived_hops_per_cycle(chip: ChipSpec, tech: TechSpec, op: OperatingPoint, pitch_mm: float) -> int:
    """Mesh hops a flit crosses per clock: the pinned `noc.hops_per_cycle`, or the clock period over one
    hop's delay (a pitch of repeated wire plus a bypassed router) at the operating voltage, at least 1."""
    if chip.noc.hops_per_cycle is not None:
        return chip.noc.hops_per_cycle
    hop_ps = (pitch_mm * tech.wire_delay_ps_per_mm + tech.router_bypass_ps) * op.delay_scale
    if hop_ps <= 0:
        raise SpecError(
            f"chip {chip.name!r} leaves noc.hops_per_cycle to the technology, but {tech.name!r} gives no "
            "wire_delay_ps_per_mm / router_bypass_ps; set one of them"
        )
    return max(1, math.floor(op.period_ps / hop_ps))


def read_energy_scale(phys: MemoryPhysics | None, rows: int) -> float:
    """Read energy per bit of a `rows`-deep macro relative to the table's (at `energy_ref_rows`)."""
    if phys is None:
        return 1.0
    return 1 - phys.bitline_energy_share + phys.bitline_energy_share * rows / phys.energy_ref_rows


def access_cycles(phys: MemoryPhysics | None, rows: int, op: OperatingPoint) -> int:
    """Cycles one row read of a `rows`-deep macro takes (1 when the access fits a clock period)."""
    if phys is None:
        return 1
    access_ps = (phys.access_fixed_ps + phys.access_ps_per_row * rows) * op.delay_scale
    return max(1, math.ceil(access_ps / op.period_ps - 1e-9))


@dataclass(frozen=True)
class ChipPhysics:
    """Everything timing and energy need from the technology, resolved once for one chip."""

    op: OperatingPoint
    hops_per_cycle: int
    rom_access_cycles: int  # per row read of an L-Unit ROM macro
    h_sram_access_cycles: int  # per row read of an H-Unit SRAM macro
    rom_read_scale: float  # read energy per bit vs the table's, by the L-Unit ROM's depth
    h_sram_read_scale: float
    vector_sram_read_scale: float


def chip_physics(chip: ChipSpec, tech: TechSpec, pitch_mm: float) -> ChipPhysics:
    op = operating_point(chip, tech)
    rom, hs, vs = chip.l_unit.rom, chip.h_unit.sram, chip.vector_unit.sram
    return ChipPhysics(
        op=op,
        hops_per_cycle=derived_hops_per_cycle(chip, tech, op, pitch_mm),
        rom_access_cycles=access_cycles(tech.rom_physics, rom.macro_rows, op),
        h_sram_access_cycles=access_cycles(tech.sram_physics, hs.macro_rows, op),
        rom_read_scale=read_energy_scale(tech.rom_physics, rom.macro_rows),
        h_sram_read_scale=read_energy_scale(tech.sram_physics, hs.macro_rows),
        vector_sram_read_scale=read_energy_scale(tech.sram_physics, vs.macro_rows),
    )
