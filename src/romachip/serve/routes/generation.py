"""POST /v1/completions and /v1/chat/completions: OpenAI's shapes, streamed as OpenAI streams them."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from romachip.engine.text import encode_messages
from romachip.errors import RomachipError
from romachip.serve.backend import Backend
from romachip.serve.chip import host_timings
from romachip.serve.errors import ApiError, from_romachip
from romachip.serve.schemas import ChatRequest, CompletionRequest, SamplingFields
from romachip.serve.text import TextStream
from romachip.serve.worker import Job, QueueFull

router = APIRouter(tags=["generation"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class Prepared:
    """A validated request: what the reply needs besides the tokens."""

    kind: str  # "completion" | "chat"
    model: str
    job: Job
    load: object  # BankOp of the adapter, or None
    seed: int
    return_tokens: bool
    include_usage: bool
    echo: str = ""


def _backend(request: Request) -> Backend:
    return request.app.state.backend


def _check_common(body: SamplingFields) -> None:
    if body.n not in (None, 1):
        raise ApiError(400, f"n={body.n}: romachip serve returns one choice per request (n=1)", param="n",
                       code="unsupported_value")  # fmt: skip
    if len(body.stops()) > 4:
        raise ApiError(400, "stop: at most 4 stop sequences", param="stop", code="invalid_value")


def _completion_ids(backend: Backend, body: CompletionRequest) -> list[int]:
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        if len(prompt) != 1:
            raise ApiError(400, "prompt: one prompt per request (give a string, or a list of one)", param="prompt",
                           code="unsupported_value")  # fmt: skip
        prompt = prompt[0]
    if isinstance(prompt, str):
        return backend.loaded.engine.tokenizer.encode(prompt).ids  # as `romachip run --prompt` encodes it
    vocab = backend.loaded.engine.model.spec.vocab_size
    bad = [t for t in prompt if not 0 <= t < vocab]
    if bad:
        raise ApiError(400, f"prompt: token id {bad[0]} is outside the vocabulary (0..{vocab - 1})", param="prompt",
                       code="invalid_value")  # fmt: skip
    return list(prompt)


def _chat_ids(backend: Backend, body: ChatRequest) -> list[int]:
    for i, m in enumerate(body.messages):
        if not m.parts_ok():
            raise ApiError(400, f"messages[{i}].content: only text parts are supported", param=f"messages.{i}.content",
                           code="unsupported_value")  # fmt: skip
    engine = backend.loaded.engine
    # OpenAI's newer "developer" role is its "system" role; the chat templates know only the latter
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    try:
        return encode_messages(engine.model, engine.tokenizer, messages)
    except RomachipError as exc:
        raise from_romachip(exc, param="messages") from None


def _max_tokens(backend: Backend, body: SamplingFields, requested: int | None, room: int) -> int:
    """The request's max_tokens; when it names none, the server's default or what the context has room for."""
    cap = backend.config.max_tokens
    if requested is None:
        return max(1, min(cap, room))
    if requested > cap:
        chat_field = isinstance(body, ChatRequest) and body.max_completion_tokens
        param = "max_completion_tokens" if chat_field else "max_tokens"
        raise ApiError(400, f"{param}={requested} is more than this server allows ({cap}; `romachip serve "
                       "--max-tokens`)", param=param, code="invalid_value")  # fmt: skip
    return requested


def prepare(request: Request, body: SamplingFields, kind: str) -> Prepared:
    backend = _backend(request)
    lo = backend.loaded
    _check_common(body)
    view, load = lo.registry.resolve(body.model)
    if body.logprobs:  # the engine returns tokens, not their log-probabilities
        raise ApiError(400, "logprobs are not supported by romachip serve", param="logprobs",
                       code="unsupported_value")  # fmt: skip
    if isinstance(body, ChatRequest):
        ids, param = _chat_ids(backend, body), "messages"
        requested = body.max_completion_tokens or body.max_tokens
    else:
        ids, param, requested = _completion_ids(backend, body), "prompt", body.max_tokens
    if not ids:
        raise ApiError(400, f"{param}: the prompt is empty", param=param, code="invalid_value")
    limit = backend.context_limit(view)
    max_tokens = _max_tokens(backend, body, requested, limit - len(ids))
    if len(ids) + max_tokens > limit:
        raise ApiError(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                       f"{len(ids) + max_tokens} tokens ({len(ids)} in the {param}, {max_tokens} in the completion). "
                       f"Please reduce the length of the {param} or completion.", param=param,
                       code="context_length_exceeded")  # fmt: skip
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    job = Job(
        prompt_ids=ids, max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p, seed=seed, adapter=view,
        text=TextStream(lo.engine.tokenizer, body.stops()), loop=asyncio.get_running_loop(),
    )  # fmt: skip
    echo = body.prompt if isinstance(body, CompletionRequest) and body.echo and isinstance(body.prompt, str) else ""
    include = bool(body.stream_options and body.stream_options.include_usage)
    return Prepared(kind, body.model, job, load, seed, body.return_tokens, include, echo)


def submit(request: Request, p: Prepared) -> None:
    backend = _backend(request)
    try:
        backend.loaded.worker.submit(p.job)
    except QueueFull:
        backend.metrics.rejected.inc()
        raise ApiError(429, f"The server's queue is full ({backend.config.max_queue} requests waiting); retry shortly.",
                       type="requests", code="rate_limit_exceeded", headers={"Retry-After": "1"}) from None  # fmt: skip


async def events(job: Job) -> AsyncIterator[tuple]:
    """The worker's events for one job, until it is done (an error is raised as an ApiError)."""
    while True:
        event = await job.events.get()
        if event[0] == "token":
            yield event
        elif event[0] == "done":
            return
        elif event[0] == "error":
            exc = event[1]
            raise (
                from_romachip(exc)
                if isinstance(exc, RomachipError)
                else ApiError(500, f"the engine failed: {exc!r}", type="server_error", code="engine_error")
            )
        else:  # cancelled: only when the client is gone
            raise asyncio.CancelledError


