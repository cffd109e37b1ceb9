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


async def _adapter_op(request: Request, kind: str, name: str, done: str, *args: str) -> dict:
    """Run a registry load/unload off the event loop, count it in /metrics, and answer in vLLM's shape."""
    backend = request.app.state.backend
    registry = backend.loaded.registry
    try:
        op = await asyncio.to_thread(getattr(registry, kind), name, *args)
    except ApiError:
        backend.metrics.adapter_ops.labels(kind, "refused").inc()
        raise
    backend.metrics.adapter_ops.labels(kind, "ok").inc()
    return {
        "object": f"lora_adapter.{kind}",
        "lora_name": name,
        "message": f"Success: LoRA adapter '{name}' {done} successfully.",
        "sram": op.to_dict(),
    }


@router.post("/v1/load_lora_adapter")
async def load_lora_adapter(body: LoadLoraRequest, request: Request) -> dict:
    return await _adapter_op(request, "load", body.lora_name, "added", body.lora_path)


@router.post("/v1/unload_lora_adapter")
async def unload_lora_adapter(body: UnloadLoraRequest, request: Request) -> dict:
    return await _adapter_op(request, "unload", body.lora_name, "removed")
