"""The LLaMA forward pass of the golden engine: prefill (matrix-matrix) and decode_one_token (reuses the KV
cache), gpt-fast style, with every step as docs/numerics.md defines it.

GQA, RoPE (plain and llama3-scaled), tied or untied embeddings, RMSNorm, SwiGLU. q/k/v and gate/up run as
fused L-Unit products: every output row is computed independently, so fusing changes no bit.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from romachip.engine.attention import attention
from romachip.engine.detmath import _lunit, exp64, pow_f32, seq_sum, sincos64
from romachip.engine.kernels import PreparedLinear, check_kernel, default_kernel, linear, lora_parts, native_threads
from romachip.engine.kv import KVCache
from romachip.engine.tap import NO_LAYER, LinearSite, Observer, OpKind, TapEvent
from romachip.errors import GenerationError, ModelConfigError
from romachip.names import (
    BLOCK_NORMS,
    EMBED_MODULE,
    EMBED_NAME,
    FINAL_NORM_NAME,
    HEAD_NAME,
    norm_name,
    projection_module,
    projection_name,
)
from romachip.quant.tensor import QuantizedModel, QuantizedTensor
from romachip.spec.model import ModelSpec

#: The engine's per-request LoRA adapter: module name (`model.layers.3.self_attn.q_proj`) ->
#: (A float32 [r, in], B float32 [out, r], scale). A and B hold the exact decoded storage values.
Adapter = Mapping[str, tuple[np.ndarray, np.ndarray, float]]

#: The fused L-Unit products: key -> the projections whose output rows one product computes.
FUSED = {
    "qkv": ("q_proj", "k_proj", "v_proj"),
    "o": ("o_proj",),
    "gate_up": ("gate_proj", "up_proj"),
    "down": ("down_proj",),
}


def rope_inv_freq(spec: ModelSpec) -> np.ndarray:
    """float32 inverse frequencies, llama3 scaling applied as transformers does it (float32 steps)."""
    d = spec.head_dim
    powers = np.array([pow_f32(spec.rope_theta, 2 * i, d) for i in range(d // 2)], dtype=np.float32)
    inv = np.float32(1.0) / powers
    sc = spec.rope_scaling
    if sc is None:
        return inv
    f32 = np.float32
    old = sc.original_max_position_embeddings
    # Python-float constants are computed in binary64 and rounded to float32, as torch does with scalars
    low_wavelen = f32(old / sc.low_freq_factor)
    high_wavelen = f32(old / sc.high_freq_factor)
    wavelen = f32(2 * np.pi) / inv
    scaled = np.where(wavelen > low_wavelen, inv / f32(sc.factor), inv)
    smooth = (f32(old) / wavelen - f32(sc.low_freq_factor)) / f32(sc.high_freq_factor - sc.low_freq_factor)
    smoothed = (f32(1) - smooth) * scaled / f32(sc.factor) + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float, *, native: bool | None = None) -> np.ndarray:
    """f32(f32(x * f32(r)) * w) with r = 1 / sqrt(Σseq x^2 / n + eps) in binary64, per row; in C where
    `native` (default: where the module built), the same steps."""
    if native if native is not None else _lunit is not None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.empty_like(x)
        w = np.ascontiguousarray(weight, dtype=np.float32)
        _lunit.rms_norm(x, w, y, x.size // x.shape[-1], x.shape[-1], eps, native_threads())
        return y
    return rms_norm_numpy(x, weight, eps)


def rms_norm_numpy(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    x64 = x.astype(np.float64)
    ss = seq_sum(x64 * x64, axis=-1)
    r = 1.0 / np.sqrt(ss / x.shape[-1] + eps)
    return (x * r.astype(np.float32)[..., None]) * weight


def silu_mul(g: np.ndarray, u: np.ndarray) -> np.ndarray:
    """SwiGLU: f32(f32(f64(g / f64(1 + exp64(-g)))) * u), in C where the native module was built."""
    if _lunit is not None:  # g and u may be column slices of the fused gate/up output: read in place
        g2, u2 = (_rows_view(a, g.shape) for a in (g, u))
        h = np.empty(g2.shape, dtype=np.float32)
        _lunit.silu_mul(g2, u2, h, *h.shape, native_threads())
        return h.reshape(g.shape)
    return silu_mul_numpy(g, u)


def _rows_view(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`a` as float32 [rows, last] with adjacent columns, without a copy where it already is one."""
    a = np.asarray(a, dtype=np.float32)
    a = a if a.ndim == 2 else a.reshape(-1, shape[-1])
    rows, cols = a.shape
    in_place = (cols < 2 or a.strides[1] == 4) and (rows < 2 or a.strides[0] >= 4 * cols)
    return a if in_place else np.ascontiguousarray(a)


