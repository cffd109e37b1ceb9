"""Next-token choice with its own seeded RNG (NumPy PCG64), so a seed gives the same tokens on any machine.

Greedy at temperature 0; otherwise temperature-scaled softmax (deterministic exp), top-p nucleus, one
uniform draw per token (docs/numerics.md, "Sampling").
"""

from __future__ import annotations

import numpy as np

from romachip.engine.detmath import exp64, seq_sum
from romachip.errors import GenerationError


class Sampler:
    """Picks tokens from logits; holds the RNG state of one generation."""

    def __init__(self, *, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> None:
        if not temperature >= 0:
            raise GenerationError(f"temperature must be >= 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise GenerationError(f"top_p must lie in (0, 1], got {top_p}")
        if seed < 0:
            raise GenerationError(f"seed must be >= 0, got {seed}")
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Softmax of logits / temperature in binary64 with a sequential normaliser."""
        z = np.asarray(logits, dtype=np.float64) / self.temperature
        e = exp64(z - np.max(z))
        return e / seq_sum(e, axis=0)

    def __call__(self, logits: np.ndarray) -> int:
        logits = np.asarray(logits)
        if self.temperature == 0:
            return int(np.argmax(logits))
        p = self.probabilities(logits)
        order = np.argsort(-p, kind="stable")  # descending, ties by lower id
        cum = np.add.accumulate(p[order])
        keep = int(np.searchsorted(cum, self.top_p, side="left")) + 1
        keep = min(keep, order.size)
        u = self.rng.random() * cum[keep - 1]
        pick = int(np.searchsorted(cum[:keep], u, side="right"))
        return int(order[min(pick, keep - 1)])
