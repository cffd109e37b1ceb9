"""`romachip serve` end to end: a real uvicorn on 127.0.0.1 and the official `openai` client.

One module-scoped server (API key, two start-up adapters, an adapter folder for runtime loads) and a
second small one (no key, queue of 1, small body limit, every byte of SRAM reserved for context).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time

import httpx
import openai
import pytest
from serve_helpers import RunningServer, peft_adapter, real_tokenizer, tiny_image

from romachip.cli.main import main
from romachip.engine.generate import Engine
from romachip.engine.session import _COMPUTE_LOCK
from romachip.engine.text import render_messages
from romachip.perf.simulate import simulate
from romachip.serve import ServeConfig
from romachip.sram.bank import AdapterBank

KEY = "sk-romachip-test"
BASE = "tiny"
PROMPT = "The ROM holds the base model and the SRAM holds"


@pytest.fixture(scope="module")
def world(tmp_path_factory):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("serve")
    hf_tok = real_tokenizer()
    image = tiny_image(root / "tiny.rom", hf_tok)
    adapters = {name: peft_adapter(root / name, seed) for name, seed in (("alpha", 1), ("beta", 2))}
    allowed = root / "allowed"
    allowed.mkdir()
    peft_adapter(allowed / "gamma", 3, r=8, target_modules=["o_proj", "up_proj"])
    peft_adapter(allowed / "wide", 4, r=64, target_modules="all-linear")
    shutil.copytree(adapters["alpha"], root / "outside")
    config = ServeConfig(image=image.path, adapters=tuple(adapters.items()), adapter_dir=allowed, api_key=KEY,
                         max_tokens=32, max_queue=64)  # fmt: skip
    server = RunningServer(config)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)
    yield {"root": root, "image": image, "adapters": adapters, "allowed": allowed, "server": server,
           "client": client, "hf_tok": hf_tok}  # fmt: skip
    server.stop()


@pytest.fixture(scope="module")
def small(world):  # noqa: ANN001, ANN201
    """No API key, a queue of one, a 4 KiB body limit, and the whole KV budget reserved (no adapter fits)."""
    full = AdapterBank.for_image(world["image"]).max_context_tokens
    config = ServeConfig(image=world["image"].path, adapter_dir=world["allowed"], max_queue=1, max_tokens=32,
                         max_body_bytes=4096, reserved_context=full)  # fmt: skip
    server = RunningServer(config)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def engine(world):  # noqa: ANN001, ANN201
    rom = world["image"]
    return Engine(rom.model(), chip=rom.chip)


def _ids(world, text: str) -> list[int]:  # noqa: ANN001
    return world["hf_tok"].backend_tokenizer.encode(text).ids


def _complete(client, model: str = BASE, **kw):  # noqa: ANN001, ANN003, ANN202
    kw.setdefault("max_tokens", 8)
    kw.setdefault("temperature", 0)
    return client.completions.create(model=model, prompt=kw.pop("prompt", PROMPT), extra_body={"return_tokens": True},
                                     **kw)  # fmt: skip


def test_models_list_the_base_and_resident_adapters(world) -> None:
    cards = {m.id: m for m in world["client"].models.list().data}
    assert set(cards) == {BASE, "alpha", "beta"}
    assert cards[BASE].model_extra["parent"] is None
    for name in ("alpha", "beta"):
        extra = cards[name].model_extra
        assert extra["parent"] == BASE and extra["rank"] == 4 and extra["sram_bytes"] > 0
        assert extra["precision"] == world["image"].chip.precision.lora
    assert world["client"].models.retrieve("beta").id == "beta"


def test_completion_is_the_engines_generation_with_the_chip_of_that_request(world, engine) -> None:
    reply = _complete(world["client"], max_tokens=10)
    ids = _ids(world, PROMPT)
    gen = engine.generate(ids, max_tokens=10)
    choice = reply.choices[0]
    assert choice.model_extra["token_ids"] == gen.token_ids and choice.text == gen.text
    assert choice.finish_reason == ("stop" if gen.stopped_on_eos else "length")
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (len(ids), len(gen.token_ids))
    chip = reply.model_extra["chip"]
    rom = world["image"]
    rep = simulate(rom.chip, rom.spec, fmt=rom.fmt, prompt_tokens=len(ids), generate_tokens=len(gen.token_ids))
    assert chip["ttft_ms"] == pytest.approx(rep.ttft_ms) and chip["decode_tokens_per_s"] == pytest.approx(
        rep.decode_tokens_per_s
    )
    steps = len(gen.token_ids) - 1
    assert chip["energy_mj"] == pytest.approx(rep.prefill_energy_mj + steps * rep.energy_per_token_mj)
    assert chip["chip"] == "roma" and chip["adapter"] is None
    timings = reply.model_extra["timings"]
    assert timings["prompt_n"] == len(ids) and timings["predicted_n"] == len(gen.token_ids) and timings["prompt_ms"] > 0


def test_chat_renders_messages_as_transformers_and_streams_the_same_reply(world) -> None:
    messages = [
        {"role": "system", "content": "You are a chip."},
        {"role": "user", "content": "What is ROM?"},
        {"role": "assistant", "content": "Read-only memory."},
        {"role": "user", "content": "And SRAM?"},
    ]
    rom = world["image"]
    engine_tok = Engine(rom.model()).tokenizer
    expected = world["hf_tok"].apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert render_messages(rom.model(), engine_tok, messages) == expected
    client = world["client"]
    whole = client.chat.completions.create(model="alpha", messages=messages, max_tokens=12, temperature=0,
                                           extra_body={"return_tokens": True})  # fmt: skip
    prompt_ids = world["hf_tok"](expected, add_special_tokens=False)["input_ids"]
    assert whole.usage.prompt_tokens == len(prompt_ids)
    assert whole.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(model="alpha", messages=messages, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True},
                                                 extra_body={"return_tokens": True}))  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ids = [t for c in chunks if c.choices for t in c.choices[0].model_extra.get("token_ids", [])]
    assert text == whole.choices[0].message.content and ids == whole.choices[0].model_extra["token_ids"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].model_extra["chip"]["adapter"]["name"] == "alpha"


def test_streamed_completion_equals_the_whole_one(world) -> None:
    client = world["client"]
    whole = _complete(client, model="beta", max_tokens=12, temperature=0.9, seed=5)
    parts = list(client.completions.create(model="beta", prompt=PROMPT, max_tokens=12, temperature=0.9, seed=5,
                                           stream=True))  # fmt: skip
    assert "".join(p.choices[0].text for p in parts) == whole.choices[0].text
    assert parts[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_seeds_repeat_and_differ(world) -> None:
    client = world["client"]
    runs = [_complete(client, temperature=1.0, seed=s, max_tokens=12).choices[0].model_extra["token_ids"]
            for s in (7, 7, 8)]  # fmt: skip
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_stop_sequences_cut_the_text(world) -> None:
    client = world["client"]
    full = _complete(client, max_tokens=16).choices[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop.strip(), "the reply is too short to pick a stop sequence from"
    cut = _complete(client, max_tokens=16, stop=[stop])
    assert cut.choices[0].text == full[: full.find(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = list(client.completions.create(model=BASE, prompt=PROMPT, max_tokens=16, temperature=0, stop=stop,
                                              stream=True))  # fmt: skip
    assert "".join(p.choices[0].text for p in streamed) == cut.choices[0].text


def test_adapter_selection_equals_romachip_run_adapter(world, capsys) -> None:
    client = world["client"]
    for name in ("alpha", "beta"):
        reply = _complete(client, model=name, max_tokens=10)
        argv = ["run", str(world["image"].path), "--adapter", f"alpha={world['adapters']['alpha']}",
                "--adapter", f"beta={world['adapters']['beta']}", "--use", name, "--prompt", PROMPT,
                "--max-tokens", "10", "--json"]  # fmt: skip
        assert main(argv) == 0
        run = json.loads(capsys.readouterr().out)
        assert reply.choices[0].model_extra["token_ids"] == run["token_ids"]
        assert reply.model_extra["chip"]["adapter"]["rank"] == 4
    base = _complete(client, max_tokens=10).choices[0].model_extra["token_ids"]
    assert base != _complete(client, model="alpha", max_tokens=10).choices[0].model_extra["token_ids"]


def test_eight_concurrent_clients_get_their_solo_replies(world) -> None:
    client = world["client"]
    jobs = [(model, stream, seed) for model in (BASE, "alpha", "beta") for stream, seed in ((False, 1), (True, 2))]
    jobs += [(BASE, True, 3), ("alpha", False, 4)]

    def ask(model: str, stream: bool, seed: int) -> str:
        kw = dict(model=model, prompt=f"{PROMPT} {seed}", max_tokens=12, temperature=0.8, seed=seed)
        if stream:
            return "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw))
        return client.completions.create(**kw).choices[0].text

    solo = [ask(*job) for job in jobs]
    together: list[str | None] = [None] * len(jobs)

    def worker(i: int) -> None:
        together[i] = ask(*jobs[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert together == solo


def test_runtime_load_and_unload_show_in_models(world) -> None:
    client, server = world["client"], world["server"]
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    base_before = _complete(client).choices[0].model_extra["token_ids"]
    r = http.post("/v1/load_lora_adapter", json={"lora_name": "gamma", "lora_path": "gamma"})
    assert r.status_code == 200, r.text
    assert _complete(client).choices[0].model_extra["token_ids"] == base_before  # whatever else is resident
    assert r.json()["sram"]["sram_bytes_written"] > 0
    card = client.models.retrieve("gamma")
    assert card.model_extra["parent"] == BASE and card.model_extra["rank"] == 8
    reply = _complete(client, model="gamma")
    assert reply.model_extra["chip"]["adapter"]["load_ms"] > 0
    assert http.post("/v1/load_lora_adapter", json={"lora_name": "gamma", "lora_path": "gamma"}).status_code == 400
    assert http.post("/v1/unload_lora_adapter", json={"lora_name": "gamma"}).status_code == 200
    assert "gamma" not in {m.id for m in client.models.list().data}
    with pytest.raises(openai.NotFoundError):
        _complete(client, model="gamma")
    r = http.post("/v1/unload_lora_adapter", json={"lora_name": "gamma"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "adapter_not_found"


def test_adapter_paths_outside_the_folder_pickles_and_missing_paths_are_refused(world, small) -> None:
    allowed, root = world["allowed"], world["root"]
    os.symlink(root / "outside", allowed / "link-out")
    (allowed / "file-link").mkdir()
    shutil.copy(allowed / "gamma" / "adapter_config.json", allowed / "file-link")
    os.symlink(root / "outside" / "adapter_model.safetensors", allowed / "file-link" / "adapter_model.safetensors")
    (allowed / "pickled").mkdir()
    shutil.copy(allowed / "gamma" / "adapter_config.json", allowed / "pickled")
    (allowed / "pickled" / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle
    http = httpx.Client(base_url=world["server"].url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    cases = {
        "../outside": (400, "path_outside_adapter_dir"),
        str(root / "outside"): (400, "path_outside_adapter_dir"),
        "link-out": (400, "path_outside_adapter_dir"),
        "file-link": (400, "path_outside_adapter_dir"),
        "pickled": (400, "invalid_adapter"),
        "pickled/adapter_model.bin": (400, "invalid_adapter"),
        "no-such-adapter": (404, "adapter_not_found"),
    }
    for path, (status, code) in cases.items():
        r = http.post("/v1/load_lora_adapter", json={"lora_name": "bad", "lora_path": path})
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (path, r.text)
    assert "bad" not in {m["id"] for m in http.get("/v1/models").json()["data"]}
    r = http.post("/v1/load_lora_adapter", json={"lora_name": "../x", "lora_path": "gamma"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "lora_name"
    # SRAM full: the small server reserves every KV token the chip holds, so the planner refuses the adapter
    r = httpx.post(f"{small.url}/v1/load_lora_adapter", json={"lora_name": "wide", "lora_path": "wide"})
    assert r.status_code == 400 and "does not fit" in r.json()["error"]["message"], r.text


def test_errors_have_openais_shape(world, small) -> None:
    client, url = world["client"], world["server"].url
    with pytest.raises(openai.NotFoundError) as e:
        _complete(client, model="nope")
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        _complete(client, n=2)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=BASE, messages=[{"role": "user", "content": "x"}], logprobs=True)
    assert e.value.body["param"] == "logprobs"
    limit = world["server"].backend.context_limit(None)
    with pytest.raises(openai.BadRequestError) as e:
        _complete(client, prompt=[5] * limit, max_tokens=1)
    assert f"maximum context length is {limit} tokens" in e.value.body["message"]
    assert e.value.body["code"] == "context_length_exceeded"
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(f"{url}/v1/completions", content=b"{not json", headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(f"{url}/v1/completions", json={"model": BASE, "prompt": "x", "max_tokens": "ten"}, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": BASE, "messages": "hi"}, headers=headers)
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(f"{url}/v1/completions", json={"model": BASE, "prompt": "x", "max_tokens": 2, "foo": 1},
                   headers=headers)  # fmt: skip
    assert r.status_code == 200  # unknown fields are ignored, as OpenAI does
    r = httpx.post(f"{small.url}/v1/completions", json={"model": BASE, "prompt": "w " * 4096})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_every_route_but_health_needs_the_key(world) -> None:
    url = world["server"].url
    routes = [("GET", "/v1/models"), ("GET", "/v1/models/tiny"), ("POST", "/v1/completions"),
              ("POST", "/v1/chat/completions"), ("POST", "/v1/load_lora_adapter"),
              ("POST", "/v1/unload_lora_adapter"), ("GET", "/metrics"), ("GET", "/no/such/route")]  # fmt: skip
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            r = httpx.request(method, url + path, headers=headers, json={})
            assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error", (path, headers)
    assert httpx.get(f"{url}/health").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()


def _wait(condition, timeout_s: float = 20.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_full_queue_answers_429_with_retry_after(small) -> None:
    worker = small.backend.loaded.worker
    body = {"model": BASE, "prompt": PROMPT, "max_tokens": 4, "temperature": 0}
    replies: list[httpx.Response] = []

    def ask() -> None:
        replies.append(httpx.post(f"{small.url}/v1/completions", json=body, timeout=60))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    with _COMPUTE_LOCK:  # the engine cannot compute: one request runs (blocked), one waits, the queue is full
        threads[0].start()
        _wait(lambda: worker.running == 1)
        threads[1].start()
        _wait(lambda: worker.depth == 1)
        refused = httpx.post(f"{small.url}/v1/completions", json=body, timeout=60)
    for t in threads:
        t.join(60)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert [r.status_code for r in replies] == [200, 200]
    assert httpx.get(f"{small.url}/health").status_code == 200


def test_a_client_that_disconnects_cancels_its_generation(small) -> None:
    worker, metrics = small.backend.loaded.worker, small.backend.metrics
    before = metrics.cancelled._value.get()
    body = {"model": BASE, "prompt": PROMPT, "max_tokens": 32, "temperature": 0, "stream": True}
    with _COMPUTE_LOCK:  # the first token cannot be computed until the client has gone
        with httpx.stream("POST", f"{small.url}/v1/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            _wait(lambda: worker.current is not None)
            job = worker.current
        _wait(job.cancelled.is_set)  # the server saw the disconnect
    _wait(lambda: metrics.cancelled._value.get() == before + 1)
    assert len(job.text.ids) <= 1  # stopped at the first token, not after 32


def test_metrics_count_requests_tokens_and_chip_time(world) -> None:
    _complete(world["client"], model="beta")
    with pytest.raises(openai.NotFoundError):
        _complete(world["client"], model="no-such-model")
    r = httpx.get(f"{world['server'].url}/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    needles = (
        'romachip_requests_total{endpoint="completion",model="beta",status="ok"}',
        'romachip_generation_tokens_total{model="beta"}',
        "romachip_queue_depth 0.0",
        'romachip_chip_seconds_total{model="beta"}',
        'romachip_chip_energy_joules_total{model="beta"}',
        'romachip_requests_total{endpoint="completion",model="unknown",status="404"}',
    )
    for needle in needles:
        assert needle in text, needle
    line = next(x for x in text.splitlines() if x.startswith('romachip_chip_seconds_total{model="beta"}'))
    assert float(line.split()[-1]) > 0


def test_health_is_503_while_loading_and_when_loading_failed(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from romachip.serve import create_app

    bad = tmp_path / "bad.rom"
    bad.write_bytes(b"not a rom image")
    r = TestClient(create_app(ServeConfig(image=bad))).get("/health")  # no lifespan: the image is not loaded yet
    assert r.status_code == 503 and r.json()["status"] == "loading" and r.headers["Retry-After"] == "1"
    app = create_app(ServeConfig(image=bad))
    with TestClient(app) as client:  # the lifespan starts loading, which fails
        deadline = time.monotonic() + 10
        while app.state.backend.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        r = client.get("/health")
        assert r.status_code == 503 and r.json()["error"]["code"] == "load_failed"
        assert client.get("/v1/models").json()["error"]["code"] == "load_failed"


def test_cli_refuses_bad_options(tmp_path, capsys) -> None:
    assert main(["serve", str(tmp_path / "missing.rom")]) == 2
    assert "does not exist" in capsys.readouterr().err
    image = tmp_path / "x.rom"
    image.write_bytes(b"x")
    assert main(["serve", str(image), "--adapter-dir", str(tmp_path / "nope")]) == 2
    assert "--adapter-dir" in capsys.readouterr().err
    assert main(["serve", str(image), "--api-key-file", str(tmp_path / "nokey")]) == 2
    assert "--api-key-file" in capsys.readouterr().err
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main(["serve", str(image), "--port", str(port), "--host", "0.0.0.0"]) == 2  # starts, fails to load, exits
    err = capsys.readouterr().err
    assert "without an API key" in err and "error:" in err and "truncated" in err
