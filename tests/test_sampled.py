"""The default burn's calibration: text the model samples itself (quant/sampled.py), and GPTQ on it."""

from __future__ import annotations

import numpy as np
import pytest
from lora_helpers import spec_of, tiny_llama

from romachip.quant.checkpoint import Checkpoint
from romachip.quant.formats import WeightFormat
from romachip.quant.quantize import quantize_checkpoint
from romachip.quant.sampled import draw, sampled_ids


def slow_draw(logits: np.ndarray, u: float) -> int:
    """The inverse CDF one token at a time: the first id whose cumulative probability passes u."""
    p = np.exp(logits.astype(np.float64) - logits.max())
    total, acc = p.sum(), 0.0
    for i, pi in enumerate(p):
        acc += pi
        if acc > u * total:
            return i
    return len(p) - 1


def test_draw_is_the_inverse_cdf():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, size=(64, 50)).astype(np.float32)
    u = rng.random(64)
    assert draw(logits, u).tolist() == [slow_draw(row, x) for row, x in zip(logits, u, strict=True)]
    one_hot = np.full((2, 5), -1e9, dtype=np.float32)
    one_hot[:, 3] = 0
    assert draw(one_hot, np.array([0.0, 0.999999])).tolist() == [3, 3]


@pytest.fixture(scope="module")
def tiny():
    model = tiny_llama()
    tensors = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    return spec_of(model), tensors


def test_sampled_ids_are_a_function_of_the_model_and_seed(tiny):
    spec, tensors = tiny
    a = sampled_ids(spec, tensors, sequences=3, tokens=20, seed=0)
    assert a.shape == (3, 20) and a.dtype == np.int64
    assert (a[:, 0] == spec.bos_token_id).all() and (a >= 0).all() and (a < spec.vocab_size).all()
    assert np.array_equal(a, sampled_ids(spec, tensors, sequences=3, tokens=20, seed=0))
    assert not np.array_equal(a, sampled_ids(spec, tensors, sequences=3, tokens=20, seed=1))
    assert len({tuple(r) for r in a}) == 3  # the sequences are drawn independently


def test_gptq_without_text_calibrates_on_samples(tiny):
    spec, tensors = tiny
    ckpt = Checkpoint(spec=spec, tensors=tensors, tokenizer_json=None, chat_template=None, source="tiny")
    calls = []
    qm = quantize_checkpoint(ckpt, WeightFormat(4, 16), quantizer="gptq", calibration_sequences=2,
                             calibration_tokens=32, calibration_progress=lambda d, n: calls.append((d, n)))  # fmt: skip
    assert qm.metadata["calibration"] == "2 sequences x 32 tokens sampled from the model, seed 0"
    assert calls[-1] == (31, 31)
