"""Checkpoint loading: HF safetensors (fp32/fp16/bf16, sharded), GGUF (vs transformers), and every refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from romachip.errors import CheckpointError, ModelConfigError
from romachip.quant.checkpoint import (
    SMOLLM2_NAME,
    expected_shapes,
    load_checkpoint,
    resolve_checkpoint,
    smollm2_gguf_path,
)
from romachip.quant.gguf_import import load_gguf, unpermute_rope_rows

TINY = dict(
    vocab_size=96, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5,
)  # fmt: skip


def tiny_model(tied: bool = True, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**TINY, tie_word_embeddings=tied))
    with torch.no_grad():  # norms start at 1.0; make them distinct so a swap would show
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


def state(model) -> dict[str, np.ndarray]:
    return {k: v.float().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_safetensors_folder_every_dtype(tmp_path, dtype):
    model = tiny_model(tied=False).to(dtype)
    model.save_pretrained(tmp_path)
    ckpt = load_checkpoint(tmp_path)
    ref = state(model)
    assert set(ckpt.tensors) == set(expected_shapes(ckpt.spec)) and "lm_head.weight" in ckpt.tensors
    for name, value in ckpt.tensors.items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, ref[name], err_msg=name)
    assert ckpt.spec.num_kv_heads == 2 and ckpt.spec.head_dim == 16 and not ckpt.spec.tie_word_embeddings


def test_sharded_safetensors_with_index(tmp_path):
    model = tiny_model(tied=True)
    model.save_pretrained(tmp_path, max_shard_size="60KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 3
    ckpt = load_checkpoint(tmp_path)
    ref = state(model)
    assert "lm_head.weight" not in ckpt.tensors
    for name, value in ckpt.tensors.items():
        np.testing.assert_array_equal(value, ref[name], err_msg=name)


def test_tokenizer_and_chat_template_are_kept(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    from lora_helpers import word_tokenizer_json

    (tmp_path / "tokenizer.json").write_text(word_tokenizer_json(8))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.tokenizer_json == word_tokenizer_json(8) and ckpt.chat_template == "{{ messages }}"


def test_missing_tensor_names_tensor_and_file(tmp_path):
    from safetensors.torch import save_file

    model = tiny_model()
    model.save_pretrained(tmp_path)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "model.layers.1.mlp.up_proj.weight"}
    tensors.pop("lm_head.weight", None)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*missing") as exc:
        load_checkpoint(tmp_path)
    assert "model.safetensors" in str(exc.value)


def test_wrong_shape_refused(tmp_path):
    from safetensors.torch import save_file

    model = tiny_model()
    model.save_pretrained(tmp_path)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    tensors["model.norm.weight"] = torch.ones(63)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight.*shape \(63,\)"):
        load_checkpoint(tmp_path)


def test_malformed_folders(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "a").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path / "a")
    tiny_model().save_pretrained(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_checkpoint(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "shard-1.st"}}))
    with pytest.raises(CheckpointError, match="shard-1.st"):
        load_checkpoint(tmp_path / "b")
    (tmp_path / "c.bin").write_bytes(b"PK\x03\x04")
    with pytest.raises(CheckpointError, match="must be a GGUF"):
        load_checkpoint(tmp_path / "c.bin")


# --- GGUF -------------------------------------------------------------------------------------------------


def permute_like_llama_cpp(w: np.ndarray, n_heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute, written out independently of our inverse."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}  # fmt: skip


def write_tiny_gguf(path, model: LlamaForCausalLM, types: dict[str, str], arch: str = "llama") -> None:
    """A llama GGUF as llama.cpp's converter writes it: renamed tensors, Q/K rows permuted for RoPE."""
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_vocab_size(cfg.vocab_size)
    for name, value in state(model).items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        g = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}.get(name)
        g = g or ("output.weight" if name == "lm_head.weight" else None)
        if g is None:
            layer, rest = name.split(".")[2], ".".join(name.split(".")[3:-1])
            g = f"blk.{layer}.{GGUF_NAMES[rest]}.weight"
        if g.endswith("attn_q.weight"):
            value = permute_like_llama_cpp(value, cfg.num_attention_heads)
        if g.endswith("attn_k.weight"):
            value = permute_like_llama_cpp(value, cfg.num_key_value_heads)
        qtype = types.get(g.split(".")[-2], "F32") if value.ndim == 2 else "F32"
        if qtype == "F32":
            writer.add_tensor(g, value)
        elif qtype == "Q6_K":  # gguf-py cannot quantize to Q6_K: raw bytes of the right size will do
            raw = np.zeros((value.shape[0], value.shape[1] // 256 * 210), dtype=np.uint8)
            writer.add_tensor(g, raw, raw_dtype=gguf.GGMLQuantizationType.Q6_K)
        else:
            qt = getattr(gguf.GGMLQuantizationType, qtype)
            writer.add_tensor(g, gguf.quants.quantize(value, qt), raw_dtype=qt)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_f32_round_trips_hf_weights_exactly(tmp_path):
    model = tiny_model(tied=False)
    write_tiny_gguf(tmp_path / "m.gguf", model, {})
    ckpt = load_gguf(tmp_path / "m.gguf", with_tokenizer=False)
    ref = state(model)
    assert ckpt.spec.num_layers == 2 and not ckpt.spec.tie_word_embeddings and ckpt.spec.num_kv_heads == 2
    for name, value in ckpt.tensors.items():  # un-permuting Q/K restores the HF layout bit for bit
        np.testing.assert_array_equal(value, ref[name], err_msg=name)


def test_gguf_quantized_types_match_transformers(tmp_path):
    model = tiny_model(tied=True)
    types = {"attn_q": "Q4_0", "attn_k": "Q4_1", "attn_v": "Q8_0", "attn_output": "F16", "ffn_down": "Q4_1",
             "ffn_up": "Q8_0", "token_embd": "Q8_0"}  # fmt: skip
    write_tiny_gguf(tmp_path / "m.gguf", model, types)
    ckpt = load_gguf(tmp_path / "m.gguf", with_tokenizer=False)
    hf = LlamaForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32)
    ref = state(hf)
    for name, value in ckpt.tensors.items():
        np.testing.assert_array_equal(value, ref[name], err_msg=name)
    q = ckpt.tensors["model.layers.0.self_attn.q_proj.weight"]  # and Q4_0 is close to the original
    assert np.abs(q - state(model)["model.layers.0.self_attn.q_proj.weight"]).max() < 0.02


def test_gguf_unsupported_type_names_tensor_and_type(tmp_path):
    write_tiny_gguf(tmp_path / "m.gguf", tiny_model(), {"ffn_down": "Q6_K"})
    with pytest.raises(CheckpointError, match=r"blk\.0\.ffn_down\.weight.*Q6_K"):
        load_gguf(tmp_path / "m.gguf", with_tokenizer=False)


def test_gguf_refusals(tmp_path):
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 20)
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        load_checkpoint(tmp_path / "bad.gguf")
    write_tiny_gguf(tmp_path / "good.gguf", tiny_model(), {})
    data = (tmp_path / "good.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.gguf"):
        load_checkpoint(tmp_path / "cut.gguf")
    write_tiny_gguf(tmp_path / "gpt2.gguf", tiny_model(), {}, arch="gpt2")
    with pytest.raises(ModelConfigError, match="architecture 'gpt2'"):
        load_checkpoint(tmp_path / "gpt2.gguf")


