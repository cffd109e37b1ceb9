"""The KV cache in the H-Unit SRAM and the attention arithmetic (docs/numerics.md, "Attention").

Keys and values are held in the form the attention MACs read: integer vectors (as float64, exact) and one
scale per (token, KV head). Both products of attention are then exact integer matmuls on BLAS; softmax
and normalisation are the contract's float steps in their fixed order.
"""

from __future__ import annotations

import numpy as np
import torch

from romachip.engine.detmath import exp64, flog2, pow2, seq_sum, to_fp16
from romachip.engine.kernels import align_blocks, quantize_int8_rows
from romachip.engine.tap import Observer, OpKind, TapEvent
from romachip.errors import GenerationError

#: the KV precisions the H-Units store; "fp32" exists only in the float mode
HARDWARE_KV_MODES = ("int8", "fp16")
KV_MODES = (*HARDWARE_KV_MODES, "fp32")
MAX_CONTEXT_TOKENS = 1 << 15  # the PV product stays exact in binary64 below this (docs/numerics.md)
KV_WINDOW_BITS = 14  # fp16 vectors aligned to 2^(E-14): |vi| <= 2^15
P_BITS = 21  # softmax weights are put on a 2^-21 grid relative to the row's largest
_QUERY_CHUNK = 256  # query rows per attention pass (bounds the [heads, rows, keys] float64 temporaries)


def encode_vectors(x: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """[..., d] float32 -> (integers float64 [..., d], scale float64 [...]) in the KV precision `mode`."""
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

    def write(self, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        """Store k, v [tokens, kv_heads, d] (float32, k after RoPE) at positions start..start+tokens-1."""
        end = start + k.shape[0]
        if end > self.capacity:
            raise GenerationError(f"KV cache holds {self.capacity} tokens; position {end - 1} does not fit")
        kt, vt = k.transpose(1, 0, 2), v.transpose(1, 0, 2)
        if self.mode == "fp32":
            self.k[layer, :, start:end] = kt
            self.v[layer, :, start:end] = vt
            return
        self.k[layer, :, start:end], self.k_scale[layer, :, start:end] = encode_vectors(kt, self.mode)
        self.v[layer, :, start:end], self.v_scale[layer, :, start:end] = encode_vectors(vt, self.mode)


def attention(cache: KVCache, layer: int, q: np.ndarray, start: int, observer: Observer | None = None) -> np.ndarray:
    """Causal attention of q [tokens, heads, d] (after RoPE) at positions start.. over the cached keys.

    Returns float32 [tokens, heads * d]. The cache must already hold this layer's keys up to the last query.
    An observer gets one ATTENTION_SHARE event per H-Unit share and query chunk, then one ATTENTION event.
    """
    tokens, heads, d = q.shape
    parts = [
        _attention_rows(cache, layer, q[i : i + _QUERY_CHUNK], start + i, observer)
        for i in range(0, tokens, _QUERY_CHUNK)
    ]
    out = np.concatenate(parts, axis=0).reshape(tokens, heads * d)
    if observer is not None:
        observer(TapEvent(OpKind.ATTENTION, layer, f"model.layers.{layer}.self_attn", {"q": q, "y": out}))
    return out


def _per_head(a: np.ndarray, rep: int, tokens: int) -> np.ndarray:
    """[kvh, rep * tokens, ...] (row = r * tokens + t) -> [tokens, heads, ...] with head = kv * rep + r."""
    kvh = a.shape[0]
    return np.moveaxis(a.reshape(kvh, rep, tokens, *a.shape[2:]), 2, 0).reshape(tokens, kvh * rep, *a.shape[2:])


def _attention_rows(cache: KVCache, layer: int, q: np.ndarray, start: int, observer: Observer | None) -> np.ndarray:
    tokens, heads, d = q.shape
    kvh = cache.k.shape[1]
    rep = heads // kvh
    keys = start + tokens
    # queries grouped by the KV head they read: [kvh, rep * tokens, d], row = r * tokens + t
    qg = q.reshape(tokens, kvh, rep, d).transpose(1, 2, 0, 3).reshape(kvh, rep * tokens, d)
    hidden = None
    if tokens > 1:  # a single query (decode) sees every cached key
        positions = np.tile(np.arange(start, start + tokens), rep)
        hidden = np.arange(keys)[None, :] > positions[:, None]  # [rep * tokens, keys]
    k = cache.k[layer, :, :keys]
    v = cache.v[layer, :, :keys]
    c = 1.0 / np.sqrt(np.float64(d))
    if cache.mode == "fp32":
        s = (torch.from_numpy(np.ascontiguousarray(qg)) @ torch.from_numpy(k).transpose(1, 2)).numpy()
        s = s * np.float32(c)
    else:
        qi, sq = encode_vectors(qg, "fp16")  # q always at 16-bit precision, whatever the cache holds
        kt = np.ascontiguousarray(k.transpose(0, 2, 1), dtype=np.float64)
        dots = torch.bmm(torch.from_numpy(qi), torch.from_numpy(kt)).numpy()
        s = (((dots * sq[:, :, None]) * cache.k_scale[layer, :, None, :keys]) * c).astype(np.float32)
    if hidden is not None:
        s = np.where(hidden[None], -np.inf, s)
    m = np.max(s, axis=-1, keepdims=True)
    e = exp64(s.astype(np.float64) - m).astype(np.float32)  # hidden keys: exp(-inf) = 0
    z = seq_sum(e.astype(np.float64), axis=-1)[..., None]
    if cache.mode == "fp32":
        acc = (torch.from_numpy(e) @ torch.from_numpy(v)).numpy().astype(np.float64)
        out = (acc / z).astype(np.float32)
    else:
        w = e.astype(np.float64) * cache.v_scale[layer, :, None, :keys]
        f = flog2(np.max(w, axis=-1, keepdims=True))
        p = np.rint(w * pow2(P_BITS - f))
        acc = torch.bmm(torch.from_numpy(p), torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64))).numpy()
        partial = acc * pow2(f - P_BITS)
        out = (partial / z).astype(np.float32)
        if observer is not None:
            arrays = {"key_positions": np.arange(keys), "scores": s, "max": m[..., 0], "exp": e, "sum": z[..., 0],
                      "weights": p, "exponent": f[..., 0], "partial": partial}  # fmt: skip
            arrays = {k: v if k == "key_positions" else _per_head(v, rep, tokens) for k, v in arrays.items()}
            arrays["query_positions"] = np.arange(start, start + tokens)
            observer(TapEvent(OpKind.ATTENTION_SHARE, layer, f"model.layers.{layer}.self_attn", arrays, unit=0))
    # back to [tokens, heads, d] with head = kv * rep + r
    return out.reshape(kvh, rep, tokens, d).transpose(2, 0, 1, 3).reshape(tokens, heads, d)
