"""Area model: macro area from capacity and organisation, MAC arrays by precision, vector lanes, routers.

Memory macros. A compiled macro of `rows` words of `cols` bits is modelled as

    area_um2 = (fixed_um2 + per_row_um2 * rows) * cols / word_bits

a fixed periphery (sense amplifiers, control, I/O) plus, per row, the bit cells and the word-line driver.
The two constants are fitted (least squares on relative error) to the TechSpec density table of each
memory kind, so density falls for shallow macros because the fixed periphery is shared by fewer bits.
B-ROM is a standard ROM macro times `brom_area_factor`. A fused cell puts device-layer logic (the
B-ROM's own periphery, `fused_logic_share` of its area, and the MACs) under the metal-heavy array:
its footprint is max(array, periphery + MACs).

Units add their macros and logic and divide by the floorplan utilisation of their type; the NoC is
one router per mesh node, sized by link width; control is a fixed block.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from romachip.perf.energy import l_unit_mac_precision
from romachip.spec.chip import ChipSpec, LUnitStudySpec
from romachip.spec.tech import MacroDensity, TechSpec

UM2_PER_MM2 = 1e6
MEMORY_KINDS = ("sram", "rom", "brom", "fused")


@dataclass(frozen=True)
class MacroModel:
    """area_um2 = (fixed_um2 + per_row_um2 * rows) * cols / word_bits (fitted to a density table)."""

    fixed_um2: float
    per_row_um2: float
    word_bits: int

    def area_um2(self, rows: int, cols: int) -> float:
        return (self.fixed_um2 + self.per_row_um2 * rows) * cols / self.word_bits

    def density_mbit_per_mm2(self, rows: int, cols: int | None = None) -> float:
        cols = self.word_bits if cols is None else cols
        return rows * cols / self.area_um2(rows, cols)  # bits/um^2 == Mbit/mm^2


@lru_cache(maxsize=32)
def _fit(word_bits: int, points: tuple[tuple[int, float], ...]) -> MacroModel:
    rows = np.array([r for r, _ in points], dtype=np.float64)
    area = rows * word_bits / np.array([d for _, d in points], dtype=np.float64)
    a = np.stack([np.ones_like(rows), rows], axis=1) / area[:, None]  # relative-error least squares
    (fixed, per_row), *_ = np.linalg.lstsq(a, np.ones_like(rows), rcond=None)
    return MacroModel(float(fixed), float(per_row), word_bits)


def macro_model(table: MacroDensity) -> MacroModel:
    """The two-constant macro model fitted to one TechSpec density table."""
    return _fit(table.word_bits, tuple(sorted(table.mbit_per_mm2_by_rows.items())))


def memory_area_um2(tech: TechSpec, kind: str, rows: int, cols: int, macros: int) -> float:
    """Area of `macros` macros of rows x cols, as SRAM, standard ROM or B-ROM (fused: see `fused_area_um2`)."""
    if kind == "sram":
        return macros * macro_model(tech.sram_macro).area_um2(rows, cols)
    rom = macros * macro_model(tech.rom_macro).area_um2(rows, cols)
    if kind == "rom":
        return rom
    if kind in ("brom", "fused"):
        return rom * tech.brom_area_factor
    raise ValueError(f"unknown memory kind {kind!r}")


def fused_area_um2(tech: TechSpec, brom_um2: float, logic_um2: float) -> float:
    """Footprint of a fused B-ROM/compute cell: the metal-heavy array over the device-layer logic."""
    share = tech.fused_logic_share
    return max(brom_um2 * (1 - share), brom_um2 * share + logic_um2)


def mac_array_um2(tech: TechSpec, macs: int, precision: str) -> float:
    return macs * tech.mac_area_um2[precision]


def l_unit_logic_um2(chip: ChipSpec, tech: TechSpec) -> float:
    """The MAC array is sized for its widest use (4-bit MACs split into 2-bit ones, and so on)."""
    return max(
        mac_array_um2(tech, n, l_unit_mac_precision(chip, tech.mac_area_um2, b))
        for b, n in chip.l_unit.macs_per_cycle_by_weight_bits.items()
    )


def l_unit_um2(chip: ChipSpec, tech: TechSpec) -> dict[str, float]:
    rom = chip.l_unit.rom
    kind = "brom" if rom.brom else "rom"
    mem = memory_area_um2(tech, kind, rom.macro_rows, rom.macro_cols * rom.bits_per_cell, rom.macros)
    logic = l_unit_logic_um2(chip, tech)
    if rom.brom and rom.fused:
        footprint = fused_area_um2(tech, mem, logic)
        parts = {"rom": footprint * mem / (mem + logic), "macs": footprint * logic / (mem + logic)}
    else:
        parts = {"rom": mem, "macs": logic}
    return _utilized(parts, chip.floorplan.l_unit_utilization)


def h_unit_um2(chip: ChipSpec, tech: TechSpec) -> dict[str, float]:
    s, h = chip.h_unit.sram, chip.h_unit
    parts = {
        "sram": memory_area_um2(tech, "sram", s.macro_rows, s.macro_cols * s.bits_per_cell, s.macros),
        "lora_macs": mac_array_um2(tech, h.lora_macs_per_cycle, chip.precision.lora),
        "attention_macs": mac_array_um2(tech, h.attention_macs_per_cycle, chip.precision.kv),
    }
    return _utilized(parts, chip.floorplan.h_unit_utilization)


def vector_unit_um2(chip: ChipSpec, tech: TechSpec) -> dict[str, float]:
    s = chip.vector_unit.sram
    parts = {
        "sram": memory_area_um2(tech, "sram", s.macro_rows, s.macro_cols * s.bits_per_cell, s.macros),
        "lanes": chip.vector_unit.lanes * tech.vector_lane_area_um2,
    }
    return _utilized(parts, chip.floorplan.vector_unit_utilization)


def _utilized(parts: dict[str, float], utilization: float) -> dict[str, float]:
    """Spread the white space of a unit over its parts in proportion, so parts still add up to the unit."""
    return {k: v / utilization for k, v in parts.items()}


@dataclass(frozen=True)
class AreaReport:
    """Die area by unit type (totals over all units) and by part, in mm^2."""

    by_unit_mm2: dict[str, float]  # l_units, h_units, vector_units, noc_and_control
    by_part_mm2: dict[str, float]  # e.g. l_units.rom, h_units.sram, noc_and_control.routers
    per_unit_um2: dict[str, float]  # one L-Unit, one H-Unit, one vector unit, one router

    @property
    def total_mm2(self) -> float:
        return sum(self.by_unit_mm2.values())

    def shares(self) -> dict[str, float]:
        total = self.total_mm2
        return {k: v / total for k, v in self.by_unit_mm2.items()}

    @property
    def matrix_unit_pitch_mm(self) -> float:
        """Side of one matrix unit (L + H halves), taken square: the length of one NoC hop."""
        return float(np.sqrt((self.per_unit_um2["l_unit"] + self.per_unit_um2["h_unit"]) / UM2_PER_MM2))


def chip_area(chip: ChipSpec, tech: TechSpec) -> AreaReport:
    """Area of the whole die from the chip's organisation and the technology's tables."""
    n_m, n_v = chip.matrix_units, chip.vector_units
    units = {"l_units": (l_unit_um2(chip, tech), n_m), "h_units": (h_unit_um2(chip, tech), n_m)}
    units["vector_units"] = (vector_unit_um2(chip, tech), n_v)
    router_um2 = chip.noc.link_width_bits * tech.router_area_um2_per_link_bit
    nodes = chip.mesh.rows * chip.mesh.cols
    by_part = {f"{u}.{k}": v * n / UM2_PER_MM2 for u, (parts, n) in units.items() for k, v in parts.items()}
    by_part["noc_and_control.routers"] = nodes * router_um2 / UM2_PER_MM2
    by_part["noc_and_control.control"] = chip.floorplan.control_area_mm2
    by_unit: dict[str, float] = {}
    for key, mm2 in by_part.items():
        unit = key.split(".")[0]
        by_unit[unit] = by_unit.get(unit, 0.0) + mm2
    per_unit = {
        "l_unit": sum(units["l_units"][0].values()),
        "h_unit": sum(units["h_units"][0].values()),
        "vector_unit": sum(units["vector_units"][0].values()),
        "router": router_um2,
    }
    return AreaReport(by_unit, by_part, per_unit)


@dataclass(frozen=True)
class LUnitVariant:
    kind: str  # sram, rom, brom, fused
    area_um2: float
    power_mw: float


def l_unit_study(chip: ChipSpec, tech: TechSpec, study: LUnitStudySpec | None = None) -> list[LUnitVariant]:
    """The reference L-Unit built four ways (SRAM, ROM, B-ROM, fused), each reading every macro each cycle.

    Power = clock x (bits read per cycle x read energy of the kind + MACs x MAC energy) + leakage x area.
    """
    study = study or chip.l_unit_study
    if study is None:
        raise ValueError(f"chip {chip.name!r} defines no l_unit_study")
    e = tech.energy
    read_pj = {"sram": e.sram_read_pj_per_bit, "rom": e.rom_read_pj_per_bit, "brom": e.brom_read_pj_per_bit}
    read_pj["fused"] = e.fused_read_pj_per_bit
    # The study reproduces the paper's measured comparison cell, whose MACs are fitted as plain integer MACs
    # of its weight width (roma.yaml l_unit_study); the activation precision the preset assumes for the
    # die (bf16 block floating point, an [assumption] of romachip's engine) is not the paper's cell's.
    precision = f"int{study.weight_bits}"
    logic = mac_array_um2(tech, study.macs, precision)
    mac_pj = e.mac_pj[precision]
    bits_per_cycle = study.macros * study.macro_cols
    out = []
    for kind in MEMORY_KINDS:
        mem = memory_area_um2(tech, kind, study.macro_rows, study.macro_cols, study.macros)
        area = fused_area_um2(tech, mem, logic) if kind == "fused" else mem + logic
        dynamic_pj_per_cycle = bits_per_cycle * read_pj[kind] + study.macs * mac_pj
        power_mw = dynamic_pj_per_cycle * chip.clock_hz * 1e-9 + tech.leakage_mw_per_mm2 * area / UM2_PER_MM2
        out.append(LUnitVariant(kind, area, power_mw))
    return out
