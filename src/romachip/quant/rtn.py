"""Round-to-nearest quantization into a WeightFormat, vectorised over the whole tensor.

Per group (the columns of one output row that share a scale; see formats.py):

asymmetric (the ROMA format)
    lo = min(min(w), 0), hi = max(max(w), 0)       zero is always inside the range, so w = 0 is exact
    s  = to_scale_dtype((hi - lo) / qmax)          rounded toward zero (see below)
    z  = clip(round(-lo / s), 0, qmax)
    q  = clip(round(w / s) + z, 0, qmax)
symmetric (z fixed at 2**(bits-1), h = 2**(bits-1) - 1)
    s  = to_scale_dtype(max|w| / h)
    q  = clip(round(w / s) + z, z - h, z + h)      the code 0 is never produced, the grid is symmetric

`round` is round-half-away-from-zero (so both ends of a group land on the end codes even at exact ties),
`w / s` is a float32 division against the *stored* scale, the scale arithmetic runs in float64. A group
with no range (all zero) gets s = 1.

Why the scale rounds toward zero: then the group's extremes always land on the end codes (0 and qmax),
so quantizing a dequantized tensor again gives back the same codes, scales and zeros, exactly (for fp16
and bf16 scales; fp32 products are not exact). The price is a clip of at most qmax * (s_exact - s) at the
top: |w - ŵ| <= s/2 + qmax * (s_exact - s), i.e. s/2 within 2^-10 * qmax relative for fp16 scales.

Scales are held as float16 for "fp16", and as float32 holding exactly-representable values for "bf16" and
"fp32" (see `scale_to_float32`).
"""

from __future__ import annotations

import numpy as np

from romachip.errors import FormatError
from romachip.quant.formats import WeightFormat
from romachip.quant.tensor import QuantizedTensor

_FP16_MAX = 65504.0


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round to nearest, ties away from zero (exact: no `floor(x + 0.5)` double rounding)."""
    t = np.trunc(x)
    return np.where(np.abs(x - t) == 0.5, t + np.sign(x), np.rint(x))


def round_scale(scale: np.ndarray, scale_dtype: str) -> np.ndarray:
    """float64 scales -> the format's scale dtype, rounded toward zero; raises if one does not fit."""
    scale = np.asarray(scale, dtype=np.float64)
    if scale_dtype == "fp16":
        if np.any(scale > _FP16_MAX):
            raise FormatError(
                f"a group's scale {float(scale.max()):.4g} exceeds the fp16 maximum {_FP16_MAX}: the weights are "
                "too large for an fp16-scaled format; use scale_dtype 'fp32' or 'bf16'"
            )
        out = scale.astype(np.float16)
        up = out.astype(np.float64) > scale
        out[up] = np.nextafter(out[up], np.float16(0))
        return out
    f32 = scale.astype(np.float32)
    up = f32.astype(np.float64) > scale
    f32[up] = np.nextafter(f32[up], np.float32(0))
    if scale_dtype == "bf16":  # truncating the low 16 bits rounds a positive float32 toward zero
        f32 = (f32.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    elif scale_dtype != "fp32":
        raise FormatError(f"unknown scale dtype {scale_dtype!r}")
    if not np.all(np.isfinite(f32)):
        raise FormatError(f"a group's scale overflows {scale_dtype}: the weights hold inf or values too large")
    return f32


def scale_to_float32(scales: np.ndarray) -> np.ndarray:
    """Stored scales as the float32 values they stand for (exact for every scale dtype)."""
    return np.asarray(scales).astype(np.float32)


def group_params(lo: np.ndarray, hi: np.ndarray, fmt: WeightFormat) -> tuple[np.ndarray, np.ndarray]:
    """Per-group (scales in the stored dtype, zeros uint8) from the group's min and max (any shape).

    `lo`/`hi` are the group's raw min and max; zero is folded into the range here.
    """
    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    exact = np.maximum(-lo, hi) / (fmt.symmetric_zero - 1) if fmt.symmetric else (hi - lo) / fmt.qmax
    if not np.all(np.isfinite(exact)):
        raise FormatError("cannot quantize a weight group holding inf or NaN")
    scales = round_scale(np.where(exact > 0, exact, 1.0), fmt.scale_dtype)
    tiny = scale_to_float32(scales) == 0  # below the dtype's smallest subnormal: use the smallest step there is
    if np.any(tiny):
        smallest = round_scale(np.array([np.finfo(np.float64).tiny]), fmt.scale_dtype)
        scales[tiny] = np.nextafter(smallest[0], np.array(1, dtype=scales.dtype))
    if fmt.symmetric:
        zeros = np.full(scales.shape, fmt.symmetric_zero, dtype=np.uint8)
    else:
        z = round_half_away(-lo / scale_to_float32(scales).astype(np.float64))
        zeros = np.clip(z, 0, fmt.qmax).astype(np.uint8)
    return scales, zeros


def code_bounds(fmt: WeightFormat) -> tuple[int, int]:
    """Smallest and largest code the quantizers produce (symmetric formats skip code 0)."""
    return (1, fmt.qmax) if fmt.symmetric else (0, fmt.qmax)


def quantize_codes(w: np.ndarray, scale_f32: np.ndarray, zero: np.ndarray, fmt: WeightFormat) -> np.ndarray:
    """q = clip(round(w / s) + z) elementwise, all arrays broadcastable; returns uint8."""
    lo_code, hi_code = code_bounds(fmt)
    x = np.asarray(w, dtype=np.float32) / np.asarray(scale_f32, dtype=np.float32)
    q = round_half_away(x) + np.asarray(zero, dtype=np.float32)
    return np.clip(q, lo_code, hi_code).astype(np.uint8)


def _grouped(w: np.ndarray, g: int) -> np.ndarray:
    """[out, in] -> [out, groups, g], the ragged last group padded with zeros (zero is in every range)."""
    out, inp = w.shape
    groups = -(-inp // g)
    pad = groups * g - inp
    if pad:
        w = np.concatenate([w, np.zeros((out, pad), dtype=w.dtype)], axis=1)
    return w.reshape(out, groups, g)


def checked_weight(w: np.ndarray) -> np.ndarray:
    """A [out, in] float32 weight, refused (FormatError) when empty, not 2-D, or holding inf or NaN."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2 or 0 in w.shape:
        raise FormatError(f"expected a non-empty 2-D weight [out, in], got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise FormatError("cannot quantize a weight holding inf or NaN")
    return w


def quantize_rtn(w: np.ndarray, fmt: WeightFormat) -> QuantizedTensor:
    """Round-to-nearest quantization of a [out, in] float weight into `fmt` (see module docstring)."""
    w = checked_weight(w)
    out, inp = w.shape
    g = fmt.group_len(inp)
    wg = _grouped(w, g)
    scales, zeros = group_params(wg.min(axis=2), wg.max(axis=2), fmt)
    codes = quantize_codes(wg, scale_to_float32(scales)[:, :, None], zeros[:, :, None], fmt)
    codes = np.ascontiguousarray(codes.reshape(out, -1)[:, :inp])
    return QuantizedTensor(codes=codes, scales=scales, zeros=zeros, fmt=fmt)
