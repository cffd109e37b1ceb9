"""LoRA on the full SmolLM2-135M through the golden engine: FP8 storage error and two resident adapters.

1. FP8 storage error: a rank-16 adapter on all seven projections of all 30 blocks (PEFT's default
   kaiming-uniform A, B ~ N(0, b_std), alpha 32). The engine runs the prompt with the adapter unquantized
   (float32, as read from the file), stored in FP16, and stored in FP8 E4M3, in the chip's numerics
   (bf16 activations, INT8 KV) and in float mode; reported: ||logits(stored) - logits(float32)|| /
   ||logits(float32)|| and the same relative to the adapter's effect ||logits(float32) - logits(base)||.
2. Two adapters resident at once: each request's logits and greedy tokens are compared bit for bit with a
   chip holding its adapter alone.

Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/lora_smollm2_engine.py [--tokens 128] [--json]   (~3 min)
"""

from __future__ import annotations

import argparse
import json
import pydoc_data.topics
import time

import numpy as np

from romachip.engine.generate import Engine
from romachip.engine.text import load_tokenizer
from romachip.quant.checkpoint import load_checkpoint
from romachip.quant.formats import WeightFormat
from romachip.quant.rtn import quantize_rtn
from romachip.quant.tensor import QuantizedModel
from romachip.spec import load_chip
from romachip.sram.bank import AdapterBank
from romachip.sram.peft_import import PROJECTIONS, LoraModule, PeftAdapter, lora_module_name
from romachip.sram.storage import store_adapter
from romachip.workload import KvConfig


def smollm2() -> QuantizedModel:
    ckpt = load_checkpoint("smollm2-135m")
    fmt = WeightFormat(4, 32)  # Q4_1 is asymmetric uint4 in groups of 32: re-quantizing is lossless
    weights = {n: quantize_rtn(t, fmt) for n, t in ckpt.tensors.items() if t.ndim == 2}
    floats = {n: t.astype(np.float32) for n, t in ckpt.tensors.items() if t.ndim == 1}
    return QuantizedModel(ckpt.spec, fmt, weights, floats, tokenizer_json=ckpt.tokenizer_json, source=ckpt.source)


def kaiming_adapter(spec, rank: int, alpha: float, b_std: float, seed: int) -> PeftAdapter:
    """PEFT's default init for A (kaiming-uniform, a=sqrt(5): U(-1/sqrt(in), 1/sqrt(in))), B ~ N(0, b_std)."""
    rng = np.random.default_rng(seed)
    shapes, modules = spec.linear_shapes(), {}
    for i in range(spec.num_layers):
        for p in PROJECTIONS:
            name, (out_f, in_f) = lora_module_name(i, p), shapes[p]
            bound = 1.0 / np.sqrt(in_f)
            a = rng.uniform(-bound, bound, (rank, in_f)).astype(np.float32)
            b = rng.normal(0.0, b_std, (out_f, rank)).astype(np.float32)
            modules[name] = LoraModule(name, a, b, alpha / rank, rank, alpha)
    return PeftAdapter(f"random(seed={seed})", modules, False, None, "float32")


def rel(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(x.astype(np.float64) - ref) / np.linalg.norm(ref))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--b-std", type=float, default=0.01)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    qm = smollm2()
    ids = load_tokenizer(qm).encode(pydoc_data.topics.topics["assignment"]).ids[: args.tokens]
    adapter = kaiming_adapter(qm.spec, 16, 32.0, args.b_std, seed=0)
    out: dict = {"tokens": len(ids), "rank": 16, "alpha": 32.0, "b_std": args.b_std, "fp8_error": {}}
    for mode, float_mode in (("chip (bf16 act, int8 KV)", False), ("float", True)):
        engine = Engine(qm, float_mode=float_mode)
        base = engine.logits(ids).astype(np.float64)
        ref = engine.logits(ids, adapter=adapter.as_engine_adapter()).astype(np.float64)
        row = {"adapter_effect_rel": rel(base, ref)}
        for precision in ("fp8_e4m3", "fp16"):
            got = engine.logits(ids, adapter=store_adapter(adapter, precision).view())
            row[precision] = {
                "logit_rel_error": rel(got, ref),
                "logit_rel_error_of_effect": float(np.linalg.norm(got - ref) / np.linalg.norm(ref - base)),
                "top1_agreement": float(np.mean(got.argmax(-1) == ref.argmax(-1))),
            }
        out["fp8_error"][mode] = row

    engine = Engine(qm)
    kv = KvConfig(context_tokens=256)
    b2 = kaiming_adapter(qm.spec, 8, 16.0, args.b_std, seed=1)
    chip = load_chip("roma")
    alone = {}
    for name, ad in (("a", adapter), ("b", b2)):
        solo = AdapterBank(chip, qm.spec, fmt=qm.fmt, kv=kv)
        solo.load(name, ad)
        v = solo.view(name)
        alone[name] = (engine.logits(ids, adapter=v), engine.generate(ids, max_tokens=4, adapter=v).token_ids)
    bank = AdapterBank(chip, qm.spec, fmt=qm.fmt, kv=kv)
    ops = [bank.load("a", adapter).to_dict(), bank.load("b", b2).to_dict()]
    same = []
    for name in ("b", "a"):
        v = bank.view(name)
        logits, tokens = engine.logits(ids, adapter=v), engine.generate(ids, max_tokens=4, adapter=v).token_ids
        same.append(bool(np.array_equal(logits, alone[name][0]) and tokens == alone[name][1]))
    out["two_adapters_bit_identical"] = all(same)
    out["bank_ops"] = ops
    out["seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"SmolLM2-135M, {out['tokens']} tokens, rank 16 all seven projections, alpha 32, B ~ N(0, {args.b_std})")
    for mode, row in out["fp8_error"].items():
        print(f"  {mode}: the adapter moves the logits by {row['adapter_effect_rel']:.3%}")
        for p in ("fp8_e4m3", "fp16"):
            r = row[p]
            print(
                f"    {p:9s} logit rel err {r['logit_rel_error']:.2e} ({r['logit_rel_error_of_effect']:.2e} of the "
                f"effect), top-1 agreement {r['top1_agreement']:.3f}"
            )
    print(
        f"  two adapters resident: each request bit-identical to its adapter alone: {out['two_adapters_bit_identical']}"
    )
    for op in ops:
        print(
            f"  load {op['adapter']}: {op['sram_bytes_written']:,} B, {op['write_cycles']:,} cycles "
            f"({op['write_s'] * 1e6:.1f} µs), {op['write_energy_j'] * 1e6:.2f} µJ, "
            f"max context {op['max_context_tokens']:,}"
        )
    print(f"  ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
