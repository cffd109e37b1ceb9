"""Decode and prompt speed of the golden engine vs transformers (float32, eager) and llama.cpp, on SmolLM2-135M.

The engine and transformers run the same weights (the demo ROM image, uint4 g128; transformers gets them
dequantized); llama.cpp (llama-cpp-python, the optional `[bench]` extra) runs the checkpoint as shipped
(Q4_1 GGUF, 4.5 bits a weight, so it streams slightly more bytes than the engine's 4-bit codes). All three
run in one process, alternating round by round, at the same thread count, for each count asked (default
1 and 2). On a shared machine only the ratios within one run mean anything.

- decode tokens/s = (N - 1) / (time of N greedy tokens - time of 1 token): the prompt is excluded;
- prompt tokens/s = P / (time of a P-token prefill) (engine: one prefill; transformers: one forward pass;
  llama.cpp: evaluating the prompt).
Reported per thread count: best of the rounds for each runtime and the ratios (goals: engine decode >= 3x
transformers and >= 0.5x llama.cpp, prompt >= 2x transformers).

    python -m benchmarks engine_decode
    python benchmarks/engine_decode.py --tokens 48 --prompt-tokens 256 --rounds 3 --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pydoc_data.topics import topics

# isort: off
import romachip  # noqa: F401  (first: its OpenMP wait default must precede torch's libgomp)

# isort: on
import numpy as np
import torch

from romachip.engine.demo_model import ensure_demo_image
from romachip.engine.generate import Engine
from romachip.engine.model import decode_one_token, prefill
from romachip.quant.checkpoint import smollm2_gguf_path
from romachip.quant.hf_reference import dequantized_tensors, llama_from_tensors
from romachip.rom import RomImage

PROMPT = "The history of the printing press begins in the fifteenth century, when"


def engine_decode(engine: Engine, ids: list[int], tokens: int) -> float:
    cache = engine.new_cache(len(ids) + tokens)
    with engine.compute_threads():
        logits = prefill(engine.net, np.asarray(ids), cache, mode=engine.activation)[-1]
        token = int(np.argmax(logits))
        t0 = time.perf_counter()
        for _ in range(tokens - 1):
            token = int(np.argmax(decode_one_token(engine.net, token, cache, mode=engine.activation)))
        return (tokens - 1) / (time.perf_counter() - t0)


def engine_prompt(engine: Engine, ids: list[int]) -> float:
    cache = engine.new_cache(len(ids))
    with engine.compute_threads():
        t0 = time.perf_counter()
        prefill(engine.net, np.asarray(ids), cache, mode=engine.activation)
        return len(ids) / (time.perf_counter() - t0)


def hf_decode(model, ids: list[int], tokens: int) -> float:  # noqa: ANN001
    x = torch.tensor([ids])

    def timed(n: int) -> float:
        t0 = time.perf_counter()
        model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        return time.perf_counter() - t0

    with torch.inference_mode():
        first = timed(1)
        total = timed(tokens)
    return (tokens - 1) / (total - first)


def hf_prompt(model, ids: list[int]) -> float:  # noqa: ANN001
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(torch.tensor([ids]))
        return len(ids) / (time.perf_counter() - t0)


class LlamaCpp:
    """llama.cpp through llama-cpp-python on the shipped GGUF; None when the package is absent."""

    @classmethod
    def load(cls, threads: int) -> LlamaCpp | None:
        try:
            from llama_cpp import Llama
        except ImportError:
            return None
        return cls(Llama(str(smollm2_gguf_path()), n_ctx=1024, n_threads=threads, n_batch=512, verbose=False))

    def __init__(self, llm) -> None:  # noqa: ANN001
        self.llm = llm

    def _greedy(self, ids: list[int], n: int) -> float:
        self.llm.reset()
        t0 = time.perf_counter()
        out = self.llm.generate(ids, temp=0.0, top_k=1, reset=True)
        for i, _ in enumerate(out):
            if i + 1 == n:
                break
        return time.perf_counter() - t0

    def decode(self, ids: list[int], tokens: int) -> float:
        first = self._greedy(ids, 1)
        return (tokens - 1) / (self._greedy(ids, tokens) - first)

    def prompt(self, ids: list[int]) -> float:
        self.llm.reset()
        t0 = time.perf_counter()
        self.llm.eval(ids)
        return len(ids) / (time.perf_counter() - t0)


def measure(threads: int, args: argparse.Namespace, qmodel, hf, ids: list[int], long_ids: list[int]) -> dict:  # noqa: ANN001
    torch.set_num_threads(threads)
    engine = Engine(qmodel, activation=args.activation, kv=args.kv, threads=threads)
    llama = LlamaCpp.load(threads)
    engine_decode(engine, ids, 4)  # warm-up: first-call allocations everywhere
    hf_decode(hf, ids, 4)
    if llama:
        llama.decode(ids, 4)
    runs: dict[str, list[float]] = {k: [] for k in ("engine", "hf", "llama", "engine_p", "hf_p", "llama_p")}
    for _ in range(args.rounds):
        runs["hf"].append(hf_decode(hf, ids, args.tokens))
        runs["engine"].append(engine_decode(engine, ids, args.tokens))
        runs["hf_p"].append(hf_prompt(hf, long_ids))
        runs["engine_p"].append(engine_prompt(engine, long_ids))
        if llama:
            runs["llama"].append(llama.decode(ids, args.tokens))
            runs["llama_p"].append(llama.prompt(long_ids))
    best = {k: max(v) if v else None for k, v in runs.items()}
    return {
        "threads": threads,
        "kernel": engine.net.kernel,
        "decode_tokens_per_s": {"engine": best["engine"], "transformers_fp32": best["hf"], "llama_cpp": best["llama"]},
        "prompt_tokens_per_s": {
            "engine": best["engine_p"], "transformers_fp32": best["hf_p"], "llama_cpp": best["llama_p"]
        },
        "decode_engine_over_transformers": best["engine"] / best["hf"],
        "decode_engine_over_llama_cpp": best["engine"] / best["llama"] if llama else None,
        "prompt_engine_over_transformers": best["engine_p"] / best["hf_p"],
        "rounds": runs,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=48, help="greedy tokens per decode measurement")
    ap.add_argument("--prompt-tokens", type=int, default=256, help="tokens of the prompt-speed measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts, each for all runtimes")
    ap.add_argument("--activation", default=None, help="bf16 or int8 (default: the chip's)")
    ap.add_argument("--kv", default=None, help="int8 or fp16 (default: the chip's)")
    args = ap.parse_args()
    path, _ = ensure_demo_image()
    qmodel = RomImage.open(path).model()
    hf = llama_from_tensors(qmodel.spec, dequantized_tensors(qmodel))
    hf.config._attn_implementation = "eager"
    tokenizer = Engine(qmodel).tokenizer
    ids = tokenizer.encode(PROMPT).ids
    long_ids = tokenizer.encode(topics["assert"] + topics["assignment"]).ids[: args.prompt_tokens]
    results = []
    for t in args.threads:  # each count's result also goes to stderr as soon as it is measured
        results.append(measure(t, args, qmodel, hf, ids, long_ids))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    note = None
    if results[0]["decode_tokens_per_s"]["llama_cpp"] is None:
        note = "llama.cpp skipped: llama-cpp-python is not installed (pip install -e '.[bench]', see README)"
    result = {
        "model": qmodel.spec.name,
        "weight_format": qmodel.fmt.describe(),
        "llama_cpp_weights": "the shipped Q4_1 GGUF",
        "prompt_tokens_decode": len(ids),
        "prompt_tokens_prefill": len(long_ids),
        "decode_tokens": args.tokens,
        "note": note,
        "by_threads": results,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
