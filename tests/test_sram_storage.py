"""LoRA storage: FP8 E4M3 with power-of-two scales and FP16/BF16, checked against torch's casts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from romachip.errors import AdapterError
from romachip.sram.storage import AdapterView, encode_module, module_bytes, pow2_exponent
from romachip.workload import LoraConfig

RNG = np.random.default_rng(7)


def test_pow2_exponent_puts_amax_in_the_top_binade():
    for amax in [448.0, 448.0 * 2**-5, 449.0, 224.0, 224.0001, 1e-3, 3.7e4]:
        e = pow2_exponent(amax)
        assert 224.0 < amax / 2.0**e <= 448.0
    assert pow2_exponent(448.0) == 0 and pow2_exponent(224.0) == -1 and pow2_exponent(0.0) == 0


def test_fp8_module_matches_torch_float8_cast():
    a = RNG.normal(0, 0.02, (4, 40)).astype(np.float32)
    b = RNG.normal(0, 3e-3, (24, 4)).astype(np.float32)
    m = encode_module("model.layers.0.mlp.up_proj", a, b, 0.5, "fp8_e4m3")
    got_a, got_b, scale = m.decode()
    ea, eb = pow2_exponent(float(np.abs(a).max())), pow2_exponent(float(np.abs(b).max()))
    ref_a = torch.from_numpy(a * 2.0**-ea).to(torch.float8_e4m3fn).float().numpy() * 2.0**ea
    ref_b = torch.from_numpy(b * 2.0**-eb).to(torch.float8_e4m3fn).float().numpy()
    np.testing.assert_array_equal(got_a, ref_a)
    np.testing.assert_array_equal(got_b, ref_b)
    assert scale == np.float32(0.5) * 2.0**eb
    # what the H-Unit computes equals s * B_q A_q with B_q the scaled-back FP8 values
    np.testing.assert_allclose(scale * got_b @ got_a, 0.5 * (ref_b * 2.0**eb) @ ref_a, rtol=1e-6)
    assert np.abs(got_a - a).max() <= 2.0**ea * 16  # half an ULP of the top binade (2**(8-3) / 2)
    rel = np.linalg.norm(scale * got_b @ got_a - 0.5 * b @ a) / np.linalg.norm(0.5 * b @ a)
    assert 1e-3 < rel < 0.1  # FP8 is lossy, by a few percent at most


@pytest.mark.parametrize(("precision", "dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_precision_modules_match_torch(precision, dtype):
    a = RNG.normal(0, 0.1, (3, 16)).astype(np.float32)
    b = RNG.normal(0, 0.1, (8, 3)).astype(np.float32)
    got_a, got_b, scale = encode_module("m", a, b, 2 / 3, precision).decode()
    np.testing.assert_array_equal(got_a, torch.from_numpy(a).to(dtype).float().numpy())
    np.testing.assert_array_equal(got_b, torch.from_numpy(b).to(dtype).float().numpy())
    assert scale == float(np.float32(2 / 3))


def test_fp16_overflow_is_refused():
    a = np.full((2, 4), 1e5, np.float32)
    with pytest.raises(AdapterError, match="overflows fp16"):
        encode_module("m", a, np.ones((4, 2), np.float32), 1.0, "fp16")
    with pytest.raises(AdapterError, match="not supported"):
        encode_module("m", a, np.ones((4, 2), np.float32), 1.0, "int8")


def test_bytes_by_hand_and_as_the_workload_counts():
    # rank 16 on Llama-3.2-3B's q_proj [3072, 3072]: 16*(3072+3072) bytes of FP8 + two FP32 words
    assert module_bytes(16, 3072, 3072, "fp8_e4m3") == 98_312
    assert module_bytes(16, 3072, 3072, "fp16") == 196_616
    lora = LoraConfig(rank=8, dtype="bf16")
    assert module_bytes(8, 8192, 3072, "bf16") == lora.matrix_bytes(8, 3072) + lora.matrix_bytes(8192, 8)
    m = encode_module("m", np.ones((2, 5), np.float32), np.ones((3, 2), np.float32), 1.0, "fp8_e4m3")
    assert m.nbytes == 2 * 5 + 3 * 2 + 8


def test_view_is_immutable_and_independent():
    a, b = np.ones((2, 4), np.float32), np.ones((4, 2), np.float32)
    view = AdapterView("x", "fp16", {"m": (a, b, 1.0)})
    a[:] = 7  # the caller's arrays change; the view does not
    assert view["m"][0].max() == 1.0
    with pytest.raises(ValueError):
        view["m"][0][0, 0] = 3
    with pytest.raises(TypeError):
        view._modules["n"] = (a, b, 1.0)  # type: ignore[index]
    assert list(view) == ["m"] and len(view) == 1
