"""GET /metrics: Prometheus text format (behind the API key like every route but /health)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from romachip.serve.metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.backend.metrics.render(), media_type=CONTENT_TYPE)
