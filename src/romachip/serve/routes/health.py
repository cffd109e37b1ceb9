"""GET /health: 503 while the image loads (or if it failed to), then 200 (public: no API key)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    backend = request.app.state.backend
    if backend.ready:
        return JSONResponse({"status": "ok"})
    if backend.error is not None:
        body = {
            "status": "error",
            "error": {
                "message": f"loading failed: {backend.error}",
                "type": "unavailable_error",
                "param": None,
                "code": "load_failed",
            },
        }
    else:
        body = {"status": "loading", "error": {"message": "Loading model", "type": "unavailable_error",
                                               "param": None, "code": "loading"}}  # fmt: skip
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
