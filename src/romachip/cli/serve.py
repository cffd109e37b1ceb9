"""`romachip serve`: the chip behind an OpenAI-compatible HTTP API (docs/serving.md)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import typer

from romachip.cli.adapters import parse_adapter_options
from romachip.cli.app import THREADS_HELP, app, err_console, print_json
from romachip.errors import RomachipError
from romachip.files import read_text
from romachip.serve.config import DEFAULT_MAX_QUEUE, DEFAULT_MAX_TOKENS, DEFAULT_RESERVED_CONTEXT, ServeConfig

ADAPTER_HELP = "An adapter resident from the start, NAME=DIR (a PEFT LoRA folder); repeatable."


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api_key(key: str | None, key_file: str | None) -> str | None:
    if key and key_file:
        raise RomachipError("give --api-key or --api-key-file, not both")
    if key_file:
        key = read_text(key_file, what="--api-key-file", max_bytes=64 * 1024).strip()
        if not key:
            raise RomachipError(f"--api-key-file {key_file} is empty")
    return key or None


def build_config(
    image: str,
    adapter: list[str],
    adapter_dir: str | None,
    api_key: str | None,
    max_queue: int,
    max_tokens: int,
    threads: int,
    reserved_context: int | None,
    lora_precision: str | None,
) -> ServeConfig:
    """Check the options a user can get wrong before anything starts; the image itself loads in the server."""
    path = Path(image)
    if not path.is_file():
        raise RomachipError(f"ROM image {image} does not exist (write one with `romachip burn`)")
    if adapter_dir is not None and not Path(adapter_dir).is_dir():
        raise RomachipError(f"--adapter-dir {adapter_dir} is not a folder")
    for name, value in (("--max-queue", max_queue), ("--max-tokens", max_tokens), ("--threads", threads)):
        if value < 1:
            raise RomachipError(f"{name} must be at least 1, got {value}")
    if reserved_context is not None and reserved_context < 0:
        raise RomachipError(f"--reserve-context must be >= 0, got {reserved_context}")
    return ServeConfig(
        image=path, adapters=tuple(parse_adapter_options(adapter)),
        adapter_dir=Path(adapter_dir) if adapter_dir else None, api_key=api_key, max_queue=max_queue,
        max_tokens=max_tokens, threads=threads, reserved_context=reserved_context, lora_precision=lora_precision,
    )  # fmt: skip


@app.command()
def serve(
    image: str = typer.Argument(..., help="A ROM image written by `romachip burn`."),
    adapter: list[str] = typer.Option(None, "--adapter", help=ADAPTER_HELP),  # noqa: B008
    adapter_dir: str = typer.Option(
        None, "--adapter-dir", help="The only folder `POST /v1/load_lora_adapter` may read adapters from."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    api_key: str = typer.Option(None, "--api-key", help="Require this Bearer key on every route but /health."),
    api_key_file: str = typer.Option(None, "--api-key-file", help="Read the API key from this file (first line)."),
    max_queue: int = typer.Option(DEFAULT_MAX_QUEUE, "--max-queue", min=1, help="Requests that may wait; beyond: 429."),
    max_tokens: int = typer.Option(
        DEFAULT_MAX_TOKENS, "--max-tokens", min=1, help="Default and largest max_tokens a request may ask for."
    ),
    threads: int = typer.Option(1, "--threads", min=1, max=1024, help=THREADS_HELP),
    reserve_context: int = typer.Option(
        None,
        "--reserve-context",
        min=0,
        help=f"KV tokens every request may count on: an adapter load leaving fewer is refused (default "
        f"{DEFAULT_RESERVED_CONTEXT}, or what the chip holds if less).",
    ),
    lora_precision: str = typer.Option(None, "--lora-precision", help="fp8_e4m3, fp16 or bf16 (default: the chip's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the server's settings as JSON once it is up."),
) -> None:
    """Serve a ROM image over an OpenAI-compatible API: /v1/completions, /v1/chat/completions (streamed or
    not), /v1/models, runtime LoRA loading, /metrics and /health. Every reply carries the simulated chip's
    time and energy for that request (`chip`) next to OpenAI's `usage`. See docs/serving.md."""
    import uvicorn

    from romachip.serve import create_app

    key = _api_key(api_key, api_key_file)
    config = build_config(image, adapter or [], adapter_dir, key, max_queue, max_tokens, threads, reserve_context,
                          lora_precision)  # fmt: skip
    if not _is_loopback(host) and key is None:
        err_console.print(f"[bold yellow]warning:[/] binding {host} without an API key: anyone who can reach this "
                          "port can use the server; give --api-key or --api-key-file")  # fmt: skip
    failure: list[BaseException] = []
    server: uvicorn.Server | None = None

    def fatal(exc: BaseException) -> None:
        failure.append(exc)
        if server is not None:
            server.should_exit = True

    web = create_app(config, on_fatal=fatal)
    log = logging.getLogger("romachip.serve")  # its load messages on stderr, beside uvicorn's
    if not log.handlers:
        log.addHandler(logging.StreamHandler())
        log.setLevel(logging.INFO)
    server = uvicorn.Server(uvicorn.Config(web, host=host, port=port, log_level="info", access_log=False))
    settings = {"url": f"http://{host}:{port}", "image": str(config.image), "adapters": [n for n, _ in config.adapters],
                "adapter_dir": adapter_dir, "api_key": key is not None, "max_queue": max_queue}  # fmt: skip
    if as_json:
        print_json(settings)
    else:
        err_console.print(f"[bold]romachip serve[/] {config.image} on {settings['url']} (OpenAI base URL "
                          f"{settings['url']}/v1); loading ...")  # fmt: skip
    server.run()
    if failure:
        exc = failure[0]
        raise exc if isinstance(exc, RomachipError) else RomachipError(f"the server could not load: {exc}")
