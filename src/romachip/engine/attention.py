"""Attention as the chip computes it (docs/numerics.md, "Attention"): the layer's keys are dealt round robin
over the H-Units of its KV ring (placement.py, token t on rank t mod n); each H-Unit computes a partial
max, sum of exponentials and weighted values over its share; the vector units combine the partials in
unit order. With one share this is the global softmax, bit for bit.

The q.k products are exact integer matmuls on BLAS. After them, two implementations give the same bits
(tested): the native module's `attention` (C, one pass per query row, threads over rows; the engine's
"native" kernel) and the NumPy form below (whole-array steps, the P.v integers on BLAS; the "numpy" kernel,
and every observed run, since the tap reports its intermediates). Every float step runs in its fixed order.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from romachip.engine.detmath import _lunit, exp64, flog2, pow2, seq_sum
from romachip.engine.kernels import native_threads
from romachip.engine.kv import KVCache, encode_vectors
from romachip.engine.tap import Observer, OpKind, TapEvent

P_BITS = 21  # softmax weights are put on a 2^-21 grid relative to their share's largest
_QUERY_CHUNK = 256  # query rows per attention pass (bounds the [heads, rows, keys] float64 temporaries)
_COMBINE_ELEMENTS = 1 << 20  # binary64 partial outputs per block of units in the combine (about 8 MB)


def attention(
    cache: KVCache, layer: int, q: np.ndarray, start: int, observer: Observer | None = None, *, shares: int = 1,
    native: bool | None = None, widest: int = 3,
) -> np.ndarray:  # fmt: skip
    """Causal attention of q [tokens, heads, d] (after RoPE) at positions start.. over the cached keys,
    the keys split over `shares` H-Units (the layer's KV ring; 1: one global softmax).

    Returns float32 [tokens, heads * d]. The cache must already hold this layer's keys up to the last query.
    An observer gets one ATTENTION_SHARE event per H-Unit share and query chunk, then one ATTENTION event.
    `native`: the C form after the q.k products (default: where the module built); never with an observer.
    `widest`: its widest vector path (kernels.NATIVE_PATHS index; tests force narrower ones).
    """
    tokens, heads, d = q.shape
    native = (_lunit is not None if native is None else native) and observer is None
    parts = [
        _attention_rows(cache, layer, q[i : i + _QUERY_CHUNK], start + i, shares, observer, widest if native else None)
        for i in range(0, tokens, _QUERY_CHUNK)
    ]
    out = (parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)).reshape(tokens, heads * d)
    if observer is not None:
        observer(TapEvent(OpKind.ATTENTION, layer, f"model.layers.{layer}.self_attn", {"q": q, "y": out}))
    return out


def _attention_rows(
    cache: KVCache, layer: int, q: np.ndarray, start: int, shares: int, observer: Observer | None, widest: int | None
) -> np.ndarray:
    """widest: None for the NumPy form, else the C form's widest vector path."""
    tokens, heads, d = q.shape
    kvh = cache.k.shape[1]
    rep = heads // kvh
    keys = start + tokens
    # queries grouped by the KV head they read: [kvh, rep * tokens, d], row = r * tokens + t
    qg = q.reshape(tokens, kvh, rep, d).transpose(1, 2, 0, 3).reshape(kvh, rep * tokens, d)
    k = cache.k[layer, :, :keys]
    v = cache.v[layer, :, :keys]
    c = 1.0 / np.sqrt(np.float64(d))
    if cache.mode == "fp32":  # the float mode: one float32 softmax, BLAS products (not part of the contract)
        s = (torch.from_numpy(np.ascontiguousarray(qg)) @ torch.from_numpy(k).transpose(1, 2)).numpy()
        s = _causal(s * np.float32(c), start, tokens, rep)
        m = np.max(s, axis=-1, keepdims=True)
        e = exp64(s.astype(np.float64) - m).astype(np.float32)
        z = seq_sum(e.astype(np.float64), axis=-1)[..., None]
        out = ((torch.from_numpy(e) @ torch.from_numpy(v)).numpy().astype(np.float64) / z).astype(np.float32)
    else:
        qi, sq = encode_vectors(qg, "fp16", native=widest is not None)  # q at 16 bits, whatever the cache holds
        dots = None
        if widest is not None and cache.mode == "int8":  # the visible products in C (exact int32 sums)
            dots = _scratch((kvh, rep * tokens, keys))
            qi = np.ascontiguousarray(qi)
            args = (kvh, rep * tokens, keys, d, tokens, start, native_threads(), widest)
            if not _lunit.scores(qi, cache.k[layer], dots, *args):
                dots = None
        if dots is None:
            kt = np.ascontiguousarray(k.transpose(0, 2, 1), dtype=np.float64)
            dots = torch.bmm(torch.from_numpy(qi), torch.from_numpy(kt)).numpy()
        if widest is not None:
            out = np.empty((kvh, rep * tokens, d), dtype=np.float32)
            _lunit.attention(
                dots, np.ascontiguousarray(sq), cache.k_scale[layer], cache.v[layer], cache.v_scale[layer], out,
                kvh, rep * tokens, keys, d, tokens, start, min(shares, keys), c, native_threads(), widest,
            )  # fmt: skip
            return out.reshape(kvh, rep, tokens, d).transpose(2, 0, 1, 3).reshape(tokens, heads, d)
        s = (((dots * sq[:, :, None]) * cache.k_scale[layer, :, None, :keys]) * c).astype(np.float32)
        s = _causal(s, start, tokens, rep)
        out = _split_softmax_values(s, v, cache.v_scale[layer, :, :keys], shares, _Tap(observer, layer, start, rep))
    # back to [tokens, heads, d] with head = kv * rep + r
    return out.reshape(kvh, rep, tokens, d).transpose(2, 0, 1, 3).reshape(tokens, heads, d)


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, ...]) -> np.ndarray:
    """A float64 array of `shape` reused from call to call by this thread (the q.k products live only
    within one attention call; a fresh one of several MB took its pages from the OS each layer)."""
    size = math.prod(shape)
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.size < size:
        buf = _SCRATCH.buf = np.empty(size)
    return buf[:size].reshape(shape)


