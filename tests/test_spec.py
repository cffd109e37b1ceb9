"""Specs from data: Hugging Face configs in both key layouts, chip presets, and their refusals."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch
import transformers
import yaml

from romachip.errors import ModelConfigError, SpecError
from romachip.spec import ModelSpec, list_models, load_chip, load_model_spec

SHIPPED = ("llama-3.2-1b", "llama-3.2-3b", "llama-3-8b", "llama-3.1-8b", "smollm2-135m")


def shipped_config(name: str) -> dict:
    return json.loads((resources.files("romachip.spec") / "models" / f"{name}.json").read_text())


def write_json(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_all_five_models_ship():
    assert set(SHIPPED) <= set(list_models())


@pytest.mark.parametrize("name", ["llama-3.2-3b", "llama-3-8b"])
def test_5x_layout_from_save_pretrained_parses_like_the_4x_file(tmp_path, name):
    """transformers 5.x rewrites rope_theta/rope_scaling/torch_dtype into rope_parameters/dtype."""
    cfg4 = shipped_config(name)
    folder = tmp_path / name
    transformers.LlamaConfig(**cfg4).save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert "rope_parameters" in saved and "rope_theta" not in saved and "torch_dtype" not in saved
    assert saved["dtype"] == "bfloat16"
    assert load_model_spec(folder) == load_model_spec(name).model_copy(update={"name": name})


def test_llama3_rope_scaling_and_dtype():
    spec = load_model_spec("llama-3.2-3b")
    assert spec.rope_theta == 500000.0
    assert spec.rope_scaling is not None and spec.rope_scaling.factor == 32.0
    assert spec.rope_scaling.original_max_position_embeddings == 8192
    assert load_model_spec("llama-3-8b").rope_scaling is None
    assert spec.dtype == "bfloat16"


def test_5x_config_made_from_scratch_matches_hand_written_4x(tmp_path):
    kw = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)  # fmt: skip
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32}  # fmt: skip
    folder = tmp_path / "tiny"
    transformers.LlamaConfig(**kw, rope_parameters={**rope, "rope_theta": 5000.0}).save_pretrained(folder)
    four = {**kw, "model_type": "llama", "rope_theta": 5000.0, "rope_scaling": rope, "torch_dtype": "float32",
            "rms_norm_eps": 1e-6, "bos_token_id": 1, "eos_token_id": 2}  # fmt: skip
    assert load_model_spec(folder) == ModelSpec.from_hf_config(four, "tiny")


def meta_param_count(name: str) -> int:
    """Parameters of the real transformers model, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shipped_config(name)))
    return sum(p.numel() for p in model.parameters())  # a tied LM head is one parameter


@pytest.mark.parametrize(
    "name, billions",
    [("llama-3.2-1b", 1.24), ("llama-3.2-3b", 3.21), ("llama-3-8b", 8.03), ("llama-3.1-8b", 8.03)],
)
def test_parameter_counts_agree_with_transformers(name, billions):
    spec = load_model_spec(name)
    assert spec.total_params() == meta_param_count(name)
    assert round(spec.total_params() / 1e9, 2) == billions


def test_smollm2_parameter_count():
    spec = load_model_spec("smollm2-135m")
    assert spec.total_params() == meta_param_count("smollm2-135m")
    assert round(spec.total_params() / 1e6, 1) == 134.5


BAD_FIELDS = [
    ({"model_type": "mistral"}, "model_type 'mistral' is not supported"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn' is not supported"),
    ({"hidden_size": -3072}, "hidden_size"),
    ({"num_hidden_layers": 0}, "num_layers"),
    ({"num_key_value_heads": 5}, "must be a multiple of num_key_value_heads"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": -1.0}}, "invalid rope scaling"),
]


@pytest.mark.parametrize("change, message", BAD_FIELDS)
def test_malformed_configs_are_refused_naming_the_field(tmp_path, change, message):
    write_json(tmp_path / "m" / "config.json", {**shipped_config("llama-3.2-3b"), **change})
    with pytest.raises(ModelConfigError, match=message):
        load_model_spec(tmp_path / "m")


def test_missing_field_bad_json_and_missing_file(tmp_path):
    cfg = shipped_config("llama-3.2-1b")
    del cfg["intermediate_size"]
    write_json(tmp_path / "a" / "config.json", cfg)
    with pytest.raises(ModelConfigError, match="missing required field 'intermediate_size'"):
        load_model_spec(tmp_path / "a")
    (tmp_path / "b.json").write_text('{"model_type": "llama",')
    with pytest.raises(ModelConfigError, match="not valid JSON"):
        load_model_spec(tmp_path / "b.json")
    with pytest.raises(ModelConfigError, match="unknown model 'no-such-model'"):
        load_model_spec("no-such-model")
    write_json(tmp_path / "c.json", [1, 2])
    with pytest.raises(ModelConfigError, match="expected a JSON object"):
        load_model_spec(tmp_path / "c.json")


def roma_yaml() -> dict:
    return yaml.safe_load((resources.files("romachip.spec") / "presets" / "roma.yaml").read_text())


def test_roma_preset_numbers():
    chip = load_chip("roma")
    assert chip.matrix_units == 256 and chip.vector_units == 16
    assert chip.rom_bytes == 119 * 8192 * 64 // 8 * 256  # 1.859 GiB
    assert chip.h_sram_bytes == 288 * 2**20 and chip.vector_sram_bytes == 16 * 2**20


def test_bad_chip_presets(tmp_path):
    with pytest.raises(SpecError, match="unknown chip 'nope'"):
        load_chip("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_chip(bad)
    data = roma_yaml()
    data["l_unit"]["rom"]["colour"] = "blue"
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="l_unit.rom.colour"):
        load_chip(tmp_path / "extra.yaml")
    data = roma_yaml()
    data["h_unit"]["sram"]["macros"] = -18
    (tmp_path / "neg.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="h_unit.sram.macros"):
        load_chip(tmp_path / "neg.yaml")
