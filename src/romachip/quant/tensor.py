"""In-memory containers for a quantized model: what `burn` writes and the engine reads.

Tensor names follow Hugging Face LLaMA (`model.layers.0.self_attn.q_proj.weight`, ...), so that
checkpoints, PEFT adapters and ROM images all speak the same names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from romachip.errors import FormatError
from romachip.quant.formats import WeightFormat
from romachip.spec.model import ModelSpec


@dataclass
class QuantizedTensor:
    """A [out, in] weight in a WeightFormat, codes unpacked one per byte.

    codes:  uint8 [out, in]       values in [0, 2**bits - 1]
    scales: float16 [out, groups] (stored as the format's scale dtype, held here as float32 if fp32)
    zeros:  uint8 [out, groups]   for symmetric formats every entry is 2**(bits-1)
    """

    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray
    fmt: WeightFormat

    def __post_init__(self) -> None:
        out, inp = self.codes.shape
        groups = self.fmt.groups_per_row(inp)
        if self.codes.dtype != np.uint8:
            raise FormatError(f"codes must be uint8, got {self.codes.dtype}")
        if self.scales.shape != (out, groups) or self.zeros.shape != (out, groups):
            raise FormatError(
                f"scales/zeros must be [{out}, {groups}] for codes [{out}, {inp}] in {self.fmt.describe()}, "
                f"got {self.scales.shape} and {self.zeros.shape}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape  # type: ignore[return-value]

    def expand_groups(self, per_group: np.ndarray) -> np.ndarray:
        """Repeat a [out, groups] array to [out, in] (the last group may be short)."""
        g = self.fmt.group_len(self.shape[1])
        return np.repeat(per_group, g, axis=1)[:, : self.shape[1]]

    def dequantize(self) -> np.ndarray:
        """w = scale * (q - zero), in float32: the float weights the chip's codes stand for."""
        q = self.codes.astype(np.float32) - self.expand_groups(self.zeros.astype(np.float32))
        return self.expand_groups(self.scales.astype(np.float32)) * q


@dataclass
class QuantizedModel:
    """A model ready to burn: quantized linear weights plus the small float tensors (norms).

    `weights` holds every quantized matrix, including `model.embed_tokens.weight` (rows are tokens,
    groups run along the hidden dimension) and `lm_head.weight` when it is not tied.
    `floats` holds the float32 tensors the vector units use (RMSNorm weights).
    """

    spec: ModelSpec
    fmt: WeightFormat
    weights: dict[str, QuantizedTensor]
    floats: dict[str, np.ndarray]
    tokenizer_json: str | None = None
    chat_template: str | None = None
    source: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
