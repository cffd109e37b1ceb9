"""The L-Unit linear layer and the H-Unit LoRA path, as docs/numerics.md defines them.

Fast and exact at once: the group dot products are integer products whose partial sums stay below 2^24,
so one batched float32 BLAS call over all groups (codes laid out [blocks, block, out]) gives the exact
integers whatever order BLAS sums in. Only then do the contract's float steps run, in their fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from romachip.engine.detmath import flog2, pow2, seq_sum, to_bf16
from romachip.errors import GenerationError
from romachip.quant.tensor import QuantizedTensor

ACTIVATION_MODES = ("int8", "bf16", "fp32")
BLOCK_MAX = 128  # columns per BLAS block: keeps every int8/bf16-half partial sum below 2^23
_ROWS_ELEMENTS = 1 << 22  # rows per chunk keep the [groups, rows, out] float64 terms near 32 MB


@dataclass
class PreparedLinear:
    """One or more weights sharing an input (fused along out), laid out for the batched integer product.

    blocks: float32 [groups * per_group, block, out], the signed integers w = q - z (zero padded)
    scales: float64 [groups, 1, out], the stored scales' exact values
    """

    in_features: int
    out_features: int
    group_len: int
    groups: int
    block: int
    per_group: int
    blocks: torch.Tensor
    scales: np.ndarray
    dequant_t: torch.Tensor | None = None  # float32 [in, out], built only for the float mode

    @classmethod
    def from_tensors(cls, tensors: list[QuantizedTensor], *, float_mode: bool = False) -> PreparedLinear:
        first = tensors[0]
        inp = first.shape[1]
        if any(t.shape[1] != inp or t.fmt != first.fmt for t in tensors):
            raise ValueError("fused weights must share in_features and format")
        g = first.fmt.group_len(inp)
        groups = first.fmt.groups_per_row(inp)
        block = min(g, BLOCK_MAX)
        per_group = -(-g // block)
        codes = np.concatenate([t.codes for t in tensors], axis=0)
        zeros = np.concatenate([t.zeros for t in tensors], axis=0).astype(np.int16)
        w = codes.astype(np.int16) - np.repeat(zeros, g, axis=1)[:, :inp]
        out = w.shape[0]
        wg = _group_layout(w.astype(np.float32), g, groups, block, per_group)  # [out, blocks, block]
        blocks = torch.from_numpy(np.ascontiguousarray(wg.transpose(1, 2, 0)))
        scales = np.concatenate([t.scales.astype(np.float32) for t in tensors], axis=0).astype(np.float64)
        prep = cls(inp, out, g, groups, block, per_group, blocks, np.ascontiguousarray(scales.T[:, None, :]))
        if float_mode:
            deq = np.concatenate([t.dequantize() for t in tensors], axis=0)
            prep.dequant_t = torch.from_numpy(np.ascontiguousarray(deq.T))
        return prep

    def layout(self, x: np.ndarray) -> np.ndarray:
        """[rows, in] -> [blocks, rows, block], zero padded like the weights."""
        xg = _group_layout(x, self.group_len, self.groups, self.block, self.per_group)
        return np.ascontiguousarray(xg.transpose(1, 0, 2))

    def integer_dots(self, xi: np.ndarray) -> np.ndarray:
        """Exact I[group, row, out] = sum over the group of w * xi, for integer xi with |xi| <= 256."""
        prod = torch.bmm(torch.from_numpy(self.layout(xi)), self.blocks).numpy().astype(np.float64)
        if self.per_group > 1:  # whole-group integer from its blocks: exact in binary64
            prod = prod.reshape(self.groups, self.per_group, *prod.shape[1:]).sum(axis=1)
        return prod


def _group_layout(x: np.ndarray, g: int, groups: int, block: int, per_group: int) -> np.ndarray:
    """[rows, in] -> [rows, groups * per_group, block]: each group padded to per_group whole blocks."""
    rows, inp = x.shape
    padded = np.zeros((rows, groups, per_group * block), dtype=x.dtype)
    full = np.zeros((rows, groups * g), dtype=x.dtype)
    full[:, :inp] = x
    padded[:, :, :g] = full.reshape(rows, groups, g)
    return padded.reshape(rows, groups * per_group, block)


def quantize_int8_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric INT8: (integers as float32 [rows, n], scale float32 [rows]); scale 1 for a zero row."""
    m = np.max(np.abs(x), axis=-1)
    scale = np.where(m > 0, m / np.float32(127), np.float32(1)).astype(np.float32)
    xi = np.clip(np.rint(x / scale[..., None]), -127, 127).astype(np.float32)
    return xi, scale


def align_blocks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block floating point over the last axis: xi = rne(x * 2^(14-E)), scale 2^(E-14), E = flog2(max|x|)."""
    m = np.max(np.abs(x), axis=-1).astype(np.float64)
    e = np.where(m > 0, flog2(np.where(m > 0, m, 1.0)), 14)
    xi = np.rint(x.astype(np.float64) * pow2(14 - e)[..., None])
    scale = np.where(m > 0, pow2(e - 14), 1.0)
    return xi, scale


def linear(prep: PreparedLinear, x: np.ndarray, mode: str) -> np.ndarray:
    """y = x W^T under the contract's activation `mode`; x float32 [rows, in] -> float32 [rows, out]."""
    if mode == "fp32":
        return (torch.from_numpy(np.ascontiguousarray(x)) @ prep.dequant_t).numpy()
    rows = x.shape[0]
    step = max(1, _ROWS_ELEMENTS // (prep.groups * prep.out_features))
    if rows > step:
        return np.concatenate([linear(prep, x[i : i + step], mode) for i in range(0, rows, step)], axis=0)
    if mode == "int8":
        xi, a = quantize_int8_rows(x)
        dots = prep.integer_dots(xi)
        a_g = a.astype(np.float64)[None, :, None]
    elif mode == "bf16":
        xb = to_bf16(x)
        grouped = _group_layout(xb, prep.group_len, prep.groups, prep.group_len, 1)[:, :, : prep.group_len]
        xi_g, a = align_blocks(grouped)  # [rows, groups, g], [rows, groups]
        xi = xi_g.reshape(rows, -1)[:, : prep.in_features]
        lo = np.mod(xi, 256.0)
        hi = (xi - lo) / 256.0
        both = prep.integer_dots(np.concatenate([hi, lo], axis=0).astype(np.float32))
        dots = both[:, :rows] * 256.0 + both[:, rows:]
        a_g = a.T[:, :, None]
    else:
        raise GenerationError(f"unknown activation precision {mode!r}; choose one of {', '.join(ACTIVATION_MODES)}")
    terms = (dots * a_g) * prep.scales
    return seq_sum(terms, axis=0).astype(np.float32)


def lora_delta(x: np.ndarray, a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """f32(f32(scale) * B(A x)) with sequential binary64 sums (docs/numerics.md, "The LoRA path")."""
    x64 = x.astype(np.float64)
    u = seq_sum(x64[:, None, :] * a.astype(np.float64)[None, :, :], axis=2).astype(np.float32)
    lo = seq_sum(u.astype(np.float64)[:, None, :] * b.astype(np.float64)[None, :, :], axis=2).astype(np.float32)
    return np.float32(scale) * lo
