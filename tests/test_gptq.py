"""GPTQ: a real second-order quantizer (beats RTN on layer output error), RTN when inputs are uncorrelated,
and the sequential whole-model pass on a tiny random LLaMA."""

from __future__ import annotations

import numpy as np
import pytest

from romachip.errors import FormatError
from romachip.names import PROJECTIONS, projection_name
from romachip.quant.checkpoint import Checkpoint
from romachip.quant.formats import WeightFormat
from romachip.quant.gptq import HessianAccumulator, gptq_quantize
from romachip.quant.hf_reference import dequantized_tensors, llama_from_tensors
from romachip.quant.quantize import quantize_checkpoint
from romachip.quant.rtn import quantize_rtn


def correlated_layer(seed: int = 0, n: int = 1024, inp: int = 192, out: int = 64):
    rng = np.random.default_rng(seed)
    # Activations of real layers live near a low-dimensional subspace: 24 latent factors plus noise.
    mix = rng.standard_normal((24, inp))
    x = (rng.standard_normal((n, 24)) @ mix + 0.3 * rng.standard_normal((n, inp))).astype(np.float32)
    w = (rng.standard_normal((out, inp)) * 0.05).astype(np.float32)
    acc = HessianAccumulator(inp)
    acc.add(__import__("torch").from_numpy(x))
    return x, w, acc.hessian()


def output_error(x: np.ndarray, w: np.ndarray, w_hat: np.ndarray) -> float:
    return float(np.linalg.norm(x @ w.T - x @ w_hat.T))


def test_hessian_accumulator_is_2xtx_over_n():
    x, _, h = correlated_layer(n=100)
    np.testing.assert_allclose(h, 2 * x.astype(np.float64).T @ x / 100, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "fmt",
    [WeightFormat(bits=2), WeightFormat(bits=3, group_size=64), WeightFormat(bits=4, group_size=32, symmetric=True)],
    ids=lambda f: f.describe(),
)
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn_on_layer_output(fmt, act_order):
    x, w, h = correlated_layer()
    rtn = output_error(x, w, quantize_rtn(w, fmt).dequantize())
    qt = gptq_quantize(w, h, fmt, act_order=act_order)
    gptq = output_error(x, w, qt.dequantize())
    assert gptq < 0.5 * rtn, (gptq, rtn)
    assert qt.codes.max() <= fmt.qmax and qt.scales.dtype == np.float16
    assert qt.scales.shape == (64, fmt.groups_per_row(192))


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize(
    "fmt",
    [WeightFormat(bits=2), WeightFormat(bits=4, group_size=64), WeightFormat(bits=3, group_size=None, symmetric=True)],
)
def test_diagonal_hessian_gives_rtn_exactly(fmt, act_order):
    # With uncorrelated inputs there is nothing to feed back: GPTQ must be RTN, bit for bit.
    rng = np.random.default_rng(1)
    w = rng.standard_normal((40, 300)).astype(np.float32)
    h = np.diag(rng.uniform(0.5, 2.0, 300))
    a, b = gptq_quantize(w, h, fmt, act_order=act_order), quantize_rtn(w, fmt)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.scales, b.scales)
    np.testing.assert_array_equal(a.zeros, b.zeros)


def test_dead_inputs_get_zero_weight():
    x, w, _ = correlated_layer()
    x[:, 5] = 0.0
    h = 2 * x.astype(np.float64).T @ x / len(x)
    qt = gptq_quantize(w, h, WeightFormat(bits=4, group_size=64))
    assert np.all(qt.dequantize()[:, 5] == 0.0)


def test_hessian_shape_mismatch_refused():
    with pytest.raises(FormatError, match="Hessian shape"):
        gptq_quantize(np.zeros((4, 8), np.float32), np.eye(7), WeightFormat())


