"""TechSpec: a process technology as data: cell and macro densities, energy per action, leakage.

Energy follows Accelergy: energy = action counts x energy per action; this file only holds the
per-action table, with units in every name and a source for every number in the YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from romachip.spec._load import load_yaml_model, preset_names

Strict = ConfigDict(frozen=True, extra="forbid")


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
        0.0, ge=0, description="Mesh router area per bit of link width (5 ports, buffers, crossbar)."
    )


def list_techs() -> list[str]:
    return preset_names("tech")


def load_tech(name_or_path: str | Path) -> TechSpec:
    return load_yaml_model(TechSpec, name_or_path, "tech", "technology")
