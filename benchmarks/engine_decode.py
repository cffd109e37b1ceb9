"""Decode speed of the golden engine vs Hugging Face transformers (float32, eager) on SmolLM2-135M.

Both run the same weights (the demo ROM image, uint4 g128; transformers gets them dequantized), the same
prompt and the same number of greedy tokens, in one process, alternating, at the same torch thread count
(default 1: on a shared CPU an idle-waiting thread team makes either side's number meaningless).
Decode tokens/s = (N - 1) / (time of N tokens - time of 1 token), so prefill is excluded for both.
Reported: best of the rounds for each, and the ratio engine / transformers (goal >= 1.0).

    python -m benchmarks engine_decode
    python benchmarks/engine_decode.py --tokens 64 --rounds 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from romachip.engine.demo_model import ensure_demo_image
from romachip.engine.generate import Engine
from romachip.engine.model import decode_one_token, prefill
from romachip.quant.hf_reference import dequantized_tensors, llama_from_tensors
from romachip.rom import RomImage

PROMPT = "The history of the printing press begins in the fifteenth century, when"


def engine_rate(engine: Engine, ids: list[int], tokens: int) -> float:
    cache = engine.new_cache(len(ids) + tokens)
    with engine.compute_threads():
        logits = prefill(engine.net, np.asarray(ids), cache, mode=engine.activation)[-1]
        token = int(np.argmax(logits))
        t0 = time.perf_counter()
        for _ in range(tokens - 1):
            token = int(np.argmax(decode_one_token(engine.net, token, cache, mode=engine.activation)))
        return (tokens - 1) / (time.perf_counter() - t0)


def hf_rate(model, ids: list[int], tokens: int) -> float:  # noqa: ANN001
    x = torch.tensor([ids])

    def timed(n: int) -> float:
        t0 = time.perf_counter()
        model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        return time.perf_counter() - t0

    with torch.inference_mode():
        first = timed(1)
        total = timed(tokens)
    return (tokens - 1) / (total - first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides (0: torch's default)")
    ap.add_argument("--activation", default=None, help="bf16 or int8 (default: the chip's)")
    ap.add_argument("--kv", default=None, help="int8 or fp16 (default: the chip's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    path, _ = ensure_demo_image()
    qmodel = RomImage.open(path).model()
    engine = Engine(qmodel, activation=args.activation, kv=args.kv, threads=threads)
    hf = llama_from_tensors(qmodel.spec, dequantized_tensors(qmodel))
    hf.config._attn_implementation = "eager"
    ids = engine.tokenizer.encode(PROMPT).ids
    engine_rate(engine, ids, 4)  # warm-up: first-call allocations on both sides
    hf_rate(hf, ids, 4)
    eng, ref = [], []
    for _ in range(args.rounds):
        ref.append(hf_rate(hf, ids, args.tokens))
        eng.append(engine_rate(engine, ids, args.tokens))
    result = {
        "model": qmodel.spec.name,
        "weight_format": qmodel.fmt.describe(),
        "activation": engine.activation,
        "kv": engine.kv,
        "torch_threads_both": threads,
        "prompt_tokens": len(ids),
        "decode_tokens": args.tokens,
        "engine_decode_tokens_per_s": max(eng),
        "hf_float32_eager_decode_tokens_per_s": max(ref),
        "ratio_engine_over_hf": max(eng) / max(ref),
        "engine_rounds": eng,
        "hf_rounds": ref,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
