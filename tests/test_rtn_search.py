"""RTN with a searched scale/zero per group: held bit for bit to a slow per-group reference, never worse than RTN."""

import itertools

import numpy as np
import pytest

from romachip.quant.formats import WeightFormat
from romachip.quant.rtn import group_params, quantize_rtn, round_half_away, round_scale, scale_to_float32
from romachip.quant.rtn_search import SHRINKS, quantize_rtn_search

FORMATS = [
    WeightFormat(bits=b, group_size=g, symmetric=s)
    for b, g, s in itertools.product((2, 4), (32, None), (False, True))
] + [WeightFormat(bits=3, group_size=16, scale_dtype="bf16")]  # fmt: skip


def reference_group(w: np.ndarray, imp: np.ndarray, fmt: WeightFormat) -> tuple[np.ndarray, np.ndarray]:
    """One group, written out step by step as the module docstring states the search."""
    lo_code, hi_code = (1, fmt.qmax) if fmt.symmetric else (0, fmt.qmax)

    def params(lo: float, hi: float):
        s, z = group_params(np.array([lo]), np.array([hi]), fmt)
        return s[0], z[0]

    def codes(s, z):
        x = w / np.float32(scale_to_float32(np.array([s]))[0])
        return np.clip(round_half_away(x) + np.float32(z), lo_code, hi_code)

    def error(s, z) -> float:
        sf = np.float32(scale_to_float32(np.array([s]))[0])
        d = (w - sf * (codes(s, z).astype(np.float32) - np.float32(z))).astype(np.float64)
        return float(np.sum(imp * d * d))

    def refit(s, z):
        q = codes(s, z).astype(np.float64) - float(z)
        num, den = float(np.sum(w.astype(np.float64) * imp * q)), float(np.sum(q * imp * q))
        if den <= 0 or num / den <= 0:
            return s
        fit = round_scale(np.array([num / den]), fmt.scale_dtype)[0]
        return fit if scale_to_float32(np.array([fit]))[0] != 0 else s

    lo, hi = float(w.min()), float(w.max())
    ranges = [(lo, hi)] + [r for f in SHRINKS for r in ((lo * f, hi * f), (lo * f, hi), (lo, hi * f))]
    best = params(lo, hi)
    best_e = error(*best)
    for k, (clo, chi) in enumerate(ranges):
        s, z = params(clo, chi)
        for cand in ([(s, z)] if k else []) + [(refit(s, z), z)]:
            e = error(*cand)
            if e < best_e:
                best, best_e = cand, e
    return best


def reference(w: np.ndarray, fmt: WeightFormat, column_weights=None):
    out, inp = w.shape
    g = fmt.group_len(inp)
    imp_row = np.ones(inp) if column_weights is None else np.asarray(column_weights, dtype=np.float64)
    scales = np.zeros((out, -(-inp // g)), dtype=np.float16 if fmt.scale_dtype == "fp16" else np.float32)
    zeros = np.zeros(scales.shape, dtype=np.uint8)
    for r in range(out):
        for j in range(scales.shape[1]):
            cols = slice(j * g, min(inp, (j + 1) * g))
            pad = g - (cols.stop - cols.start)  # the ragged group is padded with zeros of weight zero
            wg = np.concatenate([w[r, cols], np.zeros(pad, np.float32)])
            ig = np.concatenate([imp_row[cols], np.zeros(pad)])
            scales[r, j], zeros[r, j] = reference_group(wg, ig, fmt)
    return scales, zeros


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 72)).astype(np.float32) * 0.05  # 72 columns: a ragged group for g32
    w[0, 5] = 0.9  # an outlier worth clipping
    w[1] = np.abs(w[1])  # an all-positive row
    return w


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.describe())
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_the_slow_reference_bit_for_bit(weights, fmt, weighted):
    cw = np.linspace(0.2, 3.0, weights.shape[1]) ** 2 if weighted else None
    qt = quantize_rtn_search(weights, fmt, column_weights=cw)
    scales, zeros = reference(weights, fmt, cw)
    np.testing.assert_array_equal(qt.scales, scales)
    np.testing.assert_array_equal(qt.zeros, zeros)
    again = quantize_rtn(weights, fmt)  # codes are RTN's rule applied with the chosen scale/zero
    assert again.codes.shape == qt.codes.shape


def _group_errors(w, qt, cw):
    d = (w - qt.dequantize()).astype(np.float64) ** 2 * (1.0 if cw is None else cw)
    g = qt.fmt.group_len(w.shape[1])
    return np.add.reduceat(d, np.arange(0, w.shape[1], g), axis=1)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.describe())
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_never_worse_than_plain_rtn_on_the_error_it_minimises(fmt, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_t(3, size=(40, 96)) * 0.02).astype(np.float32)  # heavy tails: outliers in many groups
    cw = rng.uniform(0.1, 4.0, size=96)
    for col_w in (None, cw):
        searched = _group_errors(w, quantize_rtn_search(w, fmt, column_weights=col_w), col_w)
        plain = _group_errors(w, quantize_rtn(w, fmt), col_w)
        assert np.all(searched <= plain)  # per group, not only in total
        assert searched.sum() < plain.sum()  # and it does find better ranges on heavy-tailed weights


def test_codes_are_round_to_nearest_with_the_chosen_parameters(weights):
    fmt = WeightFormat(bits=4, group_size=32)
    qt = quantize_rtn_search(weights, fmt)
    s = qt.expand_groups(scale_to_float32(qt.scales))
    z = qt.expand_groups(qt.zeros.astype(np.float32))
    want = np.clip(round_half_away(weights / s) + z, 0, fmt.qmax)
    np.testing.assert_array_equal(qt.codes, want.astype(np.uint8))


def test_an_outlier_is_clipped_when_that_lowers_the_error():
    w = np.array([[0.01 * i for i in range(-15, 16)] + [1.0]], dtype=np.float32)  # 31 small weights, one big
    fmt = WeightFormat(bits=2, group_size=None)
    plain, searched = quantize_rtn(w, fmt), quantize_rtn_search(w, fmt)
    assert scale_to_float32(searched.scales)[0, 0] < scale_to_float32(plain.scales)[0, 0]
    assert np.sum((w - searched.dequantize()) ** 2) < np.sum((w - plain.dequantize()) ** 2)
