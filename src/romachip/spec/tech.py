"""TechSpec: a process technology as data: cell and macro densities, energy per action, leakage.

Energy follows Accelergy: energy = action counts x energy per action; this file only holds the
per-action table, with units in every name and a source for every number in the YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from romachip.spec._load import load_yaml_model, preset_names

Strict = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # every number finite


class MacroDensity(BaseModel):
    """Compiled macro density as a function of depth (rows) at a fixed word width."""

    model_config = Strict
    word_bits: PositiveInt = Field(description="Word width the densities were measured at.")
    mbit_per_mm2_by_rows: dict[int, PositiveFloat] = Field(
        description="Macro rows -> density in Mbit/mm^2 (periphery included)."
    )


class EnergyTable(BaseModel):
    """Energy per action, in picojoules."""

    model_config = Strict
    rom_read_pj_per_bit: PositiveFloat = Field(description="Standard ROM macro, per bit read.")
    brom_read_pj_per_bit: PositiveFloat = Field(description="B-ROM, per bit read.")
    fused_read_pj_per_bit: PositiveFloat = Field(description="Fused B-ROM/compute cell, per bit read.")
    sram_read_pj_per_bit: PositiveFloat = Field(description="SRAM macro, per bit read.")
    sram_write_pj_per_bit: PositiveFloat = Field(description="SRAM macro, per bit written.")
    mac_pj: dict[str, PositiveFloat] = Field(
        description="Energy of one MAC, by operand precision; `bfp16_int<b>`: an L-Unit MAC of a bf16 "
        "block-floating-point activation (16-bit aligned integer) x a b-bit weight code."
    )
    vector_op_pj: PositiveFloat = Field(description="One elementwise op on the vector unit (fp16/fp32).")
    wire_pj_per_bit_mm: PositiveFloat = Field(description="On-chip wire, per bit per mm.")
    router_pj_per_bit: float = Field(
        0.0, ge=0, description="Mesh router (buffer write/read, crossbar, arbitration), per bit per router crossed."
    )


class VoltageSpec(BaseModel):
    """Voltage/frequency relation (alpha-power law, Sakurai & Newton 1990): a gate's speed goes as
    (V - V_t)^alpha / V. The chip runs at the lowest voltage (not below `min_v`) that meets its clock;
    dynamic energy scales as (V / nominal_v)^2 (C V^2), leakage power as V / nominal_v."""

    model_config = Strict
    nominal_v: PositiveFloat = Field(description="Nominal supply voltage; the energy table holds at it.")
    threshold_v: PositiveFloat = Field(description="Threshold voltage V_t of the alpha-power law.")
    alpha: PositiveFloat = Field(description="Velocity-saturation exponent of the alpha-power law (1 to 2).")
    f_max_hz: PositiveFloat = Field(description="Highest clock the chip's pipeline stages meet, at nominal_v.")
    min_v: PositiveFloat = Field(description="Lowest operating voltage (memory read/retention margin).")

    @model_validator(mode="after")
    def _ordered(self) -> VoltageSpec:
        if not self.threshold_v < self.min_v <= self.nominal_v:
            raise ValueError(
                f"need threshold_v < min_v <= nominal_v, got {self.threshold_v} / {self.min_v} / {self.nominal_v}"
            )
        return self


class MemoryPhysics(BaseModel):
    """How a macro's read energy and access time depend on its depth (bitline length, rows) and width."""

    model_config = Strict
    energy_ref_rows: PositiveInt = Field(description="Macro rows at which the energy table's read energy holds.")
    bitline_energy_share: float = Field(
        ge=0, le=1, description="Share of the read energy at energy_ref_rows that scales with the bitline (rows)."
    )
    access_fixed_ps: PositiveFloat = Field(description="Access time of a macro apart from its bitline, at nominal_v.")
    access_ps_per_row: float = Field(ge=0, description="Bitline delay per row, at nominal_v.")


