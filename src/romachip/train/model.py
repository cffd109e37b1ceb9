"""A trainable transformers LLaMA whose frozen base is a ROM image's exact weights.

Every projection is a `RomLinear` over the image's codes (no float copy); the projections the adapter
targets are wrapped in a `LoraLinear`. The embedding table (which is also the LM head of a tied model)
is the image's dequantized table, frozen; RMSNorm weights are the image's. The module tree keeps the
Hugging Face names, so `model.layers.3.self_attn.q_proj.lora_A.weight` is the PEFT adapter's key less
PEFT's `base_model.model.` prefix.
"""

from __future__ import annotations

import numpy as np
import torch

from romachip.errors import AdapterError
from romachip.names import EMBED_NAME, HEAD_NAME, PROJECTION_PART, projection_name
from romachip.quant.hf_reference import llama_config
from romachip.quant.tensor import QuantizedModel
from romachip.train.settings import ALL_TARGETS, check_targets  # noqa: F401  (re-exported)
from romachip.train.torch_linear import LoraLinear, RomLinear

PEFT_PREFIX = "base_model.model."
EMBEDDING = EMBED_NAME
LM_HEAD = HEAD_NAME


def build_model(
    qmodel: QuantizedModel,
    *,
    rank: int,
    alpha: float,
    targets: tuple[str, ...],
    rslora: bool = False,
    chip_numerics: bool = False,
    seed: int = 0,
):  # noqa: ANN201 (LlamaForCausalLM)
    """The image's model with LoRA on `targets` of every layer; only the LoRA weights require grad.

    The LoRA A matrices are initialised from `torch.manual_seed(seed)` in module order (B starts at zero),
    so the same seed gives the same starting adapter.
    """
    from transformers import LlamaForCausalLM

    spec = qmodel.spec
    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(spec, attention="sdpa"))
    floats = {n: torch.from_numpy(np.asarray(v, dtype=np.float32)) for n, v in qmodel.floats.items()}
    floats[EMBEDDING] = torch.from_numpy(qmodel.weights[EMBEDDING].dequantize())
    model.load_state_dict(floats, strict=False, assign=True)
    if spec.tie_word_embeddings:
        model.tie_weights()
    else:
        model.lm_head = RomLinear(qmodel.weights[LM_HEAD], chip_numerics=chip_numerics)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for i, block in enumerate(model.model.layers):
            for proj, group in PROJECTION_PART.items():
                base = RomLinear(qmodel.weights[projection_name(i, proj)], chip_numerics=chip_numerics)
                layer = LoraLinear(base, rank, alpha, rslora=rslora) if proj in targets else base
                setattr(getattr(block, group), proj, layer)
    finally:
        torch.random.set_rng_state(generator_state)
    model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config)  # built on meta: rebuild
    for p in model.parameters():
        p.requires_grad_(False)
    for p in lora_parameters(model).values():
        p.requires_grad_(True)
    meta = [n for n, p in model.named_parameters() if p.is_meta]
    if meta:
        raise AdapterError(f"the image lacks the tensor behind {meta[0]}")
    return model.float().train()


def lora_parameters(model) -> dict[str, torch.nn.Parameter]:  # noqa: ANN001
    """The LoRA weights by their PEFT key (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`)."""
    return {PEFT_PREFIX + n: p for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}
