"""Area model: macro area from capacity and organisation, MAC arrays by precision, vector lanes, routers.

Memory macros. A compiled macro of `rows` words of `cols` cell columns is modelled as

    area_um2 = (fixed_um2 * sense + per_row_um2 * rows) * cols / word_bits

a column periphery (sense amplifiers, column I/O; `fixed_um2` per `word_bits` columns) plus, per row, the
bit cells and the word-line driver. The two constants are fitted (least squares on relative error) to the
TechSpec density table of each memory kind, so density falls for shallow macros because the periphery is
shared by fewer bits; a table denser than the bit cell allows (per_row_um2 < word_bits x bit cell) is
refused. A cell of b bits (`bits_per_cell`) stores b bits in one column, so the array shrinks b-fold, but
it needs 2^b - 1 sense references instead of 1: `sense` = 1 + mlc_sense_area_factor x (2^b - 2).

B-ROM is a standard ROM macro times `brom_area_factor`. A fused cell moves device-layer logic (the
B-ROM's own periphery, `fused_logic_share` of its area, and the MACs with their accumulators) under the
metal-heavy array, whose own cells take `rom_array_device_share` of the device layer beneath it: the
footprint is max(array, array x device share + periphery + logic), so logic beyond the free device layer
is paid for.

Units add their macros and logic and divide by the floorplan utilisation of their type; the NoC is one
router per mesh node sized by link width x its ports (mesh neighbours + the local unit); control is a
fixed block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from romachip.errors import SpecError
from romachip.perf.energy import l_unit_mac_precision
from romachip.perf.physics import OperatingPoint, operating_point, read_energy_scale
from romachip.spec.chip import ChipSpec, LUnitStudySpec
from romachip.spec.tech import MacroDensity, TechSpec

UM2_PER_MM2 = 1e6
MEMORY_KINDS = ("sram", "rom", "brom", "fused")


@dataclass(frozen=True)
class MacroModel:
    """area_um2 = (fixed_um2 * sense + per_row_um2 * rows) * cols / word_bits (fitted to a density table)."""

    fixed_um2: float
    per_row_um2: float
    word_bits: int
    mlc_sense_area_factor: float = 0.0
    bitcell_um2: float = 0.0  # floor: a macro is never smaller than its cells

    def area_um2(self, rows: int, cols: int, bits_per_cell: int = 1) -> float:
        sense = 1 + self.mlc_sense_area_factor * (2**bits_per_cell - 2)
        fitted = (self.fixed_um2 * sense + self.per_row_um2 * rows) * cols / self.word_bits
        return max(fitted, rows * cols * self.bitcell_um2)

    def density_mbit_per_mm2(self, rows: int, cols: int | None = None, bits_per_cell: int = 1) -> float:
        cols = self.word_bits if cols is None else cols
        return rows * cols * bits_per_cell / self.area_um2(rows, cols, bits_per_cell)  # bits/um^2 == Mbit/mm^2


@lru_cache(maxsize=32)
def _fit(word_bits: int, points: tuple[tuple[int, float], ...]) -> MacroModel:
    rows = np.array([r for r, _ in points], dtype=np.float64)
    area = rows * word_bits / np.array([d for _, d in points], dtype=np.float64)
    a = np.stack([np.ones_like(rows), rows], axis=1) / area[:, None]  # relative-error least squares
    (fixed, per_row), *_ = np.linalg.lstsq(a, np.ones_like(rows), rcond=None)
    return MacroModel(float(fixed), float(per_row), word_bits)


def macro_model(table: MacroDensity, bitcell_um2: float = 0.0, mlc_sense_area_factor: float = 0.0) -> MacroModel:
    """The two-constant macro model fitted to one TechSpec density table, floored at the bit cells' own area
    (so deep macros never get denser than the cell allows); SpecError when a point of the table already is."""
    for rows, dens in table.mbit_per_mm2_by_rows.items():
        if bitcell_um2 > 0 and dens > 1 / bitcell_um2:
            raise SpecError(
                f"macro density {dens} Mbit/mm^2 at {rows} rows is denser than the bit cell allows "
                f"({1 / bitcell_um2:.1f} Mbit/mm^2 for {bitcell_um2} um^2)"
            )
    m = _fit(table.word_bits, tuple(sorted(table.mbit_per_mm2_by_rows.items())))
    return MacroModel(m.fixed_um2, m.per_row_um2, m.word_bits, mlc_sense_area_factor, bitcell_um2)


def rom_macro_model(tech: TechSpec) -> MacroModel:
    return macro_model(tech.rom_macro, tech.rom_bitcell_um2, tech.mlc_sense_area_factor)


def sram_macro_model(tech: TechSpec) -> MacroModel:
    return macro_model(tech.sram_macro, tech.sram_bitcell_um2)


def memory_area_um2(tech: TechSpec, kind: str, rows: int, cols: int, macros: int, bits_per_cell: int = 1) -> float:
    """Area of `macros` macros of rows x cols cells, as SRAM, standard ROM or B-ROM (fused: `fused_area_um2`)."""
    if kind == "sram":
        return macros * sram_macro_model(tech).area_um2(rows, cols, bits_per_cell)
    rom = macros * rom_macro_model(tech).area_um2(rows, cols, bits_per_cell)
    if kind == "rom":
        return rom
    if kind in ("brom", "fused"):
        return rom * tech.brom_area_factor
    raise ValueError(f"unknown memory kind {kind!r}")


def fused_area_um2(tech: TechSpec, brom_um2: float, logic_um2: float) -> float:
    """Footprint of a fused B-ROM/compute cell: the metal-heavy array over the device-layer logic; the
    array's own cells keep `rom_array_device_share` of the device layer under it."""
    array = brom_um2 * (1 - tech.fused_logic_share)
    device = array * tech.rom_array_device_share + brom_um2 * tech.fused_logic_share + logic_um2
    return max(array, device)


