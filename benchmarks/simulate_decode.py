"""Wall time of simulating one decode step of Llama-3-8B (2-bit, rank-16 LoRA) on the roma chip.

    .venv/bin/python benchmarks/simulate_decode.py [--repeats 15] [--context 1024] [--json]

Measured in one run, on the same step:
- `composed`: what `simulate` does: one-layer and two-layer simulations composed exactly (layers are
  identical and strictly serial); goal: under 50 ms;
- `whole`: every layer simulated (the reference: what an event simulation without the layer symmetry
  costs); the ratio composed / whole is the speed-up, stable across machines;
- `graph`: building the op graph of the step alone (what any timing model has to read).
Medians over the repeats; each repeat uses a fresh ChipModel cache-free call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from romachip.graph import decode_ops
from romachip.perf.simulate import ChipModel
from romachip.quant.formats import WeightFormat
from romachip.spec import load_chip, load_model_spec
from romachip.tensor_bits import StoragePolicy
from romachip.workload import LoraConfig


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def measure(repeats: int, context: int) -> dict:
    chip, spec = load_chip("roma"), load_model_spec("llama-3-8b")
    cm = ChipModel(chip, spec, fmt=WeightFormat(2, 128), lora=LoraConfig(rank=16), policy=StoragePolicy.OFF_CHIP_ALL)
    cm.decode(context)  # warm imports and caches of the graph builder
    composed = _median_ms(lambda: cm.decode(context), repeats)
    whole = _median_ms(lambda: cm.decode(context, every_layer=True), max(3, repeats // 3))
    graph = _median_ms(lambda: decode_ops(spec, context, fmt=cm.fmt, lora=cm.lora, policy=cm.policy), repeats)
    assert cm.decode(context).cycles == cm.decode(context, every_layer=True).cycles
    return {
        "model": "llama-3-8b 2-bit, rank-16 LoRA, roma",
        "context": context,
        "decode_step_cycles": cm.decode(context).cycles,
        "composed_ms": composed,
        "whole_ms": whole,
        "graph_ms": graph,
        "speedup_vs_whole": whole / composed,
        "goal_ms": 50.0,
        "meets_goal": composed < 50.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = measure(args.repeats, args.context)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"{r['model']}, decode step at context {r['context']} ({r['decode_step_cycles']:,} cycles)")
    print(f"  composed (simulate): {r['composed_ms']:.1f} ms  (goal < {r['goal_ms']:.0f} ms: {r['meets_goal']})")
    print(f"  whole (every layer): {r['whole_ms']:.1f} ms  -> composed is {r['speedup_vs_whole']:.1f}x faster")
    print(f"  op graph alone:      {r['graph_ms']:.1f} ms")


if __name__ == "__main__":
    main()
