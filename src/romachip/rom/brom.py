"""B-ROM encoding: how a block ROM stores bits, and its exact inverse.

A B-ROM takes its address lines four at a time. For each column, the 4 bits stored in a group of 4 rows
form one of 16 patterns; a shared decoder generates all 16 candidate outputs once and each column of the
group is wired to its pattern. What is programmed (the mask) is therefore, per group of 4 rows and per
column, a 4-bit pattern index:

    pattern[g, c] = bit[4g, c] | bit[4g+1, c] << 1 | bit[4g+2, c] << 2 | bit[4g+3, c] << 3

Decoding reads bit[4g+i, c] = (pattern[g, c] >> i) & 1. A last, partial group is padded with zero rows.

Bytes of a unit's ROM. A unit's ROM is a sequence of `word_bits`-bit words (rows); word w holds bits
[w*word_bits, (w+1)*word_bits) of the unit's bit stream, and the stream is LSB-first within each byte
(bit i of the stream is bit i % 8 of byte i // 8). The image stores each group of 4 words as its
4 * word_bits / 2 bytes of pattern indices, column c's index in the low nibble of byte c // 2 when c is
even and in the high nibble when c is odd. The encoding is a bit permutation within each group of 4
words: the encoded bytes of a group sit where its plain bytes were.
"""

from __future__ import annotations

import numpy as np

from romachip.errors import FormatError

ROWS_PER_GROUP = 4

_M = np.uint64
# (shift, mask) steps moving bit i of a 16-bit value to bit 4i, and back
_SPREAD = ((24, 0x000000FF000000FF), (12, 0x000F000F000F000F), (6, 0x0303030303030303), (3, 0x1111111111111111))
_COMPACT = ((3, 0x0303030303030303), (6, 0x000F000F000F000F), (12, 0x000000FF000000FF), (24, 0xFFFF))


def brom_encode(bits: np.ndarray) -> np.ndarray:
    """[rows, cols] of 0/1 -> [ceil(rows/4), cols] uint8 pattern indices (0..15)."""
    b = _check_bits(bits)
    rows, cols = b.shape
    groups = -(-rows // ROWS_PER_GROUP)
    padded = np.zeros((groups * ROWS_PER_GROUP, cols), dtype=np.uint8)
    padded[:rows] = b
    g = padded.reshape(groups, ROWS_PER_GROUP, cols)
    return (g[:, 0] | (g[:, 1] << 1) | (g[:, 2] << 2) | (g[:, 3] << 3)).astype(np.uint8)


def brom_decode(patterns: np.ndarray, rows: int) -> np.ndarray:
    """[groups, cols] pattern indices -> [rows, cols] uint8 bits, the exact inverse of brom_encode."""
    p = np.asarray(patterns)
    if p.ndim != 2 or p.dtype != np.uint8 or (p.size and int(p.max()) > 15):
        raise FormatError("B-ROM patterns must be a 2-D uint8 array of indices 0..15")
    if not (p.shape[0] - 1) * ROWS_PER_GROUP < rows <= p.shape[0] * ROWS_PER_GROUP:
        raise FormatError(f"{p.shape[0]} B-ROM groups cannot hold {rows} rows")
    shifts = np.arange(ROWS_PER_GROUP, dtype=np.uint8)[None, :, None]
    bits = (p[:, None, :] >> shifts) & 1
    return bits.reshape(-1, p.shape[1])[:rows].astype(np.uint8)


def _check_bits(bits: np.ndarray) -> np.ndarray:
    b = np.asarray(bits)
    if b.ndim != 2:
        raise FormatError(f"B-ROM encodes a 2-D [rows, cols] bit array, got shape {b.shape}")
    if b.size and (b.min() < 0 or b.max() > 1):
        raise FormatError("B-ROM encodes bits: every entry must be 0 or 1")
    return b.astype(np.uint8)


def _spread16(x: np.ndarray) -> np.ndarray:
    """Move bit i of a 16-bit value to bit 4i of a uint64."""
    for shift, mask in _SPREAD:
        x = (x | (x << _M(shift))) & _M(mask)
    return x


def _compact16(x: np.ndarray) -> np.ndarray:
    """Inverse of _spread16: bits 0, 4, 8, ... 60 of a uint64 -> bits 0..15."""
    x = x & _M(0x1111111111111111)
    for shift, mask in _COMPACT:
        x = (x | (x >> _M(shift))) & _M(mask)
    return x


def encode_words(raw: np.ndarray, word_bits: int) -> np.ndarray:
    """Plain ROM bytes (a whole number of 4-word groups) -> B-ROM bytes of the same length."""
    raw = _check_groups(raw, word_bits)
    if word_bits == 64:  # the common macro width: a bit-parallel interleave on uint64 words
        w = raw.view("<u8").reshape(-1, ROWS_PER_GROUP)
        out = np.empty_like(w)
        for j in range(4):
            piece = _spread16((w >> _M(16 * j)) & _M(0xFFFF))
            out[:, j] = piece[:, 0] | (piece[:, 1] << _M(1)) | (piece[:, 2] << _M(2)) | (piece[:, 3] << _M(3))
        return out.astype("<u8").view(np.uint8).reshape(-1)
    bits = np.unpackbits(raw, bitorder="little").reshape(-1, word_bits)
    p = brom_encode(bits)
    return (p[:, 0::2] | (p[:, 1::2] << 4)).astype(np.uint8).reshape(-1)


def decode_words(encoded: np.ndarray, word_bits: int) -> np.ndarray:
    """B-ROM bytes -> the plain ROM bytes they encode (inverse of encode_words)."""
    enc = _check_groups(encoded, word_bits)
    if word_bits == 64:
        e = enc.view("<u8").reshape(-1, 4)
        out = np.zeros_like(e)
        for j in range(4):
            for i in range(ROWS_PER_GROUP):
                out[:, i] |= _compact16(e[:, j] >> _M(i)) << _M(16 * j)
        return out.astype("<u8").view(np.uint8).reshape(-1)
    p = np.empty((enc.size * 2,), dtype=np.uint8)
    p[0::2], p[1::2] = enc & 15, enc >> 4
    bits = brom_decode(p.reshape(-1, word_bits), (p.size // word_bits) * ROWS_PER_GROUP)
    return np.packbits(bits.reshape(-1), bitorder="little")


def _check_groups(data: np.ndarray, word_bits: int) -> np.ndarray:
    if word_bits % 8:
        raise FormatError(f"ROM words must be whole bytes for B-ROM encoding, got {word_bits} bits")
    a = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    group_bytes = word_bits * ROWS_PER_GROUP // 8
    if a.size % group_bytes:
        raise FormatError(f"B-ROM data must be whole groups of {group_bytes} bytes, got {a.size} bytes")
    return a
