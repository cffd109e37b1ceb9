"""Run the golden engine once with its tap (romachip.engine.tap) and keep what the vectors need.

The engine computes; this module only listens. One prefill over the prompt (step 0), then `steps` greedy
decode steps (step k at position prompt + k - 1), each a forward pass observed event by event; the events
of the selected layers are kept, with a copy of the KV cache as the attention of that step read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from romachip.engine import Engine
from romachip.engine.model import Adapter
from romachip.engine.tap import OpKind, TapEvent


@dataclass
class Step:
    """One observed forward pass."""

    index: int
    positions: np.ndarray  # int64 [rows]: the positions this pass computed
    tokens: np.ndarray  # int64 [rows]: its input token ids
    events: list[TapEvent] = field(default_factory=list)  # events of the selected layers, in chip order
    kv: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # layer -> k, v, k_scale, v_scale
    next_token: int = -1  # the greedy token after this pass


class _LayerFilter:
    def __init__(self, layers: set[int], keep: list[TapEvent]) -> None:
        self.layers, self.keep = layers, keep

    def __call__(self, event: TapEvent) -> None:
        if event.layer in self.layers and event.kind is not OpKind.EMBED:
            self.keep.append(event)


def capture(
    engine: Engine, prompt_ids: list[int], *, steps: int, layers: list[int], adapter: Adapter | None
) -> list[Step]:
    """Prefill + `steps` greedy decode steps, observed; the events and KV of `layers`."""
    engine.check_adapter(adapter)
    cache = engine.new_cache(len(prompt_ids) + steps, adapter)
    out: list[Step] = []
    token_ids = np.asarray(prompt_ids, dtype=np.int64)
    with engine.compute_threads():
        for k in range(steps + 1):
            start = cache.length
            step = Step(k, np.arange(start, start + token_ids.size), token_ids)
            logits = engine.net.forward(
                token_ids, cache, start, engine.activation, adapter, slice(-1, None),
                observer=_LayerFilter(set(layers), step.events),
            )  # fmt: skip
            for layer in layers:
                step.kv[layer] = {
                    "k": cache.k[layer, :, : cache.length].copy(),
                    "v": cache.v[layer, :, : cache.length].copy(),
                    "k_scale": cache.k_scale[layer, :, : cache.length].copy(),
                    "v_scale": cache.v_scale[layer, :, : cache.length].copy(),
                }
            step.next_token = int(np.argmax(logits[-1]))
            out.append(step)
            token_ids = np.array([step.next_token], dtype=np.int64)
    return out
