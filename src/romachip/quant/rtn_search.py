"""RTN with a per-group search of scale and zero: better codes at no calibration cost.

Plain RTN (rtn.py) spends each group's levels on its full range, so one outlier coarsens the step of
every other weight. `quantize_rtn_search` tries, per group, a few candidate (scale, zero) pairs and keeps
the one with the least squared error `E = Σ (w − ŵ)²` over the group:

1. plain RTN (candidate 0, so the result is never worse than RTN on E);
2. the range shrunk at both ends, at the bottom only, and at the top only, by each factor of `SHRINKS`
   (clipping the outliers), with scale and zero from the shrunk range by RTN's rules;
3. for every candidate above, a least-squares refit of the scale with its codes and zero held:
   `s' = Σ w (q − z) / Σ (q − z)²` (rounded toward zero to the scale dtype like every RTN scale), codes
   re-rounded with `s'`.

This is the idea of llama.cpp's k-quant search (`make_qkx2_quants`: candidate scales around the range,
then a least-squares fit) restricted to what the ROM stores: an integer zero-point and a scale in the
format's dtype. Ties keep the earlier candidate, so the order above is part of the definition. A pure
function of the weights; the slow per-group reference lives in tests/test_rtn_search.py and must agree
bit for bit.
"""

from __future__ import annotations

import numpy as np

from romachip.errors import FormatError
from romachip.quant.formats import WeightFormat
from romachip.quant.rtn import _grouped, checked_weight, group_params, quantize_codes, round_scale, scale_to_float32
from romachip.quant.tensor import QuantizedTensor

#: Range shrink factors tried per group (1.0 is plain RTN, tried first).
SHRINKS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


def candidate_ranges(lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (lo, hi) ranges tried, in order: the full range, then per shrink factor both / bottom / top."""
    out = [(lo, hi)]
    for f in SHRINKS:
        out += [(lo * f, hi * f), (lo * f, hi), (lo, hi * f)]
    return out


def group_error(
    w: np.ndarray, scale_f32: np.ndarray, zero: np.ndarray, fmt: WeightFormat, imp: np.ndarray
) -> np.ndarray:
    """Σ c (w − ŵ)² over the last axis (float64), ŵ = s (q − z) in float32 as the chip dequantizes."""
    q = quantize_codes(w, scale_f32, zero, fmt).astype(np.float32)
    d = (w - scale_f32 * (q - np.asarray(zero, dtype=np.float32))).astype(np.float64)
    return np.sum(imp * d * d, axis=-1)


def refit_scale(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, fmt: WeightFormat, imp: np.ndarray) -> np.ndarray:
    """Weighted least-squares scale for the codes `scale`/`zero` give (codes and zero held), stored dtype.

    `w` is [..., g], `scale`/`zero` are [...] (stored dtype / uint8). A group whose codes are all at its
    zero, or whose fit is not positive, keeps its scale.
    """
    sf = scale_to_float32(scale)[..., None]
    q = quantize_codes(w, sf, zero[..., None], fmt).astype(np.float64) - zero[..., None].astype(np.float64)
    iq = imp * q
    num = np.sum(w.astype(np.float64) * iq, axis=-1)
    den = np.sum(q * iq, axis=-1)
    fit = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    ok = fit > 0
    out = scale.copy()
    if np.any(ok):
        out[ok] = round_scale(fit[ok], fmt.scale_dtype)
    out[scale_to_float32(out) == 0] = scale[scale_to_float32(out) == 0]  # below the dtype: keep RTN's
    return out


def search_group_params(wg: np.ndarray, fmt: WeightFormat, imp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-group (scales, zeros) of least weighted squared error over the candidates (module docstring).

    `wg` is [..., g] float32, `imp` the error weights broadcastable to it; returns [...] arrays.
    """
    lo, hi = wg.min(axis=-1).astype(np.float64), wg.max(axis=-1).astype(np.float64)
    best_s, best_z = group_params(lo, hi, fmt)
    best_e = group_error(wg, scale_to_float32(best_s)[..., None], best_z[..., None], fmt, imp)
    for k, (clo, chi) in enumerate(candidate_ranges(lo, hi)):
        s, z = (best_s, best_z) if k == 0 else group_params(clo, chi, fmt)
        tries = ([(s, z)] if k else []) + [(refit_scale(wg, s, z, fmt, imp), z)]
        for cs, cz in tries:
            e = group_error(wg, scale_to_float32(cs)[..., None], cz[..., None], fmt, imp)
            better = e < best_e
            best_e = np.where(better, e, best_e)
            best_s = np.where(better, cs, best_s)
            best_z = np.where(better, cz, best_z)
    return best_s, best_z


def quantize_rtn_search(
    w: np.ndarray, fmt: WeightFormat, *, column_weights: np.ndarray | None = None
) -> QuantizedTensor:
    """RTN codes of a [out, in] float weight with each group's scale/zero searched (module docstring).

    `column_weights` [in] (non-negative) weighs each input column's squared error, e.g. by how large its
    activations are expected to be; None weighs them all 1.
    """
    w = checked_weight(w)
    out, inp = w.shape
    wg = _grouped(w, fmt.group_len(inp))
    cw = np.ones(inp) if column_weights is None else np.asarray(column_weights, dtype=np.float64)
    if cw.shape != (inp,) or not np.all(cw >= 0):
        raise FormatError(f"column weights must be {inp} non-negative numbers, got shape {cw.shape}")
    imp = _grouped(cw[None, :], fmt.group_len(inp))  # [1, groups, g]; the ragged group's padding weighs 0
    scales, zeros = search_group_params(wg, fmt, imp)
    codes = quantize_codes(wg, scale_to_float32(scales)[:, :, None], zeros[:, :, None], fmt)
    codes = np.ascontiguousarray(codes.reshape(out, -1)[:, :inp])
    return QuantizedTensor(codes=codes, scales=scales, zeros=zeros, fmt=fmt)
