"""FP8 E4M3 (OCP "E4M3FN", the format of torch.float8_e4m3fn): LoRA weights and FP8 activations.

One byte: S EEEE MMM, exponent bias 7.
    exponent 1..15 : (-1)^S * 2^(E-7) * (1 + M/8)        (E=15, M=7 is NaN, so the largest is 448)
    exponent 0     : (-1)^S * 2^(-6)  * (M/8)            (subnormals, smallest 2^-9)
There is no infinity; S.1111.111 (0x7F / 0xFF) is NaN.

Encoding rounds to nearest, ties to even (the code with an even mantissa), and saturates: any finite
value beyond ±448, and ±inf, becomes ±448. NaN becomes 0x7F. (torch's cast agrees everywhere except
above 464, where it returns NaN instead of saturating.)

Scaled quantization: x ≈ decode(codes) * scale with scale = amax / 448 in float32 (1.0 for an all-zero
slice), codes = encode(x / scale).
"""

from __future__ import annotations

import numpy as np

FP8_E4M3_MAX = 448.0
FP8_E4M3_NAN_CODE = 0x7F
_SIGN_BIT = 0x80


def _decode_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int64)
    exp = (codes >> 3) & 0xF
    man = codes & 0x7
    normal = (1.0 + man / 8.0) * np.exp2(exp - 7.0)
    subnormal = (man / 8.0) * 2.0**-6
    mag = np.where(exp == 0, subnormal, normal)
    values = np.where(codes & _SIGN_BIT, -mag, mag)
    values[(codes & 0x7F) == 0x7F] = np.nan
    return values.astype(np.float32)


FP8_E4M3_TABLE = _decode_table()  # code -> float32, 256 entries
FP8_E4M3_TABLE.setflags(write=False)
_POS_VALUES = FP8_E4M3_TABLE[:0x7F]  # codes 0..126: every finite non-negative value, ascending
_MIDPOINTS = (_POS_VALUES[:-1] + _POS_VALUES[1:]) / np.float32(2)  # exact in float32


def fp8_e4m3_decode(codes: np.ndarray) -> np.ndarray:
    """uint8 codes -> float32 values (NaN for 0x7F/0xFF)."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise TypeError(f"FP8 codes must be uint8, got {codes.dtype}")
    return FP8_E4M3_TABLE[codes]


def fp8_e4m3_encode(x: np.ndarray) -> np.ndarray:
    """float -> uint8 E4M3 codes: round to nearest even, saturate to ±448, NaN -> 0x7F."""
    x = np.asarray(x, dtype=np.float32)
    mag = np.minimum(np.abs(x), np.float32(FP8_E4M3_MAX))  # saturates inf too
    nan = np.isnan(x)
    mag = np.where(nan, np.float32(0), mag)
    # Midpoints strictly below mag: code i covers (mid[i-1], mid[i]]; at mid[i] exactly, pick the even code.
    i = np.searchsorted(_MIDPOINTS, mag, side="left")
    at_tie = (i < _MIDPOINTS.size) & (_MIDPOINTS[np.minimum(i, _MIDPOINTS.size - 1)] == mag)
    code = i + (at_tie & (i % 2 == 1))
    code = code.astype(np.uint8) | np.where(np.signbit(x), np.uint8(_SIGN_BIT), np.uint8(0))
    return np.where(nan, np.uint8(FP8_E4M3_NAN_CODE), code).astype(np.uint8)


def fp8_scale(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """amax / 448 in float32, over the whole tensor (axis=None: a 0-d array) or one per index of `axis`.

    With `axis=k` the result keeps every dimension (size 1 except dimension k), so it broadcasts against x.
    """
    x = np.asarray(x, dtype=np.float32)
    if axis is None:
        amax = np.max(np.abs(x)) if x.size else np.float32(0)
        amax = np.asarray(amax, dtype=np.float32)
    else:
        axis = axis % x.ndim
        reduce = tuple(d for d in range(x.ndim) if d != axis)
        amax = np.max(np.abs(x), axis=reduce, keepdims=True) if reduce else np.abs(x)
    scale = (amax / np.float32(FP8_E4M3_MAX)).astype(np.float32)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def quantize_fp8(x: np.ndarray, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scaled FP8: returns (codes uint8 like x, scale float32) with x ≈ fp8_e4m3_decode(codes) * scale.

    axis=None: one scale for the tensor. axis=k: one scale per index along dimension k (for a LoRA
    matrix [out, in], axis=0 gives one scale per output row), shaped to broadcast against x.
    """
    x = np.asarray(x, dtype=np.float32)
    scale = fp8_scale(x, axis)
    return fp8_e4m3_encode(x / scale), scale


def dequantize_fp8(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """decode(codes) * scale, in float32."""
    return (fp8_e4m3_decode(codes) * np.asarray(scale, dtype=np.float32)).astype(np.float32)
