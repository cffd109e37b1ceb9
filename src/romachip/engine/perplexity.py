"""Perplexity of the golden engine over a token sequence, in fixed non-overlapping windows."""

from __future__ import annotations

import math

import numpy as np

from romachip.engine.generate import Engine
from romachip.engine.model import Adapter
from romachip.errors import GenerationError
from romachip.quant.hf_reference import windows


def nll_sum(logits: np.ndarray, targets: np.ndarray) -> float:
    """Sum over rows of -log softmax(logits)[target], in binary64 (a measurement, not part of the contract)."""
    z = logits.astype(np.float64)
    top = z.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return float(np.sum(lse - z[np.arange(len(targets)), targets]))


def engine_perplexity(
    engine: Engine,
    token_ids: np.ndarray,
    *,
    window: int,
    max_tokens: int | None,
    bar=None,  # noqa: ANN001  (a rich Progress, or None)
    adapter: Adapter | None = None,
) -> tuple[float, int]:
    """(perplexity, predicted tokens) over fixed non-overlapping windows, each scored from its own start."""
    chunks = windows(token_ids, window, max_tokens)
    if not chunks:
        raise GenerationError(f"the text has {len(token_ids)} tokens: at least 2 are needed for a perplexity")
    task = bar.add_task("engine", total=len(chunks)) if bar else None
    nll, count = 0.0, 0
    for chunk in chunks:
        logits = engine.logits(chunk, adapter=adapter)
        nll += nll_sum(logits[:-1], chunk[1:])
        count += len(chunk) - 1
        if bar:
            bar.advance(task)
    return math.exp(nll / count), count
