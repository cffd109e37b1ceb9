"""Shared helpers for the LoRA tests: a tiny random LLaMA and PEFT adapters made offline."""

from __future__ import annotations

from pathlib import Path

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
