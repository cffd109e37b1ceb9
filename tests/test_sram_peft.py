"""PEFT import: module selection, ranks and scales agree with PEFT itself; what the chip cannot run is refused."""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np
import peft
import pytest
import torch
from lora_helpers import make_adapter, spec_of, tiny_llama

from romachip.errors import AdapterError
from romachip.sram.peft_import import base_module_names, module_is_targeted, read_peft_adapter


def _peft_modules(pm) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """What the live PeftModel runs: module name -> (A, B, scaling), the reference for import."""
    found = {}
    for name, mod in pm.base_model.model.named_modules():
        if hasattr(mod, "lora_A") and "default" in mod.lora_A:
            a = mod.lora_A["default"].weight.detach().numpy()
            b = mod.lora_B["default"].weight.detach().numpy()
            found[name] = (a, b, mod.scaling["default"])
    return found


def _assert_matches_peft(adapter, pm) -> None:
    ref = _peft_modules(pm)
    assert list(adapter.modules) == list(ref)
    for name, (a, b, scale) in ref.items():
        got = adapter.modules[name]
        np.testing.assert_array_equal(got.a, a)
        np.testing.assert_array_equal(got.b, b)
        assert got.scale == pytest.approx(scale, rel=1e-12)


def test_module_names_match_transformers():
    model = tiny_llama()
    assert base_module_names(spec_of(model)) == [n for n, _ in model.named_modules()]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(target_modules=["q_proj", "v_proj"]),
        dict(target_modules=["q_proj", "down_proj"], layers_to_transform=[0, 2]),
        dict(target_modules=["o_proj"], layers_to_transform=1, layers_pattern="layers"),
        dict(target_modules=r".*\.(1|2)\.mlp\.(up|gate)_proj"),
        dict(target_modules=["q_proj", "k_proj", "mlp.up_proj"], exclude_modules=["model.layers.0.self_attn.k_proj"]),
        dict(target_modules="all-linear"),
    ],
)
def test_target_selection_matches_peft(kwargs):
    model = tiny_llama()
    config = peft.LoraConfig(r=2, **kwargs)
    pm = peft.get_peft_model(model, config)
    ref = sorted(_peft_modules(pm))
    mine = sorted(k for k in base_module_names(spec_of(tiny_llama())) if module_is_targeted(config.to_dict(), k))
    assert mine == ref and ref


def test_plain_lora_agrees_with_peft(tmp_path):
    pm = make_adapter(tiny_llama(), tmp_path, target_modules=["q_proj", "v_proj", "down_proj"])
    adapter = read_peft_adapter(tmp_path, spec_of(tiny_llama()))
    _assert_matches_peft(adapter, pm)
    assert adapter.targets == ["q_proj", "v_proj", "down_proj"]
    assert adapter.layers == [0, 1, 2] and adapter.max_rank == 4
    assert adapter.modules["model.layers.1.self_attn.q_proj"].scale == 8 / 4
    assert adapter.source_dtype == "float32"


def test_rslora_scale(tmp_path):
    pm = make_adapter(tiny_llama(), tmp_path, r=9, lora_alpha=6, use_rslora=True, target_modules=["k_proj"])
    adapter = read_peft_adapter(tmp_path, spec_of(tiny_llama()))
    _assert_matches_peft(adapter, pm)
    assert adapter.use_rslora
    assert adapter.modules["model.layers.0.self_attn.k_proj"].scale == pytest.approx(6 / math.sqrt(9))


def test_rank_and_alpha_patterns(tmp_path):
    pm = make_adapter(
        tiny_llama(),
        tmp_path,
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "o_proj", "down_proj"],
        rank_pattern={"down_proj": 2, r"model\.layers\.1\.self_attn\.q_proj": 6},
        alpha_pattern={"o_proj": 3, "layers.2.mlp.down_proj": 10},
    )
    adapter = read_peft_adapter(tmp_path, spec_of(tiny_llama()))
    _assert_matches_peft(adapter, pm)
    assert adapter.ranks["model.layers.0.mlp.down_proj"] == 2
    assert adapter.ranks["model.layers.1.self_attn.q_proj"] == 6
    assert adapter.modules["model.layers.2.mlp.down_proj"].scale == 10 / 2
    assert adapter.modules["model.layers.0.self_attn.o_proj"].scale == 3 / 4


def test_layers_to_transform_and_bf16_file(tmp_path):
    pm = make_adapter(tiny_llama(), tmp_path, target_modules=["up_proj"], layers_to_transform=[2], dtype=torch.bfloat16)
    adapter = read_peft_adapter(tmp_path, spec_of(tiny_llama()))
    assert list(adapter.modules) == ["model.layers.2.mlp.up_proj"]
    assert adapter.source_dtype == "bfloat16"
    ref = pm.base_model.model.model.layers[2].mlp.up_proj.lora_B["default"].weight.detach().float().numpy()
    np.testing.assert_array_equal(adapter.modules["model.layers.2.mlp.up_proj"].b, ref)


