"""One placement per command: `fit`, `simulate` and `burn` compile the model's placement once and hand it
to every consumer (capacity check, writer, timing model); `run` and `adapters check` compile none, they
read the one the image holds. A compilation is one layout of a tile table (compile._assign_offsets)."""

from __future__ import annotations

import json

import pytest
from lora_helpers import make_adapter, tiny_llama, word_tokenizer_json

from romachip import compile as compile_module
from romachip.cli.main import main


@pytest.fixture
def compilations(monkeypatch):
    calls = []
    layout = compile_module._assign_offsets

    def counted(*args, **kwargs):
        calls.append(1)
        return layout(*args, **kwargs)

    monkeypatch.setattr(compile_module, "_assign_offsets", counted)
    return calls


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one_placement")
    model = tiny_llama()
    model.save_pretrained(tmp / "ckpt")
    (tmp / "ckpt" / "tokenizer.json").write_text(word_tokenizer_json(model.config.vocab_size))
    make_adapter(tiny_llama(), tmp / "ad", target_modules=["q_proj", "v_proj"])
    return tmp


def command(capsys, *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_compilations_per_command(files, capsys, compilations):
    counts = {}

    def count(name: str, *argv: str) -> dict:
        compilations.clear()
        out = command(capsys, *argv)
        counts[name] = len(compilations)
        return out

    count("fit", "fit", "--model", "llama-3.2-1b")
    count("simulate", "simulate", "--model", "llama-3.2-1b", "--prompt", "8", "--generate", "2")
    image = str(files / "tiny.rom")
    burned = count("burn", "burn", str(files / "ckpt"), "--bits", "4", "--group-size", "32", "-o", image)
    assert burned["fits"]
    count("run", "run", image, "--prompt", "w1 w2 w3", "--max-tokens", "2")
    ran = count("run --adapter", "run", image, "--prompt", "w1 w2 w3", "--max-tokens", "2", "--adapter",
                f"a={files / 'ad'}")  # fmt: skip
    assert ran["adapter"] == "a" and ran["adapter_loads"][0]["sram_bytes_written"] > 0
    count("adapters check", "adapters", "check", image, str(files / "ad"), "--context", "32")
    assert counts == {"fit": 1, "simulate": 1, "burn": 1, "run": 0, "run --adapter": 0, "adapters check": 0}
