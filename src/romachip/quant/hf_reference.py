"""Hugging Face transformers as the float reference: build LlamaForCausalLM from our tensors, perplexity.

Used by GPTQ (calibration forward passes), by tests, and by `eval --reference` (the image's dequantized
weights in float32 transformers).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from romachip.names import HEAD_NAME
from romachip.quant.tensor import QuantizedModel
from romachip.spec.model import ModelSpec


def llama_config(spec: ModelSpec, *, attention: str = "eager"):  # noqa: ANN201 (transformers.LlamaConfig)
    """A transformers LlamaConfig with the spec's shape (float32; eager attention unless told otherwise)."""
    from transformers import LlamaConfig

    rope: dict = {"rope_type": "default", "rope_theta": spec.rope_theta}
    if spec.rope_scaling is not None:
        rope = {**spec.rope_scaling.model_dump(), "rope_theta": spec.rope_theta}
    return LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        rms_norm_eps=spec.rms_norm_eps,
        rope_parameters=rope,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=spec.bos_token_id,
        eos_token_id=list(spec.eos_token_ids) or None,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        attn_implementation=attention,
        dtype="float32",
    )


def llama_from_tensors(spec: ModelSpec, tensors: dict[str, np.ndarray], *, attention: str = "eager"):  # noqa: ANN201
    """A float32 LlamaForCausalLM (eval mode) holding exactly `tensors` (HF names); attention "eager" or "sdpa"."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(spec, attention=attention))
    # A copy, so that changing the model's weights (GPTQ does) never writes into the caller's arrays.
    state = {k: torch.tensor(np.asarray(v, dtype=np.float32)) for k, v in tensors.items()}
    if spec.tie_word_embeddings:
        state.pop(HEAD_NAME, None)
    model.load_state_dict(state, strict=False, assign=True)
    if spec.tie_word_embeddings:
        model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise KeyError(f"tensors lack {missing[0]}")
    # Buffers (rotary inv_freq) were created on meta: rebuild them on the CPU.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config)
    return model.float().eval()


def dequantized_tensors(qmodel: QuantizedModel) -> dict[str, np.ndarray]:
    """Every tensor of a quantized model as float32: dequantized weights plus the float norms."""
    out = {name: qt.dequantize() for name, qt in qmodel.weights.items()}
    out.update({name: np.asarray(v, dtype=np.float32) for name, v in qmodel.floats.items()})
    return out


def windows(token_ids: np.ndarray, window: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Non-overlapping windows of `window` tokens (a shorter last one is dropped unless it is the only one)."""
    ids = np.asarray(token_ids, dtype=np.int64)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    chunks = [ids[i : i + window] for i in range(0, len(ids), window)]
    if len(chunks) > 1 and len(chunks[-1]) < window:
        chunks.pop()
    return [c for c in chunks if len(c) >= 2]


def hf_perplexity(
    model,  # noqa: ANN001 (LlamaForCausalLM)
    token_ids: np.ndarray,
    *,
    window: int = 256,
    max_tokens: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[float, int]:
    """Perplexity of a transformers model over fixed non-overlapping windows: (ppl, predicted tokens).

    Each window is scored independently from its own first token (no carried context); the mean
    negative log-likelihood is taken over every predicted token of every window.
    """
    import torch

    chunks = windows(token_ids, window, max_tokens)
    nll_sum, count = 0.0, 0
    with torch.inference_mode():
        for i, chunk in enumerate(chunks):
            ids = torch.from_numpy(chunk)[None]
            logits = model(ids).logits[0, :-1].double()
            nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
            nll_sum += float(nll)
            count += len(chunk) - 1
            if progress is not None:
                progress(i + 1, len(chunks))
    return math.exp(nll_sum / count), count
