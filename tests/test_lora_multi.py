"""Several adapters on one chip (the whole SmolLM2-135M, all 30 blocks of its real weights): every request
gets bit for bit what it gets with its adapter alone, and the ROM image never changes while adapters come
and go."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from lora_helpers import random_adapter, smollm2_blocks

from romachip.engine.generate import Engine
from romachip.rom import burn
from romachip.spec import load_chip
from romachip.sram.bank import AdapterBank
from romachip.workload import KvConfig

PROMPT = [1, 504, 3458, 314, 260, 1835]


@pytest.fixture(scope="module")
def chip_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("multi") / "smollm2.rom"
    image = burn(smollm2_blocks(30), load_chip("roma"), path, chip_preset="roma")
    return image, Engine(image.model())  # the chip's own numerics: bf16 activations, INT8 KV


def _run(engine, view):
    return engine.logits(PROMPT, adapter=view)  # every position's logits: one prefill


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_adapters_at_once_give_each_request_its_own_output(chip_image):
    image, engine = chip_image
    spec, kv = image.spec, KvConfig(context_tokens=64)
    a = random_adapter(spec, 8, seed=1, b_std=0.05)
    b = random_adapter(spec, 4, seed=2, b_std=0.05, targets=("q_proj", "v_proj", "down_proj"))
    alone = {}
    for name, adapter in (("a", a), ("b", b)):
        solo = AdapterBank.for_image(image, kv=kv)
        solo.load(name, adapter)
        alone[name] = _run(engine, solo.view(name))
    base = _run(engine, None)

    before = _sha(image.path)
    bank = AdapterBank.for_image(image, kv=kv)
    bank.load("a", a)
    bank.load("b", b)
    for name in ("b", "a", None, "a"):  # interleaved requests on one chip
        np.testing.assert_array_equal(_run(engine, bank.view(name)), base if name is None else alone[name])
    assert not np.array_equal(alone["a"], alone["b"]) and not np.array_equal(alone["a"], base)
    # decode too: greedy tokens with "a" while "b" is resident equal those of a chip holding "a" alone
    solo = AdapterBank.for_image(image, kv=kv)
    solo.load("a", a)
    want = engine.generate(PROMPT, max_tokens=2, adapter=solo.view("a")).token_ids
    assert engine.generate(PROMPT, max_tokens=2, adapter=bank.view("a")).token_ids == want
    bank.swap("a", "a2", random_adapter(spec, 8, seed=3, b_std=0.05))
    np.testing.assert_array_equal(_run(engine, bank.view("b")), alone["b"])
    bank.unload("b")
    assert _sha(image.path) == before  # adapters live in SRAM; the ROM image is only ever read
