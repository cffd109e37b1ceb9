"""The engine against the slow reference of docs/numerics.md (bit for bit) and against transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_models import TINY_CONFIGS, make_tiny
from engine_reference import Reference

from romachip.engine.generate import Engine
from romachip.engine.kernels import native_available
from romachip.engine.model import decode_one_token, prefill
from romachip.engine.tap import OpKind, Recorder

MODES = [("int8", "int8"), ("bf16", "fp16"), ("bf16", "int8"), ("int8", "fp16")]


@pytest.fixture(scope="module", params=list(TINY_CONFIGS))
def tiny(request):  # noqa: ANN001, ANN201
    return make_tiny(request.param, layers=2, vocab=41)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _adapter(spec, rng: np.random.Generator) -> dict:  # noqa: ANN001
    adapter = {}
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj", "model.layers.1.mlp.down_proj"):
        out, inp = spec.linear_shapes()[name.rsplit(".", 1)[1]]
        a = rng.standard_normal((4, inp)).astype(np.float32) * 0.1
        b = rng.standard_normal((out, 4)).astype(np.float32) * 0.1
        adapter[name] = (a, b, 2.0)
    return adapter


KERNELS = ["numpy"] + (["native"] if native_available() else [])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("activation,kv", MODES)
def test_logits_equal_the_reference_bit_for_bit(tiny, activation: str, kv: str, kernel: str) -> None:
    ids = np.random.default_rng(7).integers(0, 41, 9).tolist()
    engine = Engine(
        tiny.quantized, activation=activation, kv=kv, kernel=kernel
    )  # attention split over the chip's KV rings
    assert engine.kv_shares == (256,) * 2  # a spread placement on roma: every layer on all 256 units
    expected = Reference(tiny.quantized, activation, kv, engine.kv_shares).logits(ids)
    got = engine.logits(ids)
    assert got.dtype == np.float32 and got.shape == (9, 41)
    np.testing.assert_array_equal(_bits(got), _bits(expected))
    # the reference is not vacuous: it differs from the float model by a quantization-sized amount
    float_logits = Engine(tiny.quantized, exact=False).logits(ids)
    assert 0 < np.abs(float_logits - expected).max() < 0.2 * np.abs(float_logits).max()


def test_lora_path_equals_the_reference_bit_for_bit(tiny) -> None:
    rng = np.random.default_rng(11)
    adapter = _adapter(tiny.quantized.spec, rng)
    ids = rng.integers(0, 41, 7).tolist()
    engine = Engine(tiny.quantized)
    expected = Reference(tiny.quantized, "bf16", "int8", engine.kv_shares).logits(ids, adapter)
    got = engine.logits(ids, adapter)
    np.testing.assert_array_equal(_bits(got), _bits(expected))
    assert np.abs(got - engine.logits(ids)).max() > 1e-3  # the adapter changes the output


@pytest.mark.parametrize("shares", [3, (1, 4)])
def test_split_attention_with_several_keys_per_unit_equals_the_reference(tiny, shares) -> None:  # noqa: ANN001
    ids = np.random.default_rng(8).integers(0, 41, 11).tolist()
    expected = Reference(tiny.quantized, "bf16", "fp16", shares).logits(ids)
    engine = Engine(tiny.quantized, activation="bf16", kv="fp16", kv_shares=shares)
    split, split_att = _logits_and_attention(engine, ids)
    np.testing.assert_array_equal(_bits(split), _bits(expected))
    # not vacuous: the first split layer's attention differs from the global softmax by roundings
    _, global_att = _logits_and_attention(Engine(tiny.quantized, activation="bf16", kv="fp16", kv_shares=1), ids)
    first = next(i for i, n in enumerate(engine.kv_shares) if n > 1)
    a, b = split_att[first], global_att[first]
    assert 0 < np.abs(a - b).max() < 1e-5 * np.abs(b).max()


def _logits_and_attention(engine: Engine, ids: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    rec = Recorder()
    logits = engine.logits(ids, observer=rec)
    return logits, [e.arrays["y"] for e in rec.of(OpKind.ATTENTION)]


@pytest.mark.parametrize("activation,kv,shares", [(*MODES[0], 256), (*MODES[1], 3)])
def test_decode_equals_prefill_bit_for_bit(tiny, activation: str, kv: str, shares: int) -> None:
    ids = np.random.default_rng(5).integers(0, 41, 10)
    engine = Engine(tiny.quantized, activation=activation, kv=kv, kv_shares=shares)
    whole = engine.logits(ids)
    cache = engine.new_cache(10)
    rows = list(prefill(engine.net, ids[:4], cache, mode=activation, all_logits=True))
    rows += [decode_one_token(engine.net, int(t), cache, mode=activation) for t in ids[4:]]
    np.testing.assert_array_equal(_bits(np.array(rows)), _bits(whole))


def test_float_mode_agrees_with_transformers(tiny) -> None:
    ids = np.random.default_rng(3).integers(0, 41, 24)
    with torch.no_grad():
        ref = tiny.dequantized_hf(torch.from_numpy(ids)[None]).logits[0].numpy()
    got = Engine(tiny.quantized, exact=False).logits(ids)
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert rel < 1e-4, rel


def test_int8_and_float32_products_give_the_same_bits(monkeypatch) -> None:
    from romachip.engine import kernels

    tiny = make_tiny("gqa_tied_g32_4bit", layers=1, vocab=41)
    ids = np.random.default_rng(2).integers(0, 41, 12)
    fast = Engine(tiny.quantized, kernel="numpy")
    assert fast.net.layers[0]["qkv"].weight.dtype == torch.int8
    monkeypatch.setattr(kernels, "int8_matmul_available", lambda: False)
    slow = Engine(tiny.quantized, kernel="numpy")
    assert slow.net.layers[0]["qkv"].weight.dtype == torch.float32
    for activation in ("int8", "bf16"):
        fast.activation = slow.activation = activation
        np.testing.assert_array_equal(_bits(fast.logits(ids)), _bits(slow.logits(ids)))
