"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the matching status.

Every failure a client can cause becomes an ApiError (or is mapped to one here: FastAPI's validation
errors, unknown routes, a RomachipError from the engine or the bank), so no route returns another shape.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from romachip.errors import AdapterError, CapacityError, RomachipError

INVALID = "invalid_request_error"


class ApiError(Exception):
    """An error reply: HTTP status, OpenAI error type/param/code, optional headers (e.g. Retry-After)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID,  # noqa: A002 (OpenAI's field name)
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def sse(self) -> str:
        """The error as one server-sent event (a stream that already started cannot change its status)."""
        return f"data: {json.dumps(self.body())}\n\n"


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                    param="model", code="model_not_found")  # fmt: skip


def from_romachip(exc: RomachipError, *, param: str | None = None) -> ApiError:
    """A RomachipError (a request the chip cannot serve, an adapter it cannot hold) as a 400."""
    code = "capacity_exceeded" if isinstance(exc, CapacityError) else None
    code = "invalid_adapter" if isinstance(exc, AdapterError) else code
    return ApiError(400, str(exc), param=param, code=code)


def _loc(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def validation_error(exc: RequestValidationError) -> ApiError:
    """FastAPI's 422 as OpenAI's 400: the first problem, its field as `param`."""
    errors = exc.errors()
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        return ApiError(400, "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                        "using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
                        code="invalid_json")  # fmt: skip
    param = _loc(tuple(first.get("loc", ())))
    where = f" for '{param}'" if param else ""
    return ApiError(400, f"Invalid value{where}: {first.get('msg', 'invalid')}", param=param, code="invalid_value")


def install_handlers(app: FastAPI) -> None:
    """Map every exception a route can raise to OpenAI's error shape."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        messages = {
            404: f"Unknown route {request.method} {request.url.path}",
            405: f"Method {request.method} is not allowed on {request.url.path}",
        }
        message = messages.get(exc.status_code, str(exc.detail))
        return ApiError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None).response()

    @app.exception_handler(RomachipError)
    async def _romachip(_: Request, exc: RomachipError) -> JSONResponse:
        return from_romachip(exc).response()
