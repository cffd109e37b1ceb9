"""Quantize a whole checkpoint into a QuantizedModel (what `burn` writes).

- every projection of every block: RTN, RTN with the per-group scale/zero search of rtn_search.py
  (`rtn-search`, each input column weighed by the square of the RMSNorm gain in front of it), or GPTQ
  in `fmt`;
- GPTQ with act order (static groups) and a clip search per group by default, calibrated on the given
  text or, without one, on text the model samples itself (sampled.py: the default burn's calibration);
- the embedding (and an untied lm_head): RTN in `embedding_fmt` (default: `fmt`), rows are tokens, groups
  run along the hidden dimension;
- RMSNorm weights stay float32 in `floats`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from romachip.errors import CheckpointError, FormatError
from romachip.names import EMBED_NAME as EMBEDDING
from romachip.names import HEAD_NAME as LM_HEAD
from romachip.names import PROJECTIONS, norm_name, projection_name
from romachip.quant.checkpoint import Checkpoint
from romachip.quant.formats import WeightFormat
from romachip.quant.rtn import quantize_rtn
from romachip.quant.rtn_search import quantize_rtn_search
from romachip.quant.sampled import SAMPLED_SEQUENCES, sampled_ids
from romachip.quant.tensor import QuantizedModel, QuantizedTensor

QUANTIZERS = ("rtn", "rtn-search", "gptq")
#: The default burn's quantizer (burn, burn_checkpoint): GPTQ, on the model's own samples when no text is
#: given; measured against RTN in docs/quantization.md. `quantize_checkpoint` itself defaults to RTN.
DEFAULT_QUANTIZER = "gptq"
#: The RMSNorm whose gain scales each projection's input (o_proj and down_proj have none in front).
INPUT_NORM = {
    "q_proj": "input_layernorm",
    "k_proj": "input_layernorm",
    "v_proj": "input_layernorm",
    "gate_proj": "post_attention_layernorm",
    "up_proj": "post_attention_layernorm",
}

# GPTQ calibration defaults: cheap enough for SmolLM2 in about a minute on two cores.
CALIBRATION_SEQUENCES = 32
CALIBRATION_TOKENS = 256


def calibration_ids(
    tokenizer_json: str | None,
    text: str,
    *,
    sequences: int = CALIBRATION_SEQUENCES,
    tokens: int = CALIBRATION_TOKENS,
) -> np.ndarray:
    """[sequences, tokens] token ids: windows spread evenly over the tokenized text (deterministic)."""
    if tokenizer_json is None:
        raise CheckpointError("GPTQ calibration needs the checkpoint's tokenizer, and this checkpoint has none")
    from tokenizers import Tokenizer

    ids = np.asarray(Tokenizer.from_str(tokenizer_json).encode(text, add_special_tokens=False).ids, dtype=np.int64)
    if ids.size < tokens:
        raise FormatError(
            f"calibration text is {ids.size} tokens long; GPTQ needs at least one window of {tokens} tokens"
        )
    n = min(sequences, ids.size // tokens)
    starts = np.linspace(0, ids.size - tokens, n).astype(np.int64)
    return np.stack([ids[s : s + tokens] for s in starts])


def searched_rtn(ckpt: Checkpoint, layer: int, proj: str, fmt: WeightFormat) -> QuantizedTensor:
    """RTN with the scale/zero search, each input column's error weighed by its norm gain squared (an
    activation-scale proxy that needs no data: the gain multiplies every token's normalised input); the
    projections behind no norm (o_proj, down_proj) have no such proxy and keep plain RTN. Not the default:
    on SmolLM2 it lowers the weighted error yet raises perplexity (docs/quantization.md)."""
    w = ckpt.tensors[projection_name(layer, proj)]
    norm = INPUT_NORM.get(proj)
    if norm is None:
        return quantize_rtn(w, fmt)
    gain = np.asarray(ckpt.tensors[norm_name(layer, norm)], dtype=np.float64)
    return quantize_rtn_search(w, fmt, column_weights=gain * gain)


def check_quantizer(quantizer: str, calibration_text: str | None) -> None:
    """FormatError for an unknown quantizer or empty calibration text (burn asks before loading). GPTQ
    without calibration text samples its own (sampled.py)."""
    if quantizer not in QUANTIZERS:
        raise FormatError(f"unknown quantizer {quantizer!r}; choose one of {', '.join(QUANTIZERS)}")
    if quantizer == "gptq" and calibration_text is not None and not calibration_text.strip():
        raise FormatError("the calibration text is empty")


def quantize_checkpoint(
    ckpt: Checkpoint,
    fmt: WeightFormat,
    *,
    quantizer: Literal["rtn", "rtn-search", "gptq"] = "rtn",
    calibration_text: str | None = None,
    embedding_fmt: WeightFormat | None = None,
    calibration_sequences: int | None = None,
    calibration_tokens: int = CALIBRATION_TOKENS,
    act_order: bool = True,
    clip_search: bool = True,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    calibration_progress: Callable[[int, int], None] | None = None,
) -> QuantizedModel:
    """Quantize every weight of `ckpt`; progress(done, total) is called as tensors finish.

    GPTQ calibrates on `calibration_sequences` windows of `calibration_tokens` tokens: of
    `calibration_text` (default CALIBRATION_SEQUENCES windows), or, with no text, sampled from the float
    model itself from `seed` (default SAMPLED_SEQUENCES; calibration_progress(done, total) per token).

    GPTQ options (ignored by RTN): act_order visits columns by decreasing Hessian diagonal with static
    groups, so ROM groups stay contiguous; clip_search lets each group shrink its range. Both default on:
    on SmolLM2 at 2 bits they take GPTQ from perplexity ~5.6e4 to ~190 (docs/quantization.md).
    """
    check_quantizer(quantizer, calibration_text)
    spec = ckpt.spec
    emb_fmt = embedding_fmt or fmt
    weights: dict[str, QuantizedTensor] = {}
    heads = [EMBEDDING] + ([] if spec.tie_word_embeddings else [LM_HEAD])
    names = [projection_name(i, p) for i in range(spec.num_layers) for p in PROJECTIONS]
    total = len(heads) + len(names)
    done = 0
    ids = None
    if quantizer == "gptq":  # first, so that the progress of the tensors below is theirs alone
        if calibration_text is None:
            ids = sampled_ids(spec, ckpt.tensors, sequences=calibration_sequences or SAMPLED_SEQUENCES,
                              tokens=calibration_tokens, seed=seed, progress=calibration_progress)  # fmt: skip
        else:
            ids = calibration_ids(ckpt.tokenizer_json, calibration_text, tokens=calibration_tokens,
                                  sequences=calibration_sequences or CALIBRATION_SEQUENCES)  # fmt: skip
    for name in heads:
        weights[name] = quantize_rtn(ckpt.tensors[name], emb_fmt)
        done += 1
        if progress is not None:
            progress(done, total)
    if quantizer in ("rtn", "rtn-search"):
        for layer, proj in ((i, p) for i in range(spec.num_layers) for p in PROJECTIONS):
            name = projection_name(layer, proj)
            plain = quantizer == "rtn"
            weights[name] = quantize_rtn(ckpt.tensors[name], fmt) if plain else searched_rtn(ckpt, layer, proj, fmt)
            done += 1
            if progress is not None:
                progress(done, total)
    else:
        from romachip.quant.gptq_model import gptq_model

        calib_tensors = dict(ckpt.tensors)
        calib_tensors[EMBEDDING] = weights[EMBEDDING].dequantize()  # calibrate on what the chip will see
        offset = done
        inner = None if progress is None else (lambda d, _t: progress(offset + d, total))
        weights.update(
            gptq_model(spec, calib_tensors, ids, fmt, act_order=act_order, clip_search=clip_search, progress=inner)
        )
    floats = {n: np.asarray(t, dtype=np.float32) for n, t in ckpt.tensors.items() if t.ndim == 1}
    metadata = {
        "quantizer": quantizer,
        "weight_format": fmt.describe(),
        "embedding_format": emb_fmt.describe(),
    }
    if quantizer == "gptq":
        source = "of the given text" if calibration_text is not None else f"sampled from the model, seed {seed}"
        metadata["calibration"] = f"{ids.shape[0]} sequences x {ids.shape[1]} tokens {source}"
        metadata["gptq_options"] = f"act_order={act_order} clip_search={clip_search}"
    return QuantizedModel(
        spec=spec,
        fmt=fmt,
        weights=weights,
        floats=floats,
        tokenizer_json=ckpt.tokenizer_json,
        chat_template=ckpt.chat_template,
        source=ckpt.source,
        metadata=metadata,
    )
