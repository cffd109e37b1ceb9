"""Sequential GPTQ over a LLaMA model (the standard recipe of the GPTQ reference code).

1. The calibration sequences run through transformers' LlamaForCausalLM (float32, our tensors) up to the
   first block; its inputs (hidden states, causal mask, RoPE cos/sin) are captured.
2. For each block: one forward pass with the block's current float weights collects H = 2 X^T X / n at
   the input of every projection (q/k/v share one input, gate/up share one); every projection is
   GPTQ-quantized; the dequantized weights replace the float ones; a second forward pass of the now
   quantized block produces the inputs of the next block.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from romachip.names import PROJECTION_PART, PROJECTIONS, projection_name
from romachip.quant.formats import WeightFormat
from romachip.quant.gptq import HessianAccumulator, gptq_quantize
from romachip.quant.hf_reference import llama_from_tensors
from romachip.quant.tensor import QuantizedTensor
from romachip.spec.model import ModelSpec

# Which captured input each projection is quantized against (projections sharing an input share H).
_INPUT_OF = {
    "q_proj": "q_proj",
    "k_proj": "q_proj",
    "v_proj": "q_proj",
    "o_proj": "o_proj",
    "gate_proj": "gate_proj",
    "up_proj": "gate_proj",
    "down_proj": "down_proj",
}


class _Captured(Exception):
    """Raised by the stand-in first block once it has seen its inputs."""


def _capture_block_inputs(model, ids):  # noqa: ANN001, ANN202
    """Run the model up to block 0 and return (hidden states, the keyword arguments blocks get)."""
    import torch

    layers = model.model.layers
    first = layers[0]
    seen: dict = {}

    class Catcher(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention_type = getattr(first, "attention_type", "full_attention")

        def forward(self, hidden_states, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            seen["hidden"] = hidden_states
            seen["kwargs"] = kwargs
            raise _Captured

    layers[0] = Catcher()
    try:
        with torch.inference_mode():
            model(ids, use_cache=False)
    except _Captured:
        pass
    finally:
        layers[0] = first
    kwargs = {k: v for k, v in seen["kwargs"].items() if k not in ("past_key_values", "cache", "use_cache")}
    return seen["hidden"], kwargs


def gptq_model(
    spec: ModelSpec,
    tensors: dict[str, np.ndarray],
    token_ids: np.ndarray,
    fmt: WeightFormat,
    *,
    block_size: int = 32,
    damp: float = 0.01,
    act_order: bool = False,
    clip_search: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, QuantizedTensor]:
    """GPTQ every projection of every block; `token_ids` is [sequences, tokens] of calibration text.

    `tensors` holds the float weights (HF names); the embedding there is what the calibration sees, so
    pass the dequantized embedding to calibrate against what the chip will compute.
    """
    import torch

    model = llama_from_tensors(spec, tensors, attention="sdpa")  # calibration needs no bit-exact attention
    ids = torch.from_numpy(np.asarray(token_ids, dtype=np.int64))
    hidden, kwargs = _capture_block_inputs(model, ids)
    hidden = hidden.clone()
    total = spec.num_layers * len(PROJECTIONS)
    done = 0
    out: dict[str, QuantizedTensor] = {}
    for layer_idx, block in enumerate(model.model.layers):
        modules = {p: getattr(getattr(block, PROJECTION_PART[p]), p) for p in PROJECTIONS}
        accs = {p: HessianAccumulator(modules[p].in_features) for p in dict.fromkeys(_INPUT_OF.values())}
        hooks = [modules[p].register_forward_hook(lambda _m, inp, _o, acc=accs[p]: acc.add(inp[0])) for p in accs]
        try:
            with torch.inference_mode():
                block(hidden, **kwargs)
        finally:
            for h in hooks:
                h.remove()
        for key, acc in accs.items():
            # GPTQ treats rows independently given H, so projections sharing an input run as one stack.
            projs = [p for p, src in _INPUT_OF.items() if src == key]
            stacked = np.concatenate([modules[p].weight.detach().numpy() for p in projs])
            options = {"block_size": block_size, "damp": damp, "act_order": act_order, "clip_search": clip_search}
            qt = gptq_quantize(stacked, acc.hessian(), fmt, **options)
            row = 0
            for proj in projs:
                rows = modules[proj].out_features
                part = QuantizedTensor(
                    codes=qt.codes[row : row + rows].copy(),
                    scales=qt.scales[row : row + rows].copy(),
                    zeros=qt.zeros[row : row + rows].copy(),
                    fmt=fmt,
                )
                row += rows
                out[projection_name(layer_idx, proj)] = part
                with torch.no_grad():
                    modules[proj].weight.copy_(torch.from_numpy(part.dequantize()))
                done += 1
                if progress is not None:
                    progress(done, total)
        with torch.inference_mode():
            hidden = block(hidden, **kwargs)
    return out
