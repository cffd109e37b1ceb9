"""Calibration text the model writes itself: GPTQ without a data set (the default burn's calibration).

`sampled_ids(spec, tensors, sequences=16, tokens=256, seed=0) -> [sequences, tokens]` starts every
sequence at the model's BOS token and samples each next token from the float model's own distribution
(temperature 1, no top-k/top-p), with a KV cache. The draws come from numpy's PCG64 seeded with
`seed` (one uniform per token, inverted through the float64 CDF of the softmax), so the tokens are a
function of the checkpoint and the seed: the same on every run on one machine and thread count. The
logits are float32 torch, whose last bits can differ between CPUs; a draw that falls within that
rounding of a CDF boundary may then pick the neighbouring token there (rare; the image differs, its
quality does not).

Why the model's own text: GPTQ weighs each weight's error by the activations it meets, and those of
the text the model itself produces are the model's typical inputs, of no domain in particular. On
SmolLM2 a Hessian from the Python manual alone made 4-bit GPTQ worse than RTN on Shakespeare
(docs/quantization.md); the model's own samples do not overfit any one held-out text.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from romachip.spec.model import ModelSpec

SAMPLED_SEQUENCES = 16
SAMPLED_TOKENS = 256


def draw(logits: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Token ids from float logits [batch, vocab] and uniforms u in [0, 1), by the inverse CDF in float64."""
    x = np.asarray(logits, dtype=np.float64)
    p = np.exp(x - x.max(axis=1, keepdims=True))
    cdf = np.cumsum(p, axis=1)
    target = u[:, None] * cdf[:, -1:]
    ids = (cdf <= target).sum(axis=1)  # the first index whose CDF passes u * total
    return np.minimum(ids, x.shape[1] - 1)


def sampled_ids(
    spec: ModelSpec,
    tensors: dict[str, np.ndarray],
    *,
    sequences: int = SAMPLED_SEQUENCES,
    tokens: int = SAMPLED_TOKENS,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """[sequences, tokens] int64 ids sampled from the float model `tensors` from BOS (module docstring)."""
    import torch

    from romachip.quant.hf_reference import llama_from_tensors

    model = llama_from_tensors(spec, tensors, attention="sdpa")
    rng = np.random.default_rng(seed)
    bos = spec.bos_token_id if spec.bos_token_id is not None else 0
    out = np.full((sequences, tokens), bos, dtype=np.int64)
    cache = None
    with torch.inference_mode():
        for t in range(1, tokens):
            step = torch.from_numpy(out[:, t - 1 : t])
            res = model(input_ids=step, cache=cache, use_cache=True)
            cache = res.cache
            out[:, t] = draw(res.logits[:, -1].float().numpy(), rng.random(sequences))
            if progress is not None:
                progress(t, tokens - 1)
    return out
