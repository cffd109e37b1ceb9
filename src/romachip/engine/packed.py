"""Weights as the engine holds them for the native kernel: codes packed at their own width.

Each row of codes is padded with zero codes to a multiple of 32 columns; a chunk of 32 columns takes
4 * bits bytes (bits / 8 bytes per weight, as in the ROM image), laid out so that one vector load and a few
shifts unpack it (src/romachip/engine/_lunit.c has the same table):

    8 bits: byte k                        4 bits: byte k % 16, nibble k // 16
    2 bits: byte k % 8, bits 2 * (k // 8) 3 bits: low 2 bits as the 2-bit layout (bytes 0..7), bit 2 at
                                                  bit k of the little-endian 32-bit word in bytes 8..11

The padding columns meet zero activations, so they add nothing. Outputs are grouped in tiles of 8 (the
kernel forms 8 outputs at once): codes stored [tile, chunk, output, chunk bytes], scales and zero points
[tile, group, output], the last tile padded with zero rows (whose outputs are never written).
"""

from __future__ import annotations

import numpy as np

from romachip.errors import FormatError

CHUNK = 32
OUT_TILE = 8
PACKED_WIDTHS = (2, 3, 4, 8)


def padded_columns(in_features: int) -> int:
    return -(-in_features // CHUNK) * CHUNK


def row_bytes(in_features: int, bits: int) -> int:
    return padded_columns(in_features) // CHUNK * 4 * bits


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes [out, in] (< 2**bits) -> packed uint8 [out, row_bytes(in, bits)]."""
    if bits not in PACKED_WIDTHS:
        raise FormatError(f"the native kernel packs {PACKED_WIDTHS}-bit codes, not {bits}-bit")
    out, inp = codes.shape
    c = np.zeros((out, padded_columns(inp)), dtype=np.uint8)
    c[:, :inp] = codes
    c = c.reshape(out, -1, CHUNK)
    if bits == 8:
        packed = c
    elif bits == 4:
        packed = c[..., :16] | (c[..., 16:] << 4)
    else:
        q = (c & 3).reshape(out, -1, 4, 8)
        packed = q[..., 0, :] | (q[..., 1, :] << 2) | (q[..., 2, :] << 4) | (q[..., 3, :] << 6)
        if bits == 3:
            high = np.packbits((c >> 2) & 1, axis=-1, bitorder="little")
            packed = np.concatenate([packed, high], axis=-1)
    return np.ascontiguousarray(packed.reshape(out, -1))


def unpack_codes(packed: np.ndarray, bits: int, in_features: int) -> np.ndarray:
    """The inverse of pack_codes: uint8 codes [out, in_features]."""
    out = packed.shape[0]
    p = packed.reshape(out, -1, 4 * bits)
    if bits == 8:
        c = p
    elif bits == 4:
        c = np.concatenate([p & 15, p >> 4], axis=-1)
    else:
        c = np.concatenate([(p[..., :8] >> (2 * s)) & 3 for s in range(4)], axis=-1)
        if bits == 3:
            c |= np.unpackbits(p[..., 8:], axis=-1, bitorder="little") << 2
    return np.ascontiguousarray(c.reshape(out, -1)[:, :in_features])


def tile_rows(a: np.ndarray) -> np.ndarray:
    """[out, n] -> [tiles, n, OUT_TILE] (rows padded with zeros to a multiple of OUT_TILE)."""
    out = a.shape[0]
    padded = np.zeros((-(-out // OUT_TILE) * OUT_TILE, a.shape[1]), dtype=a.dtype)
    padded[:out] = a
    return np.ascontiguousarray(padded.reshape(-1, OUT_TILE, a.shape[1]).transpose(0, 2, 1))


def tile_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """pack_codes' [out, row_bytes] -> the kernel's [tiles, chunks, OUT_TILE, 4 * bits] (flattened per tile)."""
    t = tile_rows(packed)  # [tiles, row_bytes, OUT_TILE]
    t = t.reshape(t.shape[0], -1, 4 * bits, OUT_TILE).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(t).reshape(t.shape[0], -1)


def untile_rows(tiled: np.ndarray, out: int) -> np.ndarray:
    """The inverse of tile_rows: [tiles, n, OUT_TILE] -> [out, n]."""
    return np.ascontiguousarray(tiled.transpose(0, 2, 1).reshape(-1, tiled.shape[1])[:out])


def untile_codes(tiled: np.ndarray, bits: int, out: int) -> np.ndarray:
    """The inverse of tile_codes: the kernel's layout -> pack_codes' [out, row_bytes]."""
    t = tiled.reshape(tiled.shape[0], -1, OUT_TILE, 4 * bits).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(t.reshape(-1, t.shape[2] * 4 * bits)[:out])
