"""The L-Unit linear layer and the H-Unit LoRA path, as docs/numerics.md defines them.

Two implementations give the same bits (docs/numerics.md, "Which implementation computes what"):
- "native": the C kernel `_lunit` (built by the install where a C compiler exists) on codes packed at their
  width (engine/packed.py): activation quantization, exact integer group products (AVX2 where the CPU has
  it) and the binary64 epilogue in one call, output rows split over threads;
- "numpy": the group dot products as integer products whose partial sums stay below 2^24 (torch._int_mm
  or one batched float32 BLAS call over blocks), exact whatever order BLAS sums in, then the contract's
  float steps in their fixed order. Taken automatically where the native kernel did not build.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch

from romachip.engine.detmath import (
    _lunit,  # None where it did not build, or was built from other sources
    seq_sum,
    to_bf16,
)
from romachip.engine.packed import (
    OUT_TILE,
    PACKED_WIDTHS,
    pack_codes,
    tile_codes,
    tile_rows,
    unpack_codes,
    untile_codes,
    untile_rows,
)
from romachip.engine.tap import NO_LAYER, LinearSite, Observer, OpKind, TapEvent
from romachip.errors import GenerationError
from romachip.quant.tensor import QuantizedTensor

KERNELS = ("native", "numpy")
KERNEL_ENV = "ROMACHIP_KERNEL"  # "native" or "numpy" forces one implementation (tests, benchmarks)
_MODE_CODES = {"int8": 0, "bf16": 1}
_THREADS: ContextVar[int] = ContextVar("romachip_kernel_threads", default=1)

#: the activation precisions the L-Units run; "fp32" exists only in the float mode (Engine(float_mode=True))
HARDWARE_ACTIVATION_MODES = ("int8", "bf16")
ACTIVATION_MODES = (*HARDWARE_ACTIVATION_MODES, "fp32")
BLOCK_MAX = 128  # columns per block: keeps every float32 partial sum of the fallback path below 2^24
_ROWS_ELEMENTS = 1 << 21  # rows per chunk keep each [rows, out] float64 group term near 16 MB
INT8_WEIGHT_MAX = 127
_DIAGONAL_ROWS_MAX = 32  # block-diagonal rows up to which one call beats one call per block
_SMALL_TERMS = 1 << 16  # [groups, rows, out] up to which the group terms are formed whole
BF16_WINDOW_BITS = 13  # activations aligned per group to 2^(E-13): |xi| <= 2^14, exact for bf16 within 2^-6


def native_available() -> bool:
    """Whether the C kernel was built and imports here."""
    return _lunit is not None


def default_kernel() -> str:
    """The implementation the engine takes: $ROMACHIP_KERNEL if set, else native where it built."""
    chosen = os.environ.get(KERNEL_ENV, "").strip()
    if chosen:
        return check_kernel(chosen)
    return "native" if native_available() else "numpy"


def check_kernel(kernel: str) -> str:
    if kernel not in KERNELS:
        raise GenerationError(f"unknown L-Unit kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    if kernel == "native" and not native_available():
        raise GenerationError(
            "the native L-Unit kernel is not built here (no C compiler at install time?); reinstall with a C "
            "compiler, or use the 'numpy' kernel, which gives the same bits"
        )
    return kernel


@contextmanager
def kernel_threads(threads: int) -> Iterator[None]:
    """Run the native kernel's products on `threads` threads inside the block (bits do not depend on it)."""
    if threads < 1:
        raise GenerationError(f"threads must be >= 1, got {threads}")
    token = _THREADS.set(threads)
    try:
        yield
    finally:
        _THREADS.reset(token)


def native_threads() -> int:
    """The native kernels' thread count inside the current `kernel_threads` block (1 outside)."""
    return _THREADS.get()


