"""The app factory: `create_app(config)` -> a FastAPI app with one router per area, the two guards
(API key, body size), OpenAI-shaped errors, and a backend that loads in the background on start-up.

To add an area (a web page, say), include another router on the returned app, or pass it in
`extra_routers`; paths that need no API key go in `ServeConfig.public_paths` (exact) or
`ServeConfig.public_prefixes`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from romachip.serve.backend import Backend
from romachip.serve.config import ServeConfig
from romachip.serve.errors import install_handlers
from romachip.serve.middleware import ApiKeyMiddleware, BodyLimitMiddleware
from romachip.serve.routes import ROUTERS


def create_app(
    config: ServeConfig,
    *,
    extra_routers: Iterable[APIRouter] = (),
    on_fatal: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    backend = Backend(config, on_fatal=on_fatal)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        backend.start()
        try:
            yield
        finally:
            backend.close()

    app = FastAPI(title="romachip serve", summary="The ROMA chip behind an OpenAI-compatible API",
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)  # fmt: skip
    app.state.backend = backend
    for router in (*ROUTERS, *extra_routers):
        app.include_router(router)
    install_handlers(app)
    # Starlette runs the last-added middleware first: the size limit, then the key, then the routes.
    app.add_middleware(ApiKeyMiddleware, api_key=config.api_key, public_paths=config.public_paths,
                       public_prefixes=config.public_prefixes)  # fmt: skip
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    return app
