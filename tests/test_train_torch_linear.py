"""The torch L-Unit linear: the image's exact dequantized product, no float weight kept for backward."""

import numpy as np
import pytest
import torch

from romachip.engine.detmath import to_bf16
from romachip.engine.kernels import BF16_WINDOW_BITS, align_blocks
from romachip.quant.formats import WeightFormat
from romachip.quant.rtn import quantize_rtn
from romachip.train.torch_linear import LoraLinear, RomLinear, chip_activations, lora_scaling


@pytest.fixture(scope="module")
def qt():
    w = np.random.default_rng(0).standard_normal((24, 200)).astype(np.float32) * 0.1  # ragged last group
    return quantize_rtn(w, WeightFormat(bits=4, group_size=64))


def test_weight_is_the_images_dequantized_weight_bit_for_bit(qt):
    np.testing.assert_array_equal(RomLinear(qt).weight_float().numpy(), qt.dequantize())


def test_forward_and_backward_match_a_float_linear(qt):
    x = torch.randn(5, 200, dtype=torch.float32, requires_grad=True)
    w = torch.from_numpy(qt.dequantize())
    y = RomLinear(qt)(x)
    np.testing.assert_array_equal(y.detach().numpy(), (x.detach() @ w.t()).numpy())
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    np.testing.assert_array_equal(gx.numpy(), (g @ w).numpy())


def test_no_float_weight_is_saved_for_backward(qt):
    saved: list[torch.Tensor] = []
    x = torch.randn(3, 200, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        RomLinear(qt)(x).sum().backward()
    assert saved, "the function saves its codes"
    assert all(t.dtype != torch.float32 or t.numel() < 24 * 200 // 8 for t in saved)


def test_chip_activations_are_the_engines_bf16_block_alignment():
    x = np.random.default_rng(1).standard_normal((4, 128)).astype(np.float32) * 3
    x[0, :64] = 0.0  # an all-zero group stays zero
    xi, scale = align_blocks(to_bf16(x).reshape(4, 2, 64), BF16_WINDOW_BITS)
    want = (xi * scale[..., None]).reshape(4, 128).astype(np.float32)
    np.testing.assert_array_equal(chip_activations(torch.from_numpy(x), 64).numpy(), want)


def test_chip_numerics_pass_the_gradient_straight_through(qt):
    x = torch.randn(2, 200, requires_grad=True)
    y = RomLinear(qt, chip_numerics=True)(x)
    g = torch.ones_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    np.testing.assert_array_equal(gx.numpy(), (g @ torch.from_numpy(qt.dequantize())).numpy())


def test_lora_starts_as_the_base_and_scales_like_peft(qt):
    layer = LoraLinear(RomLinear(qt), rank=4, alpha=8)
    x = torch.randn(3, 200)
    assert torch.equal(layer(x), layer.base_layer(x))  # B starts at zero
    assert layer.scaling == 2.0 and lora_scaling(16, 16, rslora=True) == 4.0
    assert layer.lora_A.weight.shape == (4, 200) and layer.lora_B.weight.shape == (24, 4)
