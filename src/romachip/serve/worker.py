"""The engine worker: one thread that runs requests one at a time, fed by a bounded queue.

One engine in one process, one request at a time: a request's tokens cannot depend on what else is in
flight (nothing is shared between requests but the frozen ROM model; each gets a fresh KV cache and its
own immutable adapter view), and the torch thread count, which is process-wide, is only ever set by
this thread. The event loop never computes: it submits a Job and reads its events from an asyncio
queue, which the worker fills with `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from romachip.engine.generate import Engine
from romachip.errors import RomachipError
from romachip.serve.text import TextStream
from romachip.sram.storage import AdapterView


class QueueFull(Exception):
    """The queue holds max_queue requests already."""


@dataclass
class Job:
    """One generation request, as the worker runs it; results come back as events on `events`."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    adapter: AdapterView | None
    text: TextStream
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_s: float = field(default_factory=time.perf_counter)
    started_s: float = 0.0
    first_token_s: float = 0.0
    finished_s: float = 0.0
    finish_reason: str = "length"

    def cancel(self) -> None:
        self.cancelled.set()

    def post(self, *event: object) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed (server shutting down): nobody is listening
            self.cancelled.set()


class EngineWorker:
    """Runs Jobs on `engine` in submission order, on its own daemon thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_queue: int,
        on_cancel: Callable[[], None] | None = None,
        bank_lock: threading.Lock | None = None,
    ) -> None:
        self.engine = engine
        self._bank_lock = bank_lock or threading.Lock()  # held while a session's cache is sized from the bank
        self.on_cancel = on_cancel  # called on this thread for each job dropped or stopped because it was cancelled
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._running = 0
        self.current: Job | None = None  # the job running now
        self._thread = threading.Thread(target=self._loop, name="romachip-engine", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the one running)."""
        return self._queue.qsize()

    @property
    def running(self) -> int:
        return self._running

    def submit(self, job: Job) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull from None

    def close(self, timeout_s: float = 5.0) -> None:
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return  # a daemon thread: it ends with the process
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            if job.cancelled.is_set():
                self._cancelled(job)
                continue
            self._running, self.current = 1, job
            try:
                self._run(job)
            except Exception as exc:  # noqa: BLE001 (the worker outlives any one request; the client gets it)
                job.post("error", exc)
            finally:
                self._running, self.current = 0, None

    def _cancelled(self, job: Job) -> None:
        job.post("cancelled")
        if self.on_cancel is not None:
            self.on_cancel()

    def _run(self, job: Job) -> None:
        """One Session (its own KV cache, sampler and adapter view) stepped to the end, a stop sequence, or
        the client's cancellation, which is checked between tokens."""
        job.started_s = time.perf_counter()
        try:
            with self._bank_lock:
                session = self.engine.start(job.prompt_ids, job.adapter, max_tokens=job.max_tokens,
                                            temperature=job.temperature, top_p=job.top_p, seed=job.seed)  # fmt: skip
            while not session.finished and not job.cancelled.is_set():
                token = session.step()
                if not job.first_token_s:
                    job.first_token_s = time.perf_counter()
                job.post("token", token, job.text.push(token))
                if job.text.stopped:
                    break
        except RomachipError as exc:
            job.post("error", exc)
            return
        job.finished_s = time.perf_counter()
        if job.cancelled.is_set():
            self._cancelled(job)
            return
        job.finish_reason = "stop" if job.text.stopped or session.stopped_on_eos else "length"
        tail = job.text.finish()
        if tail:
            job.post("token", None, tail)
        job.post("done", job.finish_reason)
