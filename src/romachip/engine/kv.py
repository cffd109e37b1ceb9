"""The KV cache in the H-Unit SRAM (docs/numerics.md, "KV cache"); attention.py computes over it.

Keys and values are held in the form the attention MACs read: integer vectors (as float64, exact) and one
scale per (token, KV head).
"""

from __future__ import annotations

import numpy as np

from romachip.engine.detmath import _lunit, to_fp16
from romachip.engine.kernels import NATIVE_PATHS, align_blocks, native_threads, quantize_int8_rows
from romachip.errors import GenerationError

#: the KV precisions the H-Units store; "fp32" exists only in the float mode
HARDWARE_KV_MODES = ("int8", "fp16")
KV_MODES = (*HARDWARE_KV_MODES, "fp32")
MAX_CONTEXT_TOKENS = 1 << 15  # the PV product stays exact in binary64 below this (docs/numerics.md)
WIDEST = len(NATIVE_PATHS) - 1  # the native encode's widest vector path: whatever the CPU has
KV_WINDOW_BITS = 14  # fp16 vectors aligned to 2^(E-14): |vi| <= 2^15


def encode_vectors(
    x: np.ndarray, mode: str, *, native: bool = False, dtype: type = np.float64
) -> tuple[np.ndarray, np.ndarray]:
    """[..., d] float32 -> (integers [..., d], scale float64 [...]) in the KV precision `mode`; the integers
    float64, or `dtype` (int8 / int32 storage) with `native`, which computes the same steps in C."""
    if native and _lunit is not None and mode in HARDWARE_KV_MODES:
        x = np.ascontiguousarray(x, dtype=np.float32)
        out, scale = np.empty(x.shape, dtype=dtype), np.empty(x.shape[:-1])
        rows, d = x.size // x.shape[-1], x.shape[-1]
        _lunit.encode(x, out, scale, rows, d, HARDWARE_KV_MODES.index(mode), WIDEST, native_threads())
        return out, scale
    if mode == "int8":
        xi, scale = quantize_int8_rows(x)
        return xi.astype(np.float64), scale.astype(np.float64)
    if mode == "fp16":
        return align_blocks(to_fp16(x), KV_WINDOW_BITS)
    raise GenerationError(f"unknown KV precision {mode!r}; choose one of {', '.join(KV_MODES)}")


class KVCache:
    """Per-layer K and V for up to `capacity` tokens of one sequence (integers as stored, scales float64)."""

    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, capacity: int, mode: str) -> None:
        if mode not in KV_MODES:
            raise GenerationError(f"unknown KV precision {mode!r}; choose one of {', '.join(KV_MODES)}")
        self.mode = mode
        self.capacity = capacity
        self.length = 0
        # the integers as they are stored: int8 (|vi| <= 127) or int32 (fp16 form, |vi| <= 2^15)
        dtype = {"fp32": np.float32, "int8": np.int8, "fp16": np.int32}[mode]
        shape = (num_layers, kv_heads, capacity, head_dim)
        self.k = np.zeros(shape, dtype=dtype)
        self.v = np.zeros(shape, dtype=dtype)
        self.k_scale = np.ones(shape[:3], dtype=np.float64)
        self.v_scale = np.ones(shape[:3], dtype=np.float64)

    def write(self, layer: int, start: int, k: np.ndarray, v: np.ndarray, *, native: bool = False) -> None:
        """Store k, v [tokens, kv_heads, d] (float32, k after RoPE) at positions start..start+tokens-1
        (`native`: encoded in C, the same steps)."""
        end = start + k.shape[0]
        if end > self.capacity:
            raise GenerationError(f"KV cache holds {self.capacity} tokens; position {end - 1} does not fit")
        kt, vt = k.transpose(1, 0, 2), v.transpose(1, 0, 2)
        if self.mode == "fp32":
            self.k[layer, :, start:end] = kt
            self.v[layer, :, start:end] = vt
            return
        store = {"native": native, "dtype": self.k.dtype}
        self.k[layer, :, start:end], self.k_scale[layer, :, start:end] = encode_vectors(kt, self.mode, **store)
        self.v[layer, :, start:end], self.v_scale[layer, :, start:end] = encode_vectors(vt, self.mode, **store)
