"""Energy = event counts x energy per event (the TechSpec's table), plus leakage x time.

Events counted by the timing model for each op: ROM bits read (standard ROM, B-ROM or fused cell, as
the chip's L-Units are built), MACs by precision (L-Unit weights, LoRA, attention), SRAM bits read and
written (H-Units: LoRA weights and KV cache; vector units: activations), vector-unit operations, and
bit-hops on the NoC times the length of one hop (the pitch of a matrix unit, from the area model).
"""

from __future__ import annotations

from dataclasses import dataclass

from romachip.errors import SpecError
from romachip.spec.chip import ChipSpec
from romachip.spec.tech import TechSpec

PJ_PER_MJ = 1e9
#: TechSpec MAC key prefix of an L-Unit MAC, by the chip's activation precision. bf16 activations enter
#: the L-Units block-aligned to a 15-bit integer window (docs/numerics.md), so the MAC is an integer one,
#: 16-bit x weight code ("bfp16_int4"); integer activations keep the weight width's class ("int4").
L_MAC_PREFIX = {"bf16": "bfp16_int"}


def l_unit_mac_precision(chip: ChipSpec, table: dict[str, float], weight_bits: int) -> str:
    """The key of `table` (TechSpec `mac_pj` or `mac_area_um2`) for one L-Unit MAC on `weight_bits`-bit
    codes and the chip's activation precision: the narrowest entry at least that wide."""
    prefix = L_MAC_PREFIX.get(chip.precision.activation, "int")
    for bits in range(weight_bits, 9):
        if f"{prefix}{bits}" in table:
            return f"{prefix}{bits}"
    raise SpecError(
        f"the technology has no L-Unit MAC entry for {chip.precision.activation} activations x {weight_bits}-bit "
        f"weights (looked for {prefix}{weight_bits}..{prefix}8); add one to mac_pj and mac_area_um2"
    )


@dataclass(frozen=True)
class EnergyReport:
    """Energy of one phase, in mJ, by (unit type, event kind); `total_mj` is the sum of `parts_mj`."""

    parts_mj: dict[tuple[str, str], float]
    time_s: float

    @property
    def total_mj(self) -> float:
        return sum(self.parts_mj.values())

    @property
    def power_w(self) -> float:
        return self.total_mj * 1e-3 / self.time_s if self.time_s > 0 else 0.0

    def by_unit_mj(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (unit, _), v in self.parts_mj.items():
            out[unit] = out.get(unit, 0.0) + v
        return out

    def by_event_mj(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (_, event), v in self.parts_mj.items():
            out[event] = out.get(event, 0.0) + v
        return out

    def scaled(self, factor: float) -> EnergyReport:
        """The same phase spread over `factor` times as many tokens (e.g. per token)."""
        return EnergyReport({k: v * factor for k, v in self.parts_mj.items()}, self.time_s * factor)


def rom_read_pj_per_bit(chip: ChipSpec, tech: TechSpec) -> float:
    rom, e = chip.l_unit.rom, tech.energy
    if rom.brom and rom.fused:
        return e.fused_read_pj_per_bit
    return e.brom_read_pj_per_bit if rom.brom else e.rom_read_pj_per_bit


def event_table(chip: ChipSpec, tech: TechSpec, hop_mm: float) -> dict[str, tuple[str, str, float]]:
    """Event name -> (unit type, event kind, pJ per event)."""
    e = tech.energy
    table = {
        "rom_bits": ("l_units", "rom_read", rom_read_pj_per_bit(chip, tech)),
        "lora_macs": ("h_units", "lora_mac", e.mac_pj[chip.precision.lora]),
        "attention_macs": ("h_units", "attention_mac", e.mac_pj[chip.precision.kv]),
        "h_sram_read_bits": ("h_units", "sram_read", e.sram_read_pj_per_bit),
        "h_sram_write_bits": ("h_units", "sram_write", e.sram_write_pj_per_bit),
        "vector_ops": ("vector_units", "vector_op", e.vector_op_pj),
        "vector_sram_read_bits": ("vector_units", "sram_read", e.sram_read_pj_per_bit),
        "vector_sram_write_bits": ("vector_units", "sram_write", e.sram_write_pj_per_bit),
        "noc_bit_hops": ("noc_and_control", "noc", e.wire_pj_per_bit_mm * hop_mm + e.router_pj_per_bit),
    }
    for bits in (2, 3, 4, 8):  # event names carry the weight width; the MAC also depends on the activation
        table[f"l_macs_int{bits}"] = ("l_units", "mac", e.mac_pj[l_unit_mac_precision(chip, e.mac_pj, bits)])
    return table


def phase_energy(
    events: dict[str, float],
    chip: ChipSpec,
    tech: TechSpec,
    *,
    time_s: float,
    area_by_unit_mm2: dict[str, float],
    hop_mm: float,
) -> EnergyReport:
    """Dynamic energy of the counted events plus leakage of every unit type over `time_s`."""
    table = event_table(chip, tech, hop_mm)
    parts: dict[tuple[str, str], float] = {}
    for name, count in events.items():
        if name not in table:
            raise KeyError(f"no energy per event for {name!r}")
        unit, kind, pj = table[name]
        parts[(unit, kind)] = parts.get((unit, kind), 0.0) + count * pj / PJ_PER_MJ
    for unit, mm2 in area_by_unit_mm2.items():
        parts[(unit, "leakage")] = tech.leakage_mw_per_mm2 * mm2 * time_s  # mW x s = mJ
    return EnergyReport(parts, time_s)
