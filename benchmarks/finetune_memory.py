"""Where the memory of `romachip finetune` goes: runtime, frozen base, adapter + optimizer, activations.

    python benchmarks/finetune_memory.py IMAGE [--seq-len 128] [--batch 2] [--rank 16] [--steps 3]

Builds the training model of `romachip.train` on IMAGE exactly as `finetune` does and measures the
process's resident set (RSS, /proc/self/statm) after each stage, and its peak during each training step
(a sampler thread reads RSS every millisecond; ru_maxrss as a cross-check):

- runtime: torch, transformers, romachip imported, nothing loaded;
- image: the ROM image read into the QuantizedModel (codes, scales, zeros as numpy arrays; finetune
  keeps it for the adapter's config and the fingerprint);
- model: the frozen base built from it (RomLinear codes/scales/zeros as torch tensors, the dequantized
  float32 embedding / LM head, norms) plus the LoRA weights;
- optimizer: AdamW's two moments, allocated at the first step (counted exactly from the parameters);
- activations: the peak during a step above the RSS before it (what autograd keeps for backward, the
  logits and their gradient, the dequantized weight of the projection being computed).
Freed heap pages are handed back to the OS (`malloc_trim`) before each reading, so RSS counts live
memory rather than malloc's cache of freed activations.
The float32 model the issue's goal is stated against is 4 bytes per parameter of the checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 2**20


def trim() -> None:
    """Hand freed heap pages back to the OS (glibc), so that RSS counts live memory, not malloc's cache."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakSampler:
    """The highest RSS seen while the block runs (sampled every millisecond on a thread)."""

    def __enter__(self) -> PeakSampler:
        self.peak, self._stop = rss(), False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, rss())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    import torch
    import transformers  # noqa: F401  (counted in the runtime)

    from romachip.rom import RomImage
    from romachip.train.model import ALL_TARGETS, build_model, lora_parameters

    torch.set_num_threads(args.threads)
    trim()
    stages = {"runtime": rss()}
    qmodel = RomImage.open(args.image).model()
    trim()
    stages["image"] = rss()
    model = build_model(qmodel, rank=args.rank, alpha=2.0 * args.rank, targets=ALL_TARGETS)
    trim()
    stages["model"] = rss()
    params = lora_parameters(model)
    opt = torch.optim.AdamW(list(params.values()), lr=1e-3, weight_decay=0.0)
    rng = np.random.default_rng(0)
    steps = []
    for _ in range(args.steps):
        batch = torch.from_numpy(rng.integers(0, qmodel.spec.vocab_size, size=(args.batch, args.seq_len)))
        trim()
        before = rss()
        with PeakSampler() as s:
            model(input_ids=batch, labels=batch).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        after = rss()
        trim()
        steps.append({"rss_before": before, "peak": s.peak, "rss_after": after, "rss_after_trim": rss()})
    lora_bytes = sum(p.numel() * p.element_size() for p in params.values())
    spec = qmodel.spec
    weights = sum(int(np.prod(t.shape)) for t in qmodel.weights.values())
    float_params = weights + sum(np.asarray(v).size for v in qmodel.floats.values())
    last = steps[-1]
    out = {
        "image": args.image,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "rank": args.rank,
        "float32_model_mib": float_params * 4 / MIB,
        "runtime_mib": stages["runtime"] / MIB,
        "image_mib": (stages["image"] - stages["runtime"]) / MIB,
        "model_mib": (stages["model"] - stages["image"]) / MIB,
        "lora_mib": lora_bytes / MIB,
        "adamw_state_mib": 2 * lora_bytes / MIB,
        "after_first_step_mib": (steps[0]["rss_after_trim"] - stages["model"]) / MIB,
        "activations_mib": (last["peak"] - last["rss_before"]) / MIB,
        "peak_rss_mib": max(s["peak"] for s in steps) / MIB,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "logits_and_grad_mib": 2 * args.batch * args.seq_len * spec.vocab_size * 4 / MIB,
        "steps": [{k: v / MIB for k, v in s.items()} for s in steps],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