def test_fan_in_fan_out_is_ignored_as_peft_does(tmp_path):
    pm = make_adapter(tiny_llama(), tmp_path, target_modules=["q_proj"], fan_in_fan_out=True)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    cfg["fan_in_fan_out"] = True  # PEFT rewrites it to false for nn.Linear; an old file may still say true
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    adapter = read_peft_adapter(tmp_path, spec_of(tiny_llama()))
    _assert_matches_peft(adapter, pm)
    assert "fan_in_fan_out" in adapter.notes[0]


@pytest.fixture
def saved(tmp_path):
    make_adapter(tiny_llama(), tmp_path, target_modules=["q_proj", "v_proj"])
    return tmp_path


def _edit_config(folder, **changes):
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(changes)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(use_dora=True), "use_dora"),
        (dict(modules_to_save=["lm_head"]), "modules_to_save"),
        (dict(bias="lora_only"), "bias"),
        (dict(lora_bias=True), "lora_bias"),
        (dict(peft_type="IA3"), "peft_type"),
        (dict(target_modules=["q_proj", "embed_tokens"]), "target_modules"),
        (dict(target_modules=["lm_head", "q_proj"]), "target_modules"),
        (dict(target_modules=["input_layernorm"]), "target_modules"),
        (dict(target_modules=["q_proj"]), "target_modules"),  # the file still holds v_proj
        (dict(target_modules=["q_proj", "v_proj", "k_proj"]), "target_modules"),  # k_proj missing from file
        (dict(r=0), "'r'"),
        (dict(r=4.5), "'r'"),
        (dict(lora_alpha="8"), "lora_alpha"),
        (dict(rank_pattern={"v_proj": 3}), "rank_pattern"),
        (dict(rank_pattern={"v_proj": 2.5}), "rank_pattern"),
        (dict(alpha_pattern={"(v_proj": 3}), "regular expression"),
        (dict(target_modules=5), "target_modules"),
        (dict(target_modules="q_proj|("), "regular expression"),
        (dict(exclude_modules=[1]), "exclude_modules"),
        (dict(layers_to_transform="0"), "layers_to_transform"),
        (dict(layers_to_transform=[0, 9]), "target_modules"),  # the file still holds layers 1 and 2
    ],
)
def test_config_refusals_name_the_field(saved, changes, field):
    _edit_config(saved, **changes)
    with pytest.raises(AdapterError, match=field):
        read_peft_adapter(saved, spec_of(tiny_llama()))


def test_shape_mismatch_is_refused(saved):
    with pytest.raises(AdapterError, match="different base model"):
        read_peft_adapter(saved, spec_of(tiny_llama(hidden_size=64)))
    with pytest.raises(AdapterError, match="different base model|do not select"):
        read_peft_adapter(saved, spec_of(tiny_llama(num_hidden_layers=2)))


def test_legacy_bin_and_missing_files(saved, tmp_path):
    (saved / "adapter_model.safetensors").rename(saved / "adapter_model.bin")
    with pytest.raises(AdapterError, match="re-save|Re-save"):
        read_peft_adapter(saved, spec_of(tiny_llama()))
    with pytest.raises(AdapterError, match="does not exist"):
        read_peft_adapter(tmp_path / "nope", spec_of(tiny_llama()))
    (saved / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON"):
        read_peft_adapter(saved, spec_of(tiny_llama()))


def test_dora_tensor_and_corrupt_file(saved):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(saved / "adapter_model.safetensors")
    tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"] = np.ones(32, np.float32)
    save_file(tensors, saved / "adapter_model.safetensors")
    with pytest.raises(AdapterError, match="use_dora"):
        read_peft_adapter(saved, spec_of(tiny_llama()))
    (saved / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(AdapterError, match="safetensors"):
        read_peft_adapter(saved, spec_of(tiny_llama()))


def test_odd_config_values_give_adapter_errors_only(saved):
    """Every field of a real config set to odd values: import succeeds or raises AdapterError, never crashes."""
    original = json.loads((saved / "adapter_config.json").read_text())
    spec = spec_of(tiny_llama())
    odd = [None, 0, -1, 3.5, True, "x", "(", [], [1], {}, {"q_proj": "x"}]
    for key in original:
        for value in odd:
            (saved / "adapter_config.json").write_text(json.dumps({**original, key: value}))
            with contextlib.suppress(AdapterError):
                read_peft_adapter(saved, spec)


def test_damaged_weights_file_gives_adapter_errors_only(saved):
    """Truncations and byte flips of adapter_model.safetensors: AdapterError or a valid read, never a crash."""
    path = saved / "adapter_model.safetensors"
    good = path.read_bytes()
    spec = spec_of(tiny_llama())
    rng = np.random.default_rng(0)
    damaged = [good[:n] for n in (0, 4, 8, 20, len(good) // 2, len(good) - 1)]
    for _ in range(40):
        b = bytearray(good)
        b[int(rng.integers(0, min(len(b), 400)))] ^= 1 << int(rng.integers(0, 8))  # mostly in the JSON header
        damaged.append(bytes(b))
    for data in damaged:
        path.write_bytes(data)
        with contextlib.suppress(AdapterError):
            read_peft_adapter(saved, spec)