def silu_mul_numpy(g: np.ndarray, u: np.ndarray) -> np.ndarray:
    g64 = g.astype(np.float64)
    silu = (g64 / (1.0 + exp64(-g64))).astype(np.float32)
    return silu * u


class EngineModel:
    """A QuantizedModel prepared for the engine: fused integer layouts, norms, RoPE tables."""

    def __init__(
        self, model: QuantizedModel, *, float_mode: bool = False, kernel: str | None = None,
        kv_shares: tuple[int, ...] | None = None,
    ) -> None:  # fmt: skip
        self.spec = spec = model.spec
        self.float_mode = float_mode
        self.kernel = kernel = check_kernel(kernel) if kernel is not None else default_kernel()
        # per layer, the H-Units its keys are dealt over (the KV ring of the placement); 1: a global softmax
        self.kv_shares = kv_shares if kv_shares is not None else (1,) * spec.num_layers
        w = model.weights
        embed = _require(w, EMBED_NAME)
        self.vocab = embed.shape[0]
        self.layers: list[dict[str, PreparedLinear]] = []
        self.spans = {}  # output columns of each projection inside its fused product
        for key, projections in FUSED.items():
            sizes = [_require(w, projection_name(0, n)).shape[0] for n in projections]
            ends = np.cumsum(sizes).tolist()
            self.spans[key] = list(zip([0] + ends[:-1], ends, strict=True))
        for i in range(spec.num_layers):
            prepared = {}
            for key, projections in FUSED.items():
                tensors = [_require(w, projection_name(i, n)) for n in projections]
                prepared[key] = PreparedLinear.from_tensors(tensors, float_mode=float_mode, kernel=kernel)
            self.layers.append(prepared)
        head = embed if spec.tie_word_embeddings else _require(w, HEAD_NAME)
        self.lm_head = PreparedLinear.from_tensors([head], float_mode=float_mode, kernel=kernel)
        # token rows: from packed codes where the native kernel holds them (the tied head's own), so that
        # the engine keeps no unpacked copy of any weight; else from the QuantizedTensor
        self.embed: PreparedLinear | QuantizedTensor = embed
        if self.lm_head.kernel == "native":
            self.embed = self.lm_head if head is embed else PreparedLinear.from_tensors([embed], kernel="native")
        f = model.floats
        self.norms = [
            tuple(_require(f, norm_name(i, norm)).astype(np.float32) for norm in BLOCK_NORMS)
            for i in range(spec.num_layers)
        ]
        self.final_norm = _require(f, FINAL_NORM_NAME).astype(np.float32)
        self.inv_freq = rope_inv_freq(spec)
        self._cos = np.zeros((0, spec.head_dim // 2), np.float32)
        self._sin = np.zeros((0, spec.head_dim // 2), np.float32)

    def embed_rows(self, tokens: np.ndarray) -> np.ndarray:
        """f32(s * (q - z)) of each token's row (exact: an 11/24-bit scale times a small integer)."""
        if np.any(tokens < 0) or np.any(tokens >= self.vocab):
            raise GenerationError(f"token ids must lie in [0, {self.vocab}), got {tokens.min()}..{tokens.max()}")
        e = self.embed
        if isinstance(e, PreparedLinear):
            codes, scales, zeros = e.rows(tokens)
            g, inp = e.group_len, e.in_features
        else:
            codes, scales, zeros = e.codes[tokens], e.scales[tokens], e.zeros[tokens]
            g, inp = e.fmt.group_len(e.shape[1]), e.shape[1]

        def expand(per_group: np.ndarray) -> np.ndarray:
            return np.repeat(per_group.astype(np.float32), g, axis=1)[:, :inp]

        return expand(scales) * (codes.astype(np.float32) - expand(zeros))

    def rope_tables(self, end: int) -> tuple[np.ndarray, np.ndarray]:
        if end > self._cos.shape[0]:
            grow = max(end, 2 * self._cos.shape[0], 64)
            angles = np.arange(grow, dtype=np.float32)[:, None] * self.inv_freq[None, :]
            sin, cos = sincos64(angles.astype(np.float64))
            self._cos, self._sin = cos.astype(np.float32), sin.astype(np.float32)
        return self._cos, self._sin

    def apply_rope(self, x: np.ndarray, start: int) -> np.ndarray:
        """x [tokens, heads, d] at positions start.. -> rotated (rotate_half layout)."""
        tokens, _, d = x.shape
        cos_t, sin_t = self.rope_tables(start + tokens)
        if self.kernel == "native":  # the same float32 steps in C
            y = np.empty(x.shape, dtype=np.float32)
            c, s = cos_t[start : start + tokens], sin_t[start : start + tokens]
            rows = _rows_view(x.reshape(tokens, x.shape[1] * d), (tokens, x.shape[1] * d))  # q, k read in place
            _lunit.rope(rows, c, s, y, tokens, x.shape[1], d, native_threads())
            return y
        c = cos_t[start : start + tokens, None, :]
        s = sin_t[start : start + tokens, None, :]
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)

    def _proj(
        self, i: int, key: str, x: np.ndarray, mode: str, adapter: Adapter | None, observer: Observer | None = None
    ) -> list[np.ndarray]:
        prep = self.layers[i][key]
        modules = [projection_module(i, n) for n in FUSED[key]]
        site = None
        if observer is not None:
            site = LinearSite(i, tuple((m, c0, c1) for m, (c0, c1) in zip(modules, self.spans[key], strict=True)))
        y = linear(prep, x, mode, observer, site)
        outs = [y[:, a:b] for a, b in self.spans[key]]
        if adapter:
            for j, module in enumerate(modules):
                lora = adapter.get(module)
                if lora is None:
                    continue
                u, delta = lora_parts(x, *lora)
                base, outs[j] = outs[j], outs[j] + delta
                if observer is not None:
                    arrays = {"x": x, "u": u, "delta": delta, "base": base, "y": outs[j]}
                    observer(TapEvent(OpKind.LORA, i, module, arrays))
        return outs

    def forward(
        self, tokens: np.ndarray, cache: KVCache, start: int, mode: str, adapter: Adapter | None, logits_rows: slice,
        observer: Observer | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Run tokens at positions start.. through every layer, filling the cache; logits of `logits_rows`.

        `observer` (romachip.engine.tap) receives every step's TapEvent; None costs nothing."""
        spec = self.spec
        x = self.embed_rows(tokens)
        if observer is not None:
            observer(TapEvent(OpKind.EMBED, NO_LAYER, EMBED_MODULE, {"tokens": tokens, "y": x}))
        for i in range(spec.num_layers):
            x = self._residual(i, "attention", x, self._attention_block(i, x, cache, start, mode, adapter, observer),
                               observer)  # fmt: skip
            x = self._residual(i, "mlp", x, self._mlp_block(i, x, mode, adapter, observer), observer)
        cache.length = start + tokens.shape[0]
        x = self._norm(NO_LAYER, "model.norm", x[logits_rows], self.final_norm, observer)
        site = LinearSite(NO_LAYER, (("lm_head", 0, self.lm_head.out_features),)) if observer is not None else None
        return linear(self.lm_head, x, mode, observer, site)

    def _attention_block(
        self, i: int, x: np.ndarray, cache: KVCache, start: int, mode: str, adapter: Adapter | None,
        observer: Observer | None,
    ) -> np.ndarray:  # fmt: skip
        spec = self.spec
        n, d = x.shape[0], spec.head_dim
        h = self._norm(i, f"model.layers.{i}.input_layernorm", x, self.norms[i][0], observer)
        q, k, v = self._proj(i, "qkv", h, mode, adapter, observer)
        q = self._rope(i, "q", q.reshape(n, spec.num_heads, d), start, observer)
        k = self._rope(i, "k", k.reshape(n, spec.num_kv_heads, d), start, observer)
        cache.write(i, start, k, v.reshape(n, spec.num_kv_heads, d), native=self.kernel == "native")
        att = attention(cache, i, q, start, observer, shares=self.kv_shares[i], native=self.kernel == "native")
        (o,) = self._proj(i, "o", att, mode, adapter, observer)
        return o

    def _mlp_block(
        self, i: int, x: np.ndarray, mode: str, adapter: Adapter | None, observer: Observer | None
    ) -> np.ndarray:
        h = self._norm(i, f"model.layers.{i}.post_attention_layernorm", x, self.norms[i][1], observer)
        g, u = self._proj(i, "gate_up", h, mode, adapter, observer)
        m = silu_mul(g, u)
        if observer is not None:
            observer(TapEvent(OpKind.SWIGLU, i, f"model.layers.{i}.mlp", {"gate": g, "up": u, "y": m}))
        (down,) = self._proj(i, "down", m, mode, adapter, observer)
        return down

    def _norm(self, i: int, module: str, x: np.ndarray, weight: np.ndarray, observer: Observer | None) -> np.ndarray:
        y = rms_norm(x, weight, self.spec.rms_norm_eps, native=self.kernel == "native")
        if observer is not None:
            observer(TapEvent(OpKind.RMS_NORM, i, module, {"x": x, "y": y}))
        return y

    def _rope(self, i: int, which: str, x: np.ndarray, start: int, observer: Observer | None) -> np.ndarray:
        y = self.apply_rope(x, start)
        if observer is not None:
            positions = np.arange(start, start + x.shape[0], dtype=np.int64)
            observer(TapEvent(OpKind.ROPE, i, which, {"x": x, "y": y, "positions": positions}))
        return y

    def _residual(self, i: int, which: str, x: np.ndarray, delta: np.ndarray, observer: Observer | None) -> np.ndarray:
        if observer is None:  # f32(delta + x) = f32(x + delta); delta (a fresh block output) is free to reuse
            delta += x
            return delta
        y = x + delta
        observer(TapEvent(OpKind.RESIDUAL, i, which, {"x": x, "delta": delta, "y": y}))
        return y


def _require(store: Mapping[str, object], name: str):  # noqa: ANN202
    if name not in store:
        raise ModelConfigError(f"the model has no tensor {name!r}; the ROM image or checkpoint is incomplete")
    return store[name]


def prefill(
    model: EngineModel, tokens: np.ndarray, cache: KVCache, *, mode: str, adapter: Adapter | None = None,
    all_logits: bool = False, observer: Observer | None = None,
) -> np.ndarray:  # fmt: skip
    """Process a prompt as matrix-matrix work from position cache.length; logits of the last (or every) row."""
    rows = slice(None) if all_logits else slice(-1, None)
    return model.forward(np.asarray(tokens, dtype=np.int64), cache, cache.length, mode, adapter, rows, observer)


def decode_one_token(
    model: EngineModel, token: int, cache: KVCache, *, mode: str, adapter: Adapter | None = None,
    observer: Observer | None = None,
) -> np.ndarray:  # fmt: skip
    """One decode step at position cache.length, reusing the cached K/V; float32 logits [vocab]."""
    tokens = np.array([token], dtype=np.int64)
    return model.forward(tokens, cache, cache.length, mode, adapter, slice(None), observer)[0]
