"""Tiny random LLaMA models for the engine tests: a transformers model, its RTN-quantized QuantizedModel,
and the same model with the dequantized weights loaded back (the float reference)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from romachip.quant.formats import WeightFormat
from romachip.quant.rtn import quantize_rtn
from romachip.quant.tensor import QuantizedModel
from romachip.spec.model import ModelSpec

TINY_CONFIGS = {
    # GQA, tied embeddings, groups of 32 with a ragged down_proj (in 80 -> groups 32, 32, 16)
    "gqa_tied_g32_4bit": (
        dict(hidden_size=64, intermediate_size=80, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             tie_word_embeddings=True),
        WeightFormat(bits=4, group_size=32),
    ),
    # untied head, llama3 RoPE scaling, ragged last group everywhere (in 72 -> groups 48, 24), 2-bit symmetric
    "untied_llama3_g48_2bit_sym": (
        dict(hidden_size=72, intermediate_size=120, num_attention_heads=3, num_key_value_heads=3, head_dim=24,
             tie_word_embeddings=False,
             rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                               original_max_position_embeddings=16)),
        WeightFormat(bits=2, group_size=48, symmetric=True),
    ),
    # per-channel groups wider than one 128-column block, 8-bit codes (|q - z| up to 255: the float32 path), MQA
    "mqa_perchannel_8bit": (
        dict(hidden_size=160, intermediate_size=136, num_attention_heads=4, num_key_value_heads=1, head_dim=40,
             tie_word_embeddings=True),
        WeightFormat(bits=8, group_size=None),
    ),
}  # fmt: skip


@dataclass
class TinyModel:
    hf: LlamaForCausalLM  # random float weights
    quantized: QuantizedModel
    dequantized_hf: LlamaForCausalLM  # the float32 model of the quantized weights


def make_tiny(name: str, *, seed: int = 0, layers: int = 2, vocab: int = 101) -> TinyModel:
    overrides, fmt = TINY_CONFIGS[name]
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, num_hidden_layers=layers, max_position_embeddings=256, rms_norm_eps=1e-5,
        rope_theta=10000.0, bos_token_id=1, eos_token_id=2, attn_implementation="eager", **overrides,
    )  # fmt: skip
    hf = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights and larger weights than the default init
        for name_, p in hf.named_parameters():
            if "norm" in name_:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.mul_(5.0)
    spec = ModelSpec.from_hf_config(cfg.to_dict(), name)
    weights, floats = {}, {}
    for key, tensor in hf.state_dict().items():
        if key == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        arr = tensor.detach().float().numpy()
        if arr.ndim == 2:
            weights[key] = quantize_rtn(arr, fmt)
        else:
            floats[key] = arr.astype(np.float32)
    quantized = QuantizedModel(spec=spec, fmt=fmt, weights=weights, floats=floats, source=f"tiny:{name}")
    deq = LlamaForCausalLM(cfg).eval()
    state = {k: torch.from_numpy(v.dequantize()) for k, v in weights.items()}
    state.update({k: torch.from_numpy(v) for k, v in floats.items()})
    if cfg.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    deq.load_state_dict(state)
    return TinyModel(hf=hf, quantized=quantized, dequantized_hf=deq)
