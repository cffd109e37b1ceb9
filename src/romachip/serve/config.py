"""What `romachip serve` is started with: one frozen ServeConfig the app factory and the CLI share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: Requests waiting for the engine beyond the one it runs; one more is refused with 429.
DEFAULT_MAX_QUEUE = 64
#: Tokens a request generates when it names no max_tokens (and the most it may ask for, unless raised).
DEFAULT_MAX_TOKENS = 256
#: Largest request body accepted (413 beyond): far above any prompt the chip's context could hold.
DEFAULT_MAX_BODY_BYTES = 4 * 2**20
#: KV context every request may count on: a runtime adapter load that would leave less is refused
#: (capped at what the chip holds with no adapter, e.g. a model's own position limit).
DEFAULT_RESERVED_CONTEXT = 2048


@dataclass(frozen=True)
class ServeConfig:
    """Everything the server needs to start; paths are resolved by the backend when it loads.

    adapters:      (name, folder) pairs loaded at start-up (given by the operator: trusted paths).
    adapter_dir:   the only folder runtime loads (`POST /v1/load_lora_adapter`) may read from; None
                   disables runtime loading.
    api_key:       when set, every route but /health needs `Authorization: Bearer KEY`.
    threads:       torch threads of the engine (never changes a result).
    """

    image: Path
    adapters: tuple[tuple[str, Path], ...] = ()
    adapter_dir: Path | None = None
    api_key: str | None = None
    max_queue: int = DEFAULT_MAX_QUEUE
    max_tokens: int = DEFAULT_MAX_TOKENS
    threads: int = 1
    reserved_context: int | None = None  # None: DEFAULT_RESERVED_CONTEXT, or less if the chip holds less
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    lora_precision: str | None = None
    public_paths: frozenset[str] = field(default_factory=lambda: frozenset({"/health", "/"}))  # exact paths, no key
    public_prefixes: tuple[str, ...] = ("/static/",)  # every path under them needs no key (the page's files)
