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
BLOCK_MAX = 128  # columns per block: keeps every float32 partial sum of the fallback path below 2^24
_ROWS_ELEMENTS = 1 << 22  # rows per chunk keep the [groups, rows, out] float64 terms near 32 MB
INT8_WEIGHT_MAX = 127
_DIAGONAL_ROWS_MAX = 4
BF16_WINDOW_BITS = 13  # activations aligned per group to 2^(E-13): |xi| <= 2^14, exact for bf16 within 2^-6


@dataclass
class PreparedLinear:
    """One or more weights sharing an input (fused along out), laid out for one exact integer product.

    weight: [in, out] (a transposed view of [out, in]) signed integers w = q - z, int8 when they fit
            (torch._int_mm, int32 accumulation),
            else float32 (BLAS; exact because each block of <= 128 columns keeps partial sums < 2^24)
    mask:   [blocks, in] int8, 1 where a column belongs to the block: the activations are laid out
            block-diagonally, [blocks * rows, in], so one matrix product yields every block's dot product
    scales: float64 [groups, 1, out], the stored scales' exact values
    """

    in_features: int
    out_features: int
    group_len: int
    groups: int
    per_group: int
    weight: torch.Tensor
    mask: np.ndarray
    scales: np.ndarray
    block_cols: list[tuple[int, int]]
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
        fits_int8 = int(np.abs(w).max(initial=0)) <= INT8_WEIGHT_MAX
        # stored [out, in] and used transposed: the layout torch._int_mm streams fastest
        wt = np.ascontiguousarray(w.astype(np.int8 if fits_int8 else np.float32))
        cols = np.arange(inp)
        block_of = (cols // g) * per_group + (cols % g) // block
        mask = (block_of[None, :] == np.arange(groups * per_group)[:, None]).astype(np.int8)
        scales = np.concatenate([t.scales.astype(np.float32) for t in tensors], axis=0).astype(np.float64)
        spans = [np.flatnonzero(m) for m in mask]
        block_cols = [(int(c[0]), int(c[-1]) + 1) for c in spans]
        scales_t = np.ascontiguousarray(scales.T[:, None])
        prep = cls(inp, out, g, groups, per_group, torch.from_numpy(wt).t(), mask, scales_t, block_cols)
        if float_mode:
            deq = np.concatenate([t.dequantize() for t in tensors], axis=0)
            prep.dequant_t = torch.from_numpy(np.ascontiguousarray(deq.T))
        return prep

    def integer_dots(self, xi: np.ndarray) -> np.ndarray:
        """Exact I[group, row, out] = sum over the group of w * xi, for integers |xi| <= 128 (float64)."""
        rows = xi.shape[0]
        blocks = self.mask.shape[0]
        is_int = self.weight.dtype == torch.int8
        xi = xi.astype(np.int8 if is_int else np.float32)
        if rows <= _DIAGONAL_ROWS_MAX:  # decode: one product, the weights read once
            diag = (xi[None, :, :] * self.mask[:, None, :].astype(xi.dtype)).reshape(blocks * rows, -1)
            prod = _matmul(torch.from_numpy(diag), self.weight, is_int).numpy()
        else:  # prefill: one product per block, no zero-padded work
            prod = np.empty((blocks, rows, self.out_features), dtype=np.int32 if is_int else np.float32)
            for b, (c0, c1) in enumerate(self.block_cols):
                prod[b] = _matmul(torch.from_numpy(np.ascontiguousarray(xi[:, c0:c1])), self.weight[c0:c1], is_int)
        prod = prod.reshape(self.groups, self.per_group, rows, -1).astype(np.float64)
        return prod[:, 0] if self.per_group == 1 else prod.sum(axis=1)  # exact: integers in binary64


def _matmul(x: torch.Tensor, w: torch.Tensor, is_int: bool) -> torch.Tensor:
    return torch._int_mm(x, w) if is_int else x @ w


def quantize_int8_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric INT8: (integers as float32 [rows, n], scale float32 [rows]); scale 1 for a zero row."""
    m = np.max(np.abs(x), axis=-1)
    scale = np.where(m > 0, m / np.float32(127), np.float32(1)).astype(np.float32)
    xi = np.clip(np.rint(x / scale[..., None]), -127, 127).astype(np.float32)
    return xi, scale


def align_blocks(x: np.ndarray, window_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Block floating point over the last axis, E = flog2(max|x|): xi = rne(x * 2^(w-E)), scale 2^(E-w).

    |xi| <= 2^(w+1); a zero vector gets xi = 0 and scale 1.
    """
    m = np.max(np.abs(x), axis=-1).astype(np.float64)
    e = np.where(m > 0, flog2(np.where(m > 0, m, 1.0)), window_bits)
    xi = np.rint(x.astype(np.float64) * pow2(window_bits - e)[..., None])
    scale = np.where(m > 0, pow2(e - window_bits), 1.0)
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
        full = np.zeros((rows, prep.groups * prep.group_len), dtype=np.float32)
        full[:, : prep.in_features] = xb
        xi_g, a = align_blocks(full.reshape(rows, prep.groups, prep.group_len), BF16_WINDOW_BITS)
        xi = xi_g.reshape(rows, -1)[:, : prep.in_features]
        hi = np.floor((xi + 128.0) / 256.0)  # xi = 256 hi + lo, both halves int8: |hi| <= 64, lo in [-128, 127]
        lo = xi - 256.0 * hi
        both = prep.integer_dots(np.concatenate([hi, lo], axis=0))
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
