"""Shared helpers for the LoRA tests: a tiny random LLaMA and PEFT adapters made offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers

from romachip.spec.model import ModelSpec

TINY = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    tie_word_embeddings=False,
)


def tiny_llama(seed: int = 0, **overrides) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**TINY, **overrides})).eval()


def spec_of(model: transformers.PreTrainedModel, name: str = "tiny") -> ModelSpec:
    return ModelSpec.from_hf_config(model.config.to_dict(), name)


def make_adapter(model, out: Path, *, seed: int = 1, b_std: float = 0.05, dtype=None, **lora_kwargs):
    """Wrap `model` with a PEFT LoRA (B randomised, so the adapter is not a no-op), save it, return the PeftModel."""
    import peft

    lora_kwargs.setdefault("r", 4)
    lora_kwargs.setdefault("lora_alpha", 8)
    torch.manual_seed(seed)
    pm = peft.get_peft_model(model, peft.LoraConfig(**lora_kwargs))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, b_std)
            if dtype is not None and "lora_" in name:
                p.data = p.data.to(dtype)
    pm.save_pretrained(str(out))
    return pm


def quantize_tiny(model, fmt=None):
    """A QuantizedModel of a transformers LLaMA: RTN codes for every matrix, float32 norms."""
    from romachip.quant.formats import WeightFormat
    from romachip.quant.rtn import quantize_rtn
    from romachip.quant.tensor import QuantizedModel

    fmt = fmt or WeightFormat(4, 32)
    weights, floats = {}, {}
    for name, t in model.state_dict().items():
        w = t.detach().float().numpy()
        if w.ndim == 2:
            weights[name] = quantize_rtn(w, fmt)
        else:
            floats[name] = w.astype(np.float32)
    return QuantizedModel(spec=spec_of(model), fmt=fmt, weights=weights, floats=floats)


def burn_tiny(model, path: Path, fmt=None):
    """Burn a tiny LLaMA into a ROM image for the `roma` chip and open it."""
    from romachip.rom import burn
    from romachip.spec import load_chip

    return burn(quantize_tiny(model, fmt), load_chip("roma"), path, chip_preset="roma")
