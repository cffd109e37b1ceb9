"""The engine's tap: an observer sees every step with the contract's intermediates, changes no bit, and
costs nothing when absent."""

from __future__ import annotations

import numpy as np
import pytest
from engine_models import TINY_CONFIGS, make_tiny
from engine_reference import Reference

from romachip.engine import attention, kernels, model
from romachip.engine.detmath import seq_sum
from romachip.engine.generate import Engine
from romachip.engine.kernels import linear, linear_parts
from romachip.engine.tap import NO_LAYER, OpKind, Recorder


@pytest.fixture(scope="module", params=list(TINY_CONFIGS))
def tiny(request):  # noqa: ANN001, ANN201
    return make_tiny(request.param, layers=2, vocab=41)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("mode", ["bf16", "int8"])
@pytest.mark.parametrize("rows", [1, 40])  # the decode and the prefill paths of the fast product
def test_linear_parts_give_the_fast_products_bits(tiny, mode: str, rows: int) -> None:
    engine = Engine(tiny.quantized)
    rng = np.random.default_rng(rows)
    for prep in [*engine.net.layers[1].values(), engine.net.lm_head]:
        x = (rng.standard_normal((rows, prep.in_features)) * 3).astype(np.float32)
        x[0, : prep.group_len] = 0  # a zero group: its scale is irrelevant, its term +0
        parts = linear_parts(prep, x, mode)
        np.testing.assert_array_equal(_bits(parts.y), _bits(linear(prep, x, mode)))
        assert np.array_equal(parts.group_integers, np.rint(parts.group_integers))
        assert parts.group_integers.shape == (prep.groups, rows, prep.out_features)


def test_an_observer_changes_no_bit_and_sees_the_contracts_steps(tiny) -> None:
    ids = np.random.default_rng(2).integers(0, 41, 6)
    engine = Engine(tiny.quantized, activation="bf16", kv="int8")
    plain = engine.logits(ids)
    rec = Recorder()
    np.testing.assert_array_equal(_bits(engine.logits(ids, observer=rec)), _bits(plain))
    spec = tiny.quantized.spec
    kinds = [e.kind for e in rec.events if e.layer == 0]
    assert kinds[:6] == [OpKind.RMS_NORM, OpKind.LINEAR, OpKind.LINEAR, OpKind.LINEAR, OpKind.ROPE, OpKind.ROPE]
    assert kinds[-1] is OpKind.RESIDUAL and OpKind.ATTENTION_SHARE in kinds and OpKind.SWIGLU in kinds
    linears = {e.module: e for e in rec.of(OpKind.LINEAR)}
    assert len(linears) == 7 * spec.num_layers + 1
    # every reported linear equals the slow reference applied to the reported input
    ref = Reference(tiny.quantized, "bf16", "int8")
    q = linears["model.layers.1.self_attn.q_proj"]
    expected = np.array(
        [ref.linear("model.layers.1.self_attn.q_proj.weight", list(map(float, r))) for r in q.arrays["x"]]
    )
    np.testing.assert_array_equal(_bits(q.arrays["y"]), _bits(expected))
    np.testing.assert_array_equal(
        _bits(seq_sum(q.arrays["group_terms"], axis=0).astype(np.float32)), _bits(q.arrays["y"])
    )
    a = q.arrays["act_scale"]
    np.testing.assert_array_equal(np.ldexp(1.0, q.arrays["act_exponent"] - kernels.BF16_WINDOW_BITS), a)
    # attention's output is what the o projection reads; the LM head's output is the logits
    (att,) = [e for e in rec.of(OpKind.ATTENTION) if e.layer == 1]
    np.testing.assert_array_equal(att.arrays["y"], linears["model.layers.1.self_attn.o_proj"].arrays["x"])
    np.testing.assert_array_equal(_bits(linears["lm_head"].arrays["y"]), _bits(plain))
    assert linears["lm_head"].layer == NO_LAYER
    shares = [e for e in rec.of(OpKind.ATTENTION_SHARE) if e.layer == 0]
    assert [e.unit for e in shares] == list(range(6))  # 6 keys on 6 of the ring's 256 units, one each
    assert shares[0].arrays["scores"].shape[:2] == (6, spec.num_heads) and shares[0].extra["shares"] == 6
    # the vector units' combine, redone from the reported partials, gives the reported output
    z, o = _combine(shares)
    (att0,) = [e for e in rec.of(OpKind.ATTENTION) if e.layer == 0]
    np.testing.assert_array_equal(_bits((o / z[..., None]).astype(np.float32).reshape(6, -1)), _bits(att0.arrays["y"]))


def _combine(shares: list) -> tuple[np.ndarray, np.ndarray]:
    """Z and O of docs/numerics.md from the ATTENTION_SHARE events (units with no visible key left out)."""
    z_terms, o_terms = [], []
    for e in shares:
        held = np.isfinite(e.arrays["max"])  # [tokens, heads]: the unit holds a key visible to the row
        z_terms.append(np.where(held, e.arrays["rescale"] * e.arrays["sum"], -0.0))  # -0: the identity of +
        o_terms.append(np.where(held[..., None], e.arrays["rescale"][..., None] * e.arrays["partial"], -0.0))
    return seq_sum(np.stack(z_terms), 0), seq_sum(np.stack(o_terms), 0)


def test_the_lora_path_is_reported(tiny) -> None:
    spec = tiny.quantized.spec
    out, inp = spec.linear_shapes()["v_proj"]
    rng = np.random.default_rng(4)
    lora = (rng.standard_normal((2, inp)).astype(np.float32), rng.standard_normal((out, 2)).astype(np.float32), 0.5)
    rec = Recorder()
    Engine(tiny.quantized).logits([1, 2, 3], {"model.layers.0.self_attn.v_proj": lora}, observer=rec)
    (event,) = rec.of(OpKind.LORA)
    assert event.module == "model.layers.0.self_attn.v_proj" and event.arrays["u"].shape == (3, 2)
    np.testing.assert_array_equal(event.arrays["y"], event.arrays["base"] + event.arrays["delta"])


def test_no_observer_builds_no_event(tiny, monkeypatch) -> None:
    def refuse(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        raise AssertionError("an event was built without an observer")

    for module in (kernels, attention, model):
        monkeypatch.setattr(module, "TapEvent", refuse)
    Engine(tiny.quantized).logits([1, 2, 3, 4])
    with pytest.raises(AssertionError):
        Engine(tiny.quantized).logits([1, 2], observer=Recorder())
