"""Round-to-nearest into every WeightFormat: hand examples, exact round trips, error bounds, edge groups."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from romachip.errors import FormatError
from romachip.quant.formats import WeightFormat
from romachip.quant.rtn import quantize_rtn, round_half_away, round_scale, scale_to_float32

FORMATS = [
    WeightFormat(bits=b, group_size=g, symmetric=s, scale_dtype=d)
    for b, g, s, d in itertools.product((2, 3, 4, 8), (32, 128, None), (False, True), ("fp16", "bf16"))
]


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((48, 300)).astype(np.float32) * 0.05  # 300 columns: ragged last group
    w[3, 10] = 0.0
    return w


def test_asymmetric_hand_example():
    qt = quantize_rtn(np.array([[-1.0, 0.5, 2.0]], dtype=np.float32), WeightFormat(bits=2, group_size=None))
    # lo=-1, hi=2 -> s = 3/3 = 1, z = 1; 0.5 is a tie and rounds away from zero: 1 + 1 = 2
    assert qt.scales.tolist() == [[1.0]] and qt.zeros.tolist() == [[1]] and qt.codes.tolist() == [[0, 2, 3]]
    np.testing.assert_array_equal(qt.dequantize(), [[-1.0, 1.0, 2.0]])


def test_symmetric_hand_example():
    fmt = WeightFormat(bits=3, group_size=None, symmetric=True)  # z = 4, codes 1..7 = -3..3 steps
    qt = quantize_rtn(np.array([[-3.0, 1.5, 0.5, 0.0]], dtype=np.float32), fmt)
    assert qt.scales.tolist() == [[1.0]] and qt.zeros.tolist() == [[4]] and qt.codes.tolist() == [[1, 6, 5, 4]]


def test_positive_group_keeps_zero_in_range():
    qt = quantize_rtn(np.array([[1.0, 2.0, 3.0]], dtype=np.float32), WeightFormat(bits=2, group_size=None))
    # lo is clamped to 0: s = 3/3 = 1, z = 0
    assert qt.zeros.tolist() == [[0]] and qt.codes.tolist() == [[1, 2, 3]]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.describe())
def test_round_trip_is_exact(weights, fmt):
    qt = quantize_rtn(weights, fmt)
    again = quantize_rtn(qt.dequantize(), fmt)
    np.testing.assert_array_equal(again.codes, qt.codes)
    np.testing.assert_array_equal(again.scales, qt.scales)
    np.testing.assert_array_equal(again.zeros, qt.zeros)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.scale_dtype == "fp16"], ids=lambda f: f.describe())
def test_error_bound(weights, fmt):
    qt = quantize_rtn(weights, fmt)
    s = qt.expand_groups(scale_to_float32(qt.scales))
    err = np.abs(weights - qt.dequantize())
    # The scale is rounded toward zero by < 1 fp16 ulp (2^-10 relative): asymmetric groups may clip the
    # top by qmax * that much more; the symmetric grid has half a step of slack.
    slack = 0.0 if fmt.symmetric else fmt.qmax * 2**-10
    assert np.all(err <= s * (0.5 + slack) * (1 + 1e-6))
    assert qt.dequantize()[3, 10] == 0.0  # zero is always exactly representable
    assert qt.codes.max() <= fmt.qmax and (not fmt.symmetric or qt.codes.min() >= 1)


def test_scales_round_toward_zero():
    exact = np.array([0.1, 1 / 3, 65504.0, 1e-9], dtype=np.float64)
    fp16 = round_scale(exact, "fp16")
    assert fp16.dtype == np.float16 and np.all(fp16.astype(np.float64) <= exact)
    assert np.nextafter(fp16[0], np.float16(1)).astype(np.float64) > exact[0]  # the nearest one below
    bf16 = round_scale(exact[:3], "bf16")
    assert np.all(bf16.view(np.uint32) & 0xFFFF == 0) and np.all(bf16 <= exact[:3])
    with pytest.raises(FormatError, match="fp16 maximum"):
        round_scale(np.array([70000.0]), "fp16")


def test_ragged_last_group_is_its_own_group(weights):
    fmt = WeightFormat(bits=4, group_size=128)
    qt = quantize_rtn(weights, fmt)
    assert qt.scales.shape == (48, 3)
    tail = quantize_rtn(weights[:, 256:], WeightFormat(bits=4, group_size=None))
    np.testing.assert_array_equal(qt.codes[:, 256:], tail.codes)
    np.testing.assert_array_equal(qt.scales[:, 2:], tail.scales)


def test_constant_and_zero_groups():
    w = np.zeros((2, 8), dtype=np.float32)
    w[0] = 0.25
    for fmt in (WeightFormat(bits=4, group_size=None), WeightFormat(bits=4, group_size=None, symmetric=True)):
        qt = quantize_rtn(w, fmt)
        deq = qt.dequantize()
        np.testing.assert_allclose(deq[0], 0.25, rtol=2**-10)
        np.testing.assert_array_equal(deq[1], 0.0)
        assert qt.scales[1, 0] == 1.0  # a group with no range gets unit scale


def test_per_channel_matches_one_group_per_row(weights):
    a = quantize_rtn(weights, WeightFormat(bits=3, group_size=None))
    b = quantize_rtn(weights, WeightFormat(bits=3, group_size=300))
    np.testing.assert_array_equal(a.codes, b.codes)
    assert a.scales.shape == (48, 1)


def test_round_half_away():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997, -0.49999997, 2.4], dtype=np.float32)
    assert round_half_away(x).tolist() == [1, 2, 3, -1, -3, 0, 0, 2]


@pytest.mark.parametrize(
    "w, match",
    [
        (np.array([1.0, 2.0]), "2-D"),
        (np.array([[1.0, np.nan]]), "inf or NaN"),
        (np.zeros((0, 4)), "non-empty"),
    ],
)
def test_bad_weights_refused(w, match):
    with pytest.raises(FormatError, match=match):
        quantize_rtn(w, WeightFormat())


def test_huge_weights_refused_for_fp16_scales():
    with pytest.raises(FormatError, match="fp16"):
        quantize_rtn(np.array([[-1e6, 1e6]], dtype=np.float32), WeightFormat(bits=4))
