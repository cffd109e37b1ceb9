"""QLoRA against the exact ROM base: train a LoRA adapter on the weights a ROM image holds.

`finetune(image, train_text, out_dir, settings)` tokenizes the text with the image's tokenizer into
non-overlapping `seq_len` windows, checks that an adapter of the requested rank fits the chip's H-Unit
SRAM next to a `seq_len` KV cache (the adapter bank's verdict), and trains LoRA on the image's frozen
base (train/model.py) with AdamW at a constant learning rate (QLoRA's recipe; no dropout). Each step
takes `batch × grad_accum` windows; the order is a permutation per epoch drawn from `seed`, a pure
function of (seed, step), so a resumed run sees exactly the windows the uninterrupted run would.
Checkpoints (adapter + optimizer + step) are written atomically every `checkpoint_every` steps and at
the end; `resume=True` continues from one bit for bit (same image, settings and thread count).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from romachip.errors import AdapterError, CapacityError
from romachip.names import projection_module
from romachip.rom import RomImage
from romachip.train import output
from romachip.train.model import build_model, lora_parameters
from romachip.train.settings import FinetuneSettings, StepInfo, check_targets
from romachip.workload import KvConfig

#: Settings a resumed run must share with the run it continues (steps and checkpointing may change).
RESUME_KEYS = ("rank", "alpha", "targets", "rslora", "lr", "seq_len", "batch", "grad_accum", "seed", "chip_numerics")


@dataclass
class FinetuneResult:
    out_dir: str
    steps: int
    resumed_from: int
    windows: int
    train_tokens: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    adapter_bytes: int = 0
    fit: str = ""


def training_windows(ids: np.ndarray, seq_len: int) -> np.ndarray:
    """[n, seq_len] non-overlapping windows of the token ids (the tail shorter than a window is dropped)."""
    n = len(ids) // seq_len
    if n < 1:
        raise AdapterError(
            f"the training text is {len(ids)} tokens long: fewer than one --seq-len window of {seq_len}; "
            "give more text or a shorter --seq-len"
        )
    return np.asarray(ids[: n * seq_len], dtype=np.int64).reshape(n, seq_len)


def window_indices(n: int, seed: int, first: int, count: int) -> np.ndarray:
    """Windows `first .. first+count-1` of the stream: epoch e is permutation(n) drawn from (seed, e)."""
    pos = np.arange(first, first + count)
    out = np.empty(count, dtype=np.int64)
    for epoch in np.unique(pos // n):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(n)
        sel = pos // n == epoch
        out[sel] = perm[pos[sel] % n]
    return out


def check_fit(rom: RomImage, settings: FinetuneSettings) -> str:
    """The adapter bank's verdict on the adapter next to a seq_len KV cache; refuses one that does not fit."""
    from romachip.sram.bank import AdapterBank

    kv = KvConfig(dtype=rom.chip.precision.kv, context_tokens=settings.seq_len)
    bank = AdapterBank.for_image(rom, kv=kv)
    ranks = {projection_module(i, p): settings.rank for i in range(rom.spec.num_layers) for p in settings.targets}
    verdict = bank.what_if(ranks, name="the fine-tuned adapter")
    if not verdict.fits:
        raise CapacityError(verdict.message)
    return verdict.message


def _resume_state(folder: Path, fingerprint: str, settings: FinetuneSettings) -> dict:
    state = output.load_checkpoint(folder)
    if state.get("image") != fingerprint:
        raise AdapterError(
            f"--resume: the checkpoint in {folder} was trained on another ROM image ({state.get('image_path')})"
        )
    old = state["settings"]
    changed = [k for k in RESUME_KEYS if old.get(k) != asdict(settings)[k]]
    if changed:
        diffs = ", ".join(f"{k} {old.get(k)!r} -> {asdict(settings)[k]!r}" for k in changed)
        raise AdapterError(f"--resume must keep the run's settings; changed: {diffs}")
    return state


def finetune(
    image_path: str | Path,
    train_text: str,
    out_dir: str | Path,
    settings: FinetuneSettings = FinetuneSettings(),  # noqa: B008  (frozen)
    *,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
) -> FinetuneResult:
    """Train a LoRA adapter on the image's exact base and write it as a PEFT folder (module docstring)."""
    settings.check()
    settings = FinetuneSettings(**{**asdict(settings), "targets": check_targets(settings.targets)})
    folder = Path(out_dir)
    rom = RomImage.open(image_path)
    qmodel = rom.model()
    from romachip.engine.text import load_tokenizer

    ids = np.array(load_tokenizer(qmodel).encode(train_text, add_special_tokens=False).ids, dtype=np.int64)
    data = training_windows(ids, settings.seq_len)
    fit = check_fit(rom, settings)
    total = settings.total_steps(len(data))
    output.prepare_folder(folder, resume=resume)
    fingerprint = output.image_fingerprint(image_path)
    state = _resume_state(folder, fingerprint, settings) if resume else None

    model = build_model(qmodel, rank=settings.rank, alpha=settings.alpha, targets=settings.targets,
                        rslora=settings.rslora, chip_numerics=settings.chip_numerics, seed=settings.seed)  # fmt: skip
    params = lora_parameters(model)
    opt = torch.optim.AdamW(list(params.values()), lr=settings.lr, weight_decay=0.0)
    start, losses = 0, []
    if state is not None:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(state["adapter"][k])
        opt.load_state_dict(state["optimizer"])
        start, losses = state["step"], list(state["losses"])
    config = output.peft_config_dict(settings.rank, settings.alpha, settings.targets, settings.rslora,
                                     base=str(rom.spec.name))  # fmt: skip

    def checkpoint(step: int) -> None:
        output.save_checkpoint(folder, {
            "step": step, "settings": asdict(settings), "image": fingerprint, "image_path": str(image_path),
            "adapter": {k: p.detach().clone() for k, p in params.items()}, "optimizer": opt.state_dict(),
            "losses": losses,
        })  # fmt: skip

    t0 = time.perf_counter()
    per_step = settings.batch * settings.grad_accum
    for step in range(start, total):
        loss_sum = 0.0
        for micro in range(settings.grad_accum):
            first = step * per_step + micro * settings.batch
            batch = torch.from_numpy(data[window_indices(len(data), settings.seed, first, settings.batch)])
            loss = model(input_ids=batch, labels=batch).loss / settings.grad_accum
            loss.backward()
            loss_sum += loss.item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss_sum)
        done = step + 1
        if done % settings.checkpoint_every == 0 or done == total:
            checkpoint(done)
        if on_step is not None:
            elapsed = time.perf_counter() - t0
            rate = (done - start) / elapsed
            on_step(StepInfo(done, total, loss_sum, rate * per_step * settings.seq_len, (total - done) / rate))
    if start >= total and state is not None:
        checkpoint(start)
    output.write_adapter(folder, params, config)
    result = FinetuneResult(
        out_dir=str(folder), steps=total, resumed_from=start, windows=len(data), train_tokens=int(data.size),
        losses=losses, seconds=time.perf_counter() - t0, fit=fit,
        adapter_bytes=sum(p.numel() for p in params.values()) * 4,
    )  # fmt: skip
    output.write_log(folder, {"settings": asdict(settings), **asdict(result)})
    return result
