"""One router per area of the API; `romachip.serve.app.create_app` includes them all."""

from romachip.serve.routes import generation, health, lora, metrics, models, web

ROUTERS = (health.router, models.router, generation.router, lora.router, metrics.router, web.router)

__all__ = ["ROUTERS"]
