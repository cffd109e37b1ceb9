"""Capacity planner pinned to hand-computed values (ROMA preset and a tiny 4-unit chip)."""

from __future__ import annotations

import json
import math
from importlib import resources

import pytest
import yaml

from romachip.capacity import LIMIT_H_SRAM, LIMIT_LORA, LIMIT_VECTOR, max_context_tokens, plan
from romachip.errors import AdapterError, CapacityError, FormatError
from romachip.graph import decode_ops, totals
from romachip.quant.formats import WeightFormat
from romachip.spec import load_chip, load_model_spec
from romachip.tensor_bits import StoragePolicy
from romachip.workload import ALL_TARGETS, KvConfig, LoraConfig

ROMA = load_chip("roma")
ROMA_ROM_BYTES = 119 * 8192 * 64 // 8 * 256
G4 = WeightFormat(bits=4, group_size=128)
G2 = WeightFormat(bits=2, group_size=128)


def blocks_params(d: int, f: int, kv: int, layers: int) -> int:
    return layers * (2 * d * d + 2 * d * kv + 3 * d * f)


# --- ROMA, Llama-3.2-3B, 4-bit g128 -------------------------------------------------------------------


def test_llama32_3b_rom_by_hand():
    r = plan(ROMA, load_model_spec("llama-3.2-3b"), fmt=G4, lora=LoraConfig(rank=16))
    weights = blocks_params(3072, 8192, 1024, 28) + 128256 * 3072  # tied table stored once
    bits = weights * 4 + weights // 128 * (16 + 4) + 57 * 3072 * 16  # codes + fp16 scale/uint4 zero + norms
    assert r.rom.rom_bytes_needed == bits // 8 == 1_669_383_168
    assert r.rom.rom_bytes_available == ROMA_ROM_BYTES == 1_996_488_704
    assert r.rom.rom_margin_bytes == ROMA_ROM_BYTES - bits // 8
    assert r.rom.rom_fits and r.fits
    b = {row.kind: row for row in r.breakdown}
    assert b["lm_head"].params == 128256 * 3072 and b["embedding"].bytes == 0
    assert b["mlp"].code_bytes == 28 * 3 * 3072 * 8192 * 4 // 8
    assert r.sram.kv_bytes_per_token == 2 * 28 * 8 * (128 + 4)  # K and V, 8 KV heads of 128 int8 + a float32 scale
    shapes = load_model_spec("llama-3.2-3b").linear_shapes()
    assert r.sram.lora_bytes == 28 * (16 * sum(o + i for o, i in shapes.values()) + 7 * 2 * 4)


def slow_lora_unit_bytes(spec, rank: int, units: int) -> list[int]:
    """Reference for the H-Unit LoRA rule, one row at a time: B rows beside the base rows (every shape
    here divides evenly, so unit u holds out/units rows of each B, and unit 0 holds row 0 and B's
    scale), A rows dealt round-robin across units continuing over modules (with A's scale at its first)."""
    held = [0] * units
    nxt = 0
    for _ in range(spec.num_layers):
        for module in ALL_TARGETS:
            out_f, in_f = spec.linear_shapes()[module]
            for u in range(units):
                held[u] += out_f // units * rank
            held[0] += 4
            held[nxt] += 4
            for _row in range(rank):
                held[nxt] += in_f
                nxt = (nxt + 1) % units
    return [math.ceil(h / 8) * 8 for h in held]  # whole 64-bit SRAM words


# one token's K and V, all 28 layers, 8 KV heads of 128 int8 values + the engine's float32 scale per head
# vector (docs/numerics.md, "KV cache"): 2 x 28 x 8 x (128 + 4) = 59,136 bytes
TOKEN_3B = 2 * 28 * 8 * (128 + 4)


