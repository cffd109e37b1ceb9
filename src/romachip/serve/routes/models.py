"""GET /v1/models (the base and every resident adapter, vLLM-style `parent`) and /v1/models/{id}."""

from __future__ import annotations

from fastapi import APIRouter, Request

from romachip.serve.errors import model_not_found

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    return {"object": "list", "data": request.app.state.backend.loaded.registry.cards()}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict:
    for card in request.app.state.backend.loaded.registry.cards():
        if card["id"] == model_id:
            return card
    raise model_not_found(model_id)
