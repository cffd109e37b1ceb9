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
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # transformers too: on a shared CPU an idle-waiting thread team costs more than it gives
    qmodel = quantize_checkpoint(load_checkpoint("smollm2-135m"), WeightFormat(bits=4, group_size=128))
    hf = llama_from_tensors(qmodel.spec, dequantized_tensors(qmodel))
    hf.config._attn_implementation = "eager"
    yield qmodel, hf
    torch.set_num_threads(threads)


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


def test_chat_template_renders_as_transformers_does(smollm2) -> None:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from romachip.engine.text import encode_prompt, render_chat

    qmodel, _ = smollm2
    engine = Engine(qmodel)
    spec = qmodel.spec
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(qmodel.tokenizer_json),
        bos_token=engine.tokenizer.id_to_token(spec.bos_token_id),
        eos_token=engine.tokenizer.id_to_token(spec.eos_token_ids[0]),
    )
    hf_tok.chat_template = qmodel.chat_template
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    expected = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert render_chat(qmodel, engine.tokenizer, messages[0]["content"]) == expected
    ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert encode_prompt(qmodel, engine.tokenizer, messages[0]["content"], chat=True) == list(ids)
    assert "<|im_start|>assistant" in expected  # SmolLM2's ChatML template, generation prompt included


CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],  # SmolLM2's template adds its default system prompt
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is ROM?"},
        {"role": "assistant", "content": "Read-only memory."},
        {"role": "user", "content": "And SRAM?\nBriefly."},
    ],
    [{"role": "user", "content": "Two"}, {"role": "assistant", "content": "turns"}],
]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_conversations_render_as_transformers_does(smollm2, add_generation_prompt: bool) -> None:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from romachip.engine.text import encode_messages, render_messages

    qmodel, _ = smollm2
    tok = Tokenizer.from_str(qmodel.tokenizer_json)
    spec = qmodel.spec
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=tok.id_to_token(spec.bos_token_id),
        eos_token=tok.id_to_token(spec.eos_token_ids[0]),
    )
    hf_tok.chat_template = qmodel.chat_template
    for messages in CONVERSATIONS:
        expected = hf_tok.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
        assert render_messages(qmodel, tok, messages, add_generation_prompt=add_generation_prompt) == expected
        ids = hf_tok.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        assert encode_messages(qmodel, tok, messages, add_generation_prompt=add_generation_prompt) == list(ids)


@pytest.mark.parametrize(
    "messages,match",
    [
        ([], "non-empty list"),
        ("hello", "non-empty list"),
        ([{"role": "tool", "content": "x"}], "role must be one of system, user, assistant"),
        ([{"role": "user"}], "exactly the keys"),
        ([{"role": "user", "content": 3}], "content must be a string"),
    ],
)
def test_bad_conversations_are_refused(smollm2, messages, match: str) -> None:  # noqa: ANN001
    from tokenizers import Tokenizer

    from romachip.engine.text import render_messages
    from romachip.errors import GenerationError

    qmodel, _ = smollm2
    with pytest.raises(GenerationError, match=match):
        render_messages(qmodel, Tokenizer.from_str(qmodel.tokenizer_json), messages)