def round_robin_max_context(free_bytes: list[int], token_bytes: int) -> int:
    """Token t lives in unit t mod n (every channel, every layer): unit u holds ceil((L - u) / n) of L
    tokens and has room for cap_u = free_u // token_bytes, so L <= cap_u * n + u for every unit."""
    n = len(free_bytes)
    return min(free // token_bytes * n + u for u, free in enumerate(free_bytes))


@pytest.mark.parametrize("rank", [0, 16, 64])
def test_llama32_3b_max_context_by_hand(rank):
    spec = load_model_spec("llama-3.2-3b")
    r = plan(ROMA, spec, fmt=G4, lora=LoraConfig(rank=rank))
    unit_sram = 288 * 2**20 // 256  # 1,179,648 bytes per H-Unit
    lora_units = slow_lora_unit_bytes(spec, rank, 256) if rank else [0] * 256
    expected = round_robin_max_context([unit_sram - h for h in lora_units], TOKEN_3B)
    assert r.context.max_context_tokens == expected
    assert r.sram.lora_unit_bytes_max == max(lora_units)
    assert r.sram.kv_unit_bytes_per_token_max == TOKEN_3B and r.sram.kv_layout == "token_round_robin"
    assert r.sram.kv_unit_tokens_max == math.ceil(4096 / 256) == 16  # at the default 4,096-token context
    assert r.context.context_limit == LIMIT_H_SRAM
    if rank == 0:  # every unit has room for 1,179,648 // 59,136 = 19 tokens; unit 0 binds: 19 x 256 + 0
        assert expected == 19 * 256 == 4864


def test_max_context_falls_with_rank_and_rises_with_sram():
    spec = load_model_spec("llama-3.2-3b")
    by_rank = [max_context_tokens(ROMA, spec, fmt=G4, lora=LoraConfig(rank=r)) for r in (0, 16, 64)]
    assert by_rank[0] > by_rank[1] > by_rank[2] > 0
    lora = LoraConfig(rank=16)
    by_sram = [max_context_tokens(ROMA, spec, fmt=G4, lora=lora, sram_bytes=mib * 2**20) for mib in (64, 128, 256, 288)]
    assert by_sram == sorted(by_sram) and len(set(by_sram)) == 4
    lora_units = slow_lora_unit_bytes(spec, 16, 256)
    assert by_sram == [
        round_robin_max_context([mib * 2**20 // 256 - h for h in lora_units], TOKEN_3B) for mib in (64, 128, 256, 288)
    ]
    assert by_sram[-1] == by_rank[1]


def test_adapters_that_overflow_sram_give_zero_context_and_say_why():
    r = plan(ROMA, load_model_spec("llama-3.2-3b"), fmt=G4, lora=LoraConfig(rank=1024))
    assert r.context.max_context_tokens == 0 and r.context.context_limit == LIMIT_LORA
    assert not r.sram.sram_fits and not r.fits and r.rom.rom_fits
    assert "LoRA adapters (rank 1024" in r.reasons[0]


def test_context_beyond_the_maximum_does_not_fit():
    spec = load_model_spec("llama-3.2-3b")
    best = max_context_tokens(ROMA, spec, fmt=G4)
    assert plan(ROMA, spec, fmt=G4, kv=KvConfig(context_tokens=best)).sram.sram_fits
    over = plan(ROMA, spec, fmt=G4, kv=KvConfig(context_tokens=best + 1))
    assert not over.sram.sram_fits and not over.fits and "exceeds the maximum" in over.reasons[-1]


# --- ROMA, Llama-3-8B, 2-bit g128: the storage policies ---------------------------------------------------

BLOCKS_8B = blocks_params(4096, 14336, 1024, 32)
TABLE_8B = 128256 * 4096
NORMS_8B_BITS = 65 * 4096 * 16


def bits_2bit(params: int, symmetric: bool = False) -> int:
    return params * 2 + params // 128 * (16 + (0 if symmetric else 2))


@pytest.mark.parametrize(
    "policy, rom_bits, host_params, rom_fits",
    [
        ("rom_weight", bits_2bit(BLOCKS_8B + 2 * TABLE_8B), 0, False),
        ("rom_int8", bits_2bit(BLOCKS_8B) + 2 * TABLE_8B * 8 + 2 * TABLE_8B // 128 * 24, 0, False),
        ("off_chip", bits_2bit(BLOCKS_8B + TABLE_8B), TABLE_8B, False),
        ("off_chip_all", bits_2bit(BLOCKS_8B), 2 * TABLE_8B, True),
    ],
)
def test_llama3_8b_two_bit_policies_by_hand(policy, rom_bits, host_params, rom_fits):
    r = plan(ROMA, load_model_spec("llama-3-8b"), fmt=G2, lora=LoraConfig(rank=16), policy=policy)
    needed = (rom_bits + NORMS_8B_BITS) // 8
    assert r.rom.rom_bytes_needed == needed
    assert r.rom.rom_margin_bytes == ROMA_ROM_BYTES - needed
    assert r.rom.host_bytes == bits_2bit(host_params) // 8
    assert r.rom.rom_fits is rom_fits


def test_llama3_8b_off_chip_all_fullest_unit_by_hand():
    r = plan(ROMA, load_model_spec("llama-3-8b"), fmt=G2, policy="off_chip_all")
    # every projection splits evenly over 256 units; the fullest unit also holds one whole FP16 norm vector
    unit_bits = bits_2bit(BLOCKS_8B) // 256 + 4096 * 16
    assert r.rom.rom_unit_bytes_used_max == unit_bits // 8
    assert r.rom.rom_unit_margin_bytes == (119 * 8192 * 64 - unit_bits) // 8


def test_llama3_8b_symmetric_fits_with_lm_head_in_rom_by_a_few_kib():
    sym = WeightFormat(bits=2, group_size=128, symmetric=True)
    r = plan(ROMA, load_model_spec("llama-3-8b"), fmt=sym, policy="off_chip", kv=KvConfig(context_tokens=1024))
    head_rows_bits = 128256 // 256 * (4096 * 2 + 32 * 16)  # 501 whole LM-head rows per unit
    unit_bits = bits_2bit(BLOCKS_8B, symmetric=True) // 256 + head_rows_bits + 4096 * 16
    assert r.rom.rom_unit_margin_bytes == (119 * 8192 * 64 - unit_bits) // 8 > 0
    assert r.fits


# --- a tiny 4-unit chip where every number is small --------------------------------------------------------


def tiny_chip(tmp_path, *, vector_rows: int = 8192, supported_lora=("fp8_e4m3", "fp16", "bf16")):
    data = yaml.safe_load((resources.files("romachip.spec") / "presets" / "roma.yaml").read_text())
    data["name"] = "tiny"
    data["mesh"] = {"rows": 3, "cols": 2, "row_roles": ["matrix", "vector", "matrix"]}
    data["l_unit"]["rom"].update(macro_rows=1024, macros=1)  # 65,536 bits per L-Unit
    data["h_unit"]["sram"].update(macro_rows=512, macros=1)  # 4,096 bytes per H-Unit
    data["vector_unit"]["sram"].update(macro_rows=vector_rows, macros=1)
    data["precision"]["supported_lora"] = list(supported_lora)
    path = tmp_path / f"tiny-{vector_rows}-{len(supported_lora)}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_chip(path)


def tiny_model(tmp_path):
    cfg = {"model_type": "llama", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "max_position_embeddings": 4096, "tie_word_embeddings": True}  # fmt: skip
    (tmp_path / "tiny-model").mkdir(exist_ok=True)
    (tmp_path / "tiny-model" / "config.json").write_text(json.dumps(cfg))
    return load_model_spec(tmp_path / "tiny-model")


G32 = WeightFormat(bits=4, group_size=32)


@pytest.mark.parametrize(
    "rank, expected",
    [
        (0, 4096 // 96 * 4),  # 4096 // 96 = 42 tokens per unit, unit 0 binds: 42*4 = 168
        (4, min((4096 - 1136) // 96 * 4 + 0, (4096 - 1024) // 96 * 4 + 1)),  # min(30*4, 32*4+1) = 120
        (8, min((4096 - 2160) // 96 * 4 + 0, (4096 - 2048) // 96 * 4 + 1)),  # min(20*4, 21*4+1) = 80
    ],
)
def test_tiny_chip_max_context_by_hand(tmp_path, rank, expected):
    """Unit 0 holds, per layer: B rows sum(out)/4 * rank = 64*rank bytes, one A row per module per 4 ranks
    (256 bytes of inputs per 4 ranks), and 7 modules x 2 scale words = 56 bytes: 128*rank + 56 per layer;
    units 1-3 the same without the scale words: 128*rank. KV is split by token: token t (K and V of both
    layers, 2 x 2 x 2 heads x (8 int8 + a 4-byte float32 scale) = 96 bytes) lives in unit t mod 4, so unit
    u allows L <= cap_u * 4 + u with cap_u = (4096 - LoRA_u) // 96; units 2 and 3 have unit 1's cap and a
    larger rank."""
    chip, spec = tiny_chip(tmp_path), tiny_model(tmp_path)
    r = plan(chip, spec, fmt=G32, lora=LoraConfig(rank=rank), kv=KvConfig(context_tokens=64))
    assert r.sram.lora_unit_bytes_max == (2 * (128 * rank + 56) if rank else 0)
    assert r.sram.kv_unit_bytes_per_token_max == 96 and r.sram.kv_bytes_per_token == 2 * 2 * 2 * (8 + 4)
    assert r.sram.kv_unit_tokens_max == 64 // 4  # at the requested 64 tokens
    assert r.context.max_context_tokens == expected and r.fits
    weights = 2 * (2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64) + 128 * 32
    assert r.rom.rom_bytes_needed == (weights * 4 + weights // 32 * 20 + 5 * 32 * 16) // 8


def test_tiny_chip_sram_override_and_overflow(tmp_path):
    chip, spec = tiny_chip(tmp_path), tiny_model(tmp_path)
    lora = LoraConfig(rank=4)
    # 96-byte tokens: unit 0: (8192 - 1136) // 96 = 73 tokens -> 292; unit 1: (8192 - 1024) // 96 = 74 -> 297
    assert max_context_tokens(chip, spec, fmt=G32, lora=lora, sram_bytes=4 * 8192) == 73 * 4 == 292
    # unit 0 keeps no byte for KV: not even token 0 fits
    assert max_context_tokens(chip, spec, fmt=G32, lora=lora, sram_bytes=4 * 1136) == 0
    r = plan(chip, spec, fmt=G32, lora=LoraConfig(rank=16))  # 2 * (128*16 + 56) = 4208 > 4096 bytes
    assert r.context.max_context_tokens == 0 and r.context.context_limit == LIMIT_LORA and not r.fits


def test_tiny_chip_vector_sram_limits_context(tmp_path):
    """512-byte vector units, 2 of them, bf16 activations (the preset's, 2 bytes per element): the decode
    peak is softmax's in+out, 2 x 4 heads x (L+1) elements = 16*(L+1) bytes, plus the 32-element residual
    stream (64 bytes), so ceil((16*(L+1) + 64) / 2) <= 512, i.e. L+1 <= (1024 - 64) / 16 = 60, gives L = 59."""
    chip, spec = tiny_chip(tmp_path, vector_rows=64), tiny_model(tmp_path)
    r = plan(chip, spec, fmt=G32, lora=LoraConfig(rank=0), kv=KvConfig(context_tokens=10))
    assert r.context.max_context_tokens == 59 and r.context.context_limit == LIMIT_VECTOR
    # at 10 tokens the LM head is the peak: max(16 * 11, 2 * (32 + 128)) + 2 * 32 = 320 + 64 = 384 bytes
    assert r.sram.activation_bytes == max(16 * 11, 2 * (32 + 128)) + 2 * 32


def test_kv_bytes_agree_with_the_graph():
    spec = load_model_spec("llama-3.1-8b")
    kv = KvConfig(dtype="fp16", scale_bytes_per_vector=2)
    r = plan(ROMA, spec, fmt=G2, kv=kv, policy="off_chip_all")
    graph = totals(decode_ops(spec, 5, fmt=G2, kv_bytes_per_element=2, kv_scale_bytes_per_vector=2))
    assert r.sram.kv_bytes_per_token == graph.kv_bytes_written == 2 * 32 * 8 * (128 * 2 + 2)


@pytest.mark.parametrize("dtype", ["fp8_e4m3", "fp16", "bf16"])
def test_lora_bytes_agree_with_the_sram_store(dtype):
    from romachip.sram.storage import module_bytes

    lora = LoraConfig(rank=16, dtype=dtype)
    for out_f, in_f in load_model_spec("llama-3.2-3b").linear_shapes().values():
        assert lora.module_bytes(out_f, in_f) == module_bytes(16, out_f, in_f, dtype)


def test_report_shape_does_not_change():
    spec = load_model_spec("smollm2-135m")
    a = plan(ROMA, spec, fmt=G4, lora=LoraConfig(rank=0)).to_dict()
    b = plan(ROMA, spec, fmt=G4, policy=StoragePolicy.OFF_CHIP_ALL).to_dict()
    assert list(a) == list(b) and list(a["breakdown"]) == list(b["breakdown"])
    json.dumps(a)
    for key in ("fits", "rom_bytes_needed", "rom_bytes_available", "sram_bytes_available", "lora_bytes",
                "kv_bytes_per_token", "max_context_tokens", "breakdown"):  # fmt: skip
        assert key in a


def test_bad_requests(tmp_path):
    spec = load_model_spec("smollm2-135m")
    with pytest.raises(CapacityError, match="3-bit weights"):
        plan(ROMA, spec, fmt=WeightFormat(bits=3))
    with pytest.raises(FormatError, match="unknown storage policy 'dram'; choose one of rom_weight"):
        plan(ROMA, spec, policy="dram")  # StoragePolicy.parse: one parser, one error type
    with pytest.raises(CapacityError, match="SRAM override"):
        plan(ROMA, spec, sram_bytes=-1)
    with pytest.raises(CapacityError, match="cannot hold fp16 LoRA"):
        plan(tiny_chip(tmp_path, supported_lora=("fp8_e4m3",)), spec, lora=LoraConfig(dtype="fp16"))
    with pytest.raises(CapacityError, match="KV context"):
        KvConfig(context_tokens=-1)
    with pytest.raises(CapacityError, match="KV dtype"):
        KvConfig(dtype="int4")
    with pytest.raises(AdapterError, match="unknown LoRA target"):
        LoraConfig(targets=("q_proj", "lm_head"))
    with pytest.raises(AdapterError, match="rank"):
        LoraConfig(rank=-1)


def test_the_report_composes_its_sub_reports_into_the_flat_document():
    """plan -> RomFit, ContextLimit, SramFit; `romachip fit --json` prints the same flat keys as before."""
    r = plan(ROMA, load_model_spec("smollm2-135m"), fmt=G4, kv=KvConfig(context_tokens=10**6))
    d = r.to_dict()
    assert set(d) == {
        "chip", "model", "weight_format", "policy", "strategy", "lora_rank", "lora_targets", "lora_dtype",
        "kv_dtype", "context_tokens", "fits", "rom_fits", "sram_fits", "rom_bytes_needed", "rom_bytes_allocated",
        "rom_bytes_available", "rom_margin_bytes", "rom_unit_bytes", "rom_unit_bytes_used_max",
        "rom_unit_margin_bytes", "host_bytes", "sram_bytes_available", "sram_unit_bytes", "lora_bytes",
        "lora_unit_bytes_max", "kv_bytes_per_token", "kv_unit_bytes_per_token_max", "kv_layout",
        "kv_unit_tokens_max", "kv_bytes", "activation_bytes", "activation_unit_bytes",
        "vector_sram_bytes_available", "vector_unit_bytes", "max_context_tokens", "context_limit", "reasons",
        "breakdown",
    }  # fmt: skip
    verdicts = (r.rom.rom_fits, r.sram.sram_fits, r.fits)
    assert (d["rom_fits"], d["sram_fits"], d["fits"]) == verdicts == (True, False, False)
    assert d["max_context_tokens"] == r.context.max_context_tokens > 0
    assert d["reasons"] == list(r.sram.reasons) and "exceeds the maximum" in d["reasons"][-1]
    assert list(d["breakdown"]) == [row.kind for row in r.rom.breakdown + r.sram.breakdown]


@pytest.mark.parametrize(
    ("model", "bits", "want", "noted"),
    [("llama-3.2-3b", 4, StoragePolicy.ROM_INT8, False), ("llama-3-8b", 2, StoragePolicy.ROM_WEIGHT, True)],
)
def test_auto_policy_keeps_8_bit_tables_when_they_fit_and_says_so_when_not(model, bits, want, noted):
    from romachip.capacity import auto_policy

    chip, spec, fmt = load_chip("roma"), load_model_spec(model), WeightFormat(bits=bits, group_size=128)
    policy, note = auto_policy(chip, spec, fmt)
    assert policy is want and (note is not None) is noted
    if noted:
        assert "does not fit" in note and f"at {bits} bits" in note
    else:
        assert plan(chip, spec, fmt=fmt, policy=StoragePolicy.ROM_INT8).rom.rom_fits
