"""Sessions: one request's KV cache, sampler and adapter; interleaved or threaded sessions give each
request the tokens it gets alone; the torch thread count is set per computation and always restored."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from engine_models import make_tiny

from romachip.engine import session as session_module
from romachip.engine.generate import Engine
from romachip.engine.model import decode_one_token, prefill
from romachip.engine.sampler import Sampler
from romachip.errors import GenerationError

REQUESTS = [  # (prompt, sampler options)
    ([5, 9, 13, 4], dict(temperature=0.0)),
    ([3, 4, 5], dict(temperature=1.5, top_p=0.95, seed=7)),
    ([7, 1, 30, 2, 11], dict(temperature=0.8, top_p=0.9, seed=3)),
]


@pytest.fixture(scope="module")
def tiny():  # noqa: ANN201
    return make_tiny("gqa_tied_g32_4bit", layers=1, vocab=41)


@pytest.fixture(scope="module")
def adapter(tiny):  # noqa: ANN001, ANN201
    out, inp = tiny.quantized.spec.linear_shapes()["q_proj"]
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, inp)).astype(np.float32), rng.standard_normal((out, 2)).astype(np.float32)
    return {"model.layers.0.self_attn.q_proj": (a, b, 1.0)}


def _by_hand(engine: Engine, prompt: list[int], n: int, adapter=None, **options) -> list[int]:  # noqa: ANN001, ANN003
    """Generation written out from the engine's parts (what Engine.generate did before sessions)."""
    sampler, cache = Sampler(**options), engine.new_cache(len(prompt) + n)
    logits = prefill(engine.net, np.asarray(prompt), cache, mode=engine.activation, adapter=adapter)[-1]
    out = []
    while len(out) < n:
        out.append(sampler(logits))
        if len(out) < n:
            logits = decode_one_token(engine.net, out[-1], cache, mode=engine.activation, adapter=adapter)
    return out


def test_generate_gives_the_tokens_of_the_parts(tiny, adapter) -> None:
    engine = Engine(tiny.quantized)
    for prompt, options in REQUESTS:
        assert engine.generate(prompt, max_tokens=9, **options).token_ids == _by_hand(engine, prompt, 9, **options)
    got = engine.generate([4, 5], max_tokens=6, adapter=adapter).token_ids
    assert got == _by_hand(engine, [4, 5], 6, adapter=adapter)
    assert got != engine.generate([4, 5], max_tokens=6).token_ids  # the adapter is applied


def test_interleaved_sessions_each_get_their_own_tokens(tiny, adapter) -> None:
    engine = Engine(tiny.quantized)
    alone = [engine.generate(p, max_tokens=8, **o).token_ids for p, o in REQUESTS]
    sessions = [engine.start(p, max_tokens=8, **o) for p, o in REQUESTS]
    lora = engine.start([4, 5], adapter, max_tokens=8)
    for _ in range(8):
        for s in [*sessions, lora]:
            s.step()
    assert [s.tokens for s in sessions] == alone
    assert lora.tokens == engine.generate([4, 5], max_tokens=8, adapter=adapter).token_ids


def test_generate_in_pieces_and_finish(tiny) -> None:
    engine = Engine(tiny.quantized)
    s = engine.start([5, 9, 13, 4], max_tokens=7)
    seen = []
    assert s.generate(3, on_token=seen.append) == seen and len(seen) == 3
    s.generate(100)
    assert s.finished and s.tokens == engine.generate([5, 9, 13, 4], max_tokens=7).token_ids
    with pytest.raises(GenerationError, match="finished"):
        s.step()
    with pytest.raises(GenerationError, match=">= 0"):
        engine.start([1], max_tokens=2).generate(-1)
    with pytest.raises(GenerationError, match="empty"):
        engine.start([])


def test_threaded_sessions_match_and_restore_the_callers_threads(tiny) -> None:
    engines = [Engine(tiny.quantized, threads=1), Engine(tiny.quantized, threads=2)]
    expected = [engines[0].generate(p, max_tokens=6, **o).token_ids for p, o in REQUESTS]
    results: dict[tuple[int, int], list[int]] = {}

    def run(e: int, r: int) -> None:
        prompt, options = REQUESTS[r]
        results[e, r] = engines[e].start(prompt, max_tokens=6, **options).generate(6)

    before = torch.get_num_threads()
    threads = [threading.Thread(target=run, args=(e, r)) for e in range(2) for r in range(len(REQUESTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(results[e, r] == expected[r] for e in range(2) for r in range(len(REQUESTS)))
    assert torch.get_num_threads() == before


def test_scoped_threads_sets_the_count_inside_and_serializes() -> None:
    before = torch.get_num_threads()
    inside, entered = [], threading.Event()

    def other_computation() -> None:
        with session_module.scoped_threads(2):
            entered.set()
            inside.append(torch.get_num_threads())

    with session_module.scoped_threads(1):
        inside.append(torch.get_num_threads())
        other = threading.Thread(target=other_computation)
        other.start()
        assert not entered.wait(timeout=0.2)  # blocked: this computation holds the lock
    other.join(timeout=10)
    assert entered.is_set() and inside == [1, 2] and torch.get_num_threads() == before


def test_float_mode_and_its_older_spelling(tiny) -> None:
    new, old = Engine(tiny.quantized, float_mode=True), Engine(tiny.quantized, exact=False)
    assert new.float_mode and old.float_mode and not new.exact
    assert (new.activation, new.kv) == ("fp32", "fp32") and new.options()["float_mode"] is True
    np.testing.assert_array_equal(new.logits([1, 2, 3]), old.logits([1, 2, 3]))
    assert Engine(tiny.quantized, exact=True).float_mode is False