def _causal(s: np.ndarray, start: int, tokens: int, rep: int) -> np.ndarray:
    """Scores [kvh, rep * tokens, keys] with the keys after each row's query set to -inf."""
    if tokens == 1:  # a single query (decode) sees every cached key
        return s
    positions = np.tile(np.arange(start, start + tokens), rep)
    hidden = np.arange(s.shape[-1])[None, :] > positions[:, None]  # [rep * tokens, keys]
    return np.where(hidden[None], -np.inf, s)


def _split_softmax_values(s: np.ndarray, v: np.ndarray, v_scale: np.ndarray, shares: int, tap: _Tap) -> np.ndarray:
    """softmax(s) v with the keys dealt over `shares` units: s [kvh, R, T] float32 (-inf: hidden),
    v [kvh, T, d] integers, v_scale [kvh, T] -> float32 [kvh, R, d]."""
    kvh, rows, keys = s.shape
    d = v.shape[-1]
    n = min(shares, keys)  # units that hold no key of this context take no part
    slots = -(-keys // n)
    pad = slots * n - keys  # key j = slot * n + u lives on unit u: pad the last slot with hidden keys
    # per unit u, its keys in ascending order: [kvh, R, n, slots]
    su = np.pad(s, ((0, 0), (0, 0), (0, pad)), constant_values=-np.inf).reshape(kvh, rows, slots, n).swapaxes(2, 3)
    svu = np.pad(v_scale, ((0, 0), (0, pad))).reshape(kvh, slots, n).swapaxes(1, 2)  # [kvh, n, slots]
    vu = np.pad(v, ((0, 0), (0, pad), (0, 0))).reshape(kvh, slots, n, d).swapaxes(1, 2)  # [kvh, n, slots, d]
    # H-Unit u: partial max, exponentials and their sum, weights on the unit's own 2^-21 grid
    m_u = np.max(su, axis=-1, keepdims=True)  # -inf: every key of the unit is hidden from this row
    empty = np.isneginf(m_u)
    if slots == 1:  # one key per unit: s - m_u is 0 for a visible key, so e = exp64(0) = 1 (hidden: 0)
        e = (~empty).astype(np.float32)
    else:
        e = exp64(su.astype(np.float64) - np.where(empty, 0.0, m_u)).astype(np.float32)  # hidden keys: 0
    z_u = seq_sum(e.astype(np.float64), axis=-1)
    w = e.astype(np.float64) * svu[:, None]
    f = flog2(np.where(empty, 1.0, np.max(w, axis=-1, keepdims=True)))
    p = np.rint(w * pow2(P_BITS - f))
    # vector units: each unit's partials rescaled by alpha_u to the row's max, folded in unit order.
    m = np.max(m_u, axis=2, keepdims=True)
    alpha = exp64(np.where(empty, -np.inf, m_u.astype(np.float64) - m)).astype(np.float32).astype(np.float64)
    # An empty unit has alpha = 0 and partials 0, so its terms are +-0; the fold's first term (unit 0 holds
    # key 0, visible to every row) is never -0, so no partial sum is -0 and adding +-0 changes no bit:
    # the empty units are left out, as the contract says, without a mask.
    z = seq_sum(alpha[..., 0] * z_u, axis=2)
    # f64(alpha_u * O_ud) with O_ud = A_ud 2^(F_u - 21): alpha_u 2^(F_u - 21) is exact, so one product by A
    # rounds once, as the contract's; with one key per unit, alpha_u P_j 2^(F_u - 21) (< 47 bits) is exact too
    coef = (alpha * pow2(f - P_BITS)).transpose(2, 0, 1, 3)  # [n, kvh, R, 1]
    if slots == 1:
        coef = coef * p.transpose(2, 0, 1, 3)
    p_t, v_t = p.transpose(2, 0, 1, 3), vu.transpose(1, 0, 2, 3)  # [n, kvh, R, slots], [n, kvh, slots, d]
    block = max(1, _COMBINE_ELEMENTS // (kvh * rows * d))
    acc, partials = None, []
    for u0 in range(0, n, block):  # blocks of units bound the [b, kvh, R, d] terms
        u1 = min(n, u0 + block)
        if slots == 1:
            ints = np.broadcast_to(v_t[u0:u1].astype(np.float64), (u1 - u0, kvh, rows, d))  # P_j folded into coef
        else:
            pb = torch.from_numpy(np.ascontiguousarray(p_t[u0:u1]).reshape(-1, rows, slots))
            vb = torch.from_numpy(np.ascontiguousarray(v_t[u0:u1], dtype=np.float64).reshape(-1, slots, d))
            ints = torch.bmm(pb, vb).numpy().reshape(u1 - u0, kvh, rows, d)  # A_ud, exact
        acc = _fold(acc, coef[u0:u1] * ints)
        if tap.observer is not None:  # O_ud itself, for the tap
            a_ud = ints * p_t[u0:u1] if slots == 1 else ints
            partials.append(a_ud * pow2(f - P_BITS).transpose(2, 0, 1, 3)[u0:u1])
    if tap.observer is not None:
        tap.shares(rows, n, keys, su, m_u, e, z_u, p, f, np.concatenate(partials), alpha)
    return (acc / z[..., None]).astype(np.float32)


def _fold(acc: np.ndarray | None, terms: np.ndarray) -> np.ndarray:
    """((acc + terms[0]) + terms[1]) + ...: the sequential binary64 fold over the leading (unit) axis
    (a loop of in-place whole-array adds: faster here than numpy's accumulate, the same fold)."""
    out = terms[0].copy() if acc is None else acc + terms[0]
    for t in terms[1:]:
        out += t
    return out


class _Tap:
    """Reports each H-Unit's share of one attention pass (only built into events with an observer)."""

    def __init__(self, observer: Observer | None, layer: int, start: int, rep: int) -> None:
        self.observer, self.layer, self.start, self.rep = observer, layer, start, rep

    def shares(self, rows, n, keys, su, m_u, e, z_u, p, f, partial, alpha) -> None:  # noqa: ANN001
        tokens = rows // self.rep
        for u in range(n):
            held = np.arange(u, keys, n)
            arrays = {
                "scores": su[:, :, u, : held.size], "max": m_u[:, :, u, 0], "exp": e[:, :, u, : held.size],
                "sum": z_u[:, :, u], "weights": p[:, :, u, : held.size], "exponent": f[:, :, u, 0],
                "partial": partial[u], "rescale": alpha[:, :, u, 0],
            }  # fmt: skip
            arrays = {k: _per_head(a, self.rep, tokens) for k, a in arrays.items()}
            arrays["key_positions"] = held
            arrays["query_positions"] = np.arange(self.start, self.start + tokens)
            module = f"model.layers.{self.layer}.self_attn"
            self.observer(TapEvent(OpKind.ATTENTION_SHARE, self.layer, module, arrays, unit=u, extra={"shares": n}))


def _per_head(a: np.ndarray, rep: int, tokens: int) -> np.ndarray:
    """[kvh, rep * tokens, ...] (row = r * tokens + t) -> [tokens, heads, ...] with head = kv * rep + r."""
    kvh = a.shape[0]
    return np.moveaxis(a.reshape(kvh, rep, tokens, *a.shape[2:]), 2, 0).reshape(tokens, kvh * rep, *a.shape[2:])
