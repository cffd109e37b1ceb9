"""`romachip finetune` on a tiny random LLaMA: PEFT-loadable output, exact resume, the refusals."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from lora_helpers import burn_tiny, tiny_llama, word_tokenizer_json
from safetensors.torch import load_file

from romachip.cli.main import main
from romachip.errors import AdapterError, CapacityError
from romachip.quant.hf_reference import dequantized_tensors, llama_from_tensors
from romachip.rom import RomImage
from romachip.train.finetune import FinetuneSettings, finetune
from romachip.train.model import build_model

SETTINGS = FinetuneSettings(rank=4, alpha=8, steps=4, seq_len=32, batch=2, lr=1e-2, checkpoint_every=2)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ft") / "tiny.rom"
    burn_tiny(tiny_llama(), path, tokenizer_json=word_tokenizer_json(96))
    return path


@pytest.fixture(scope="module")
def text() -> str:
    return " ".join(f"w{i}" for i in np.arange(1200) * 7 % 96)  # a learnable cycle


@pytest.fixture(scope="module")
def trained(image, text, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "adapter"
    finetune(image, text, out, SETTINGS)
    return out


def adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def test_training_lowers_the_loss_and_writes_a_peft_folder(trained):
    log = json.loads((trained / "training_log.json").read_text())
    assert log["steps"] == 4 and len(log["losses"]) == 4 and log["losses"][-1] < log["losses"][0]
    assert {p.name for p in trained.iterdir()} == {
        "adapter_config.json", "adapter_model.safetensors", "checkpoint.pt", "training_log.json"
    }  # fmt: skip
    tensors = adapter_tensors(trained)
    assert len(tensors) == 3 * 7 * 2 and "base_model.model.model.layers.2.mlp.down_proj.lora_B.weight" in tensors


def test_peft_loads_the_adapter_and_agrees_with_the_training_model(image, trained):
    import peft

    qmodel = RomImage.open(image).model()
    base = llama_from_tensors(qmodel.spec, dequantized_tensors(qmodel))
    ids = torch.arange(40)[None] % 96
    with torch.no_grad():
        plain = base(ids).logits
    pm = peft.PeftModel.from_pretrained(base, str(trained)).eval()
    ours = build_model(qmodel, rank=4, alpha=8, targets=SETTINGS.targets).eval()
    with torch.no_grad():
        for k, p in ours.named_parameters():
            if "lora_" in k:
                p.copy_(adapter_tensors(trained)["base_model.model." + k])
        want, got = pm(ids).logits, ours(ids).logits
    assert (want - plain).abs().max() > 1e-2  # the adapter does something
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_resume_after_an_interruption_is_bit_exact(image, text, trained, tmp_path):
    out = tmp_path / "adapter"

    def interrupt(info):
        if info.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(image, text, out, SETTINGS, on_step=interrupt)
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 2  # the last checkpoint is whole
    finetune(image, text, out, SETTINGS, resume=True)
    want, got = adapter_tensors(trained), adapter_tensors(out)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_refusals_write_nothing(image, text, tmp_path):
    with pytest.raises(AdapterError, match="fewer than one --seq-len window"):
        finetune(image, "w1 w2 w3", tmp_path / "a", SETTINGS)
    with pytest.raises(CapacityError, match="does not fit"):
        finetune(image, text, tmp_path / "b", FinetuneSettings(rank=200_000, steps=1, seq_len=32))
    assert sorted(tmp_path.iterdir()) == []
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(AdapterError, match="did not write"):
        finetune(image, text, tmp_path / "c", SETTINGS)
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["notes.txt"]


def test_resume_from_another_image_is_refused(image, text, trained, tmp_path):
    other = tmp_path / "other.rom"
    burn_tiny(tiny_llama(seed=5), other, tokenizer_json=word_tokenizer_json(96))
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    with pytest.raises(AdapterError, match="another ROM image"):
        finetune(other, text, out, SETTINGS, resume=True)
    with pytest.raises(AdapterError, match="pass --resume"):
        finetune(image, text, out, SETTINGS)


def test_cli_trains_evaluates_and_the_engine_runs_the_adapter(image, text, tmp_path, capsys):
    train = tmp_path / "train.txt"
    train.write_text(text)
    out = tmp_path / "adapter"
    args = ["finetune", str(image), "--text", str(train), "--eval-text", str(train), "-o", str(out), "--rank", "4",
            "--steps", "6", "--seq-len", "32", "--batch", "2", "--lr", "1e-2", "--threads", "1", "--json"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    r = json.loads(capsys.readouterr().out)
    assert r["steps"] == 6 and r["eval_perplexity_after"] < r["eval_perplexity_before"]
    assert main(args) == 2 and "pass --resume" in capsys.readouterr().err  # the folder holds a run now
    assert main([*args[:-1], "--rank", "0"]) == 2 and "Invalid value for '--rank'" in capsys.readouterr().err
