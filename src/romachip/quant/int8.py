"""Symmetric INT8 with one float32 scale per slice: activations into the L-Units, the KV cache.

    scale = amax / 127                       float32 division, computed in float32; 1.0 if amax == 0
    q     = clip(rint(x / scale), -127, 127) float32 division, round half to even, int8
    x    ≈ q * scale

The code -128 is never produced, so the grid is symmetric and -q never overflows.
"Per token": one scale per row (reduced over the last axis; activations [tokens, hidden], also a weight
[out, in] per output channel). "Per channel": one scale per last-axis channel (reduced over every other
axis; e.g. K cache [tokens, kv_dim] with one scale per channel).
"""

from __future__ import annotations

import numpy as np

INT8_QMAX = 127


def int8_scale(x: np.ndarray, reduce_axes: tuple[int, ...]) -> np.ndarray:
    """amax / 127 over `reduce_axes` (kept as size-1 dimensions), float32; 1.0 where the slice is all zero."""
    x = np.asarray(x, dtype=np.float32)
    amax = np.max(np.abs(x), axis=reduce_axes, keepdims=True) if x.size else np.zeros((1,) * x.ndim, np.float32)
    scale = (amax / np.float32(INT8_QMAX)).astype(np.float32)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def quantize_int8_with_scale(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """q = clip(rint(x / scale), -127, 127) as int8, for a given (broadcastable) float32 scale."""
    x = np.asarray(x, dtype=np.float32)
    q = np.rint(x / np.asarray(scale, dtype=np.float32))
    return np.clip(q, -INT8_QMAX, INT8_QMAX).astype(np.int8)


def quantize_int8(x: np.ndarray, reduce_axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(q int8 like x, scale float32 with size-1 `reduce_axes`): one scale per slice over `reduce_axes`."""
    x = np.asarray(x, dtype=np.float32)
    axes = tuple(a % x.ndim for a in reduce_axes)
    scale = int8_scale(x, axes)
    return quantize_int8_with_scale(x, scale), scale


def quantize_int8_per_token(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One scale per row: x [..., hidden] -> (q [..., hidden], scale [..., 1])."""
    return quantize_int8(x, (-1,))


def quantize_int8_per_channel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One scale per last-axis channel: x [..., channels] -> (q, scale [1, ..., 1, channels])."""
    x = np.asarray(x, dtype=np.float32)
    return quantize_int8(x, tuple(range(x.ndim - 1)))


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """q * scale in float32."""
    return (np.asarray(q).astype(np.float32) * np.asarray(scale, dtype=np.float32)).astype(np.float32)
