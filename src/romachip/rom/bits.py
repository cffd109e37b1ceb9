"""Packing of unsigned codes and scales into the LSB-first bit stream of a unit's ROM.

n values of b bits occupy n*b consecutive stream bits, value k at bits [k*b, (k+1)*b), its least
significant bit first; stream bit i is bit i % 8 of byte i // 8. For b = 4 this is the familiar
byte = v[2k] | v[2k+1] << 4; for b = 2, byte = v[4k] | v[4k+1] << 2 | ...; b = 8 is one value per byte.
"""

from __future__ import annotations

import numpy as np

from romachip.errors import FormatError


def packed_bytes(n: int, bits: int) -> int:
    return -(-n * bits // 8)


def pack_uint(values: np.ndarray, bits: int) -> np.ndarray:
    """uint8 values (< 2**bits) -> packed bytes (ceil(n*bits/8) of them)."""
    v = np.ascontiguousarray(values, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return v.copy()
    if bits in (1, 2, 4):
        per = 8 // bits
        pad = (-v.size) % per
        if pad:
            v = np.concatenate([v, np.zeros(pad, dtype=np.uint8)])
        v = v.reshape(-1, per)
        out = v[:, 0].copy()
        for k in range(1, per):
            out |= v[:, k] << (k * bits)
        return out
    if not 1 <= bits <= 8:
        raise FormatError(f"cannot pack {bits}-bit values")
    b = np.unpackbits(v[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(b.reshape(-1), bitorder="little")


def unpack_uint(data: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Packed bytes -> the first n uint8 values of `bits` bits (inverse of pack_uint)."""
    d = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    if d.size < packed_bytes(n, bits):
        raise FormatError(f"{d.size} bytes cannot hold {n} values of {bits} bits")
    if bits == 8:
        return d[:n].copy()
    if bits in (1, 2, 4):
        per = 8 // bits
        mask = np.uint8((1 << bits) - 1)
        d = d[: -(-n // per)]
        out = np.empty((d.size, per), dtype=np.uint8)
        for k in range(per):
            out[:, k] = (d >> (k * bits)) & mask
        return out.reshape(-1)[:n]
    b = np.unpackbits(d, bitorder="little")[: n * bits].reshape(n, bits)
    return (b << np.arange(bits, dtype=np.uint8)).sum(axis=1, dtype=np.uint16).astype(np.uint8)


SCALE_CODEC = {"fp16": 16, "bf16": 16, "fp32": 32}


def pack_scales(scales: np.ndarray, scale_dtype: str) -> np.ndarray:
    """Scales as stored: fp16 / fp32 little-endian IEEE; bf16 as the top 16 bits of the float32 (the
    values are bf16-exact, as the quantizers produce them)."""
    s = np.asarray(scales).reshape(-1)
    if scale_dtype == "fp16":
        return s.astype("<f2").view(np.uint8)
    if scale_dtype == "fp32":
        return s.astype("<f4").view(np.uint8)
    if scale_dtype == "bf16":
        u = s.astype("<f4").view("<u4")
        if np.any(u & np.uint32(0xFFFF)):
            raise FormatError("a bf16 scale holds more than bf16 precision; round the scales to bf16 first")
        return (u >> np.uint32(16)).astype("<u2").view(np.uint8)
    raise FormatError(f"unknown scale dtype {scale_dtype!r}")


def unpack_scales(data: np.ndarray, scale_dtype: str, n: int) -> np.ndarray:
    """Stored scales -> float16 (fp16) or float32 (bf16, fp32), as QuantizedTensor holds them."""
    d = np.ascontiguousarray(data, dtype=np.uint8)
    if scale_dtype == "fp16":
        return d[: 2 * n].view("<f2").astype(np.float16)
    if scale_dtype == "fp32":
        return d[: 4 * n].view("<f4").astype(np.float32)
    if scale_dtype == "bf16":
        return (d[: 2 * n].view("<u2").astype(np.uint32) << np.uint32(16)).view(np.float32)
    raise FormatError(f"unknown scale dtype {scale_dtype!r}")
