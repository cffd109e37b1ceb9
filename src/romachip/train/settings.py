"""What a fine-tuning run is asked to do (`FinetuneSettings`) and what it reports per step (`StepInfo`).

Apart from train/finetune.py so that the CLI builds its options from these defaults without importing
torch (`romachip --help` imports every command's module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from romachip.errors import AdapterError
from romachip.names import PROJECTIONS

ALL_TARGETS = tuple(PROJECTIONS)


def check_targets(targets: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The adapted projections, in the model's order; unknown names are refused."""
    unknown = sorted(set(targets) - set(ALL_TARGETS))
    if unknown or not targets:
        raise AdapterError(
            f"--targets must name projections among {', '.join(ALL_TARGETS)}; got {', '.join(unknown) or 'none'}"
        )
    return tuple(p for p in ALL_TARGETS if p in targets)


@dataclass(frozen=True)
class FinetuneSettings:
    rank: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] = ALL_TARGETS
    rslora: bool = False
    steps: int | None = None  # None: `epochs` passes over the windows (1 if neither is given)
    epochs: float | None = None
    lr: float = 2e-4  # QLoRA's
    seq_len: int = 256
    batch: int = 4
    grad_accum: int = 1
    seed: int = 0
    chip_numerics: bool = False
    checkpoint_every: int = 50

    def check(self) -> None:
        for name in ("rank", "seq_len", "batch", "grad_accum", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise AdapterError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.seq_len < 2:
            raise AdapterError(f"--seq-len must be at least 2 tokens, got {self.seq_len}")
        if self.steps is not None and self.steps < 1 or self.epochs is not None and self.epochs <= 0:
            raise AdapterError("--steps must be at least 1 and --epochs above 0")
        if not self.lr > 0 or not self.alpha > 0:
            raise AdapterError(f"--lr and --alpha must be positive, got {self.lr} and {self.alpha}")
        check_targets(self.targets)

    def total_steps(self, windows: int) -> int:
        if self.steps is not None:
            return self.steps
        per_step = self.batch * self.grad_accum
        return max(1, math.ceil((self.epochs or 1.0) * windows / per_step))


@dataclass
class StepInfo:
    step: int
    total: int
    loss: float
    tokens_per_s: float
    eta_s: float