def test_unpermute_is_inverse_of_llama_cpp_permute():
    w = np.arange(8 * 16 * 3, dtype=np.float32).reshape(8 * 16, 3)
    np.testing.assert_array_equal(unpermute_rope_rows(permute_like_llama_cpp(w, 8), 8), w)
    assert not np.array_equal(permute_like_llama_cpp(w, 8), w)


@pytest.fixture(scope="module")
def smollm2_reader():
    import gguf

    return gguf.GGUFReader(str(smollm2_gguf_path()))  # parsing its 49k-token vocabulary takes seconds: once


def truncated_smollm2(src, path, layers: int = 2) -> None:
    """The real SmolLM2 GGUF cut to its first blocks: real Q4_1/Q8_0 bytes and metadata, a fraction of the work."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    f = {k: v.contents() for k, v in src.fields.items() if k.startswith("llama.") or k == "tokenizer.chat_template"}
    writer.add_block_count(layers)
    writer.add_context_length(f["llama.context_length"])
    writer.add_embedding_length(f["llama.embedding_length"])
    writer.add_feed_forward_length(f["llama.feed_forward_length"])
    writer.add_head_count(f["llama.attention.head_count"])
    writer.add_head_count_kv(f["llama.attention.head_count_kv"])
    writer.add_layer_norm_rms_eps(f["llama.attention.layer_norm_rms_epsilon"])
    writer.add_rope_freq_base(f["llama.rope.freq_base"])
    writer.add_rope_dimension_count(f["llama.rope.dimension_count"])
    writer.add_vocab_size(f["llama.vocab_size"])
    writer.add_chat_template(f["tokenizer.chat_template"])
    for t in src.tensors:
        if t.name.startswith("blk.") and int(t.name.split(".")[1]) >= layers:
            continue
        writer.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_smollm2_spec_from_gguf_metadata(smollm2_reader):
    from romachip.quant.gguf_import import gguf_config
    from romachip.spec.model import ModelSpec

    path = resolve_checkpoint(SMOLLM2_NAME)
    assert path == smollm2_gguf_path() and path.name.endswith(".gguf")
    spec = ModelSpec.from_hf_config(gguf_config(smollm2_reader, path), SMOLLM2_NAME)
    shipped = __import__("romachip.spec.model", fromlist=["load_model_spec"]).load_model_spec("smollm2-135m")
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                  "head_dim", "rope_theta", "tie_word_embeddings"):  # fmt: skip
        assert getattr(spec, field) == getattr(shipped, field), field
    assert spec.rms_norm_eps == pytest.approx(shipped.rms_norm_eps) and spec.eos_token_ids == (2,)


def test_smollm2_gguf_matches_transformers(tmp_path, smollm2_reader):
    truncated_smollm2(smollm2_reader, tmp_path / "smol2.gguf")
    ckpt = load_gguf(tmp_path / "smol2.gguf", with_tokenizer=False)
    assert (ckpt.spec.num_layers, ckpt.spec.num_heads, ckpt.spec.num_kv_heads) == (2, 9, 3)
    assert ckpt.chat_template and "<|im_start|>" in ckpt.chat_template
    hf = LlamaForCausalLM.from_pretrained(tmp_path, gguf_file="smol2.gguf", dtype=torch.float32)
    ref = hf.state_dict()
    assert set(ckpt.tensors) == set(ref) - {"lm_head.weight"}
    for name, value in ckpt.tensors.items():
        assert torch.equal(torch.from_numpy(value), ref[name]), name
