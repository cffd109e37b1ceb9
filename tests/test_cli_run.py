"""`romachip run` and `romachip eval` on a tiny burned model with a word-level tokenizer."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from engine_models import make_tiny
from tokenizers import Tokenizer, models, pre_tokenizers

from romachip.cli.main import main
from romachip.engine.generate import Engine
from romachip.engine.text import encode_prompt, render_chat
from romachip.errors import GenerationError
from romachip.rom import RomImage, burn
from romachip.spec.chip import load_chip

WORDS = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(38)]
TEMPLATE = "{% for m in messages %}<s> {{ m['content'] }} </s>{% endfor %}{% if add_generation_prompt %} w0{% endif %}"


def _tokenizer_json() -> str:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<s>", "</s>"])
    return tok.to_str()


@pytest.fixture(scope="module")
def image(tmp_path_factory):  # noqa: ANN001, ANN201
    tiny = make_tiny("gqa_tied_g32_4bit", layers=1, vocab=len(WORDS))
    qmodel = dataclasses.replace(tiny.quantized, tokenizer_json=_tokenizer_json(), chat_template=TEMPLATE)
    path = tmp_path_factory.mktemp("rom") / "tiny.rom"
    burn(qmodel, load_chip("roma"), path, chip_preset="roma")
    return path


def _json(capsys, argv: list[str]) -> dict:  # noqa: ANN001
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_run_json_is_the_engine_generation(image, capsys) -> None:
    out = _json(capsys, ["run", str(image), "--prompt", "w3 w4 w5", "--max-tokens", "6", "--json"])
    for key in ("text", "token_ids", "prompt_tokens", "generated_tokens", "decode_tokens_per_s"):
        assert key in out
    model = RomImage.open(image).model()
    gen = Engine(model).generate([3 + 3, 3 + 4, 3 + 5], max_tokens=6)
    assert out["prompt_tokens"] == 3
    assert out["token_ids"] == gen.token_ids and out["generated_tokens"] == len(gen.token_ids)
    assert out["text"] == " ".join(WORDS[t] for t in gen.token_ids if t not in (1, 2))
    assert out["decode_tokens_per_s"] > 0


def test_threads_never_change_the_tokens_or_the_perplexity(image, capsys, tmp_path) -> None:
    argv = ["run", str(image), "--prompt", "w3 w9 w4", "--max-tokens", "5", "--json"]
    one = _json(capsys, argv + ["--threads", "1"])
    two = _json(capsys, argv + ["--threads", "2"])
    assert one["token_ids"] == two["token_ids"] and two["options"]["threads"] == 2
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"w{i % 30}" for i in range(40)))
    evals = [_json(capsys, ["eval", str(image), "--text", str(text), "--window", "16", "--json", "--threads", n])
             for n in ("1", "3")]  # fmt: skip
    assert evals[0]["perplexity"] == evals[1]["perplexity"] and evals[1]["threads"] == 3


def test_run_samples_repeatably_and_streams_text(image, capsys) -> None:
    argv = ["run", str(image), "--prompt", "w7 w8", "--max-tokens", "8", "--temperature", "1.2", "--seed", "4"]
    first = _json(capsys, argv + ["--json"])
    assert _json(capsys, argv + ["--json"])["token_ids"] == first["token_ids"]
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert first["text"].split()[0] in shown and "tokens/s" in shown


def test_run_chat_wraps_the_prompt_in_the_template(image, capsys) -> None:
    out = _json(capsys, ["run", str(image), "--prompt", "w9 w10", "--chat", "--max-tokens", "2", "--json"])
    assert out["prompt_tokens"] == 5  # <s> w9 w10 </s> w0


def test_eval_perplexity_matches_the_engine_logits(image, capsys, tmp_path) -> None:
    rng = np.random.default_rng(0)
    text = tmp_path / "text.txt"
    text.write_text(" ".join(WORDS[i] for i in rng.integers(3, len(WORDS), 70)))
    out = _json(capsys, ["eval", str(image), "--text", str(text), "--window", "32", "--reference", "--json"])
    ids = [int(w[1:]) + 3 for w in text.read_text().split()]
    engine = Engine(RomImage.open(image).model())
    nll, count = 0.0, 0
    for start in (0, 32):  # two full windows of 32; the last 6 tokens are dropped
        chunk = ids[start : start + 32]
        z = engine.logits(chunk)[:-1].astype(np.float64)
        lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
        nll += float(np.sum(lse - z[np.arange(31), chunk[1:]]))
        count += 31
    assert out["tokens"] == count == 62
    assert out["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-12)
    assert out["reference_perplexity"] == pytest.approx(out["perplexity"], rel=0.05)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["run", "missing.rom", "--prompt", "w1"], "ROM image missing.rom does not exist"),
        (["eval", "IMAGE", "--text", "missing.txt"], "text file missing.txt does not exist"),
        (["eval", "IMAGE", "--text", "TEXT", "--window", "1"], "Invalid value for '--window'"),
        (["eval", "IMAGE", "--text", "TEXT"], "at least 2 are needed"),
        (["run", "IMAGE", "--prompt", "w1", "--activation", "fp4"], "activation precision"),
        (["run", "IMAGE", "--prompt", "w1", "--threads", "0"], "Invalid value for '--threads'"),
    ],
)
def test_bad_input_exits_2_with_a_message(image, capsys, tmp_path, argv: list[str], message: str) -> None:
    (tmp_path / "one.txt").write_text("w5")
    argv = [str(image) if a == "IMAGE" else str(tmp_path / "one.txt") if a == "TEXT" else a for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")


def test_chat_without_a_template_is_refused(image) -> None:
    model = dataclasses.replace(RomImage.open(image).model(), chat_template=None)
    engine = Engine(model)
    with pytest.raises(GenerationError, match="no chat template"):
        encode_prompt(model, engine.tokenizer, "w3", chat=True)
    assert render_chat(RomImage.open(image).model(), engine.tokenizer, "w3") == "<s> w3 </s> w0"
