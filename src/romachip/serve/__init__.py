"""`romachip serve`: the chip behind an OpenAI-compatible HTTP API (docs/serving.md).

`create_app(ServeConfig(image=...))` builds the FastAPI app: /health, /v1/models, /v1/completions,
/v1/chat/completions (streamed or not), /v1/load_lora_adapter, /v1/unload_lora_adapter, /metrics. Every
reply carries OpenAI's `usage`, the perf model's `chip` object for that request, and host `timings`.
"""

from romachip.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str):  # noqa: ANN202
    # create_app on first use: importing the config (as `romachip --help` does) needs no FastAPI or torch
    if name == "create_app":
        from romachip.serve.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
