"""The engine's tap: an optional observer that sees every step of the forward pass as docs/numerics.md
defines it (golden vectors, training probes). Zero cost when absent: every call site is guarded by
`if observer is not None`, and the observed path of a linear layer is a separate function whose output
is held bit for bit to the fast one (tests/test_engine_tap.py).

An observer is any callable taking one `TapEvent`. Events come in the order the chip computes them:
per layer, input norm, the q/k/v linears, RoPE, attention (one ATTENTION_SHARE event per H-Unit share,
then one ATTENTION event with the combined result), o linear, residual, post norm, gate/up, SwiGLU,
down, residual; then the final norm and the LM head. Arrays are the engine's own (do not modify them).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

#: layer of the events outside the decoder blocks (embedding, final norm, LM head)
NO_LAYER = -1


class OpKind(enum.Enum):
    """What a TapEvent reports; its `arrays` keys are listed per kind (shapes: rows = tokens of the call)."""

    EMBED = "embed"  # tokens int64 [rows]; y float32 [rows, hidden]
    RMS_NORM = "rms_norm"  # x, y float32 [rows, n]
    LINEAR = "linear"  # x, xi, act_scale, act_exponent?, group_integers, group_terms, y (see LinearParts)
    LORA = "lora"  # x float32 [rows, in]; u float32 [rows, r]; delta float32 [rows, out]
    ROPE = "rope"  # x, y float32 [rows, heads, d]; module "q" or "k"; positions int64 [rows]
    ATTENTION_SHARE = "attention_share"  # one H-Unit's share of the keys (see kv.py, docs/numerics.md)
    ATTENTION = "attention"  # q float32 [rows, heads, d]; y float32 [rows, heads * d]
    SWIGLU = "swiglu"  # gate, up, y float32 [rows, intermediate]
    RESIDUAL = "residual"  # x, delta, y float32 [rows, hidden]; module "attention" or "mlp"


@dataclass(frozen=True)
class TapEvent:
    """One step: its kind, where it ran (layer, module name, H-Unit share rank) and its arrays."""

    kind: OpKind
    layer: int
    module: str
    arrays: Mapping[str, np.ndarray]
    unit: int | None = None  # the H-Unit share rank (ATTENTION_SHARE), else None
    extra: Mapping[str, object] = field(default_factory=dict)  # scalars (e.g. activation mode, share count)


class Observer(Protocol):
    """Receives every TapEvent of a forward pass, in the chip's order."""

    def __call__(self, event: TapEvent) -> None: ...


@dataclass(frozen=True)
class LinearSite:
    """Where a (possibly fused) L-Unit product runs: its layer and the modules it holds, as
    (module name, first output column, end column) inside the fused output."""

    layer: int
    modules: tuple[tuple[str, int, int], ...]


class Recorder:
    """An observer that keeps every event (tests, golden-vector dumps); `of(kind)` filters them."""

    def __init__(self) -> None:
        self.events: list[TapEvent] = []

    def __call__(self, event: TapEvent) -> None:
        self.events.append(event)

    def of(self, kind: OpKind) -> list[TapEvent]:
        return [e for e in self.events if e.kind is kind]