def mac_array_um2(tech: TechSpec, macs: int, precision: str) -> float:
    return macs * tech.mac_area_um2[precision]


def accumulators_um2(tech: TechSpec, macs: int, tree_inputs: int, bits: int) -> float:
    """Output accumulators behind the adder trees: one register + adder of `bits` per tree."""
    return math.ceil(macs / tree_inputs) * bits * (tech.flop_um2_per_bit + tech.adder_um2_per_bit)


def l_unit_logic_um2(chip: ChipSpec, tech: TechSpec) -> float:
    """The MAC array is sized for its widest use (4-bit MACs split into 2-bit ones, and so on), plus the
    accumulators of its adder trees (as many as its widest use has trees)."""
    lu = chip.l_unit
    macs = max(
        mac_array_um2(tech, n, l_unit_mac_precision(chip, tech.mac_area_um2, b))
        for b, n in lu.macs_per_cycle_by_weight_bits.items()
    )
    trees = max(lu.macs_per_cycle_by_weight_bits.values())
    return macs + accumulators_um2(tech, trees, lu.adder_tree_inputs, lu.accumulator_bits)


def l_unit_um2(chip: ChipSpec, tech: TechSpec) -> dict[str, float]:
    rom = chip.l_unit.rom
    kind = "brom" if rom.brom else "rom"
    mem = memory_area_um2(tech, kind, rom.macro_rows, rom.macro_cols, rom.macros, rom.bits_per_cell)
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
        "sram": memory_area_um2(tech, "sram", s.macro_rows, s.macro_cols, s.macros, s.bits_per_cell),
        "lora_macs": mac_array_um2(tech, h.lora_macs_per_cycle, chip.precision.lora),
        "attention_macs": mac_array_um2(tech, h.attention_macs_per_cycle, chip.precision.kv),
    }
    return _utilized(parts, chip.floorplan.h_unit_utilization)


def vector_unit_um2(chip: ChipSpec, tech: TechSpec) -> dict[str, float]:
    s = chip.vector_unit.sram
    parts = {
        "sram": memory_area_um2(tech, "sram", s.macro_rows, s.macro_cols, s.macros, s.bits_per_cell),
        "lanes": chip.vector_unit.lanes * tech.vector_lane_area_um2,
    }
    return _utilized(parts, chip.floorplan.vector_unit_utilization)


def mesh_router_ports(rows: int, cols: int) -> int:
    """Ports of all routers of a rows x cols mesh: each has its local port and one per neighbour."""
    links = rows * (cols - 1) + cols * (rows - 1)
    return rows * cols + 2 * links


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
    ports = mesh_router_ports(chip.mesh.rows, chip.mesh.cols)
    nodes = chip.mesh.rows * chip.mesh.cols
    router_um2 = chip.noc.link_width_bits * tech.router_area_um2_per_link_bit * ports / nodes  # mean router
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
    lu = chip.l_unit
    logic = mac_array_um2(tech, study.macs, precision)
    logic += accumulators_um2(tech, study.macs, lu.adder_tree_inputs, lu.accumulator_bits)
    mac_pj = e.mac_pj[precision]
    bits_per_cycle = study.macros * study.macro_cols
    op: OperatingPoint = operating_point(chip, tech)
    out = []
    for kind in MEMORY_KINDS:
        mem = memory_area_um2(tech, kind, study.macro_rows, study.macro_cols, study.macros)
        area = fused_area_um2(tech, mem, logic) if kind == "fused" else mem + logic
        depth = read_energy_scale(tech.sram_physics if kind == "sram" else tech.rom_physics, study.macro_rows)
        dynamic_pj_per_cycle = (bits_per_cycle * read_pj[kind] * depth + study.macs * mac_pj) * op.dynamic_energy_scale
        leakage_mw = tech.leakage_mw_per_mm2 * op.leakage_scale * area / UM2_PER_MM2
        out.append(LUnitVariant(kind, area, dynamic_pj_per_cycle * chip.clock_hz * 1e-9 + leakage_mw))
    return out
