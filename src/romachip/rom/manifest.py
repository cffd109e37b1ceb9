"""The ROM image's manifest as types: what the writer writes and the reader validates (docs/rom-format.md).

Nothing outside rom/ reads the manifest's JSON: they read `RomImage.manifest`, a validated `Manifest`.
Any manifest that does not validate (a missing field, a wrong type, a model or chip spec out of range)
is a malformed image (RomImageError), never a KeyError deep in a reader.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from romachip.spec.chip import ChipSpec
from romachip.spec.model import ModelSpec

MANIFEST_FORMAT = "romachip-rom-image"

_Strict = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False)


class TileTable(BaseModel):
    """One tensor's tiles, a column per field (the manifest's TILE_KEYS), one entry per tile."""

    model_config = _Strict
    unit: list[int] = Field(description="L-Unit of each tile (-1: the host region).")
    row_start: list[int] = Field(description="First output row of each tile.")
    row_stop: list[int] = Field(description="One past its last output row.")
    col_start: list[int] = Field(description="First input column (always 0: tiles hold whole rows).")
    col_stop: list[int] = Field(description="One past its last input column.")
    rom_offset_bits: list[int] = Field(description="Where the tile starts in its unit's ROM, in bits.")
    rom_span_bits: list[int] = Field(description="Bits the tile occupies there, word padding included.")
    code_bits: list[int] = Field(description="The tile's code bits (FP16 values for a norm vector).")
    scale_bits: list[int] = Field(description="Its scale bits.")
    zero_bits: list[int] = Field(description="Its zero-point bits.")
    crc32: list[int] = Field(description="CRC-32 of the tile's stored (encoded) bytes.")

    def column(self, key: str) -> list[int]:
        return getattr(self, key)


class TensorRecord(BaseModel):
    model_config = _Strict
    name: str = Field(description="Hugging Face tensor name.")
    kind: str = Field(description="attention, mlp, embedding, lm_head, norm or host.")
    layer: int = Field(description="Block index (-1: not part of a block).")
    shape: tuple[int, int] = Field(description="[out, in] as stored ([1, hidden] for a norm vector).")
    format: dict[str, Any] = Field(description="Number format (layout.format_to_json).")
    location: Literal["rom", "host"] = Field(description="L-Unit ROM or the host region.")
    tiles: TileTable = Field(description="Where each tile is.")


class UnitRecord(BaseModel):
    model_config = _Strict
    index: int = Field(description="L-Unit index (mesh order).")
    mesh_row: int = Field(description="Mesh row.")
    mesh_col: int = Field(description="Mesh column.")
    payload_offset: int = Field(description="Start of the unit's region in the payload, bytes.")
    payload_bytes: int = Field(description="Length of its region (a multiple of 64).")
    used_bits: int = Field(description="ROM bits its tiles use, padding included.")
    crc32: int = Field(description="CRC-32 of its whole region.")


class HostRecord(BaseModel):
    model_config = _Strict
    payload_offset: int = Field(description="Start of the host region in the payload, bytes.")
    payload_bytes: int = Field(description="Its length.")
    crc32: int = Field(description="CRC-32 of the region.")


class ChipRecord(BaseModel):
    model_config = _Strict
    preset: str = Field(description="The chip preset (or file) the image was burned for.")
    spec: ChipSpec = Field(description="The fully resolved chip spec.")


class EncodingRecord(BaseModel):
    model_config = _Strict
    rom: Literal["brom4", "plain"] = Field(description="How unit regions are encoded.")
    word_bits: int = Field(description="Bits of one ROM word.")
    rows_per_group: int = Field(description="Words per B-ROM group (1: plain).")
    align_bits: int = Field(description="Every tile starts on a multiple of this.")
    bit_order: Literal["lsb-first"] = Field(description="Bit order of packed values.")
    unit_align_bytes: int = Field(description="Unit regions start on a multiple of this.")
    norm_dtype: Literal["fp16"] = Field(description="Storage of norm vectors.")


class TokenizerRecord(BaseModel):
    model_config = _Strict
    tokenizer_json: str | None = Field(None, alias="json", description="tokenizer.json text, if any.")
    chat_template: str | None = Field(None, description="The chat template, if any.")


class PlacementRecord(BaseModel):
    """Placement.summary() as written, plus the layer_groups group count."""

    model_config = _Strict
    chip: str
    strategy: str
    split: str
    policy: str
    align_bits: int
    matrix_units: int
    vector_units: int
    tiles: int
    word_bits: int
    unit_rom_bits: int
    unit_used_bits_max: int
    unit_used_bits_min: int
    code_bits: int
    scale_bits: int
    zero_bits: int
    padding_bits: int
    kv_layout: str
    kv_rings: int
    kv_bytes_per_token: int
    lora_bytes: int
    num_groups: int | None = None


class Manifest(BaseModel):
    """The length-prefixed JSON manifest of a ROM image (docs/rom-format.md)."""

    model_config = _Strict
    format: Literal["romachip-rom-image"] = Field(MANIFEST_FORMAT, description="Always romachip-rom-image.")
    version: int = Field(description="Format version (layout.FORMAT_VERSION).")
    model: ModelSpec = Field(description="The model's shape.")
    weight_format: dict[str, Any] = Field(description="The model's weight format (layout.format_to_json).")
    storage_policy: str = Field(description="Where the embedding table and LM head live (tensor_bits.py).")
    chip: ChipRecord
    placement: PlacementRecord
    encoding: EncodingRecord
    tokenizer: TokenizerRecord
    source: str = Field(description="Where the checkpoint came from.")
    metadata: dict[str, Any] = Field(description="Quantizer and other provenance.")
    units: list[UnitRecord]
    host: HostRecord
    payload_bytes: int = Field(description="Bytes after the manifest: every unit's region, then the host's.")
    tensors: list[TensorRecord]

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
