"""FP8 E4M3 against torch.float8_e4m3fn: every code, random values, ties, saturation, scaled quantization."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from romachip.quant.fp8 import (
    FP8_E4M3_MAX,
    dequantize_fp8,
    fp8_e4m3_decode,
    fp8_e4m3_encode,
    quantize_fp8,
)


def torch_encode(x: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.asarray(x, dtype=np.float32)).to(torch.float8_e4m3fn).view(torch.uint8).numpy()


def test_decode_matches_torch_for_all_256_codes():
    codes = np.arange(256, dtype=np.uint8)
    ours = fp8_e4m3_decode(codes)
    ref = torch.from_numpy(codes).view(torch.float8_e4m3fn).float().numpy()
    np.testing.assert_array_equal(ours, ref)  # NaN at 0x7F and 0xFF in both


def test_hand_checked_codes():
    # 0x38 = 0.0111.000 -> 2^(7-7) = 1; 0x7E = 0.1111.110 -> 2^8 * 1.75 = 448; 0x01 -> 2^-6 * 1/8 = 2^-9
    assert fp8_e4m3_decode(np.array([0x38, 0x7E, 0x01, 0xB8], dtype=np.uint8)).tolist() == [1.0, 448.0, 2**-9, -1.0]
    assert fp8_e4m3_encode(np.array([1.0, -1.0, 448.0, 2**-9])).tolist() == [0x38, 0xB8, 0x7E, 0x01]


def test_every_finite_code_round_trips():
    codes = np.array([c for c in range(256) if c & 0x7F != 0x7F], dtype=np.uint8)
    np.testing.assert_array_equal(fp8_e4m3_encode(fp8_e4m3_decode(codes)), codes)


def test_random_values_match_torch():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(200_000) * np.exp(rng.uniform(-14, 7, 200_000))).astype(np.float32)
    x = np.clip(x, -460, 460)  # torch turns values >= 464 into NaN instead of saturating
    np.testing.assert_array_equal(fp8_e4m3_encode(x), torch_encode(x))


def test_ties_round_to_even_like_torch():
    values = fp8_e4m3_decode(np.arange(0, 0x7F, dtype=np.uint8))
    mids = (values[:-1] + values[1:]) / 2  # exactly halfway between neighbours
    x = np.concatenate([mids, -mids])
    ours = fp8_e4m3_encode(x)
    np.testing.assert_array_equal(ours, torch_encode(x))
    assert np.all(ours[: len(mids)] % 2 == 0)  # even mantissa wins


def test_saturation_nan_and_signed_zero():
    x = np.array([449.0, 1e9, np.inf, -np.inf, -1e9, np.nan, -0.0, 0.0], dtype=np.float32)
    assert fp8_e4m3_encode(x).tolist() == [0x7E, 0x7E, 0x7E, 0xFE, 0xFE, 0x7F, 0x80, 0x00]


def test_quantize_per_tensor_and_per_row():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 32)).astype(np.float32) * np.arange(1, 17, dtype=np.float32)[:, None]
    codes, scale = quantize_fp8(w)
    assert scale.shape == () and scale == np.float32(np.abs(w).max() / FP8_E4M3_MAX)
    deq = dequantize_fp8(codes, scale)
    assert np.max(np.abs(deq)) == pytest.approx(np.abs(w).max(), rel=1e-6)  # amax lands on 448 exactly
    assert np.all(np.abs(deq - w) <= np.abs(w) * 2**-4 + 2**-10 * scale)  # 3 mantissa bits: half-ulp 2^-4
    codes_r, scale_r = quantize_fp8(w, axis=0)
    assert scale_r.shape == (16, 1)
    np.testing.assert_array_equal(scale_r[:, 0], (np.abs(w).max(axis=1) / np.float32(448)).astype(np.float32))
    np.testing.assert_array_equal(codes_r, torch_encode(w / scale_r))
    assert np.all(fp8_e4m3_decode(codes_r).max(axis=1) * scale_r[:, 0] <= np.abs(w).max(axis=1) * (1 + 1e-6))


def test_zero_tensor_gets_unit_scale():
    codes, scale = quantize_fp8(np.zeros((3, 4)))
    assert scale == 1.0 and np.all(codes == 0)


def test_decode_refuses_non_uint8():
    with pytest.raises(TypeError, match="uint8"):
        fp8_e4m3_decode(np.array([1, 2], dtype=np.int32))
