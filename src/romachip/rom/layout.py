"""The byte layout of a ROM image (docs/rom-format.md is the full specification).

    offset  size  field
    0       8     magic  b"ROMACHIP"
    8       4     u32    format version (FORMAT_VERSION)
    12      4     u32    CRC-32 (zlib) of the manifest bytes
    16      8     u64    manifest length N in bytes (JSON, UTF-8, space-padded so 24 + N is a multiple of 64)
    24      N     manifest
    24 + N  P     payload: each L-Unit's ROM in unit order, then the host region; no holes

All integers little-endian. header + payload = file size, exactly.
"""

from __future__ import annotations

import struct
from typing import Any

from romachip.errors import RomImageError
from romachip.quant.formats import FormatId, WeightFormat

MAGIC = b"ROMACHIP"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIQ")
HEADER_BYTES = HEADER.size  # 24
ALIGN_BYTES = 64  # the payload and every unit's region start on a multiple of this
MAX_MANIFEST_BYTES = 1 << 31  # refuse absurd lengths before allocating

# Columns of each tensor's tile table in the manifest, in this order.
TILE_KEYS = (
    "unit",
    "row_start",
    "row_stop",
    "col_start",
    "col_stop",
    "rom_offset_bits",
    "rom_span_bits",
    "code_bits",
    "scale_bits",
    "zero_bits",
    "crc32",
)
HOST_UNIT = -1  # the `unit` of a tile that lives in the host region (an off-chip table)


def align_up(n: int, to: int = ALIGN_BYTES) -> int:
    return -(-n // to) * to


def pack_header(manifest_crc32: int, manifest_len: int) -> bytes:
    return HEADER.pack(MAGIC, FORMAT_VERSION, manifest_crc32, manifest_len)


def unpack_header(data: bytes, where: str) -> tuple[int, int, int]:
    """(version, manifest crc32, manifest length) of a header, validated."""
    if len(data) < HEADER_BYTES:
        raise RomImageError(
            f"{where}: truncated: the file has {len(data)} bytes, a ROM image header needs {HEADER_BYTES}; "
            "burn the image again"
        )
    magic, version, crc, mlen = HEADER.unpack(data[:HEADER_BYTES])
    if magic != MAGIC:
        raise RomImageError(f"{where}: not a romachip ROM image (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        newer = "a newer romachip; upgrade" if version > FORMAT_VERSION else "an unsupported version; burn it again"
        raise RomImageError(
            f"{where}: ROM image format version {version} is not supported (this romachip reads version "
            f"{FORMAT_VERSION}); it was written by {newer}"
        )
    if mlen > MAX_MANIFEST_BYTES or (HEADER_BYTES + mlen) % ALIGN_BYTES:
        raise RomImageError(f"{where}: corrupted header: manifest length {mlen} is impossible")
    return version, crc, mlen


def format_to_json(fmt: WeightFormat | None) -> dict[str, Any]:
    """A tensor's number format as written in the manifest (None: an FP16 vector)."""
    if fmt is None:
        return {"dtype": "fp16"}
    return {
        "format_id": int(fmt.format_id),
        "name": fmt.format_id.name,
        "bits": fmt.bits,
        "group_size": fmt.group_size,
        "symmetric": fmt.symmetric,
        "scale_dtype": fmt.scale_dtype,
        "zero_bits": fmt.zero_bits,
        "describe": fmt.describe(),
    }


def format_from_json(d: dict[str, Any], where: str) -> WeightFormat | None:
    if d.get("dtype") == "fp16":
        return None
    try:
        fid = FormatId(d["format_id"])
        fmt = WeightFormat(
            bits=d["bits"], group_size=d["group_size"], symmetric=d["symmetric"], scale_dtype=d["scale_dtype"]
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise RomImageError(f"{where}: invalid weight format {d!r} ({exc})") from None
    if fid != fmt.format_id or d.get("zero_bits", fmt.zero_bits) != fmt.zero_bits:
        raise RomImageError(f"{where}: weight format {d!r} is inconsistent (format id vs symmetric/zero bits)")
    return fmt
