"""A Llama-3.2-1B-shaped model on the golden engine: memory (RSS) and tokens/s, from its ROM image.

The checkpoint is random (seeded; the preset's Llama-3.2-1B shape: 16 layers, hidden 2048, MLP 8192,
GQA 32/8, vocab 128256, tied embeddings, llama3 RoPE), written offline as a Hugging Face folder (FP16
safetensors), burned with RTN (`--bits`, g128) and run from the image in a fresh process, so that the
RSS is the engine's alone. Random weights say nothing about quality; they exercise every byte and step.

    python benchmarks/engine_1b.py --workdir /tmp/llama1b --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

# isort: off
import romachip  # noqa: F401  (first: its OpenMP wait default must precede torch's libgomp)

# isort: on
import numpy as np

from romachip.engine.generate import Engine
from romachip.engine.model import decode_one_token, prefill
from romachip.quant.checkpoint import expected_shapes, load_checkpoint
from romachip.quant.formats import WeightFormat
from romachip.quant.quantize import quantize_checkpoint
from romachip.rom import RomImage, burn
from romachip.spec.chip import load_chip
from romachip.spec.model import _registry, load_model_spec

MODEL = "llama-3.2-1b"


def write_checkpoint(folder: Path, seed: int = 0) -> None:
    """config.json (the preset's) + model.safetensors with N(0, 0.02) FP16 weights, norms near 1."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text((_registry() / f"{MODEL}.json").read_text())
    spec = load_model_spec(MODEL)
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in expected_shapes(spec).items():
        if len(shape) == 1:
            tensors[name] = (1.0 + 0.05 * rng.standard_normal(shape)).astype(np.float16)
        else:
            tensors[name] = (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float16)
    save_file(tensors, str(folder / "model.safetensors"))


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(image: Path, threads: list[int], prompt: int, tokens: int) -> dict:
    t0 = time.perf_counter()
    qmodel = RomImage.open(image).model()
    read = {"read_s": time.perf_counter() - t0, "rss_after_read_bytes": rss_bytes(), "peak_rss_read_bytes": peak_rss()}
    engine = Engine(qmodel, keep_weights=False)
    del qmodel  # the engine holds the weights packed; the unpacked codes go
    load_s = time.perf_counter() - t0
    net = engine.net
    preps = [p for layer in net.layers for p in layer.values()] + [net.lm_head]
    held = sum(a.nbytes for p in preps for a in (p.packed, p.scales32, p.zeros8) if a is not None)
    weights = sum(p.in_features * p.out_features for p in preps)
    out = {**read, "load_s": load_s, "peak_rss_load_bytes": peak_rss(), "rss_after_load_bytes": rss_bytes(),
           "kernel": net.kernel, "engine_weight_bytes": held, "weights": weights,
           "engine_bytes_per_weight": held / weights, "runs": []}  # fmt: skip
    ids = np.random.default_rng(1).integers(0, engine.model.spec.vocab_size, prompt)
    for n in threads:
        engine.threads = n
        cache = engine.new_cache(prompt + tokens)
        with engine.compute_threads():
            t0, c0 = time.perf_counter(), time.process_time()
            token = int(np.argmax(prefill(net, ids, cache, mode=engine.activation)[-1]))
            t1, c1 = time.perf_counter(), time.process_time()
            for _ in range(tokens):
                token = int(np.argmax(decode_one_token(net, token, cache, mode=engine.activation)))
            t2, c2 = time.perf_counter(), time.process_time()
        # CPU seconds of the process (all threads) beside the wall clock, which on a loaded machine also
        # counts the time other processes ran
        rates = {"prompt_tokens_per_s": prompt / (t1 - t0), "decode_tokens_per_s": tokens / (t2 - t1),
                 "prompt_cpu_s": c1 - c0, "decode_cpu_s_per_token": (c2 - c1) / tokens}  # fmt: skip
        out["runs"].append({"threads": n, **rates})
    out["peak_rss_bytes"] = peak_rss()
    out["rss_after_run_bytes"] = rss_bytes()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("llama1b-random"))
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=16, help="decode steps timed")
    ap.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.threads, args.prompt_tokens, args.tokens)))
        return
    folder, image = args.workdir / "checkpoint", args.workdir / f"{MODEL}-random-uint{args.bits}-g128.rom"
    timings = {}
    if not image.exists():
        t0 = time.perf_counter()
        if not (folder / "model.safetensors").exists():
            write_checkpoint(folder)
        qmodel = quantize_checkpoint(load_checkpoint(folder), WeightFormat(bits=args.bits, group_size=128))
        burn(qmodel, load_chip("roma"), image, chip_preset="roma")
        del qmodel
        timings["burn_s"] = time.perf_counter() - t0
    child = [sys.executable, __file__, "--measure", str(image), "--threads", *map(str, args.threads),
             "--prompt-tokens", str(args.prompt_tokens), "--tokens", str(args.tokens)]  # fmt: skip
    result = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
    print(json.dumps({"model": f"{MODEL} (random weights)", "image_bytes": image.stat().st_size, **timings, **result},
                     indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
