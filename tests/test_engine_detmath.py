"""The deterministic arithmetic of docs/numerics.md: hand-checkable values and accuracy against libm."""

from __future__ import annotations

import math

import numpy as np

from romachip.engine.detmath import exp64, flog2, pow2, pow_f32, seq_sum, sincos64, to_bf16, to_fp16
from romachip.engine.kernels import quantize_int8_rows
from romachip.engine.kv import encode_vectors


def test_seq_sum_is_the_sequential_fold_not_a_pairwise_sum() -> None:
    a = np.array([1e16, 1.0, -1e16, 1.0])  # ((1e16 + 1) - 1e16) + 1 = 0 + 1 in binary64; the exact sum is 2
    assert seq_sum(a, axis=0) == 1.0
    assert seq_sum(a[:, None].repeat(3, axis=1), axis=0).tolist() == [1.0, 1.0, 1.0]
    assert seq_sum(np.array([[1e16, 1.0, -1e16, 1.0]] * 2), axis=1).tolist() == [1.0, 1.0]
    f = np.array([2.0**24, 1.0, 1.0], dtype=np.float32)  # float32: 2^24 + 1 rounds back to 2^24 twice
    assert seq_sum(f, axis=0) == np.float32(2.0**24)


def test_exp64_matches_libm_and_saturates() -> None:
    x = np.linspace(-700.0, 700.0, 20001)
    np.testing.assert_allclose(exp64(x), np.exp(x), rtol=1e-10)
    assert exp64(np.array([0.0]))[0] == 1.0
    assert exp64(np.array([-np.inf, -800.0, 800.0])).tolist() == [0.0, 0.0, math.inf]


def test_sincos64_matches_libm_over_rope_angles() -> None:
    theta = np.linspace(0.0, 40000.0, 20001)
    s, c = sincos64(theta)
    np.testing.assert_allclose(s, np.sin(theta), atol=1e-12)
    np.testing.assert_allclose(c, np.cos(theta), atol=1e-12)
    s0, c0 = sincos64(np.array([0.0, math.pi / 2]))
    assert (s0[0], c0[0]) == (0.0, 1.0) and abs(s0[1] - 1.0) < 1e-16 and abs(c0[1]) < 1e-16


def test_roundings_and_exponents() -> None:
    # 1 + 2^-8 is a bf16 tie -> 1 (even); 1 + 3*2^-8 is a tie -> 1 + 2^-6 (even mantissa)
    assert to_bf16(np.array([1.00390625, 1.01171875, -3.0], np.float32)).tolist() == [1.0, 1.015625, -3.0]
    assert to_fp16(np.array([70000.0, -1e9, 1.0 + 2.0**-11], np.float32)).tolist() == [65504.0, -65504.0, 1.0]
    assert flog2(np.array([1.0, 0.75, 3.0, 2.0**-140])).tolist() == [0, -1, 1, -140]
    assert pow2(np.array([-3, 0, 10])).tolist() == [0.125, 1.0, 1024.0]
    assert pow_f32(10000.0, 0, 64) == np.float32(1.0)
    assert pow_f32(10000.0, 32, 64) == np.float32(100.0)  # 10000^(1/2), exactly


def test_int8_and_fp16_vector_forms() -> None:
    xi, scale = quantize_int8_rows(np.array([[0.5, -1.27, 0.0], [0.0, 0.0, 0.0]], np.float32))
    assert scale.tolist() == [np.float32(1.27) / np.float32(127), 1.0]
    assert xi.tolist() == [[50.0, -127.0, 0.0], [0.0, 0.0, 0.0]]
    vi, sv = encode_vectors(np.array([[3.0, -0.5, 0.25]], np.float32), "fp16")  # max 3: E = 1, grid 2^-13
    assert sv.tolist() == [2.0**-13] and vi.tolist() == [[3 * 8192, -4096, 2048]]
