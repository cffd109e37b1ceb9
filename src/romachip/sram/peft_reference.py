"""The float reference for adapters: PEFT applying an adapter to a transformers model, with the values the
chip stores (as the base reference uses the dequantized ROM weights), so a comparison with the engine
measures arithmetic, not storage."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from romachip.errors import AdapterError


def peft_with_stored_values(model, folder: str | Path, view: Mapping[str, tuple]):  # noqa: ANN001, ANN201
    """`PeftModel.from_pretrained(model, folder)` with every LoRA A/B replaced by the view's decoded values;
    B is multiplied by scale / PEFT's scaling, so PEFT computes exactly scale * B (A x) of the view."""
    import peft
    import torch

    pm = peft.PeftModel.from_pretrained(model, str(folder)).eval()
    seen = set()
    for name, mod in pm.base_model.model.named_modules():
        if name in view:
            a, b, scale = view[name]
            mod.lora_A["default"].weight.data = torch.from_numpy(np.array(a, dtype=np.float32))
            factor = np.float32(scale / mod.scaling["default"])
            mod.lora_B["default"].weight.data = torch.from_numpy(np.array(b, dtype=np.float32) * factor)
            seen.add(name)
    if seen != set(view):
        missing = sorted(set(view) - seen)[0]
        raise AdapterError(f"PEFT did not create a LoRA layer for {missing!r} from {folder}; the reference cannot run")
    return pm
