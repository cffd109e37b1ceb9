"""The Hugging Face names of a LLaMA model's tensors and modules: the one definition every reader and
writer of checkpoints, ROM images, adapters and the engine uses.

A block's seven projections live under `self_attn` (q, k, v, o) or `mlp` (gate, up, down):
`model.layers.{layer}.{part}.{projection}` is the module, `+ ".weight"` its weight.
"""

from __future__ import annotations

#: Projections of a LLaMA block, by their PEFT/Hugging Face module names, in execution order.
PROJECTIONS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION_PROJECTIONS: tuple[str, ...] = PROJECTIONS[:4]
MLP_PROJECTIONS: tuple[str, ...] = PROJECTIONS[4:]

#: The sub-module of a block that holds each projection.
PROJECTION_PART: dict[str, str] = {p: ("self_attn" if p in ATTENTION_PROJECTIONS else "mlp") for p in PROJECTIONS}

EMBED_MODULE = "model.embed_tokens"
HEAD_MODULE = "lm_head"
FINAL_NORM_MODULE = "model.norm"
EMBED_NAME = f"{EMBED_MODULE}.weight"
HEAD_NAME = f"{HEAD_MODULE}.weight"
FINAL_NORM_NAME = f"{FINAL_NORM_MODULE}.weight"
BLOCK_NORMS: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm")


def block_prefix(layer: int) -> str:
    return f"model.layers.{layer}"


def projection_module(layer: int, projection: str) -> str:
    """Module name of one projection of one block, e.g. (0, "q_proj") -> model.layers.0.self_attn.q_proj."""
    return f"{block_prefix(layer)}.{PROJECTION_PART[projection]}.{projection}"


def projection_name(layer: int, projection: str) -> str:
    """Weight name of one projection, e.g. (0, "q_proj") -> model.layers.0.self_attn.q_proj.weight."""
    return f"{projection_module(layer, projection)}.weight"


def norm_name(layer: int, norm: str) -> str:
    """Weight name of one of a block's RMSNorms (`input_layernorm` or `post_attention_layernorm`)."""
    return f"{block_prefix(layer)}.{norm}.weight"


def head_name(tied: bool) -> str:
    """The tensor the LM head multiplies by: the embedding table itself when the model ties them."""
    return EMBED_NAME if tied else HEAD_NAME


def layer_of(name: str) -> int:
    """Block index of a `model.layers.N....` name, else -1."""
    parts = name.split(".")
    return int(parts[2]) if len(parts) > 2 and parts[:2] == ["model", "layers"] and parts[2].isdigit() else -1


def projection_of(name: str) -> str | None:
    """`q_proj` ... of a projection's module or weight name, else None."""
    parts = name.removesuffix(".weight").split(".")
    return parts[-1] if layer_of(name) >= 0 and parts[-1] in PROJECTION_PART else None
