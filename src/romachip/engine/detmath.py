"""Deterministic arithmetic for the numeric contract (docs/numerics.md).

Everything here is built from IEEE basic operations (+ - * / sqrt, exact scalings by powers of two,
round-to-nearest-even), each a separate NumPy ufunc call, so no fused multiply-add and no library
transcendental can change a bit from one machine to another. Floating-point reductions are sequential
folds (`numpy.add.accumulate`), never pairwise or threaded sums.
"""

from __future__ import annotations

from decimal import Context, Decimal
from math import factorial

import numpy as np

from romachip.native import optional_module

#: The native module's functions and arguments this code calls (ROMACHIP_NATIVE_ABI in _native.h).
NATIVE_ABI = 4

# optional (setup.py): without it every step runs on the NumPy path (same bits)
_lunit = optional_module(
    "romachip.engine._lunit",
    NATIVE_ABI,
    "the native kernel",
    "The engine takes its NumPy path meanwhile (same results, slower).",
)

# Cody-Waite split of ln 2 (fdlibm): LN2_HI has trailing zero bits, so k * LN2_HI is exact for |k| < 2^11.
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e00
EXP_HI = 709.78
EXP_LO = -745.2
_EXP_COEFFS = [1 / factorial(n) for n in range(9, -1, -1)]  # int/int: correctly rounded; highest first

# pi/2 in three parts (fdlibm pio2_1, pio2_2, pio2_2t): k * PIO2_1 and k * PIO2_2 are exact for k < 2^20.
PIO2_1 = 1.57079632673412561417e00
PIO2_2 = 6.07710050630396597660e-11
PIO2_3 = 2.02226624879595063154e-21
TWO_OVER_PI = 6.36619772367581382433e-01
_SIN_COEFFS = [(-1) ** n / factorial(2 * n + 1) for n in range(10, -1, -1)]  # r * P(r^2), degree 21
_COS_COEFFS = [(-1) ** n / factorial(2 * n) for n in range(10, -1, -1)]  # P(r^2), degree 20


def seq_sum(a: np.ndarray, axis: int) -> np.ndarray:
    """The sequential sum ((a0 + a1) + a2) + ... along `axis`, in a's dtype."""
    a = np.asarray(a)
    if a.shape[axis] == 0:
        return np.zeros(np.delete(a.shape, axis), dtype=a.dtype)
    if axis == 0 and a.shape[0] <= 64:  # a short leading axis: whole-row adds are faster, the same fold
        acc = a[0]
        for row in a[1:]:
            acc = acc + row
        return acc
    return np.take(np.add.accumulate(a, axis=axis), -1, axis=axis)


def _horner(coeffs: list[float], x: np.ndarray) -> np.ndarray:
    p = np.full_like(x, coeffs[0])
    for c in coeffs[1:]:  # p*x then +c: two roundings, never fused
        p *= x
        p += c
    return p


def exp64(x: np.ndarray) -> np.ndarray:
    """exp in binary64, bit-identical everywhere (Cody-Waite reduction, degree-9 Taylor, exact 2^k).

    Runs in the native module where it was built (the same steps in C, one IEEE operation each; tested
    against exp64_numpy bit for bit), else as NumPy ufuncs."""
    x = np.asarray(x, dtype=np.float64)
    if _lunit is not None:
        out = np.empty(x.shape)
        _lunit.exp64(np.ascontiguousarray(x), out)
        return out
    return exp64_numpy(x)


def exp64_numpy(x: np.ndarray) -> np.ndarray:
    """exp64 as NumPy ufuncs: the definition the native one is held to."""
    x = np.asarray(x, dtype=np.float64)
    xc = np.clip(x, EXP_LO, EXP_HI)
    k = xc * INV_LN2
    np.rint(k, out=k)
    tmp = k * LN2_HI
    r = xc - tmp  # (x - k*LN2_HI) - k*LN2_LO
    np.multiply(k, LN2_LO, out=tmp)
    r -= tmp
    p = _horner(_EXP_COEFFS, r)
    ki = k.astype(np.int64)
    half = ki // 2  # two exact steps keep 2^k representable at both ends of the range
    ki -= half
    out = np.ldexp(np.ldexp(p, half), ki)
    if xc.size and (xc.max() >= EXP_HI or xc.min() <= EXP_LO):  # rare: saturate the ends
        out[x >= EXP_HI] = np.inf
        out[x <= EXP_LO] = 0.0
    return out


def _reduce_pio2(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    theta = np.asarray(theta, dtype=np.float64)
    k = np.rint(theta * TWO_OVER_PI)
    r = ((theta - k * PIO2_1) - k * PIO2_2) - k * PIO2_3
    return r, k.astype(np.int64) & 3


def sincos64(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sin, cos) of theta >= 0 in binary64, bit-identical everywhere."""
    r, quadrant = _reduce_pio2(theta)
    r2 = r * r
    s = _horner(_SIN_COEFFS, r2) * r
    c = _horner(_COS_COEFFS, r2)
    sin = np.select([quadrant == 0, quadrant == 1, quadrant == 2], [s, c, -s], -c)
    cos = np.select([quadrant == 0, quadrant == 1, quadrant == 2], [c, -s, -c], s)
    return sin, cos


def pow_f32(base: float, exponent_num: int, exponent_den: int) -> np.float32:
    """f32(base ** (num/den)), correctly rounded via 40-digit decimal arithmetic (machine independent)."""
    ctx = Context(prec=40)
    value = ctx.power(Decimal(repr(float(base))), ctx.divide(Decimal(exponent_num), Decimal(exponent_den)))
    return np.float32(float(value))


def flog2(m: np.ndarray) -> np.ndarray:
    """floor(log2 m) for m > 0, exact (from the exponent field); int64."""
    _, e = np.frexp(np.asarray(m, dtype=np.float64))
    return e.astype(np.int64) - 1


def pow2(k: np.ndarray) -> np.ndarray:
    """2.0 ** k exactly, binary64, for integer k in [-1074, 1023]."""
    return np.ldexp(1.0, np.asarray(k, dtype=np.int64))


def to_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest bfloat16 (ties to even), returned as float32 (finite inputs)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    bias = np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    return ((u + bias) & np.uint32(0xFFFF0000)).view(np.float32)


FP16_MAX = 65504.0


def to_fp16(x: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest float16 (ties to even, saturating at +-65504), returned as float32."""
    return np.clip(x, -FP16_MAX, FP16_MAX).astype(np.float16).astype(np.float32)
