"""The pieces of `romachip serve` that need no server: streamed text with stop sequences, adapter paths."""

from __future__ import annotations

import os

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from romachip.serve.adapters import resolve_inside
from romachip.serve.errors import ApiError
from romachip.serve.text import TextStream


@pytest.fixture(scope="module")
def byte_tokenizer() -> Tokenizer:
    """Byte-level BPE with no merges: one token per byte, so a multi-byte character spans several tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _stream(tok: Tokenizer, text: str, stops: list[str]) -> tuple[list[str], TextStream]:
    s = TextStream(tok, stops)
    deltas = []
    for t in tok.encode(text).ids:
        deltas.append(s.push(t))
        if s.stopped:
            break
    deltas.append(s.finish())
    return deltas, s


def test_deltas_add_up_and_never_split_a_character(byte_tokenizer) -> None:
    deltas, s = _stream(byte_tokenizer, "naïve café ✓ done", [])
    assert "".join(deltas) == "naïve café ✓ done" and not s.stopped
    assert all("\ufffd" not in d for d in deltas)


def test_a_stop_sequence_cuts_the_text_and_is_never_sent(byte_tokenizer) -> None:
    deltas, s = _stream(byte_tokenizer, "one two STOP three", ["STOP", "zzz"])
    assert "".join(deltas) == "one two " and s.stopped
    assert not any("S" in d for d in deltas)  # the held-back prefix "S", "ST", ... never went out


def test_a_held_back_prefix_that_does_not_become_a_stop_is_sent(byte_tokenizer) -> None:
    deltas, s = _stream(byte_tokenizer, "a STOQ b ST", ["STOP"])
    assert "".join(deltas) == "a STOQ b ST" and not s.stopped
    assert deltas[-1] == "ST"  # held until generation ended


def test_paths_must_resolve_inside_the_adapter_folder(tmp_path) -> None:
    root = tmp_path / "adapters"
    (root / "ok").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "escape")
    assert resolve_inside(root, "ok") == (root / "ok").resolve()
    assert resolve_inside(root, str(root / "ok")) == (root / "ok").resolve()
    for bad, status in (("../elsewhere", 400), ("escape", 400), ("ok/../../elsewhere", 400), ("missing", 404)):
        with pytest.raises(ApiError) as e:
            resolve_inside(root, bad)
        assert e.value.status == status, bad


def test_only_loopback_addresses_count_as_local() -> None:
    from romachip.cli.serve import _is_loopback

    assert all(_is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "127.1.2.3"))
    assert not any(_is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.2", "example.org"))


def test_the_key_guards_everything_but_the_public_paths_and_prefixes() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from romachip.serve.middleware import ApiKeyMiddleware

    app = FastAPI()
    for path in ("/health", "/static/app.js", "/static", "/v1/models"):
        app.add_api_route(path, lambda: {"ok": True})
    app.add_middleware(
        ApiKeyMiddleware, api_key="k", public_paths=frozenset({"/health"}), public_prefixes=("/static/",)
    )
    client = TestClient(app)
    assert [client.get(p).status_code for p in ("/health", "/static/app.js", "/static", "/v1/models")] == [
        200, 200, 401, 401,
    ]  # fmt: skip
    assert client.get("/v1/models", headers={"Authorization": "Bearer k"}).status_code == 200