@dataclass
class PreparedLinear:
    """One or more weights sharing an input (fused along out), laid out for one exact integer product.

    kernel: "native" (packed/scales32/zeros8 below) or "numpy" (weight/mask/scales)
    packed:   uint8 [tiles, bytes], the codes at their width in tiles of 8 outputs (engine/packed.py)
    scales32: float32 [tiles, groups, 8], the stored scales' exact values; zeros8: uint8, the same layout
    weight: [in, out] (a transposed view of [out, in]) signed integers w = q - z, int8 when they fit
            (torch._int_mm, int32 accumulation),
            else float32 (BLAS; exact because each block of <= 128 columns keeps partial sums < 2^24)
    mask:   [blocks, in] int8, 1 where a column belongs to the block (a block: <= 128 columns of one group)
    scales: float64 [groups, 1, out], the stored scales' exact values
    """

    in_features: int
    out_features: int
    group_len: int
    groups: int
    per_group: int
    weight: torch.Tensor
    mask: np.ndarray | None
    scales: np.ndarray | None
    block_cols: list[tuple[int, int]]
    dequant_t: torch.Tensor | None = None  # float32 [in, out], built only for the float mode
    kernel: str = "numpy"
    bits: int = 8
    packed: np.ndarray | None = None
    scales32: np.ndarray | None = None
    zeros8: np.ndarray | None = None

    @classmethod
    def from_tensors(
        cls, tensors: list[QuantizedTensor], *, float_mode: bool = False, kernel: str | None = None
    ) -> PreparedLinear:
        first = tensors[0]
        inp = first.shape[1]
        if any(t.shape[1] != inp or t.fmt != first.fmt for t in tensors):
            raise ValueError("fused weights must share in_features and format")
        kernel = check_kernel(kernel) if kernel is not None else default_kernel()
        native = kernel == "native" and first.fmt.bits in PACKED_WIDTHS
        prep = cls._native(tensors) if native else cls._numpy(tensors)
        if float_mode:
            deq = np.concatenate([t.dequantize() for t in tensors], axis=0)
            prep.dequant_t = torch.from_numpy(np.ascontiguousarray(deq.T))
        return prep

    @classmethod
    def _native(cls, tensors: list[QuantizedTensor]) -> PreparedLinear:
        first = tensors[0]
        inp, bits = first.shape[1], first.fmt.bits
        packed = np.concatenate([pack_codes(t.codes, bits) for t in tensors], axis=0)
        scales = np.concatenate([t.scales.astype(np.float32) for t in tensors], axis=0)
        zeros = np.concatenate([t.zeros for t in tensors], axis=0).astype(np.uint8)
        g, groups = first.fmt.group_len(inp), first.fmt.groups_per_row(inp)
        return cls(
            inp, packed.shape[0], g, groups, 1, None, None, None, [], kernel="native", bits=bits,
            packed=tile_codes(packed, bits), scales32=tile_rows(scales), zeros8=tile_rows(zeros),
        )  # fmt: skip

    @classmethod
    def _numpy(cls, tensors: list[QuantizedTensor]) -> PreparedLinear:
        first = tensors[0]
        inp = first.shape[1]
        g = first.fmt.group_len(inp)
        groups = first.fmt.groups_per_row(inp)
        block = min(g, BLOCK_MAX)
        per_group = -(-g // block)
        codes = np.concatenate([t.codes for t in tensors], axis=0)
        zeros = np.concatenate([t.zeros for t in tensors], axis=0).astype(np.int16)
        w = codes.astype(np.int16) - np.repeat(zeros, g, axis=1)[:, :inp]
        out = w.shape[0]
        fits_int8 = int(np.abs(w).max(initial=0)) <= INT8_WEIGHT_MAX and int8_matmul_available()
        # stored [out, in] and used transposed: the layout torch._int_mm streams fastest
        wt = np.ascontiguousarray(w.astype(np.int8 if fits_int8 else np.float32))
        cols = np.arange(inp)
        block_of = (cols // g) * per_group + (cols % g) // block
        mask = (block_of[None, :] == np.arange(groups * per_group)[:, None]).astype(np.int8)
        scales = np.concatenate([t.scales.astype(np.float32) for t in tensors], axis=0).astype(np.float64)
        spans = [np.flatnonzero(m) for m in mask]
        # a short last group may leave its last blocks empty (in 704, g640: 640 + 64 columns): they add 0
        block_cols = [(int(c[0]), int(c[-1]) + 1) if c.size else (0, 0) for c in spans]
        scales_t = np.ascontiguousarray(scales.T[:, None])
        weight = torch.from_numpy(wt).t()
        return cls(inp, out, g, groups, per_group, weight, mask, scales_t, block_cols, bits=first.fmt.bits)

    def integer_weights(self) -> np.ndarray:
        """The signed integers w = q - z as float64 [in, out], from whichever layout this product holds."""
        if self.kernel == "numpy":
            return self.weight.to(torch.float64).numpy()
        codes = unpack_codes(untile_codes(self.packed, self.bits, self.out_features), self.bits, self.in_features)
        zeros = np.repeat(untile_rows(self.zeros8, self.out_features), self.group_len, axis=1)
        return (codes.astype(np.float64) - zeros[:, : self.in_features]).T

    def rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(codes uint8 [n, in], scales float32 [n, groups], zeros uint8 [n, groups]) of output rows `rows`,
        read from the packed layout (the embedding lookup of a tied head)."""
        tile, lane = np.divmod(np.asarray(rows, dtype=np.int64), OUT_TILE)
        cb = 4 * self.bits
        packed = self.packed.reshape(self.packed.shape[0], -1, OUT_TILE, cb)[tile, :, lane]
        codes = unpack_codes(packed.reshape(len(tile), -1), self.bits, self.in_features)
        return codes, self.scales32[tile, :, lane], self.zeros8[tile, :, lane]

    def group_scales(self) -> np.ndarray:
        """The scales' exact values as float64 [groups, 1, out]."""
        if self.kernel == "numpy":
            return self.scales
        return untile_rows(self.scales32, self.out_features).astype(np.float64).T[:, None]

    def block_dots(self, xi: np.ndarray) -> np.ndarray:
        """Exact integer products of every block: [blocks, rows, out] (int32 or integer-valued float32)."""
        rows = xi.shape[0]
        is_int = self.weight.dtype == torch.int8
        xi = xi.astype(np.int8 if is_int else np.float32)
        blocks = len(self.block_cols)
        if rows * blocks <= _DIAGONAL_ROWS_MAX:  # decode: one product over block-diagonal rows, one call
            mask = self.mask if is_int else self.mask.astype(np.float32)
            diag = (xi[None, :, :] * mask[:, None, :]).reshape(blocks * rows, -1)
            prod = _matmul(torch.from_numpy(diag), self.weight, is_int).numpy()
            return prod.reshape(blocks, rows, self.out_features)
        prod = np.empty((blocks, rows, self.out_features), dtype=np.int32 if is_int else np.float32)
        for b, (c0, c1) in enumerate(self.block_cols):  # prefill: one product per block, no zero-padded work
            prod[b] = _matmul(torch.from_numpy(np.ascontiguousarray(xi[:, c0:c1])), self.weight[c0:c1], is_int).numpy()
        return prod

    def group_dots(self, prod: np.ndarray, j: int, rows: slice) -> np.ndarray:
        """I_j as binary64 [rows, out] (exact), summing the group's blocks."""
        first = j * self.per_group
        out = prod[first, rows].astype(np.float64)
        for b in range(first + 1, first + self.per_group):
            out += prod[b, rows]
        return out


@functools.cache
def int8_matmul_available() -> bool:
    """Whether this torch build runs int8 x int8 -> int32 products on the CPU (a private op: probe it once).
    Without it the float32 path computes the same exact integers, more slowly."""
    try:
        a = torch.ones((2, 32), dtype=torch.int8)
        return bool(torch.equal(torch._int_mm(a, a.t().contiguous()), torch.full((2, 2), 32, dtype=torch.int32)))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


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

    |xi| <= 2^(w+1); a zero vector gets xi = 0 and scale 1. `x` holds values of at most 24 significant
    bits (fp16/bf16/float32), so the scaling is exact (or underflows far below 1/2, where rne gives 0).
    """
    m = np.max(np.abs(x), axis=-1)
    e = np.frexp(m)[1]  # flog2(m) + 1
    xi = np.rint(np.ldexp(x, (window_bits + 1 - e)[..., None])).astype(np.float64)
    scale = np.where(m > 0, np.ldexp(1.0, e - 1 - window_bits), 1.0)
    return xi, scale


def activation_ints(prep: PreparedLinear, x: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The L-Unit's integer activations: (xi [rows, in], exact integers; a float64 [groups, rows])."""
    rows = x.shape[0]
    if mode == "int8":
        xi, a = quantize_int8_rows(x)
        return xi, np.broadcast_to(a.astype(np.float64)[None, :], (prep.groups, rows))
    if mode != "bf16":
        raise GenerationError(f"unknown activation precision {mode!r}; choose one of {', '.join(ACTIVATION_MODES)}")
    xb = to_bf16(x)
    if prep.in_features == prep.groups * prep.group_len:
        full = xb
    else:
        full = np.zeros((rows, prep.groups * prep.group_len), dtype=np.float32)
        full[:, : prep.in_features] = xb
    # a zero group gets a = 1 here: its xi are 0, so its term is 0 whatever its scale
    xi, a = align_blocks(full.reshape(rows, prep.groups, prep.group_len), BF16_WINDOW_BITS)
    return xi.reshape(rows, -1)[:, : prep.in_features], np.ascontiguousarray(a.T)


def linear(
    prep: PreparedLinear, x: np.ndarray, mode: str, observer: Observer | None = None, site: LinearSite | None = None
) -> np.ndarray:
    """y = x W^T under the contract's activation `mode`; x float32 [rows, in] -> float32 [rows, out].

    With an observer, the product runs as `linear_parts` (same bits, tested) and reports a LINEAR event per
    module of `site`; the fast path below never sees the observer.
    """
    if observer is not None:
        return _observed_linear(prep, x, mode, observer, site)
    if mode == "fp32":
        return (torch.from_numpy(np.ascontiguousarray(x)) @ prep.dequant_t).numpy()
    if prep.kernel == "native":
        return native_linear(prep, x, mode)
    rows = x.shape[0]
    step = max(1, _ROWS_ELEMENTS // prep.out_features)
    if rows > step:
        return np.concatenate([linear(prep, x[i : i + step], mode) for i in range(0, rows, step)], axis=0)
    xi, a = activation_ints(prep, x, mode)
    a_g = a[:, :, None]
    if mode == "bf16":
        hi = np.floor((xi + 128.0) * (1.0 / 256.0))  # xi = 256 hi + lo: |hi| <= 64, lo in [-128, 127]
        lo = xi - hi * 256.0
        prod = prep.block_dots(np.concatenate([hi, lo], axis=0))
    else:
        prod = prep.block_dots(xi)
    if prep.groups * rows * prep.out_features <= _SMALL_TERMS:  # decode: whole-array steps, fewer calls
        if mode == "bf16" and prod.dtype == np.int32:  # 256 I_hi + I_lo stays below 2^29: exact in int32
            prod = prod[:, :rows] * 256 + prod[:, rows:]
        elif mode == "bf16":
            prod = prod[:, :rows].astype(np.float64) * 256.0 + prod[:, rows:]
        dots = prod.reshape(prep.groups, prep.per_group, rows, prep.out_features).astype(np.float64)
        dots = dots[:, 0] if prep.per_group == 1 else dots.sum(axis=1)  # exact integers
        dots *= a_g
        dots *= prep.scales
        return seq_sum(dots, axis=0).astype(np.float32)
    acc = None
    for j in range(prep.groups):  # t_j = (I_j a_j) s_j, summed in ascending j, all in binary64, in place
        t = prep.group_dots(prod, j, slice(0, rows))
        if mode == "bf16":
            t *= 256.0
            t += prep.group_dots(prod, j, slice(rows, 2 * rows))
        t *= a_g[j]
        t *= prep.scales[j]
        if acc is None:
            acc = t
        else:
            acc += t
    return acc.astype(np.float32)


NATIVE_PATHS = ("portable", "avx2", "avx512", "amx")  # the C kernel's code paths, narrowest first


def native_linear(prep: PreparedLinear, x: np.ndarray, mode: str, *, widest: str = "amx") -> np.ndarray:
    """linear() on the C kernel, on the widest of its paths this CPU has up to `widest` (tests compare them)."""
    code = _MODE_CODES.get(mode)
    if code is None:
        raise GenerationError(f"unknown activation precision {mode!r}; choose one of {', '.join(ACTIVATION_MODES)}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows = x.shape[0]
    y = np.empty((rows, prep.out_features), dtype=np.float32)
    _lunit.linear(
        x, prep.packed, prep.scales32, prep.zeros8, y, rows, prep.in_features, prep.out_features, prep.group_len,
        prep.bits, code, _THREADS.get(), NATIVE_PATHS.index(widest),
    )  # fmt: skip
    return y


@dataclass(frozen=True)
class LinearParts:
    """Every intermediate of one L-Unit product (docs/numerics.md), as the tap reports them.

    xi: float64 [rows, in] integer activations; act_scale: float64 [groups, rows] (a_j);
    group_integers: float64 [groups, rows, out] (I_j, exact); group_terms: float64 [groups, rows, out] (t_j);
    y: float32 [rows, out].
    """

    xi: np.ndarray
    act_scale: np.ndarray
    group_integers: np.ndarray
    group_terms: np.ndarray
    y: np.ndarray


def linear_parts(prep: PreparedLinear, x: np.ndarray, mode: str) -> LinearParts:
    """The product step by step from the integer weights alone (independent of the fast block layout).

    Memory grows as groups x rows x out binary64 values: meant for observed (small) runs.
    """
    xi, a = activation_ints(prep, x, mode)
    xi = xi.astype(np.float64)
    w = prep.integer_weights()  # [in, out] signed integers
    g, inp = prep.group_len, prep.in_features
    # integer terms and partial sums stay below 2^53, so binary64 matmuls give the exact I_j
    ints = np.stack(
        [xi[:, j * g : min((j + 1) * g, inp)] @ w[j * g : min((j + 1) * g, inp)] for j in range(prep.groups)]
    )
    terms = (ints * a[:, :, None]) * prep.group_scales()
    return LinearParts(xi, a, ints, terms, seq_sum(terms, axis=0).astype(np.float32))


def _observed_linear(
    prep: PreparedLinear, x: np.ndarray, mode: str, observer: Observer, site: LinearSite | None
) -> np.ndarray:
    site = site or LinearSite(NO_LAYER, (("linear", 0, prep.out_features),))
    if mode == "fp32":  # the float mode has no integer intermediates
        y = linear(prep, x, mode)
        parts = None
    else:
        parts = linear_parts(prep, x, mode)
        y = parts.y
    for module, c0, c1 in site.modules:
        arrays = {"x": x, "y": y[:, c0:c1]}
        if parts is not None:
            arrays |= {
                "xi": parts.xi,
                "act_scale": parts.act_scale,
                "group_integers": parts.group_integers[..., c0:c1],
                "group_terms": parts.group_terms[..., c0:c1],
            }
            if mode == "bf16":  # E_j of each nonzero group: a_j = 2^(E_j - 13)
                arrays["act_exponent"] = np.frexp(parts.act_scale)[1] - 1 + BF16_WINDOW_BITS
        observer(TapEvent(OpKind.LINEAR, site.layer, module, arrays, extra={"activation": mode}))
    return y


def lora_parts(x: np.ndarray, a: np.ndarray, b: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(u, delta): the rank-r intermediate and f32(f32(scale) * B u) (docs/numerics.md, "The LoRA path")."""
    x64 = x.astype(np.float64)
    u = seq_sum(x64[:, None, :] * a.astype(np.float64)[None, :, :], axis=2).astype(np.float32)
    lo = seq_sum(u.astype(np.float64)[:, None, :] * b.astype(np.float64)[None, :, :], axis=2).astype(np.float32)
    return u, np.float32(scale) * lo


def lora_delta(x: np.ndarray, a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """f32(f32(scale) * B(A x)) with sequential binary64 sums (docs/numerics.md, "The LoRA path")."""
    return lora_parts(x, a, b, scale)[1]
