"""The op graph against hand formulas written from the config numbers."""

from __future__ import annotations

import pytest

from romachip.errors import CapacityError
from romachip.graph import OpKind, decode_ops, prefill_ops, totals
from romachip.quant.formats import WeightFormat
from romachip.spec import load_model_spec
from romachip.tensor_bits import StoragePolicy
from romachip.workload import LoraConfig

G128 = WeightFormat(bits=4, group_size=128)


def test_llama32_3b_decode_weight_macs_by_hand():
    spec = load_model_spec("llama-3.2-3b")
    d, f, kv, layers, vocab = 3072, 8192, 8 * 128, 28, 128256
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * f  # q,o + k,v + gate,up,down
    expected = layers * per_layer + vocab * d  # tied LM head is still a full matmul
    t = totals(decode_ops(spec, 0, fmt=G128))
    assert t.weight_macs == expected == 3_212_574_720
    assert round(t.weight_macs / 1e9, 2) == 3.21


def test_decode_attention_is_gqa_aware():
    spec = load_model_spec("llama-3.2-3b")
    context = 1000
    ops = decode_ops(spec, context, fmt=G128, kv_bytes_per_element=1)
    score = next(op for op in ops if op.name == "layers.5.attn_score")
    assert score.context == context + 1
    assert score.macs == 24 * 128 * (context + 1)  # query heads x head_dim x keys
    assert score.kv_bytes_read == 8 * 128 * (context + 1)  # kv heads only
    assert score.kv_bytes_written == 8 * 128
    t = totals(ops)
    assert t.attention_macs == 28 * 2 * 24 * 128 * (context + 1)
    assert t.kv_bytes_read == 28 * 2 * 8 * 128 * (context + 1)
    assert t.kv_bytes_written == 28 * 2 * 8 * 128


def test_prefill_is_causal_and_counts_tokens():
    spec = load_model_spec("smollm2-135m")
    p = 7
    ops = prefill_ops(spec, p, fmt=G128, kv_bytes_per_element=2, kv_scale_bytes_per_vector=2)
    t = totals(ops)
    d, f, q, kv = 576, 1536, 9 * 64, 3 * 64
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * f
    assert t.macs_by_kind["projection"] == 30 * p * per_layer
    assert t.macs_by_kind["lm_head"] == 49152 * d  # only the last position's logits
    assert t.attention_macs == 30 * 2 * 9 * 64 * (p * (p + 1) // 2)
    assert t.kv_bytes_written == 30 * 2 * p * 3 * (64 * 2 + 2)
    all_logits = totals(prefill_ops(spec, p, fmt=G128, all_logits=True))
    assert all_logits.macs_by_kind["lm_head"] == p * 49152 * d


def test_decode_equals_one_token_prefill_after_context():
    spec = load_model_spec("llama-3.2-1b")
    a = decode_ops(spec, 33, fmt=G128)
    b = prefill_ops(spec, 1, fmt=G128, past_tokens=33)
    assert a == b


def test_weight_bits_read_use_storage_bits():
    spec = load_model_spec("llama-3.2-3b")
    ops = decode_ops(spec, 0, fmt=G128)
    q = next(op for op in ops if op.name == "layers.0.q_proj")
    # 3072x3072 codes at 4 bits + 3072x24 groups x (16-bit scale + 4-bit zero)
    assert q.weight_bits_read == 3072 * 3072 * 4 + 3072 * 24 * 20
    emb = next(op for op in ops if op.kind is OpKind.EMBEDDING)
    assert emb.weight_bits_read == 3072 * 4 + 24 * 20  # one row
    head = next(op for op in ops if op.kind is OpKind.LM_HEAD)
    assert head.weight_bits_read == 128256 * (3072 * 4 + 24 * 20)
    norm = next(op for op in ops if op.name == "layers.0.input_norm")
    assert norm.weight_bits_read == 3072 * 16
    int8 = decode_ops(spec, 0, fmt=G128, policy=StoragePolicy.ROM_INT8)
    head8 = next(op for op in int8 if op.kind is OpKind.LM_HEAD)
    assert head8.weight_bits_read == 128256 * (3072 * 8 + 24 * 24)
    off = decode_ops(spec, 0, fmt=G128, policy=StoragePolicy.OFF_CHIP_ALL)
    assert totals(off).weight_bits_read_off_chip == emb.weight_bits_read + head.weight_bits_read


def test_lora_ops_per_adapted_projection():
    spec = load_model_spec("llama-3.2-3b")
    lora = LoraConfig(rank=16, targets=("q_proj", "down_proj"), dtype="fp8_e4m3")
    ops = decode_ops(spec, 0, fmt=G128, lora=lora)
    names = [op.name for op in ops if op.layer == 2 and op.kind in (OpKind.LORA_A, OpKind.LORA_B)]
    assert names == ["layers.2.q_proj.lora_a", "layers.2.q_proj.lora_b", "layers.2.down_proj.lora_a",
                     "layers.2.down_proj.lora_b"]  # fmt: skip
    t = totals(ops)
    assert t.lora_macs == 28 * 16 * ((3072 + 3072) + (8192 + 3072))
    down_a = next(op for op in ops if op.name == "layers.0.down_proj.lora_a")
    assert down_a.weight_bits_read == 8 * (16 * 8192 + 4)  # fp8 elements + fp32 scale
    assert totals(decode_ops(spec, 0, fmt=G128, lora=LoraConfig(rank=0))).lora_macs == 0


def test_op_names_and_layers():
    spec = load_model_spec("smollm2-135m")
    ops = decode_ops(spec, 3, fmt=G128)
    assert ops[0].name == "embedding" and ops[-1].name == "lm_head" and ops[-2].name == "final_norm"
    layer0 = [op.name.split(".", 2)[2] for op in ops if op.layer == 0]
    assert layer0 == ["input_norm", "q_proj", "k_proj", "v_proj", "rope", "attn_score", "softmax",
                      "attn_value", "o_proj", "attn_residual", "post_attention_norm", "gate_proj",
                      "up_proj", "swiglu", "down_proj", "mlp_residual"]  # fmt: skip
    assert {op.layer for op in ops if op.layer is not None} == set(range(30))
    assert ops[0].to_dict()["kind"] == "embedding"


@pytest.mark.parametrize("tokens, past", [(0, 0), (-1, 0), (1, -5), (True, 0)])
def test_bad_counts_are_refused(tokens, past):
    spec = load_model_spec("smollm2-135m")
    with pytest.raises(CapacityError):
        prefill_ops(spec, tokens, fmt=G128, past_tokens=past)
