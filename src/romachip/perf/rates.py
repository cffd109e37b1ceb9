"""Per-cycle rates of a chip (link bytes, MACs, lanes, host link, macro access cycles) and the one formula
for each unit's cycles that timing and the decode-step signature share."""

from __future__ import annotations

import math
from dataclasses import dataclass

from romachip.perf.physics import ChipPhysics
from romachip.spec.chip import PRECISION_BYTES, ChipSpec
from romachip.spec.tech import HostLinkSpec
from romachip.workload import KvConfig


@dataclass(frozen=True)
class ChipRates:
    """Per-cycle rates of the chip, derived once from the ChipSpec."""

    link_bytes: float
    hop_cycles: int
    hops_per_cycle: int
    act_bytes: float
    partial_bytes: float
    kv_bytes: float
    kv_scale_bytes: int  # per cached (token, KV head) vector: the engine's scale (workload.py)
    lora_bytes: float
    pipeline: int
    lora_macs: int
    attention_macs: int
    h_sram_read_bits: int
    vector_lanes_total: int
    token_batch: int
    h_pipeline: int
    vector_pipeline: int
    rom_access_cycles: int  # cycles per row read of an L-Unit ROM macro (its depth, perf.physics)
    h_sram_access_cycles: int  # cycles per row read of an H-Unit SRAM macro
    host_bytes_per_cycle: float  # host link bandwidth at the chip's clock (0: no host link modelled)
    host_latency_cycles: int
    token_io_bytes: int

    @classmethod
    def of(cls, chip: ChipSpec, physics: ChipPhysics | None = None, host: HostLinkSpec | None = None) -> ChipRates:
        """Rates of `chip`; `physics` resolves the technology (derived hops per cycle, macro access cycles),
        `host` the host link. Without them: a pinned `noc.hops_per_cycle` (else 1), single-cycle macro reads."""
        f = chip.clock_hz
        return cls(
            link_bytes=chip.noc.link_width_bits / 8,
            hop_cycles=chip.noc.hop_latency_cycles,
            hops_per_cycle=physics.hops_per_cycle if physics else (chip.noc.hops_per_cycle or 1),
            act_bytes=PRECISION_BYTES[chip.precision.activation],
            partial_bytes=PRECISION_BYTES[chip.precision.partial],
            kv_bytes=PRECISION_BYTES[chip.precision.kv],
            kv_scale_bytes=KvConfig(dtype=chip.precision.kv).scale_bytes_per_vector,
            lora_bytes=PRECISION_BYTES[chip.precision.lora],
            pipeline=chip.l_unit.pipeline_depth_cycles,
            lora_macs=chip.h_unit.lora_macs_per_cycle,
            attention_macs=chip.h_unit.attention_macs_per_cycle,
            h_sram_read_bits=chip.h_unit.sram.read_bits_per_cycle,
            vector_lanes_total=chip.vector_units * chip.vector_unit.lanes,
            token_batch=chip.l_unit.prefill_token_batch,
            h_pipeline=chip.h_unit.pipeline_depth_cycles,
            vector_pipeline=chip.vector_unit.pipeline_depth_cycles,
            rom_access_cycles=physics.rom_access_cycles if physics else 1,
            h_sram_access_cycles=physics.h_sram_access_cycles if physics else 1,
            host_bytes_per_cycle=host.bandwidth_bytes_per_s / f if host else 0.0,
            host_latency_cycles=math.ceil(host.latency_s * f) if host else 0,
            token_io_bytes=host.token_io_bytes if host else 0,
        )

    def vector_cycles(self, vector_ops: int) -> int:
        """Cycles of `vector_ops` elementwise operations spread over every lane of every vector unit."""
        return math.ceil(vector_ops / self.vector_lanes_total) + self.vector_pipeline

    def h_sram_cycles(self, bits: float) -> int:
        """Cycles an H-Unit needs to read `bits` from its SRAM (one word per macro per access)."""
        return math.ceil(bits / self.h_sram_read_bits) * self.h_sram_access_cycles

    def host_cycles(self, nbytes: float) -> int:
        """Cycles of one transfer over the host link: its latency plus the bytes at its bandwidth."""
        if self.host_bytes_per_cycle <= 0:
            return 0
        return self.host_latency_cycles + math.ceil(nbytes / self.host_bytes_per_cycle)

    def path_cycles(self, hops: int) -> int:
        return self.hop_cycles * math.ceil(hops / self.hops_per_cycle) if hops > 0 else 0

    def link_cycles(self, nbytes: float) -> int:
        return math.ceil(nbytes / self.link_bytes) if nbytes > 0 else 0


def l_unit_cycles(
    chip: ChipSpec,
    rows: int,
    in_features: int,
    weight_bits: int,
    tokens: int,
    rom_rows: int,
    *,
    rom_access_cycles: int = 1,
    token_batch: int | None = None,
) -> tuple[int, str]:
    """(cycles, bound) of one projection tile on an L-Unit for `tokens` tokens: the larger of its MAC
    cycles and its ROM row reads (each `rom_access_cycles` long, once per `token_batch` tokens)."""
    macs_per_cycle = chip.l_unit.macs_per_cycle_by_weight_bits.get(weight_bits)
    if macs_per_cycle is None:  # no native width: run on the next wider one
        wider = sorted(b for b in chip.l_unit.macs_per_cycle_by_weight_bits if b >= weight_bits)
        macs_per_cycle = chip.l_unit.macs_per_cycle_by_weight_bits[
            wider[0] if wider else max(chip.l_unit.macs_per_cycle_by_weight_bits)
        ]
    mac_cycles = math.ceil(rows * in_features * tokens / macs_per_cycle)
    batch = token_batch or chip.l_unit.prefill_token_batch
    rom_cycles = rom_rows * rom_access_cycles * math.ceil(tokens / batch)
    bound = "macs" if mac_cycles >= rom_cycles else "rom"
    return max(mac_cycles, rom_cycles) + chip.l_unit.pipeline_depth_cycles, bound