def tiny_checkpoint(tmp_path) -> Checkpoint:
    """A tiny random LLaMA with a word-level tokenizer over 60 words."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM

    from romachip.quant.checkpoint import load_checkpoint

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    words = [f"w{i}" for i in range(60)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    return load_checkpoint(tmp_path)


def test_sequential_gptq_on_tiny_model(tmp_path):
    import torch

    ckpt = tiny_checkpoint(tmp_path)
    rng = np.random.default_rng(0)
    text = " ".join(f"w{i}" for i in rng.integers(0, 60, 4000))
    fmt = WeightFormat(bits=2, group_size=32)
    seen = []
    gq = quantize_checkpoint(
        ckpt, fmt, quantizer="gptq", calibration_text=text, calibration_sequences=8, calibration_tokens=64,
        progress=lambda d, t: seen.append((d, t)),
    )  # fmt: skip
    rq = quantize_checkpoint(ckpt, fmt)
    names = {projection_name(i, p) for i in range(2) for p in PROJECTIONS} | {"model.embed_tokens.weight"}
    assert set(gq.weights) == names and set(gq.floats) == {n for n in ckpt.tensors if n.endswith("norm.weight")}
    assert seen[-1] == (15, 15) and [d for d, _ in seen] == list(range(1, 16))
    assert gq.metadata["calibration"] == "8 sequences x 64 tokens of the given text"
    emb = "model.embed_tokens.weight"
    np.testing.assert_array_equal(gq.weights[emb].codes, rq.weights[emb].codes)
    ids = torch.from_numpy(rng.integers(0, 60, (4, 64)))
    with torch.inference_mode():
        ref = llama_from_tensors(ckpt.spec, ckpt.tensors)(ids).logits
        err_g = (llama_from_tensors(ckpt.spec, dequantized_tensors(gq))(ids).logits - ref).norm()
        err_r = (llama_from_tensors(ckpt.spec, dequantized_tensors(rq))(ids).logits - ref).norm()
    assert err_g < err_r, (float(err_g), float(err_r))


def test_gptq_calibration_text_must_hold_a_window(tmp_path):
    """(Without text GPTQ samples its own: tests/test_sampled.py.)"""
    ckpt = tiny_checkpoint(tmp_path)
    with pytest.raises(FormatError, match="calibration text is empty"):
        quantize_checkpoint(ckpt, WeightFormat(), quantizer="gptq", calibration_text="  ")
    with pytest.raises(FormatError, match="at least one window"):
        quantize_checkpoint(ckpt, WeightFormat(), quantizer="gptq", calibration_text="w1 w2 w3")
    with pytest.raises(FormatError, match="unknown quantizer"):
        quantize_checkpoint(ckpt, WeightFormat(), quantizer="awq")  # type: ignore[arg-type]


def test_reference_perplexity_of_a_uniform_model_is_the_vocabulary_size(tmp_path):
    from romachip.quant.hf_reference import hf_perplexity, windows

    ckpt = tiny_checkpoint(tmp_path)
    zeroed = {k: (np.zeros_like(v) if k == "model.embed_tokens.weight" else v) for k, v in ckpt.tensors.items()}
    model = llama_from_tensors(ckpt.spec, zeroed)  # zero embedding (tied head): every logit is 0
    ppl, n = hf_perplexity(model, np.arange(50) % 60, window=16)
    assert n == 3 * 15 and ppl == pytest.approx(ckpt.spec.vocab_size, rel=1e-9)  # 50 tokens: 3 full windows
    assert [len(w) for w in windows(np.arange(10), 16)] == [10]  # a lone short window is kept


def test_calibration_windows_are_spread_over_the_text():
    from tokenizers import Tokenizer, models, pre_tokenizers

    from romachip.quant.quantize import calibration_ids

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(100)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    ids = calibration_ids(tok.to_str(), " ".join(f"w{i}" for i in range(100)), sequences=3, tokens=10)
    assert ids.tolist() == [list(range(0, 10)), list(range(45, 55)), list(range(90, 100))]


def test_clip_search_never_fits_a_group_worse():
    x, w, h = correlated_layer()
    w[:, 7] *= 8  # an outlier column: clipping it pays off for most rows
    fmt = WeightFormat(bits=2, group_size=64)
    plain = gptq_quantize(w, np.eye(192), fmt)
    clipped = gptq_quantize(w, np.eye(192), fmt, clip_search=True)  # diagonal H: no feedback, pure group fit
    err_plain = np.sum(np.abs(w - plain.dequantize()) ** 2.4, axis=1)
    err_clip = np.sum(np.abs(w - clipped.dequantize()) ** 2.4, axis=1)
    assert np.all(err_clip <= err_plain * (1 + 1e-6)) and np.sum(err_clip) < 0.9 * np.sum(err_plain)
    assert output_error(x, w, gptq_quantize(w, h, fmt, clip_search=True).dequantize()) < output_error(
        x, w, quantize_rtn(w, fmt).dequantize()
    )
