"""Shared helpers for the LoRA tests: a tiny random LLaMA and PEFT adapters made offline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import transformers

from romachip.spec.model import ModelSpec
from romachip.sram.peft_import import PROJECTIONS, LoraModule, PeftAdapter, uniform_ranks

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


def word_tokenizer_json(vocab_size: int) -> str:
    """A word-level tokenizer.json whose tokens are w0 .. w{vocab_size-1}, split on whitespace."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab_size)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok.to_str()


def quantize_tiny(model, fmt=None, tokenizer_json=None):
    """A QuantizedModel of a transformers LLaMA: RTN codes for every matrix, float32 norms."""
    from romachip.quant.formats import WeightFormat
    from romachip.quant.rtn import quantize_rtn
    from romachip.quant.tensor import QuantizedModel

    fmt = fmt or WeightFormat(4, 32)
    weights, floats = {}, {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue  # the embedding table serves as the head
        w = t.detach().float().numpy()
        if w.ndim == 2:
            weights[name] = quantize_rtn(w, fmt)
        else:
            floats[name] = w.astype(np.float32)
    return QuantizedModel(spec=spec_of(model), fmt=fmt, weights=weights, floats=floats, tokenizer_json=tokenizer_json)


def burn_tiny(model, path: Path, fmt=None, tokenizer_json=None):
    """Burn a tiny LLaMA into a ROM image for the `roma` chip and open it."""
    from romachip.rom import burn
    from romachip.spec import load_chip

    return burn(quantize_tiny(model, fmt, tokenizer_json), load_chip("roma"), path, chip_preset="roma")


def smollm2_blocks(layers: int, fmt=None):
    """SmolLM2-135M's real weights (the dequantized Q4_1 GGUF), first `layers` blocks, as a QuantizedModel.

    Re-quantizing Q4_1 (asymmetric, groups of 32) with RTN uint4 g32 is lossless. Fewer blocks keep the
    tests fast; the benchmarks run all 30.
    """
    from romachip.quant.checkpoint import smollm2_gguf_path
    from romachip.quant.formats import WeightFormat
    from romachip.quant.gguf_import import load_gguf_tensors
    from romachip.quant.rtn import quantize_rtn
    from romachip.quant.tensor import QuantizedModel
    from romachip.spec import load_model_spec

    fmt = fmt or WeightFormat(4, 32)
    spec = load_model_spec("smollm2-135m").model_copy(update={"num_layers": layers})
    tensors = load_gguf_tensors(smollm2_gguf_path(), spec)
    weights = {n: quantize_rtn(t, fmt) for n, t in tensors.items() if t.ndim == 2}
    floats = {n: t.astype(np.float32) for n, t in tensors.items() if t.ndim == 1}
    return QuantizedModel(spec=spec, fmt=fmt, weights=weights, floats=floats, source="smollm2-135m (truncated)")


def random_adapter(spec, rank, *, seed=0, targets=PROJECTIONS, layers=None, path="mem", b_std=0.01):
    """A PeftAdapter made in memory: PEFT's default kaiming-uniform A, B ~ N(0, b_std), scale 2 (alpha = 2r)."""
    rng = np.random.default_rng(seed)
    shapes = spec.linear_shapes()
    modules = {}
    for name in uniform_ranks(spec, rank, targets):
        layer = int(name.split(".")[2])
        if layers is not None and layer not in layers:
            continue
        out_f, in_f = shapes[name.rsplit(".", 1)[1]]
        a = rng.uniform(-1 / math.sqrt(in_f), 1 / math.sqrt(in_f), (rank, in_f)).astype(np.float32)
        b = rng.normal(0, b_std, (out_f, rank)).astype(np.float32)
        modules[name] = LoraModule(name, a, b, 2.0, rank, 2.0 * rank)
    return PeftAdapter(path, modules, False, None, "float32")
