"""Energy = event counts x energy per event (the TechSpec's table), plus leakage x time.

Events counted by the timing model for each op: ROM bits read (standard ROM, B-ROM or fused cell, as
the chip's L-Units are built), MACs by precision (L-Unit weights, LoRA, attention), SRAM bits read and
written (H-Units: LoRA weights and KV cache; vector units: activations), vector-unit operations, and
bit-hops on the NoC times the length of one hop (the pitch of a matrix unit, from the area model).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from romachip.errors import SpecError
from romachip.perf.physics import ChipPhysics
from romachip.spec.chip import ChipSpec
from romachip.spec.tech import HostLinkSpec, TechSpec

PJ_PER_MJ = 1e9
#: TechSpec MAC key prefix of an L-Unit MAC, by the chip's activation precision. bf16 activations enter
#: the L-Units block-aligned to a 15-bit integer window (docs/numerics.md), so the MAC is an integer one,
#: 16-bit x weight code ("bfp16_int4"); integer activations keep the weight width's class ("int4").
L_MAC_PREFIX = {"bf16": "bfp16_int"}


def l_unit_mac_precision(chip: ChipSpec, table: dict[str, float], weight_bits: int) -> str:
    """The key of `table` (TechSpec `mac_pj` or `mac_area_um2`) for one L-Unit MAC on `weight_bits`-bit
    codes and the chip's activation precision: the narrowest entry at least that wide."""
    prefix = L_MAC_PREFIX.get(chip.precision.activation, "int")
    for bits in range(weight_bits, 17):
        if f"{prefix}{bits}" in table:
            return f"{prefix}{bits}"
    raise SpecError(
        f"the technology has no L-Unit MAC entry for {chip.precision.activation} activations x {weight_bits}-bit "
        f"weights (looked for {prefix}{weight_bits}..{prefix}16); add one to mac_pj and mac_area_um2"
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


class Event(StrEnum):
    """What the timing model counts; each maps to a (unit type, event kind) and an energy per event."""

    ROM_BITS = "rom_bits"  # L-Unit ROM bits read
    L_MACS = "l_macs"  # L-Unit MACs; the key's `weight_bits` says which MAC
    LORA_MACS = "lora_macs"
    ATTENTION_MACS = "attention_macs"
    H_SRAM_READ_BITS = "h_sram_read_bits"
    H_SRAM_WRITE_BITS = "h_sram_write_bits"
    VECTOR_OPS = "vector_ops"
    VECTOR_SRAM_READ_BITS = "vector_sram_read_bits"
    VECTOR_SRAM_WRITE_BITS = "vector_sram_write_bits"
    NOC_BIT_HOPS = "noc_bit_hops"
    HOST_BITS = "host_bits"  # bits over the host link (off-chip tables, token I/O)


class EventKey(NamedTuple):
    """A counted event: its kind and, for L-Unit MACs, the weight code width (0 otherwise)."""

    event: Event
    weight_bits: int = 0

    def __str__(self) -> str:
        return f"{self.event.value}_int{self.weight_bits}" if self.weight_bits else self.event.value


@functools.cache  # one key per width (the timing model asks for every projection)
def l_macs(weight_bits: int) -> EventKey:
    return EventKey(Event.L_MACS, weight_bits)


#: (unit type, event kind) each event is reported under.
EVENT_PLACE = {
    Event.ROM_BITS: ("l_units", "rom_read"),
    Event.L_MACS: ("l_units", "mac"),
    Event.LORA_MACS: ("h_units", "lora_mac"),
    Event.ATTENTION_MACS: ("h_units", "attention_mac"),
    Event.H_SRAM_READ_BITS: ("h_units", "sram_read"),
    Event.H_SRAM_WRITE_BITS: ("h_units", "sram_write"),
    Event.VECTOR_OPS: ("vector_units", "vector_op"),
    Event.VECTOR_SRAM_READ_BITS: ("vector_units", "sram_read"),
    Event.VECTOR_SRAM_WRITE_BITS: ("vector_units", "sram_write"),
    Event.NOC_BIT_HOPS: ("noc_and_control", "noc"),
    Event.HOST_BITS: ("host", "link"),
}


class EnergyModel:
    """Energy per event of one chip at its operating point: the TechSpec table x the voltage scale
    (dynamic energy ~ V^2), memory reads x their macro's depth scale (perf.physics), NoC bit-hops x the
    hop length; host-link bits at the host link's energy; leakage x area x V / nominal x time."""

    def __init__(
        self, chip: ChipSpec, tech: TechSpec, *, hop_mm: float, physics: ChipPhysics, host: HostLinkSpec
    ) -> None:
        self.chip, self.tech, self.hop_mm, self.physics, self.host = chip, tech, hop_mm, physics, host
        self._pj: dict[EventKey, float] = {}

    def pj(self, key: EventKey) -> float:
        if key not in self._pj:
            self._pj[key] = self._event_pj(key)
        return self._pj[key]

    def _event_pj(self, key: EventKey) -> float:
        chip, e, ph = self.chip, self.tech.energy, self.physics
        dyn = ph.op.dynamic_energy_scale
        match key.event:
            case Event.ROM_BITS:
                return rom_read_pj_per_bit(chip, self.tech) * ph.rom_read_scale * dyn
            case Event.L_MACS:
                return e.mac_pj[l_unit_mac_precision(chip, e.mac_pj, key.weight_bits)] * dyn
            case Event.LORA_MACS:
                return e.mac_pj[chip.precision.lora] * dyn
            case Event.ATTENTION_MACS:
                return e.mac_pj[chip.precision.kv] * dyn
            case Event.H_SRAM_READ_BITS:
                return e.sram_read_pj_per_bit * ph.h_sram_read_scale * dyn
            case Event.H_SRAM_WRITE_BITS:
                return e.sram_write_pj_per_bit * ph.h_sram_read_scale * dyn
            case Event.VECTOR_SRAM_READ_BITS:
                return e.sram_read_pj_per_bit * ph.vector_sram_read_scale * dyn
            case Event.VECTOR_SRAM_WRITE_BITS:
                return e.sram_write_pj_per_bit * ph.vector_sram_read_scale * dyn
            case Event.VECTOR_OPS:
                return e.vector_op_pj * dyn
            case Event.NOC_BIT_HOPS:
                return (e.wire_pj_per_bit_mm * self.hop_mm + e.router_pj_per_bit) * dyn
            case Event.HOST_BITS:
                return self.host.energy_pj_per_bit
        raise SpecError(f"no energy per event for {key}")

    def leakage_mw_per_mm2(self) -> float:
        return self.tech.leakage_mw_per_mm2 * self.physics.op.leakage_scale

    def phase(
        self, events: dict[EventKey, float], *, time_s: float, area_by_unit_mm2: dict[str, float]
    ) -> EnergyReport:
        """Dynamic energy of the counted events plus leakage of every unit type over `time_s`."""
        parts: dict[tuple[str, str], float] = {}
        for key, count in events.items():
            place = EVENT_PLACE[key.event]
            parts[place] = parts.get(place, 0.0) + count * self.pj(key) / PJ_PER_MJ
        leak = self.leakage_mw_per_mm2()
        for unit, mm2 in area_by_unit_mm2.items():
            parts[(unit, "leakage")] = leak * mm2 * time_s  # mW x s = mJ
        return EnergyReport(parts, time_s)
