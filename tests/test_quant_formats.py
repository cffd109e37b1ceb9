"""WeightFormat arithmetic, QuantizedTensor reconstruction, and the INT8 per-token / per-channel codecs."""

from __future__ import annotations

import numpy as np
import pytest

from romachip.errors import FormatError
from romachip.quant.formats import WeightFormat
from romachip.quant.int8 import (
    dequantize_int8,
    quantize_int8,
    quantize_int8_per_channel,
    quantize_int8_per_token,
    quantize_int8_with_scale,
)
from romachip.quant.tensor import QuantizedTensor


def test_roma_format_bits_per_weight():
    fmt = WeightFormat(bits=4, group_size=128)  # uint4 codes + fp16 scale + 4-bit zero per 128 weights
    assert fmt.bits_per_weight(4096) == pytest.approx(4 + 20 / 128)
    tb = fmt.storage_bits(2, 300)  # 3 groups per row, the last one 44 wide
    assert (tb.code_bits, tb.scale_bits, tb.zero_bits) == (2 * 300 * 4, 6 * 16, 6 * 4)
    assert WeightFormat(bits=2, group_size=None, symmetric=True).storage_bits(3, 5).total_bits == 3 * 5 * 2 + 3 * 16


@pytest.mark.parametrize("kwargs", [{"bits": 5}, {"group_size": 0}, {"scale_dtype": "fp8"}])
def test_bad_formats_refused(kwargs):
    with pytest.raises(FormatError):
        WeightFormat(**kwargs)


def test_dequantize_hand_example_with_ragged_group():
    fmt = WeightFormat(bits=2, group_size=2)
    qt = QuantizedTensor(
        codes=np.array([[0, 3, 1]], dtype=np.uint8),
        scales=np.array([[0.5, 2.0]], dtype=np.float16),
        zeros=np.array([[1, 2]], dtype=np.uint8),
        fmt=fmt,
    )
    # group 0: 0.5 * ([0, 3] - 1) = [-0.5, 1.0]; group 1 (one column): 2 * (1 - 2) = -2
    np.testing.assert_array_equal(qt.dequantize(), np.array([[-0.5, 1.0, -2.0]], dtype=np.float32))


def test_quantized_tensor_checks_shapes():
    with pytest.raises(FormatError, match="scales/zeros"):
        QuantizedTensor(
            codes=np.zeros((2, 4), np.uint8),
            scales=np.zeros((2, 1), np.float16),
            zeros=np.zeros((2, 1), np.uint8),
            fmt=WeightFormat(group_size=2),
        )


def test_int8_per_token_hand_example():
    x = np.array([[1.27, -0.635, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    q, scale = quantize_int8_per_token(x)
    assert scale.shape == (2, 1)
    assert scale[0, 0] == np.float32(np.float32(1.27) / np.float32(127)) and scale[1, 0] == 1.0
    assert q.dtype == np.int8 and q[0].tolist() == [127, -64, 0] and q[1].tolist() == [0, 0, 0]  # -63.5 -> -64


def test_int8_rounds_half_to_even_and_clamps():
    scale = np.float32(1.0)
    q = quantize_int8_with_scale(np.array([0.5, 1.5, 2.5, -0.5, -2.5, 300.0, -300.0]), scale)
    assert q.tolist() == [0, 2, 2, 0, -2, 127, -127]


def test_int8_per_channel_scales_each_column():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32) * np.arange(1, 9, dtype=np.float32)
    q, scale = quantize_int8_per_channel(x)
    assert scale.shape == (1, 8)
    np.testing.assert_array_equal(np.abs(q).max(axis=0), np.full(8, 127))
    err = np.abs(dequantize_int8(q, scale) - x)
    assert np.all(err <= scale * 0.5 * (1 + 1e-6))
    q3, s3 = quantize_int8(x[None], (0, 1))  # same thing through the general entry point
    np.testing.assert_array_equal(q3[0], q)
    np.testing.assert_array_equal(s3[0], scale)
