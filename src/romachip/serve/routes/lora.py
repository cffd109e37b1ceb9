"""POST /v1/load_lora_adapter and /v1/unload_lora_adapter, with vLLM's request shapes.

A load reads a PEFT folder from under `--adapter-dir` (serve/adapters.py says what is refused), the
bank writes it into the H-Units' SRAM or refuses it with the capacity planner's reason; the reply
carries what the load cost the chip. The adapter is listed in /v1/models as soon as the reply is sent.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from romachip.serve.errors import ApiError
from romachip.serve.schemas import LoadLoraRequest, UnloadLoraRequest

router = APIRouter(tags=["adapters"])


@router.post("/v1/load_lora_adapter")
async def load_lora_adapter(body: LoadLoraRequest, request: Request) -> dict:
    backend = request.app.state.backend
    registry = backend.loaded.registry
    try:
        op = await asyncio.to_thread(registry.load, body.lora_name, body.lora_path)
    except ApiError:
        backend.metrics.adapter_ops.labels("load", "refused").inc()
        raise
    backend.metrics.adapter_ops.labels("load", "ok").inc()
    return {
        "object": "lora_adapter.load",
        "lora_name": body.lora_name,
        "message": f"Success: LoRA adapter '{body.lora_name}' added successfully.",
        "sram": op.to_dict(),
    }


@router.post("/v1/unload_lora_adapter")
async def unload_lora_adapter(body: UnloadLoraRequest, request: Request) -> dict:
    backend = request.app.state.backend
    try:
        op = await asyncio.to_thread(backend.loaded.registry.unload, body.lora_name)
    except ApiError:
        backend.metrics.adapter_ops.labels("unload", "refused").inc()
        raise
    backend.metrics.adapter_ops.labels("unload", "ok").inc()
    return {
        "object": "lora_adapter.unload",
        "lora_name": body.lora_name,
        "message": f"Success: LoRA adapter '{body.lora_name}' removed successfully.",
        "sram": op.to_dict(),
    }
