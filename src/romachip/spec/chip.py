"""ChipSpec: a ROMA-class chip as data (mesh, units, memories, NoC), validated from YAML presets.

Capacities are derived from organisation (macros x rows x columns x bits per cell), so changing a macro
changes the capacity consistently everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from romachip.errors import CapacityError, SpecError
from romachip.spec._load import load_yaml_model, preset_names

Strict = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # every number finite
Precision = Literal["int2", "int4", "int8", "fp8_e4m3", "fp16", "bf16", "fp32"]
#: Bytes per element of each precision the chip moves or stores (int2/int4: four/two elements a byte).
PRECISION_BYTES: dict[str, float] = {
    "int2": 0.25, "int4": 0.5, "int8": 1, "fp8_e4m3": 1, "fp16": 2, "bf16": 2, "fp32": 4,
}  # fmt: skip
#: Upper bounds of a chip's sizes: far beyond any buildable die, low enough that a typo (or a hostile
#: file) is refused up front instead of allocating tens of GiB for per-unit tables.
MAX_MESH_DIM = 256
MAX_MACRO_ROWS = 2**20
MAX_MACRO_COLS = 2**12
MAX_MACROS = 2**16
MAX_BITS_PER_CELL = 8
MAX_CLOCK_HZ = 100e9


class MacroArray(BaseModel):
    """A bank of identical memory macros."""

    model_config = Strict
    macro_rows: PositiveInt = Field(le=MAX_MACRO_ROWS, description="Words (rows) per macro.")
    macro_cols: PositiveInt = Field(le=MAX_MACRO_COLS, description="Bits per word (columns) per macro.")
    macros: PositiveInt = Field(le=MAX_MACROS, description="Macros per unit.")
    bits_per_cell: PositiveInt = Field(
        1, le=MAX_BITS_PER_CELL, description="Bits stored per bit cell (1 = binary cells)."
    )

    @property
    def bits(self) -> int:
        return self.macro_rows * self.macro_cols * self.macros * self.bits_per_cell

    @property
    def bytes(self) -> int:
        return self.bits // 8

    @property
    def read_bits_per_cycle(self) -> int:
        """One word from every macro per cycle."""
        return self.macro_cols * self.macros * self.bits_per_cell


class RomArray(MacroArray):
    brom: bool = Field(description="B-ROM encoding (4-row groups select one of 16 shared patterns).")
    brom_rows_per_group: PositiveInt = Field(4, description="Address lines taken together by B-ROM.")
    fused: bool = Field(description="MAC logic placed under the B-ROM (device layer) in one fused cell.")
    word_interleave: bool = Field(
        False,
        description="ROM words interleaved over the macros (word w in macro w % macros, row w // macros), so "
        "a tile is read from every macro at once; False: word w in macro w // macro_rows.",
    )

    # -- the word address -> (macro, row, column) mapping: the one definition, used by perf and documented
    # in docs/rom-format.md (the ROM image payload keeps the logical word order; this is where it lives)
    @property
    def word_bits(self) -> int:
        """Bits of one ROM word: one row of one macro."""
        return self.macro_cols * self.bits_per_cell

    @property
    def words(self) -> int:
        return self.macro_rows * self.macros

    def word_location(self, words: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """(macro, row) of logical word addresses of one unit's ROM. Interleaved: word w in macro w % macros
        at row w // macros (consecutive words sit in different macros and are read in the same cycle);
        contiguous: macro w // macro_rows, row w % macro_rows. CapacityError for an address outside the ROM."""
        w = np.asarray(words, dtype=np.int64)
        if w.size and (int(w.min()) < 0 or int(w.max()) >= self.words):
            bad = int(w.min()) if int(w.min()) < 0 else int(w.max())
            raise CapacityError(
                f"ROM word {bad} is outside an L-Unit ROM of {self.words:,} words "
                f"({self.macros} macros x {self.macro_rows} rows); addresses run from 0 to {self.words - 1:,}"
            )
        if self.word_interleave:
            return w % self.macros, w // self.macros
        return w // self.macro_rows, w % self.macro_rows

    def bit_location(self, bits: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(macro, row, column) of bit offsets in a unit's ROM bit stream: stream bit i is bit
        i % word_bits of word i // word_bits, held in column (i % word_bits) // bits_per_cell."""
        b = np.asarray(bits, dtype=np.int64)
        macro, row = self.word_location(b // self.word_bits)
        return macro, row, (b % self.word_bits) // self.bits_per_cell

    def macro_words_max(self, first_word: np.ndarray | int, words: np.ndarray | int) -> np.ndarray:
        """Most words any one macro holds of the word range [first_word, first_word + words): the ROM rows
        the busiest macro reads for one pass over it (macros read one row each per cycle, in parallel).
        The closed form of counting `word_location` over the range (tests/test_layouts.py checks it)."""
        f = np.asarray(first_word, dtype=np.int64)
        n = np.asarray(words, dtype=np.int64)
        if self.word_interleave:  # a run of n consecutive words puts ceil(n / macros) in some macro
            return -(-n // self.macros)
        end = f + n
        split = (f // self.macro_rows + 1) * self.macro_rows  # end of the first macro the range touches
        return np.where(end <= split, n, np.maximum(split - f, np.minimum(end - split, self.macro_rows)))


class LUnitSpec(BaseModel):
    """Low-precision half of a matrix unit: base weights in ROM and the integer MACs beside them."""

    model_config = Strict
    rom: RomArray = Field(description="The unit's weight ROM.")
    macs_per_cycle_by_weight_bits: dict[int, PositiveInt] = Field(
        description="Integer MACs per cycle for each stored weight width (bits -> MACs/cycle)."
    )
    pipeline_depth_cycles: PositiveInt = Field(description="Cycles from ROM read to accumulated output.")
    prefill_token_batch: PositiveInt = Field(
        1,
        description="Tokens multiplied by one ROM row read in prefill (weight reuse): activations of that "
        "many tokens sit at the MAC inputs; also the token granularity of the prefill pipeline (fewer when "
        "a batch's attention scores would not fit the vector-unit SRAM).",
    )
    accumulator_bits: PositiveInt = Field(32, description="Width of one output accumulator.")
    adder_tree_inputs: PositiveInt = Field(
        64, description="Products one adder tree reduces per cycle into one accumulator (MACs / this = accumulators)."
    )


class HUnitSpec(BaseModel):
    """High-precision half of a matrix unit: SRAM for LoRA and KV cache, LoRA and attention compute."""

    model_config = Strict
    sram: MacroArray = Field(description="SRAM shared by LoRA weights and the KV cache.")
    lora_macs_per_cycle: PositiveInt = Field(description="LoRA A/B MACs per cycle (at lora precision).")
    attention_macs_per_cycle: PositiveInt = Field(description="QK^T and PV MACs per cycle.")
    pipeline_depth_cycles: PositiveInt = Field(4, description="SRAM read, multiply, accumulate, write.")


class VectorUnitSpec(BaseModel):
    """Vector unit: norms, softmax, RoPE, SwiGLU, residuals, with its own activation SRAM."""

    model_config = Strict
    sram: MacroArray = Field(description="Activation SRAM.")
    lanes: PositiveInt = Field(description="Elementwise operations per cycle.")
    pipeline_depth_cycles: PositiveInt = Field(2, description="Operand read and write-back around the lanes.")


class MeshSpec(BaseModel):
    """The 2-D mesh of units and the role of each row."""

    model_config = Strict
    rows: PositiveInt = Field(le=MAX_MESH_DIM, description="Rows of the 2-D mesh.")
    cols: PositiveInt = Field(le=MAX_MESH_DIM, description="Columns of the 2-D mesh.")
    row_roles: list[Literal["matrix", "vector"]] = Field(description="Role of each row, top to bottom.")

    @model_validator(mode="after")
    def _roles_match_rows(self) -> MeshSpec:
        if len(self.row_roles) != self.rows:
            raise ValueError(f"row_roles lists {len(self.row_roles)} roles for {self.rows} rows")
        for role in ("matrix", "vector"):  # a mesh needs both: weights live in one, norms/softmax in the other
            if role not in self.row_roles:
                raise ValueError(f"row_roles has no {role!r} row; a chip needs at least one of each")
        return self

    @property
    def matrix_units(self) -> int:
        return self.row_roles.count("matrix") * self.cols

    @property
    def vector_units(self) -> int:
        return self.row_roles.count("vector") * self.cols


class NocSpec(BaseModel):
    """The network-on-chip joining the units."""

    model_config = Strict
    link_width_bits: PositiveInt = Field(description="Bits a link carries per cycle, each direction.")
    hop_latency_cycles: PositiveInt = Field(description="Router + link latency per hop.")
    hops_per_cycle: PositiveInt | None = Field(
        None,
        description="Hops a flit crosses per hop latency on a straight path (SMART-style bypass; at a slow "
        "clock a repeated wire spans several units per cycle). A path of h hops takes "
        "hop_latency_cycles * ceil(h / hops_per_cycle) cycles. None: derived from the technology's wire delay, "
        "the unit pitch of the area model and the clock (perf.physics); a number pins it.",
    )


class PrecisionSpec(BaseModel):
    """Number formats the chip computes and stores in."""

    model_config = Strict
    weight_bits: list[PositiveInt] = Field(min_length=1, description="Weight code widths the L-Units support.")
    activation: Precision = Field(description="Activation precision into the L-Units.")
    lora: Precision = Field(description="Precision of LoRA weights in SRAM.")
    kv: Precision = Field(description="Precision of the KV cache in SRAM.")
    supported_lora: list[Precision] = Field(description="LoRA precisions the H-Units can compute in.")
    supported_kv: list[Precision] = Field(description="KV precisions the H-Units can store.")
    partial: Precision = Field(
        "fp16", description="Precision of results matrix units send to vector units (outputs, scores, partials)."
    )

    @property
    def activation_bytes(self) -> float:
        """Bytes per activation element into the L-Units (PRECISION_BYTES)."""
        return PRECISION_BYTES[self.activation]

    @property
    def lora_bytes(self) -> float:
        return PRECISION_BYTES[self.lora]

    @property
    def kv_bytes(self) -> float:
        return PRECISION_BYTES[self.kv]

    @property
    def partial_bytes(self) -> float:
        return PRECISION_BYTES[self.partial]


class FloorplanSpec(BaseModel):
    """How densely each unit type packs its macros and logic (1.0: no white space, halos or channels)."""

    model_config = Strict
    l_unit_utilization: float = Field(1.0, gt=0, le=1, description="Share of an L-Unit's footprint it uses.")
    h_unit_utilization: float = Field(1.0, gt=0, le=1, description="Share of an H-Unit's footprint it uses.")
    vector_unit_utilization: float = Field(1.0, gt=0, le=1, description="Share of a vector unit's footprint used.")
    control_area_mm2: float = Field(0.0, ge=0, description="Global control, clocking and I/O outside the mesh.")


class LUnitStudySpec(BaseModel):
    """A reference L-Unit organisation for comparing SRAM, ROM, B-ROM and fused implementations."""

    model_config = Strict
    macro_rows: PositiveInt = Field(description="Words per memory macro.")
    macro_cols: PositiveInt = Field(description="Bits per word.")
    macros: PositiveInt = Field(description="Macros in the reference L-Unit.")
    macs: PositiveInt = Field(description="MACs of the reference L-Unit (all macros read every cycle).")
    weight_bits: PositiveInt = Field(description="Weight code width its MACs take.")


class ChipSpec(BaseModel):
    """A ROMA-class chip: mesh, units, memories, NoC and precisions."""

    model_config = Strict
    schema_version: Literal[1] = Field(1, description="Version of this schema.")
    name: str = Field(description="Preset name.")
    description: str = Field("", description="What this chip is.")
    tech: str = Field(description="Technology preset (spec/tech/<name>.yaml) or a path to one.")
    process_node_nm: PositiveInt = Field(description="Process node.")
    clock_hz: float = Field(gt=0, le=MAX_CLOCK_HZ, description="Clock frequency.")
    mesh: MeshSpec
    l_unit: LUnitSpec
    h_unit: HUnitSpec
    vector_unit: VectorUnitSpec
    noc: NocSpec
    precision: PrecisionSpec
    floorplan: FloorplanSpec = Field(FloorplanSpec(), description="Footprint utilisation per unit type.")
    host_link: str = Field(
        "lpddr5x", description="Host link preset (spec/hosts/<name>.yaml) or a path to one: what off-chip tables cross."
    )
    l_unit_study: LUnitStudySpec | None = Field(
        None, description="Reference L-Unit of the four-way (SRAM/ROM/B-ROM/fused) area and power comparison."
    )

    @property
    def matrix_units(self) -> int:
        return self.mesh.matrix_units

    @property
    def vector_units(self) -> int:
        return self.mesh.vector_units

    @property
    def rom_bytes(self) -> int:
        return self.l_unit.rom.bytes * self.matrix_units

    @property
    def h_sram_bytes(self) -> int:
        return self.h_unit.sram.bytes * self.matrix_units

    @property
    def vector_sram_bytes(self) -> int:
        return self.vector_unit.sram.bytes * self.vector_units


def list_chips() -> list[str]:
    return preset_names("presets")


def load_chip(name_or_path: str | Path) -> ChipSpec:
    """A shipped preset name (`roma`) or a path to a chip YAML file."""
    chip = load_yaml_model(ChipSpec, name_or_path, "presets", "chip")
    _check_named_presets(chip, name_or_path)
    return chip


def _check_named_presets(chip: ChipSpec, where: str | Path) -> None:
    """The technology and host link a chip names must exist now, not when a later command first needs them
    (`fit` reads neither, and would pass a chip no simulation can run)."""
    from romachip.spec.tech import list_host_links, list_techs  # tech imports nothing of this module

    for field, value, names in (("tech", chip.tech, list_techs()), ("host_link", chip.host_link, list_host_links())):
        if value not in names and not Path(value).is_file():
            raise SpecError(
                f"chip {where}: field '{field}': {value!r} is neither a preset ({', '.join(names)}) nor a YAML file"
            )
