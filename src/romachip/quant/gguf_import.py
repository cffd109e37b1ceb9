"""GGUF (llama.cpp) import: dequantize to float32, rename to Hugging Face, undo the Q/K RoPE permutation.

llama.cpp's converter permutes the rows of q_proj and k_proj so that RoPE rotates adjacent pairs; each
head's rows are reshaped (2, dim/2) -> (dim/2, 2). We undo it exactly as transformers does
(`LlamaTensorProcessor._reverse_permute_weights`): reshape to (heads, dim/2, 2, in) and swap axes 1, 2.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from romachip.errors import CheckpointError, ModelConfigError
from romachip.quant.checkpoint import Checkpoint, check_tensors, expected_shapes
from romachip.spec.model import ModelSpec

SUPPORTED_GGUF_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.weight$")


def hf_name(gguf_name: str) -> str | None:
    """llama.cpp tensor name -> Hugging Face name (None for tensors romachip does not use)."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _BLOCK_RE.match(gguf_name)
    if m and m.group(2) in _BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}.weight"
    return None


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head row permutation of q_proj/k_proj (n_heads = kv heads for k_proj)."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key: str):  # noqa: ANN001 (gguf.GGUFReader)
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def gguf_config(reader, path: Path) -> dict:  # noqa: ANN001
    """A Hugging Face-style config dict from the GGUF's llama.* metadata."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ModelConfigError(f"{path}: GGUF architecture {arch!r} is not supported; romachip runs 'llama'")
    if any(t.name == "rope_freqs.weight" for t in reader.tensors):
        raise CheckpointError(
            f"{path}: holds rope_freqs.weight (Llama 3.1-style RoPE scaling stored as a tensor), which romachip "
            "cannot map to a rope_scaling config; load the Hugging Face safetensors release instead"
        )

    def need(key: str):
        value = _field(reader, f"llama.{key}")
        if value is None:
            raise CheckpointError(f"{path}: GGUF metadata key 'llama.{key}' is missing")
        return value

    heads = int(need("attention.head_count"))
    hidden = int(need("embedding_length"))
    vocab = _field(reader, "llama.vocab_size")
    if vocab is None:
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        vocab = len(tokens.data) if tokens is not None else None
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    return {
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_field(reader, "llama.attention.head_count_kv") or heads),
        "head_dim": int(_field(reader, "llama.rope.dimension_count") or hidden // heads),
        "rms_norm_eps": float(need("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_field(reader, "llama.rope.freq_base") or 10000.0),
        "max_position_embeddings": int(_field(reader, "llama.context_length") or 2048),
        "tie_word_embeddings": all(t.name != "output.weight" for t in reader.tensors),
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": None if eos is None else int(eos),
    }


def _dequantize(tensor, path: Path) -> np.ndarray:  # noqa: ANN001 (gguf.ReaderTensor)
    from gguf.quants import dequantize

    type_name = tensor.tensor_type.name
    if type_name not in SUPPORTED_GGUF_TYPES:
        raise CheckpointError(
            f"{path}: tensor {tensor.name!r} has GGUF type {type_name}, which romachip cannot import "
            f"(supported: {', '.join(SUPPORTED_GGUF_TYPES)}); convert the model with one of those types"
        )
    try:
        w = dequantize(tensor.data, tensor.tensor_type)
    except (ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"{path}: cannot dequantize tensor {tensor.name!r} ({type_name}): {exc}") from None
    return np.array(w, dtype=np.float32)  # a copy: F32 tensors come back as read-only views of the file map


def _open(path: Path):  # noqa: ANN202
    from gguf import GGUFReader

    try:
        return GGUFReader(str(path), "r")
    except (ValueError, OSError, IndexError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a readable GGUF file: {exc}") from None


def load_gguf_tensors(path: Path, spec: ModelSpec, reader=None) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Every tensor romachip uses, dequantized to float32 with HF names and Q/K rows un-permuted."""
    reader = reader if reader is not None else _open(path)
    wanted = expected_shapes(spec)
    tensors: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        name = hf_name(tensor.name)
        if name is None or name not in wanted:
            continue
        w = _dequantize(tensor, path)
        if name.endswith("q_proj.weight"):
            w = unpermute_rope_rows(w, spec.num_heads)
        elif name.endswith("k_proj.weight"):
            w = unpermute_rope_rows(w, spec.num_kv_heads)
        tensors[name] = np.ascontiguousarray(w)
    return tensors


def gguf_tokenizer(path: Path) -> str | None:
    """The GGUF's vocabulary as a Hugging Face tokenizer.json string (transformers' converter, offline)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ValueError, KeyError, OSError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot build a tokenizer from the GGUF vocabulary: {exc}") from None
    backend = getattr(tok, "backend_tokenizer", None)
    return None if backend is None else backend.to_str()


def load_gguf(path: Path, *, name: str | None = None, with_tokenizer: bool = True) -> Checkpoint:
    """Load a llama GGUF file: spec from metadata, float32 tensors, tokenizer and chat template."""
    path = Path(path)
    reader = _open(path)
    spec = ModelSpec.from_hf_config(gguf_config(reader, path), name or path.stem)
    tensors = load_gguf_tensors(path, spec, reader)
    check_tensors(spec, tensors, str(path))
    template = _field(reader, "tokenizer.chat_template")
    has_vocab = "tokenizer.ggml.tokens" in reader.fields
    return Checkpoint(
        spec=spec,
        tensors=tensors,
        tokenizer_json=gguf_tokenizer(path) if with_tokenizer and has_vocab else None,
        chat_template=template if isinstance(template, str) else None,
        source=str(path),
    )
