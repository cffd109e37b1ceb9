"""Agreement of the golden engine with Hugging Face transformers on SmolLM2-135M (the demo image, uint4 g128).

transformers runs the image's dequantized weights in float32. Reported: the maximum relative logit error
of the engine's float mode (activation/KV quantization off), and the greedy next-token agreement of every
activation x KV precision over 1,000 positions of real text (8 windows of 125 tokens of pydoc_data.topics,
the text tests/test_engine_smollm2.py uses).

    python -m benchmarks engine_agreement
"""

from __future__ import annotations

import json
import time
from pydoc_data.topics import topics

import numpy as np
import torch

from romachip.engine.demo_model import ensure_demo_image
from romachip.engine.generate import Engine
from romachip.quant.hf_reference import dequantized_tensors, llama_from_tensors
from romachip.rom import RomImage

WINDOWS, WINDOW_TOKENS = 8, 125


def main() -> None:
    path, _ = ensure_demo_image()
    qmodel = RomImage.open(path).model()
    hf = llama_from_tensors(qmodel.spec, dequantized_tensors(qmodel))
    hf.config._attn_implementation = "eager"
    text = "\n\n".join(topics[k] for k in sorted(topics))[:20000]
    base = Engine(qmodel)
    ids = base.tokenizer.encode(text, add_special_tokens=False).ids[: WINDOWS * WINDOW_TOKENS]
    windows = np.asarray(ids, dtype=np.int64).reshape(WINDOWS, WINDOW_TOKENS)
    with torch.inference_mode():
        ref = [hf(torch.from_numpy(w)[None]).logits[0].numpy() for w in windows]
    float_logits = Engine(qmodel, float_mode=True).logits(windows[0])
    result = {
        "model": qmodel.spec.name,
        "weight_format": qmodel.fmt.describe(),
        "positions": int(windows.size),
        "float_mode_max_rel_logit_error": float(np.abs(float_logits - ref[0]).max() / np.abs(ref[0]).max()),
        "greedy_agreement": {},
    }
    for activation in ("bf16", "int8"):
        for kv in ("int8", "fp16"):
            engine = Engine(qmodel, activation=activation, kv=kv)
            t0 = time.perf_counter()
            same = [engine.logits(w).argmax(axis=1) == r.argmax(axis=1) for w, r in zip(windows, ref, strict=True)]
            result["greedy_agreement"][f"activation={activation} kv={kv}"] = {
                "agreement": float(np.mean(same)),
                "seconds": time.perf_counter() - t0,
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
