"""Generation on the engine: the sampler (hand-checkable nucleus, seeds), EOS, capacity and bad requests."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from engine_models import make_tiny

from romachip.engine.generate import Engine, generate
from romachip.engine.sampler import Sampler
from romachip.errors import AdapterError, GenerationError
from romachip.spec.chip import load_chip


@pytest.fixture(scope="module")
def tiny():  # noqa: ANN201
    return make_tiny("gqa_tied_g32_4bit", layers=1, vocab=41)


def test_greedy_is_the_argmax_of_the_logits(tiny) -> None:
    engine = Engine(tiny.quantized)
    prompt = [5, 9, 13, 4]
    gen = engine.generate(prompt, max_tokens=6)
    assert gen.prompt_tokens == 4 and gen.generated_tokens == len(gen.token_ids) == 6
    logits = engine.logits(prompt + gen.token_ids[:-1])
    assert gen.token_ids == [int(t) for t in logits[3:].argmax(axis=1)]


def test_same_seed_same_tokens_other_seed_other_tokens(tiny) -> None:
    engine = Engine(tiny.quantized)
    runs = [engine.generate([3, 4, 5], max_tokens=16, temperature=1.5, top_p=0.95, seed=s).token_ids for s in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_nucleus_holds_only_the_top_tokens() -> None:
    logits = np.log(np.array([0.2, 0.5, 0.3]))  # token 1 (0.5), then token 2 (0.3): 0.8 of the mass
    for seed in range(40):
        assert Sampler(temperature=1.0, top_p=0.5, seed=seed)(logits) == 1
        assert Sampler(temperature=1.0, top_p=0.75, seed=seed)(logits) in (1, 2)
    drawn = {Sampler(temperature=1.0, top_p=1.0, seed=s)(logits) for s in range(40)}
    assert drawn == {0, 1, 2}
    assert Sampler(temperature=0.0)(np.array([1.0, 3.0, 3.0])) == 1  # greedy: first of the largest


def test_sampling_probabilities_are_a_softmax() -> None:
    p = Sampler(temperature=2.0, seed=0).probabilities(np.array([0.0, 2.0 * np.log(3.0)]))
    np.testing.assert_allclose(p, [0.25, 0.75], rtol=1e-10)  # exp64 is a degree-9 polynomial


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_sampler_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(GenerationError, match=match):
        Sampler(**kwargs)


def test_generation_stops_on_eos(tiny) -> None:
    first = Engine(tiny.quantized).generate([3, 4], max_tokens=1).token_ids[0]
    spec = tiny.quantized.spec.model_copy(update={"eos_token_ids": (first,)})
    gen = generate(dataclasses.replace(tiny.quantized, spec=spec), [3, 4], max_tokens=10)
    assert gen.token_ids == [first] and gen.stopped_on_eos


def test_prompt_longer_than_the_model_context_is_refused(tiny) -> None:
    engine = Engine(tiny.quantized)  # max_position_embeddings = 256
    with pytest.raises(GenerationError, match="do not fit.*holds 256 tokens"):
        engine.generate(list(range(3, 40)) * 7, max_tokens=10)


def test_prompt_longer_than_the_chip_kv_capacity_is_refused(tiny) -> None:
    roma = load_chip("roma")
    mesh = roma.mesh.model_copy(update={"rows": 2, "cols": 1, "row_roles": ["matrix", "vector"]})
    sram = roma.h_unit.sram.model_copy(update={"macros": 1, "macro_rows": 128})  # one H-Unit of 1 KiB
    small = roma.model_copy(update={"mesh": mesh, "h_unit": roma.h_unit.model_copy(update={"sram": sram})})
    engine = Engine(tiny.quantized, chip=small)
    # one token: K and V of 2 KV heads, 16 int8 values + a 4-byte scale each = 80 bytes of 1024
    assert engine.max_context() == 12
    engine.generate([3] * 11, max_tokens=1)  # fits exactly
    with pytest.raises(GenerationError, match="13 tokens of context do not fit: chip 'roma' holds 12 tokens of int8"):
        engine.generate([3] * 12, max_tokens=1)


def test_bad_requests(tiny) -> None:
    engine = Engine(tiny.quantized)
    with pytest.raises(GenerationError, match="empty"):
        engine.generate([], max_tokens=3)
    with pytest.raises(GenerationError, match="max_tokens"):
        engine.generate([3], max_tokens=-1)
    with pytest.raises(GenerationError, match="token ids must lie in"):
        engine.generate([3, 41], max_tokens=1)
    with pytest.raises(GenerationError, match="activation precision"):
        Engine(tiny.quantized, activation="fp8")
    with pytest.raises(GenerationError, match="KV precision"):
        Engine(tiny.quantized, kv="int4")
    with pytest.raises(GenerationError, match="carries no tokenizer"):
        _ = engine.tokenizer


def test_bad_adapters(tiny) -> None:
    engine = Engine(tiny.quantized)
    a, b = np.zeros((2, 64), np.float32), np.zeros((64, 2), np.float32)
    with pytest.raises(AdapterError, match="do not fit"):
        engine.generate([3], max_tokens=1, adapter={"model.layers.0.self_attn.k_proj": (a, b, 1.0)})  # k_proj: 32 out
    with pytest.raises(AdapterError, match="not a projection"):
        engine.generate([3], max_tokens=1, adapter={"model.layers.0.mlp.act": (a, b, 1.0)})
    zero = engine.generate([3, 4], max_tokens=4, adapter={"model.layers.0.self_attn.q_proj": (a, b, 1.0)})
    assert zero.token_ids == engine.generate([3, 4], max_tokens=4).token_ids  # B = 0: the base model's tokens


def test_default_activation_is_the_chip_presets(tiny) -> None:
    """The engine's activation precision comes from the chip preset that perf also reads (bf16 on roma); a
    chip that says int8 gets int8 activations, and an explicit choice still wins."""
    roma = load_chip("roma")
    assert Engine(tiny.quantized).activation == roma.precision.activation == "bf16"
    int8_chip = roma.model_copy(update={"precision": roma.precision.model_copy(update={"activation": "int8"})})
    engine = Engine(tiny.quantized, chip=int8_chip)
    assert engine.activation == "int8"
    assert Engine(tiny.quantized, chip=int8_chip, activation="bf16").activation == "bf16"
    ids = [5, 9, 13, 4]
    np.testing.assert_array_equal(engine.logits(ids), Engine(tiny.quantized, activation="int8").logits(ids))
    assert not np.array_equal(engine.logits(ids), Engine(tiny.quantized).logits(ids))
