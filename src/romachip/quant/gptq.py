"""GPTQ (Frantar et al., 2022): second-order, error-feedback quantization on real activations.

Per linear layer y = x W^T with calibration inputs X [n, in]:
    H = 2 X^T X / n, damped by `damp` * mean(diag H); dead inputs (diag 0) get weight 0
    U = chol(H^-1) (upper); columns are quantized left to right, each column's error
        e = (w_j - q_j) / U_jj is fed back into the columns not yet quantized: W[:, j:] -= e U[j, j:]
    updates are applied lazily in blocks of `block_size` columns (one matmul per block).
Group parameters (scale, zero) are computed when a group starts, from the error-updated weights, with
exactly the RTN rules of rtn.py, so the codes obey the same WeightFormat. With act_order, columns are
visited by decreasing diag(H) and the group parameters are fixed up front from the original weights
("static groups"), so each ROM group stays a contiguous run of columns.

`gptq_model` runs the standard sequential recipe over a LLaMA model: the calibration tokens go through
the float model to the first block; each block's projections are quantized from the inputs they see, and
the *quantized* block's outputs feed the next block.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from romachip.errors import FormatError
from romachip.quant.formats import WeightFormat
from romachip.quant.rtn import code_bounds, group_params, quantize_codes, scale_to_float32
from romachip.quant.tensor import QuantizedTensor


def _round_half_away(x):  # noqa: ANN001, ANN202 (torch float32 tensors)
    """Ties away from zero, exactly: |x| + 0.5 is exact in float64 for any float32 x (torch.trunc is slow)."""
    x64 = x.double()
    return x64.abs().add_(0.5).floor_().copysign_(x64).float()


# Range shrink factors tried per group with clip_search (the GPTQ reference code's `mse` grid, coarser).
CLIP_SHRINKS = tuple(1.0 - 0.025 * i for i in range(13))


class _GroupParams:
    """Scale/zero of each group as torch float32 [groups, out], filled in as groups start."""

    def __init__(self, out: int, groups: int, fmt: WeightFormat, clip_search: bool = False) -> None:
        import torch

        self.fmt = fmt
        self.clip_search = clip_search
        dtype = np.float16 if fmt.scale_dtype == "fp16" else np.float32
        self.scales = np.zeros((out, groups), dtype=dtype)
        self.zeros = np.zeros((out, groups), dtype=np.uint8)
        self.scale_t = torch.zeros((groups, out), dtype=torch.float32)  # rows contiguous for the column loop
        self.zero_t = torch.zeros((groups, out), dtype=torch.float32)

    def set(self, g: int, cols) -> None:  # noqa: ANN001 (torch [out, k])
        import torch

        lo = cols.min(dim=1).values.double().numpy()
        hi = cols.max(dim=1).values.double().numpy()
        s, z = group_params(lo, hi, self.fmt)
        if self.clip_search:
            s, z = self._search(cols.numpy(), lo, hi, s, z)
        self.scales[:, g], self.zeros[:, g] = s, z
        self.scale_t[g] = torch.from_numpy(scale_to_float32(s))
        self.zero_t[g] = torch.from_numpy(z.astype(np.float32))

    def _search(self, w, lo, hi, s, z):  # noqa: ANN001, ANN202
        """Per row, the shrunk range whose RTN codes give the least sum |w - ŵ|^2.4 (clipping outliers)."""
        best = np.full(w.shape[0], np.inf)
        for shrink in CLIP_SHRINKS:
            cs, cz = group_params(lo * shrink, hi * shrink, self.fmt)
            sf = scale_to_float32(cs)[:, None]
            q = quantize_codes(w, sf, cz[:, None], self.fmt).astype(np.float32)
            err = np.sum(np.abs(w - sf * (q - cz[:, None].astype(np.float32))) ** 2.4, axis=1)
            better = err < best
            best[better], s[better], z[better] = err[better], cs[better], cz[better]
        return s, z


def gptq_quantize(
    w: np.ndarray,
    hessian: np.ndarray,
    fmt: WeightFormat,
    *,
    block_size: int = 32,
    damp: float = 0.01,
    act_order: bool = False,
    clip_search: bool = False,
) -> QuantizedTensor:
    """GPTQ-quantize a [out, in] weight given H = 2 X^T X / n [in, in] of its calibration inputs.

    clip_search: each group's range may shrink (CLIP_SHRINKS) to the one whose codes fit its current
    weights best, clipping outliers; off, the group parameters are exactly RTN's.
    """
    import torch

    w_t = torch.from_numpy(np.array(w, dtype=np.float32))
    out, cols = w_t.shape
    if hessian.shape != (cols, cols):
        raise FormatError(f"Hessian shape {hessian.shape} does not match weight columns {cols}")
    h = torch.from_numpy(np.array(hessian, dtype=np.float64))
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w_t[:, dead] = 0.0
    g = fmt.group_len(cols)
    n_groups = fmt.groups_per_row(cols)
    params = _GroupParams(out, n_groups, fmt, clip_search)
    perm = torch.arange(cols)
    if act_order:
        perm = torch.argsort(torch.diag(h), descending=True, stable=True)
        for k in range(n_groups):  # static groups from the original weights
            params.set(k, w_t[:, k * g : (k + 1) * g])
        w_t, h = w_t[:, perm], h[perm][:, perm]
    elif fmt.group_size is None:
        params.set(0, w_t)
    h += damp * torch.mean(torch.diag(h)) * torch.eye(cols, dtype=h.dtype)
    hinv = _inverse_cholesky_upper(h).float()
    group_of = (perm // g).tolist()
    if fmt.group_size is not None and not act_order:
        block_size = math.gcd(block_size, g)  # every group starts at a block start, after all earlier updates
    w_cols = w_t.T.contiguous()  # [in, out]: one column of W is a contiguous row here
    codes = torch.empty((cols, out), dtype=torch.float32)
    flush = torch.set_flush_denormal(True)  # error feedback underflows; denormal arithmetic is ~100x slower
    try:
        _gptq_columns(w_cols, hinv, params, codes, group_of, fmt, block_size, act_order)
    finally:
        if flush:
            torch.set_flush_denormal(False)
    codes = codes.T
    if act_order:
        codes = codes[:, torch.argsort(perm)]
    codes = codes.to(torch.uint8)
    scales = params.scales.astype(np.float16) if fmt.scale_dtype == "fp16" else params.scales
    return QuantizedTensor(codes=np.ascontiguousarray(codes.numpy()), scales=scales, zeros=params.zeros, fmt=fmt)


def _gptq_columns(w_cols, hinv, params, codes, group_of, fmt, block_size, act_order) -> None:  # noqa: ANN001
    """The column loop: quantize column j, feed its error forward (lazily, block by block)."""
    import torch

    cols = w_cols.shape[0]
    g = fmt.group_len(cols)
    lo_code, hi_code = code_bounds(fmt)
    with torch.inference_mode():
        for b0 in range(0, cols, block_size):
            b1 = min(b0 + block_size, cols)
            w1 = w_cols[b0:b1].clone()
            err1 = torch.empty_like(w1)
            hinv1 = hinv[b0:b1, b0:b1]
            for i in range(b1 - b0):
                j = b0 + i
                if fmt.group_size is not None and not act_order and j % g == 0:
                    params.set(j // g, w_cols[j : j + g].T)
                k = group_of[j]
                s, z = params.scale_t[k], params.zero_t[k]
                col = w1[i]
                q = torch.clamp_(_round_half_away(col / s).add_(z), lo_code, hi_code)
                codes[j] = q
                err = (col - s * (q - z)).div_(hinv1[i, i])
                w1[i + 1 :].addr_(hinv1[i, i + 1 :], err, alpha=-1.0)
                err1[i] = err
            w_cols[b1:].addmm_(hinv[b0:b1, b1:].T, err1, alpha=-1.0)


def _inverse_cholesky_upper(h):  # noqa: ANN001, ANN202
    """Upper Cholesky factor U of H^-1 (H^-1 = U^T U), adding damping until H is positive definite.

    With P the reversal permutation and P H P = L L^T, U = P L^-1 P: one Cholesky and one triangular
    solve, instead of Cholesky, inverse and a second Cholesky (20x faster at 1536 columns).
    """
    import torch

    eye = torch.eye(h.shape[0], dtype=h.dtype)
    extra = 0.0
    for _ in range(8):
        chol, info = torch.linalg.cholesky_ex((h + extra * eye).flip(0, 1))
        if int(info) == 0:
            return torch.linalg.solve_triangular(chol, eye, upper=False).flip(0, 1)
        extra = max(extra * 10, 1e-6 * float(torch.mean(torch.diag(h))))
    raise FormatError("GPTQ: the calibration Hessian is not positive definite even with extra damping")


class HessianAccumulator:
    """Running H = 2 X^T X / n over calibration batches of one layer's input."""

    def __init__(self, columns: int) -> None:
        import torch

        self.h = torch.zeros((columns, columns), dtype=torch.float64)
        self.n = 0

    def add(self, x) -> None:  # noqa: ANN001 (torch [..., columns])
        x2 = x.reshape(-1, x.shape[-1]).float()
        self.h += (x2.T @ x2).double()
        self.n += x2.shape[0]

    def hessian(self) -> np.ndarray:
        return (2.0 * self.h / max(self.n, 1)).numpy()


ProgressFn = Callable[[int, int], None]