async def finish(request: Request, p: Prepared, token_ids: list[int]) -> dict:
    """usage, chip and timings of a finished job (the chip simulation runs off the event loop)."""
    backend = _backend(request)
    lo = backend.loaded
    n_prompt, n_out = len(p.job.prompt_ids), len(token_ids)
    chip = await asyncio.to_thread(lo.timer.chip_object, p.job.adapter, n_prompt, n_out, p.load)
    timings = host_timings(n_prompt, n_out, p.job)
    backend.metrics.reply(p.kind, p.model, n_prompt, n_out, chip, time.perf_counter() - p.job.submitted_s)
    usage = {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out}
    return {"usage": usage, "chip": chip, "timings": timings}


def _head(p: Prepared, rid: str, created: int) -> dict:
    obj = {"completion": "text_completion", "chat": "chat.completion"}[p.kind]
    return {"id": rid, "object": obj, "created": created, "model": p.model, "system_fingerprint": None, "seed": p.seed}


async def collect(request: Request, p: Prepared) -> JSONResponse:
    """A non-streamed reply; a client that disconnects meanwhile cancels the job."""
    rid, created = _new_id(p.kind), int(time.time())
    watcher = asyncio.create_task(_cancel_on_disconnect(request, p.job))
    try:
        text, ids = p.echo, []
        async for _, token, delta in events(p.job):
            text += delta
            if token is not None:
                ids.append(token)
    finally:
        watcher.cancel()
        p.job.cancel()  # no-op once finished; stops the engine if this coroutine was cancelled
    tail = await finish(request, p, ids)
    reason = p.job.finish_reason
    if p.kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                  "logprobs": None}  # fmt: skip
    else:
        choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
    if p.return_tokens:
        choice["token_ids"] = ids
    return JSONResponse({**_head(p, rid, created), "choices": [choice], **tail})


async def _cancel_on_disconnect(request: Request, job: Job) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            job.cancel()
            return


def _new_id(kind: str) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


async def stream(request: Request, p: Prepared) -> AsyncIterator[str]:
    """Server-sent events exactly as OpenAI sends them; the chip object rides on the last chunk."""
    rid, created = _new_id(p.kind), int(time.time())
    head = _head(p, rid, created)
    head["object"] = "chat.completion.chunk" if p.kind == "chat" else "text_completion"
    usage_field = {"usage": None} if p.include_usage else {}

    def chunk(delta: str | None, *, role: bool = False, reason: str | None = None, tokens=None) -> dict:  # noqa: ANN001
        if p.kind == "chat":
            d = {} if delta is None and not role else {"content": delta if delta is not None else ""}
            if role:
                d = {"role": "assistant", "content": ""}
            choice = {"index": 0, "delta": d, "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": reason, "logprobs": None}
        if tokens is not None:
            choice["token_ids"] = tokens
        return {**head, "choices": [choice], **usage_field}

    ids: list[int] = []
    try:
        if p.kind == "chat":
            yield _sse(chunk(None, role=True))
        elif p.echo:
            yield _sse(chunk(p.echo))
        pending: list[int] = []
        try:
            async for _, token, delta in events(p.job):
                if token is not None:
                    ids.append(token)
                    pending.append(token)
                if delta:
                    yield _sse(chunk(delta, tokens=pending if p.return_tokens else None))
                    pending = []
        except ApiError as exc:
            yield exc.sse()
            yield "data: [DONE]\n\n"
            return
        tail = await finish(request, p, ids)
        last = chunk(None, reason=p.job.finish_reason, tokens=pending if p.return_tokens else None)
        yield _sse({**last, "chip": tail["chip"], "timings": tail["timings"]})
        if p.include_usage:
            yield _sse({**head, "choices": [], **tail})
        yield "data: [DONE]\n\n"
    finally:
        p.job.cancel()  # the client went away (or we are done): stop the engine at its next token


async def _serve(request: Request, body: SamplingFields, kind: str):  # noqa: ANN202
    backend = _backend(request)
    try:
        p = prepare(request, body, kind)
        submit(request, p)
        if body.stream:
            return StreamingResponse(stream(request, p), media_type="text/event-stream", headers=SSE_HEADERS)
        return await collect(request, p)
    except ApiError as exc:
        known = backend.ready and backend.loaded.registry.known(body.model)
        backend.metrics.requests.labels(kind, body.model if known else "unknown", str(exc.status)).inc()
        raise


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):  # noqa: ANN201
    """OpenAI's text completion: `prompt` is a string (or a list of one, or token ids)."""
    return await _serve(request, body, "completion")


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request):  # noqa: ANN201
    """OpenAI's chat completion: `messages` rendered with the image's chat template."""
    return await _serve(request, body, "chat")
