"""The L-Unit linear and the LoRA delta in torch, autograd-friendly (docs/numerics.md float mode).

`RomLinear` holds a projection as the ROM holds it: uint8 codes, the stored scales and the zero-points.
Its forward computes `x Wᵀ` with `W = s · (q − z)` in float32, exactly the weights the float mode (and
`QuantizedTensor.dequantize`) stand for; `RomLinearFunction` keeps only the codes for backward and
dequantizes again there, so training holds no float copy of any base weight (a code is one byte, a
float32 weight four).

With `chip_numerics` the forward feeds the product with the activations the L-Units see in the chip's
bf16 mode (docs/numerics.md "bf16 activations"): each input rounded to bfloat16, then aligned per group
to a shared exponent, `x̃ = rne(x · 2^(13−E)) · 2^(E−13)`. The gradient passes straight through (as if
`x̃ = x`), the usual estimator for a rounding step.

`LoraLinear` adds PEFT's LoRA delta `scaling · B (A x)` on top, with PEFT's names (`lora_A`, `lora_B`),
initialisation (A Kaiming-uniform, B zero) and scaling (`alpha / r`, or `alpha / √r` with rsLoRA), so
its state is a PEFT adapter as it stands.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from romachip.quant.tensor import QuantizedTensor

BF16_WINDOW_BITS = 13  # as the engine's kernels (docs/numerics.md): |xi| <= 2^14


def dequantize(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_len: int) -> torch.Tensor:
    """W = s (q − z) in float32, [out, in]: bit for bit `QuantizedTensor.dequantize`."""
    inp = codes.shape[1]
    z = zeros.to(torch.float32).repeat_interleave(group_len, dim=1)[:, :inp]
    s = scales.repeat_interleave(group_len, dim=1)[:, :inp]
    return s * (codes.to(torch.float32) - z)


def chip_activations(x: torch.Tensor, group_len: int) -> torch.Tensor:
    """The bf16 block-aligned activations the L-Units multiply (values only; no gradient rule here)."""
    xb = x.to(torch.bfloat16).to(torch.float32)
    inp = x.shape[-1]
    pad = (-inp) % group_len
    full = torch.nn.functional.pad(xb, (0, pad)) if pad else xb
    grouped = full.reshape(*x.shape[:-1], -1, group_len)
    e = torch.frexp(grouped.abs().amax(dim=-1, keepdim=True))[1]  # flog2(M) + 1; a zero group stays 0
    shift = (BF16_WINDOW_BITS + 1 - e).to(torch.float32)
    aligned = torch.round(torch.ldexp(grouped, shift)) * torch.exp2(-shift)  # round: ties to even, as rint
    return aligned.reshape(*x.shape[:-1], -1)[..., :inp]


class RomLinearFunction(torch.autograd.Function):
    """y = x Wᵀ with W dequantized from the codes in forward and again in backward (never saved)."""

    @staticmethod
    def forward(ctx, x, codes, scales, zeros, group_len):  # noqa: ANN001, ANN205
        ctx.save_for_backward(codes, scales, zeros)
        ctx.group_len = group_len
        return x @ dequantize(codes, scales, zeros, group_len).t()

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        codes, scales, zeros = ctx.saved_tensors
        grad_x = grad_out @ dequantize(codes, scales, zeros, ctx.group_len) if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None, None


class RomLinear(nn.Module):
    """A frozen projection held as ROM codes (buffers, not parameters)."""

    def __init__(self, qt: QuantizedTensor, *, chip_numerics: bool = False) -> None:
        super().__init__()
        self.out_features, self.in_features = qt.shape
        self.group_len = qt.fmt.group_len(self.in_features)
        self.chip_numerics = chip_numerics
        self.register_buffer("codes", torch.from_numpy(qt.codes.copy()), persistent=False)
        self.register_buffer("scales", torch.from_numpy(qt.scales.astype("float32")), persistent=False)
        self.register_buffer("zeros", torch.from_numpy(qt.zeros.copy()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.chip_numerics:
            x = x + (chip_activations(x.detach(), self.group_len) - x.detach())  # straight-through
        return RomLinearFunction.apply(x, self.codes, self.scales, self.zeros, self.group_len)

    def weight_float(self) -> torch.Tensor:
        """The dequantized weight (for tests and references; training never builds it)."""
        return dequantize(self.codes, self.scales, self.zeros, self.group_len)


def lora_scaling(rank: int, alpha: float, rslora: bool) -> float:
    """PEFT's scaling: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    return alpha / math.sqrt(rank) if rslora else alpha / rank


class LoraLinear(nn.Module):
    """base(x) + scaling · B (A x), with PEFT's parameter names and initialisation."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, *, rslora: bool = False) -> None:
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # PEFT's init_lora_weights=True
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = lora_scaling(rank, alpha, rslora)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * self.scaling
