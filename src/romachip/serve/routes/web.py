"""The chip's web page: GET / (chat) and GET /static/* (its files, no build step, no CDN), and the two reads
only the page needs besides the OpenAI routes:

- GET /v1/romachip/sram?context_tokens=N: the H-Units' SRAM as the bank holds it (bytes of each resident
  adapter, KV at N tokens of context, what the context cannot use, what is free) and the adapter folders a
  runtime load may read;
- GET /v1/romachip/baselines?context_tokens=N: the CPU/GPU/phone references (romachip.baselines) on the
  image's model and format at that context, for the page's comparison bar.

The page and its files are public (they hold no data); the two reads need the API key like every route.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from romachip.baselines import baseline, load_devices
from romachip.serve.adapters import CONFIG_NAME
from romachip.serve.errors import ApiError

router = APIRouter(tags=["web"])
STATIC = resources.files("romachip.serve") / "static"
#: The page's files by name (nothing else under /static/ is served).
FILES = {"app.js": "text/javascript", "style.css": "text/css"}


def page_response(html_name: str) -> HTMLResponse:
    """One of the shipped HTML pages (the chat page here, the sweep page in serve/sweep_page.py)."""
    return HTMLResponse((STATIC / html_name).read_text(encoding="utf-8"))


def static_response(name: str, files: dict[str, str]) -> FileResponse:
    """A page's file from static/, only if `files` (name -> media type) lists it; 404 otherwise."""
    if name not in files:
        raise ApiError(404, f"no file /static/{name}", code="not_found")
    with resources.as_file(STATIC / name) as path:
        return FileResponse(path, media_type=files[name], headers={"Cache-Control": "no-cache"})


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return page_response("index.html")


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str) -> FileResponse:
    return static_response(name, FILES)


def _adapter_folders(adapter_dir) -> list[str]:  # noqa: ANN001 (Path | None)
    """Sub-folders of the adapter folder that look like PEFT adapters (what a runtime load may name)."""
    if adapter_dir is None or not adapter_dir.is_dir():
        return []
    return sorted(p.name for p in adapter_dir.iterdir() if (p / CONFIG_NAME).is_file())


@router.get("/v1/romachip/sram")
async def sram(request: Request, context_tokens: int = Query(0, ge=0)) -> dict:
    """The SRAM budget: total, each resident adapter, KV at `context_tokens`, reserved, free (bytes)."""
    backend = request.app.state.backend
    registry = backend.loaded.registry
    with registry.lock:
        bank = registry.bank
        total = bank.sram_unit_bytes * bank.chip.matrix_units
        adapters = [{"name": n, "sram_bytes": bank.stored(n).nbytes} for n in bank.names]
        max_ctx, limit = bank.context()
        spec = bank.spec
        per_token = bank.kv.token_bytes(layers=spec.num_layers, kv_heads=spec.num_kv_heads, head_dim=spec.head_dim)
    lora = sum(a["sram_bytes"] for a in adapters)
    used_ctx = min(context_tokens, max_ctx)
    # What neither the adapters nor a full context can use: word rounding, the fullest unit's leftovers.
    other = max(total - lora - per_token * max_ctx, 0)
    kv = per_token * used_ctx
    return {
        "sram_bytes": total,
        "adapters": adapters,
        "kv_bytes_per_token": per_token,
        "context_tokens": used_ctx,
        "kv_bytes": kv,
        "unusable_bytes": other,
        "free_bytes": max(total - lora - other - kv, 0),
        "max_context_tokens": max_ctx,
        "context_limit": limit,
        "adapter_dir": backend.config.adapter_dir is not None,
        "adapter_folders": _adapter_folders(backend.config.adapter_dir),
    }


@router.get("/v1/romachip/baselines")
async def baselines(request: Request, context_tokens: int = Query(1, ge=1)) -> dict:
    """Decode tokens/s and energy per token of the reference devices on this image's model and format."""
    image = request.app.state.backend.loaded.image
    rows = []
    for device in load_devices():
        b = baseline(device, image.spec, image.fmt, context_tokens)
        rows.append({"device": b.device, "tokens_per_s": b.tokens_per_s, "energy_per_token_mj": b.energy_per_token_mj,
                     "efficiency_source": b.efficiency_source, "bound": b.bound})  # fmt: skip
    return {"model": image.spec.name, "context_tokens": context_tokens, "devices": rows}
