"""The op graph of a LLaMA model: every op of prefill and of one decode step, with shapes, MACs and bytes.

The graph knows the model (`ModelSpec`), the number formats and the storage policy; it knows nothing of
a chip or of time. The timing model maps these ops onto units; the energy model multiplies their counts.

Counting rules (each op counts its own work once):
- `macs`: multiply-accumulates. A projection of T tokens: T*in*out. Attention is causal and GQA-aware:
  QK^T costs heads*head_dim per (query, key) pair, and so does softmax.V; query t of a prefill with
  `past_tokens` cached attends to past_tokens + t keys (itself included).
- `weight_bits_read`: bits of stored weights the op needs, counted once per op whatever the number of
  tokens (weights are stationary; re-reading them per token is a mapping choice of the timing model).
  Projections, embedding and LM head: codes + scales + zeros (`WeightFormat.storage_bits`); the
  embedding lookup reads one row per token. LoRA A/B: their SRAM bytes (elements + scale). Norms: their
  FP16 weight vector. `weight_off_chip` marks reads served by host memory under an off-chip policy.
- `activation_bytes_in/out`: activations consumed and produced, at `activation_bytes` per element
  (scores and probabilities included).
- `kv_bytes_read/written`: the score op appends the new tokens' keys (after RoPE) to the cache and reads
  every key it attends to, once; the value op does the same for values.
- `vector_ops`: elementwise operations on the vector units, per element as in `VECTOR_OPS_PER_ELEMENT`.

Decode at context L is a prefill of one token with L cached tokens; only the last position's logits
are computed unless `all_logits` (perplexity) asks for every position.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields, replace
from enum import StrEnum

from romachip.errors import CapacityError
from romachip.quant.formats import WeightFormat
from romachip.spec.model import ModelSpec
from romachip.tensor_bits import DEFAULT_POLICY, NORM_WEIGHT_BITS, StoragePolicy
from romachip.workload import LoraConfig, kv_vector_bytes

GRAPH_CACHE_SIZE = 256  # graphs kept per process (a sweep reuses a few per model)


class OpKind(StrEnum):
    PROJECTION = "projection"
    LORA_A = "lora_a"
    LORA_B = "lora_b"
    ATTENTION_SCORE = "attention_score"
    ATTENTION_VALUE = "attention_value"
    NORM = "norm"
    ROPE = "rope"
    SOFTMAX = "softmax"
    SWIGLU = "swiglu"
    RESIDUAL = "residual"
    EMBEDDING = "embedding"
    LM_HEAD = "lm_head"


#: Elementwise operations per element. Norm: square, accumulate, x/rms, x*w. RoPE: x*cos, x'*sin, add.
#: Softmax: max, subtract, exp, sum, multiply by 1/sum (1/sqrt(head_dim) is folded into the scores).
#: SwiGLU: exp, +1, reciprocal, *gate (SiLU), *up. Residual: add. LoRA B: add into the base output
#: (alpha/rank is folded into B when the adapter is loaded).
VECTOR_OPS_PER_ELEMENT = {
    OpKind.NORM: 4,
    OpKind.ROPE: 3,
    OpKind.SOFTMAX: 5,
    OpKind.SWIGLU: 5,
    OpKind.RESIDUAL: 1,
    OpKind.LORA_B: 1,
}

#: Kinds whose MACs multiply stored base weights (ROM, or host for an off-chip LM head).
WEIGHT_MAC_KINDS = (OpKind.PROJECTION, OpKind.LM_HEAD)


@dataclass(frozen=True)
class Op:
    """One op of the graph. Shape fields that do not apply to a kind are 0; `module` names the projection
    (`q_proj` ...) of projection and LoRA ops."""

    name: str
    kind: OpKind
    layer: int | None
    tokens: int
    module: str | None = None
    in_features: int = 0
    out_features: int = 0
    heads: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    context: int = 0  # keys attended by the last query (attention ops)
    macs: int = 0
    weight_bits_read: int = 0
    weight_off_chip: bool = False
    activation_bytes_in: int = 0
    activation_bytes_out: int = 0
    kv_bytes_read: int = 0
    kv_bytes_written: int = 0
    vector_ops: int = 0

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["kind"] = self.kind.value
        return d


@dataclass(frozen=True)
class _Ctx:
    """Everything the op builders share."""

    spec: ModelSpec
    tokens: int
    past: int
    fmt: WeightFormat
    lora: LoraConfig
    policy: StoragePolicy
    kv_bytes: int
    kv_scale_bytes: int
    act: int

    @property
    def pairs(self) -> int:
        """(query, key) pairs of causal attention: sum over t=1..T of (past + t)."""
        t = self.tokens
        return t * self.past + t * (t + 1) // 2

    def kv_entry_bytes(self, tokens: int) -> int:
        """Bytes of K (or V) for `tokens` tokens of one layer."""
        s = self.spec
        return tokens * s.num_kv_heads * kv_vector_bytes(s.head_dim, self.kv_bytes, self.kv_scale_bytes)


def _elementwise(name: str, kind: OpKind, layer: int | None, ctx: _Ctx, elements: int, tokens: int) -> Op:
    return Op(
        name,
        kind,
        layer,
        tokens,
        activation_bytes_in=elements * ctx.act,
        activation_bytes_out=elements * ctx.act,
        vector_ops=elements * VECTOR_OPS_PER_ELEMENT[kind],
    )


def _norm(name: str, layer: int | None, ctx: _Ctx, tokens: int) -> Op:
    d = ctx.spec.hidden_size
    op = _elementwise(name, OpKind.NORM, layer, ctx, tokens * d, tokens)
    return replace(op, in_features=d, out_features=d, weight_bits_read=d * NORM_WEIGHT_BITS)


def _projection(layer: int, module: str, ctx: _Ctx) -> list[Op]:
    out_f, in_f = ctx.spec.linear_shapes()[module]
    t, a, base = ctx.tokens, ctx.act, f"layers.{layer}.{module}"
    ops = [
        Op(
            base, OpKind.PROJECTION, layer, t, module, in_f, out_f,
            macs=t * in_f * out_f,
            weight_bits_read=ctx.fmt.storage_bits(out_f, in_f).total_bits,
            activation_bytes_in=t * in_f * a,
            activation_bytes_out=t * out_f * a,
        )
    ]  # fmt: skip
    if ctx.lora.adapts(module):
        r = ctx.lora.rank
        ops.append(
            Op(
                f"{base}.lora_a", OpKind.LORA_A, layer, t, module, in_f, r,
                macs=t * in_f * r,
                weight_bits_read=8 * ctx.lora.matrix_bytes(r, in_f),
                activation_bytes_in=t * in_f * a,
                activation_bytes_out=t * r * a,
            )
        )  # fmt: skip
        ops.append(
            Op(
                f"{base}.lora_b", OpKind.LORA_B, layer, t, module, r, out_f,
                macs=t * r * out_f,
                weight_bits_read=8 * ctx.lora.matrix_bytes(out_f, r),
                activation_bytes_in=t * r * a,
                activation_bytes_out=t * out_f * a,
                vector_ops=t * out_f * VECTOR_OPS_PER_ELEMENT[OpKind.LORA_B],
            )
        )  # fmt: skip
    return ops


def _attention(layer: int, ctx: _Ctx) -> list[Op]:
    s, t, a = ctx.spec, ctx.tokens, ctx.act
    keys = ctx.past + t
    scores = s.num_heads * ctx.pairs
    shape = {"heads": s.num_heads, "kv_heads": s.num_kv_heads, "head_dim": s.head_dim, "context": keys}
    kv = {"kv_bytes_read": ctx.kv_entry_bytes(keys), "kv_bytes_written": ctx.kv_entry_bytes(t)}
    score = Op(
        f"layers.{layer}.attn_score", OpKind.ATTENTION_SCORE, layer, t, **shape, **kv,
        macs=scores * s.head_dim,
        activation_bytes_in=t * s.q_size * a,
        activation_bytes_out=scores * a,
    )  # fmt: skip
    softmax = _elementwise(f"layers.{layer}.softmax", OpKind.SOFTMAX, layer, ctx, scores, t)
    softmax = replace(softmax, **shape)
    value = Op(
        f"layers.{layer}.attn_value", OpKind.ATTENTION_VALUE, layer, t, **shape, **kv,
        macs=scores * s.head_dim,
        activation_bytes_in=scores * a,
        activation_bytes_out=t * s.q_size * a,
    )  # fmt: skip
    return [score, softmax, value]


def _layer(layer: int, ctx: _Ctx) -> list[Op]:
    s, t = ctx.spec, ctx.tokens
    d = s.hidden_size
    ops = [_norm(f"layers.{layer}.input_norm", layer, ctx, t)]
    for module in ("q_proj", "k_proj", "v_proj"):
        ops += _projection(layer, module, ctx)
    rope = _elementwise(f"layers.{layer}.rope", OpKind.ROPE, layer, ctx, t * (s.q_size + s.kv_size), t)
    ops.append(replace(rope, heads=s.num_heads, kv_heads=s.num_kv_heads, head_dim=s.head_dim))
    ops += _attention(layer, ctx)
    ops += _projection(layer, "o_proj", ctx)
    ops.append(_elementwise(f"layers.{layer}.attn_residual", OpKind.RESIDUAL, layer, ctx, t * d, t))
    ops.append(_norm(f"layers.{layer}.post_attention_norm", layer, ctx, t))
    ops += _projection(layer, "gate_proj", ctx)
    ops += _projection(layer, "up_proj", ctx)
    swiglu = _elementwise(f"layers.{layer}.swiglu", OpKind.SWIGLU, layer, ctx, t * s.intermediate_size, t)
    ops.append(replace(swiglu, out_features=s.intermediate_size))
    ops += _projection(layer, "down_proj", ctx)
    ops.append(_elementwise(f"layers.{layer}.mlp_residual", OpKind.RESIDUAL, layer, ctx, t * d, t))
    return ops


def _embedding(ctx: _Ctx) -> Op:
    d, t = ctx.spec.hidden_size, ctx.tokens
    row_bits = ctx.policy.table_format(ctx.fmt).storage_bits(1, d).total_bits
    return Op(
        "embedding", OpKind.EMBEDDING, None, t, out_features=d,
        weight_bits_read=t * row_bits,
        weight_off_chip=not ctx.policy.embedding_on_chip,
        activation_bytes_out=t * d * ctx.act,
    )  # fmt: skip


def _lm_head(ctx: _Ctx, tokens: int) -> Op:
    d, v = ctx.spec.hidden_size, ctx.spec.vocab_size
    return Op(
        "lm_head", OpKind.LM_HEAD, None, tokens, in_features=d, out_features=v,
        macs=tokens * d * v,
        weight_bits_read=ctx.policy.table_format(ctx.fmt).storage_bits(v, d).total_bits,
        weight_off_chip=not ctx.policy.lm_head_on_chip,
        activation_bytes_in=tokens * d * ctx.act,
        activation_bytes_out=tokens * v * ctx.act,
    )  # fmt: skip


def _check_counts(tokens: int, past: int) -> None:
    for what, n in (("tokens", tokens), ("context", past)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise CapacityError(f"graph {what} must be a whole number >= 0, got {n!r}")
    if tokens < 1:
        raise CapacityError(f"a prefill needs at least 1 token, got {tokens}")


def prefill_ops(
    spec: ModelSpec,
    tokens: int,
    *,
    fmt: WeightFormat,
    lora: LoraConfig | None = None,
    kv_bytes_per_element: int = 1,
    kv_scale_bytes_per_vector: int = 0,
    activation_bytes: int = 1,
    policy: StoragePolicy = DEFAULT_POLICY,
    past_tokens: int = 0,
    all_logits: bool = False,
) -> list[Op]:
    """Ops of a prefill of `tokens` tokens after `past_tokens` cached ones (0: a fresh prompt).

    `lora=None` means no adapters. Only the last position gets logits unless `all_logits`.
    """
    _check_counts(tokens, past_tokens)
    ctx = _Ctx(
        spec, tokens, past_tokens, fmt, lora or LoraConfig(rank=0), policy,
        kv_bytes_per_element, kv_scale_bytes_per_vector, activation_bytes,
    )  # fmt: skip
    return list(_graph(ctx, all_logits))


@functools.lru_cache(maxsize=GRAPH_CACHE_SIZE)
def _graph(ctx: _Ctx, all_logits: bool) -> tuple[Op, ...]:
    """The ops of one graph, built once per model shape, workload and token counts (the ops are frozen; a
    design-space sweep asks for the same few graphs on every chip it tries)."""
    ops = [_embedding(ctx)]
    for layer in range(ctx.spec.num_layers):
        ops += _layer(layer, ctx)
    logits_tokens = ctx.tokens if all_logits else 1
    ops.append(_norm("final_norm", None, ctx, logits_tokens))
    ops.append(_lm_head(ctx, logits_tokens))
    return tuple(ops)


def decode_ops(
    spec: ModelSpec,
    context: int,
    *,
    fmt: WeightFormat,
    lora: LoraConfig | None = None,
    kv_bytes_per_element: int = 1,
    kv_scale_bytes_per_vector: int = 0,
    activation_bytes: int = 1,
    policy: StoragePolicy = DEFAULT_POLICY,
) -> list[Op]:
    """Ops of one decode step with `context` tokens already in the KV cache (it attends to context+1 keys)."""
    return prefill_ops(
        spec, 1, fmt=fmt, lora=lora, kv_bytes_per_element=kv_bytes_per_element,
        kv_scale_bytes_per_vector=kv_scale_bytes_per_vector, activation_bytes=activation_bytes,
        policy=policy, past_tokens=context,
    )  # fmt: skip


@dataclass(frozen=True)
class GraphTotals:
    """Sums over a list of ops. `weight_macs` are the MACs on base weights (projections + LM head)."""

    ops: int
    macs: int
    weight_macs: int
    lora_macs: int
    attention_macs: int
    weight_bits_read: int
    weight_bits_read_off_chip: int
    activation_bytes_in: int
    activation_bytes_out: int
    kv_bytes_read: int
    kv_bytes_written: int
    vector_ops: int
    macs_by_kind: dict[str, int]
    weight_bits_by_kind: dict[str, int]

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def totals(ops: list[Op]) -> GraphTotals:
    """Add up a list of ops (from `prefill_ops` / `decode_ops`, or any subset of them)."""
    by_kind: dict[str, int] = {}
    bits_by_kind: dict[str, int] = {}
    for op in ops:
        by_kind[op.kind.value] = by_kind.get(op.kind.value, 0) + op.macs
        bits_by_kind[op.kind.value] = bits_by_kind.get(op.kind.value, 0) + op.weight_bits_read
    attention = (OpKind.ATTENTION_SCORE, OpKind.ATTENTION_VALUE)
    return GraphTotals(
        ops=len(ops),
        macs=sum(op.macs for op in ops),
        weight_macs=sum(op.macs for op in ops if op.kind in WEIGHT_MAC_KINDS),
        lora_macs=sum(op.macs for op in ops if op.kind in (OpKind.LORA_A, OpKind.LORA_B)),
        attention_macs=sum(op.macs for op in ops if op.kind in attention),
        weight_bits_read=sum(op.weight_bits_read for op in ops),
        weight_bits_read_off_chip=sum(op.weight_bits_read for op in ops if op.weight_off_chip),
        activation_bytes_in=sum(op.activation_bytes_in for op in ops),
        activation_bytes_out=sum(op.activation_bytes_out for op in ops),
        kv_bytes_read=sum(op.kv_bytes_read for op in ops),
        kv_bytes_written=sum(op.kv_bytes_written for op in ops),
        vector_ops=sum(op.vector_ops for op in ops),
        macs_by_kind=by_kind,
        weight_bits_by_kind=bits_by_kind,
    )
