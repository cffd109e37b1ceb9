"""Two guards in front of every route, as plain ASGI middleware so that no route can forget them:
the API key (every path but the public ones, unknown paths included) and the request body size."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from romachip.serve.errors import ApiError


async def _reply(send: Send, error: ApiError) -> None:
    response = error.response()
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:  # a JSONResponse never reads the request
    return {"type": "http.disconnect"}


class ApiKeyMiddleware:
    """401 in OpenAI's shape unless `Authorization: Bearer KEY` matches (compared in constant time)."""

    def __init__(
        self, app: ASGIApp, *, api_key: str | None, public_paths: frozenset[str], public_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app, self.key, self.public, self.prefixes = app, api_key, public_paths, public_prefixes

    def _public(self, path: str) -> bool:
        return path in self.public or any(path.startswith(p) for p in self.prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.key is None or self._public(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await _reply(send, ApiError(401, "You didn't provide an API key. You need to provide your API key in an "
                                        "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                                        code="missing_api_key"))  # fmt: skip
            return
        if not hmac.compare_digest(token.strip().encode(), self.key.encode()):
            await _reply(send, ApiError(401, "Incorrect API key provided.", code="invalid_api_key"))
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 when a body is larger than `max_bytes`: by its Content-Length, or counted as it arrives."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> ApiError:
        return ApiError(413, f"The request body is larger than this server's limit of {self.max_bytes:,} bytes.",
                        code="request_too_large")  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _reply(send, self._too_large())
            return
        # Read the whole body first (up to the limit), so a chunked body over it is refused before any route
        # runs; the route then receives it in one message, and later messages (a disconnect) pass through.
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                await _reply(send, self._too_large())
                return
            more = message.get("more_body", False)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)


def _replay(first: list[Message], receive: Receive) -> Receive:
    pending = list(first)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
