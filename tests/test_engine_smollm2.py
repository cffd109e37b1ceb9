"""The engine on the real model (SmolLM2-135M, uint4 g128 RTN) against transformers with the same
dequantized weights: float mode to 1e-4, and greedy next-token agreement of the default contract over
1,000 positions of real text (Python's own documentation, pydoc_data.topics)."""

from __future__ import annotations

from pydoc_data.topics import topics

import numpy as np
import pytest
import torch

from romachip.engine.generate import Engine
from romachip.quant.checkpoint import load_checkpoint
from romachip.quant.formats import WeightFormat
from romachip.quant.hf_reference import dequantized_tensors, llama_from_tensors
from romachip.quant.quantize import quantize_checkpoint

WINDOWS, WINDOW_TOKENS = 8, 125  # 1,000 predicted positions


@pytest.fixture(scope="module")
def smollm2():  # noqa: ANN201
    qmodel = quantize_checkpoint(load_checkpoint("smollm2-135m"), WeightFormat(bits=4, group_size=128))
    hf = llama_from_tensors(qmodel.spec, dequantized_tensors(qmodel))
    hf.config._attn_implementation = "eager"
    return qmodel, hf


def _windows(engine: Engine) -> np.ndarray:
    text = "\n\n".join(topics[k] for k in sorted(topics))[:20000]
    ids = engine.tokenizer.encode(text, add_special_tokens=False).ids
    return np.asarray(ids[: WINDOWS * WINDOW_TOKENS], dtype=np.int64).reshape(WINDOWS, WINDOW_TOKENS)


def _hf_logits(hf, ids: np.ndarray) -> np.ndarray:  # noqa: ANN001
    with torch.inference_mode():
        return hf(torch.from_numpy(ids)[None]).logits[0].numpy()


def test_float_mode_matches_transformers_on_smollm2(smollm2) -> None:
    qmodel, hf = smollm2
    engine = Engine(qmodel, exact=False)
    ids = _windows(engine)[0, :48]
    ref = _hf_logits(hf, ids)
    rel = np.abs(engine.logits(ids) - ref).max() / np.abs(ref).max()
    assert rel < 1e-4, rel


def test_default_contract_greedy_agreement_over_1000_positions(smollm2) -> None:
    qmodel, hf = smollm2
    engine = Engine(qmodel)  # the default contract: bf16 activations, the chip's KV precision
    assert (engine.activation, engine.kv) == ("bf16", "int8")
    agree = []
    for ids in _windows(engine):
        agree.append(engine.logits(ids).argmax(axis=1) == _hf_logits(hf, ids).argmax(axis=1))
    rate = float(np.mean(agree))
    assert np.size(agree) == 1000
    assert rate >= 0.98, rate
