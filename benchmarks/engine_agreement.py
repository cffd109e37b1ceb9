"""Agreement of the golden engine with Hugging Face transformers on SmolLM2-135M (the demo image, uint4 g128).

transformers runs the image's dequantized weights in float32. Reported: the maximum relative logit error
of the engine's float mode (activation/KV quantization off); the greedy next-token agreement of every
activation x KV precision over 1,000 positions of real text (8 windows of 125 tokens of pydoc_data.topics,
the text tests/test_engine_smollm2.py uses), with attention split over the image's KV rings (the chip's
form, the default); and, for the default precisions, agreement and perplexity (2,048 tokens in windows
of 256, as `romachip eval` scores) of each attention form: the global softmax (kv_shares=1), the image's
spread placement (256 H-Units per layer, so at most one key per unit below 256 tokens) and a layer_groups
placement (8-9 H-Units per layer, many keys per unit).

    python -m benchmarks engine_agreement [--perplexity-tokens 2048]
"""

from __future__ import annotations

import argparse
import json
import time
from pydoc_data.topics import topics

import numpy as np
import torch

from romachip.compile import compile_placement
from romachip.engine.demo_model import ensure_demo_image
from romachip.engine.generate import Engine, layer_kv_ring_sizes
from romachip.engine.perplexity import engine_perplexity
from romachip.quant.hf_reference import dequantized_tensors, hf_perplexity, llama_from_tensors
from romachip.rom import RomImage

WINDOWS, WINDOW_TOKENS = 8, 125
PPL_WINDOW = 256


def _agreement(engine: Engine, windows: np.ndarray, ref: list[np.ndarray]) -> dict:
    t0 = time.perf_counter()
    same = [engine.logits(w).argmax(axis=1) == r.argmax(axis=1) for w, r in zip(windows, ref, strict=True)]
    return {"agreement": float(np.mean(same)), "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--perplexity-tokens", type=int, default=2048, help="0 skips the perplexities")
    args = ap.parse_args()
    torch.set_num_threads(1)  # transformers too: on a shared CPU an idle-waiting thread team costs more than it gives
    path, _ = ensure_demo_image()
    image = RomImage.open(path)
    qmodel = image.model()
    hf = llama_from_tensors(qmodel.spec, dequantized_tensors(qmodel))
    hf.config._attn_implementation = "eager"
    text = "\n\n".join(topics[k] for k in sorted(topics))
    base = Engine(qmodel, placement=image.placement)
    all_ids = np.asarray(base.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
    windows = all_ids[: WINDOWS * WINDOW_TOKENS].reshape(WINDOWS, WINDOW_TOKENS)
    with torch.inference_mode():
        ref = [hf(torch.from_numpy(w)[None]).logits[0].numpy() for w in windows]
    float_logits = Engine(qmodel, float_mode=True).logits(windows[0])
    result = {
        "model": qmodel.spec.name,
        "weight_format": qmodel.fmt.describe(),
        "positions": int(windows.size),
        "float_mode_max_rel_logit_error": float(np.abs(float_logits - ref[0]).max() / np.abs(ref[0]).max()),
        "greedy_agreement": {},
        "attention_forms": {},
    }
    for activation in ("bf16", "int8"):
        for kv in ("int8", "fp16"):
            engine = Engine(qmodel, activation=activation, kv=kv, placement=image.placement)
            result["greedy_agreement"][f"activation={activation} kv={kv}"] = _agreement(engine, windows, ref)
    groups = compile_placement(image.chip, qmodel.spec, qmodel.fmt, strategy="layer_groups")
    forms = {
        "global (kv_shares=1)": 1,
        "spread, the image's placement": layer_kv_ring_sizes(image.placement),
        "layer_groups": layer_kv_ring_sizes(groups),
    }
    if args.perplexity_tokens:
        ppl, count = hf_perplexity(hf, all_ids, window=PPL_WINDOW, max_tokens=args.perplexity_tokens)
        result["transformers_perplexity"] = {"perplexity": ppl, "tokens": count}
    for name, shares in forms.items():
        engine = Engine(qmodel, kv_shares=shares)
        row = {"kv_shares": sorted(set(engine.kv_shares)), **_agreement(engine, windows, ref)}
        if args.perplexity_tokens:
            ppl, count = engine_perplexity(engine, all_ids, window=PPL_WINDOW, max_tokens=args.perplexity_tokens)
            row |= {"perplexity": ppl, "perplexity_tokens": count}
        result["attention_forms"][name] = row
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