class HostLinkSpec(BaseModel):
    """The link between the chip and its host (what off-chip tables, adapter loads and tokens cross)."""

    model_config = Strict
    schema_version: Literal[1] = Field(1, description="Version of this schema.")
    name: str = Field(description="Host link preset name.")
    description: str = Field("", description="What this link is.")
    bandwidth_bytes_per_s: PositiveFloat = Field(description="Sustained bandwidth, one direction.")
    energy_pj_per_bit: PositiveFloat = Field(description="Energy per bit moved, end to end (host memory + I/O).")
    latency_s: float = Field(ge=0, description="Latency of one transfer (request to first byte).")
    token_io_bytes: int = Field(
        8, ge=0, description="Bytes a decode step exchanges besides tables: token in, token out."
    )


class TechSpec(BaseModel):
    """A process technology: densities, energy per action, leakage."""

    model_config = Strict
    schema_version: Literal[1] = Field(1, description="Version of this schema.")
    name: str = Field(description="Technology preset name.")
    node_nm: PositiveInt = Field(description="Process node.")
    sram_bitcell_um2: PositiveFloat = Field(description="High-density 6T SRAM bit cell area.")
    rom_bitcell_um2: PositiveFloat = Field(description="Mask ROM bit cell area.")
    rom_macro: MacroDensity = Field(description="Standard ROM macro densities.")
    sram_macro: MacroDensity = Field(description="SRAM macro densities.")
    brom_area_factor: PositiveFloat = Field(description="B-ROM area / standard ROM area, same capacity.")
    mac_area_um2: dict[str, PositiveFloat] = Field(
        description="Area of one MAC, by operand precision (keys as `mac_pj`)."
    )
    energy: EnergyTable
    leakage_mw_per_mm2: PositiveFloat = Field(description="Static power per mm^2 of logic and memory.")
    fused_logic_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of a B-ROM macro's area that is device-layer logic (decoders, pattern generators, "
        "sensing); a fused cell moves it, with the MACs, under the metal-heavy array.",
    )
    vector_lane_area_um2: float = Field(
        0.0, ge=0, description="One vector-unit lane (FP16/FP32 ALU, special functions, registers)."
    )
    router_area_um2_per_link_bit: float = Field(
        0.0, ge=0, description="Mesh router area per bit of link width and per port (buffers, crossbar share)."
    )
    rom_array_device_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of a B-ROM array's device layer its own cells take; a fused cell hides logic only "
        "under the rest and pays for what does not fit.",
    )
    flop_um2_per_bit: float = Field(0.0, ge=0, description="One flip-flop (accumulator and pipeline registers).")
    adder_um2_per_bit: float = Field(0.0, ge=0, description="One full-adder bit (accumulators).")
    mlc_sense_area_factor: float = Field(
        0.0,
        ge=0,
        description="Column periphery (sense amplifiers, references) added per extra reference level of a "
        "multi-level cell, as a share of a binary column's: a b-bit cell needs 2^b - 1 levels.",
    )
    voltage: VoltageSpec | None = Field(None, description="Voltage/frequency relation; None: fixed, no f_max.")
    rom_physics: MemoryPhysics | None = Field(None, description="ROM macro depth model; None: depth-blind.")
    sram_physics: MemoryPhysics | None = Field(None, description="SRAM macro depth model; None: depth-blind.")
    wire_delay_ps_per_mm: float = Field(
        0.0, ge=0, description="Repeated on-chip wire delay per mm at nominal_v (0: hops_per_cycle must be pinned)."
    )
    router_bypass_ps: float = Field(0.0, ge=0, description="Delay of passing a router on a bypassed (SMART) path.")


def list_techs() -> list[str]:
    return preset_names("tech")


def load_tech(name_or_path: str | Path) -> TechSpec:
    return load_yaml_model(TechSpec, name_or_path, "tech", "technology")


def list_host_links() -> list[str]:
    return preset_names("hosts")


def load_host_link(name_or_path: str | Path) -> HostLinkSpec:
    return load_yaml_model(HostLinkSpec, name_or_path, "hosts", "host link")
