"""What the routes share: the loaded image, engine, adapter registry, worker, chip timer and metrics.

The backend loads in a background thread so that /health can answer 503 while the image opens and the
start-up adapters are read; every other route answers 503 until it is ready.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from romachip.engine.generate import Engine
from romachip.rom import RomImage
from romachip.serve.adapters import AdapterRegistry
from romachip.serve.chip import ChipTimer
from romachip.serve.config import DEFAULT_RESERVED_CONTEXT, ServeConfig
from romachip.serve.errors import ApiError
from romachip.serve.metrics import Metrics
from romachip.serve.worker import EngineWorker
from romachip.sram.bank import AdapterBank
from romachip.workload import KvConfig

log = logging.getLogger("romachip.serve")


@dataclass
class Loaded:
    image: RomImage
    engine: Engine
    registry: AdapterRegistry
    worker: EngineWorker
    timer: ChipTimer


class Backend:
    def __init__(self, config: ServeConfig, *, on_fatal: Callable[[BaseException], None] | None = None) -> None:
        self.config = config
        self.on_fatal = on_fatal
        self.error: BaseException | None = None
        self._loaded: Loaded | None = None
        self._ready = threading.Event()
        self.metrics = Metrics(
            queue_depth=lambda: self._loaded.worker.depth if self._loaded else 0,
            running=lambda: self._loaded.worker.running if self._loaded else 0,
        )

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._load_or_fail, name="romachip-load", daemon=True)
        thread.start()
        return thread

    def _load_or_fail(self) -> None:
        try:
            self.load()
        except BaseException as exc:  # noqa: BLE001 (reported through /health and on_fatal)
            self.error = exc
            log.error("romachip serve: loading failed: %s", exc)
            if self.on_fatal is not None:
                self.on_fatal(exc)

    def load(self) -> None:
        c = self.config
        image = RomImage.open(c.image)
        engine = Engine(image.model(), chip=image.chip, threads=c.threads, placement=image.placement)
        engine.tokenizer  # noqa: B018 (parse it now, not during the first request)
        reserve = c.reserved_context
        if reserve is None:  # the default, but never more than the chip holds with no adapter at all
            empty = AdapterBank.for_image(image, kv=KvConfig(dtype=engine.kv, context_tokens=0))
            reserve = min(DEFAULT_RESERVED_CONTEXT, empty.max_context_tokens)
        kv = KvConfig(dtype=engine.kv, context_tokens=reserve)
        bank = AdapterBank.for_image(image, kv=kv, precision=c.lora_precision)
        engine.bank = bank  # the bank decides the engine's context (its residents, the image's placement)
        registry = AdapterRegistry(bank, image.spec.name, c.adapter_dir)
        for name, folder in c.adapters:
            registry.load_trusted(name, folder)
        timer = ChipTimer(image)
        worker = EngineWorker(engine, max_queue=c.max_queue, on_cancel=self.metrics.cancelled.inc,
                              bank_lock=registry.lock)  # fmt: skip
        self._loaded = Loaded(image, engine, registry, worker, timer)
        self._ready.set()
        log.info("romachip serve: %s ready (%d adapters)", image.spec.name, len(c.adapters))

    def close(self) -> None:
        if self._loaded is not None:
            self._loaded.worker.close()

    def wait_ready(self, timeout_s: float) -> bool:
        return self._ready.wait(timeout_s)

    # -- what routes use ---------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def loaded(self) -> Loaded:
        if self._loaded is None:
            if self.error is not None:
                raise ApiError(503, f"the server failed to load its image: {self.error}", type="unavailable_error",
                               code="load_failed")  # fmt: skip
            raise ApiError(503, "Loading model", type="unavailable_error", code="loading",
                           headers={"Retry-After": "1"})  # fmt: skip
        return self._loaded

    def context_limit(self, view) -> int:  # noqa: ANN001 (AdapterView | None)
        """Tokens of context a request may use, as the bank decides it (next to every resident adapter)."""
        lo = self.loaded
        with lo.registry.lock:
            return lo.engine.max_context(view)
