"""Where tasks run: local processes (the default) or a Dask cluster (`local:N` or a scheduler address).

Both take batches of Tasks and yield their rows as they complete, with a bounded number of batches in
flight, so an interrupted sweep loses at most those. Tasks are pure (`dse.evaluate.evaluate_batch`);
only the driver writes results. A Dask `tcp://host:8786` scheduler is the same code path a SLURM or
Kubernetes deployment of dask-jobqueue / dask-kubernetes gives; its workers need this romachip installed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from romachip.dse.evaluate import evaluate_batch
from romachip.dse.points import Task
from romachip.errors import SweepError

DASK_CONNECT_TIMEOUT_S = 10
DASK_WORKER_TIMEOUT_S = 60


class Executor:
    """Runs batches of tasks; subclasses say where. Use as a context manager."""

    workers = 1
    description = "in this process"

    def imap(self, batches: Iterable[list[Task]]) -> Iterator[list[dict]]:
        for batch in batches:
            yield evaluate_batch(batch)

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _windowed(submit, result, wait_any, batches: Iterable[list[Task]], window: int) -> Iterator[list[dict]]:
    """Keep `window` batches in flight; yield each batch's rows as it completes; cancel the rest on exit."""
    source = iter(batches)
    inflight: set = set()

    def fill() -> None:
        while len(inflight) < window:
            batch = next(source, None)
            if batch is None:
                return
            inflight.add(submit(batch))

    try:
        fill()
        while inflight:
            for fut in wait_any(inflight):
                inflight.discard(fut)
                yield result(fut)
            fill()
    finally:
        for fut in inflight:
            fut.cancel()


def _ready(_: int) -> int:
    return os.getpid()


class LocalExecutor(Executor):
    """`workers` local processes, 1 = in this process. The processes are forked when the executor is made
    (before a progress bar or any other thread starts), so they start in milliseconds with romachip loaded."""

    def __init__(self, workers: int | None = None) -> None:
        n = workers if workers is not None else (os.cpu_count() or 1)
        if n < 1:
            raise SweepError(f"--workers must be >= 1, got {n}")
        self.workers = n
        self.description = "in this process" if n == 1 else f"{n} local processes"
        self._pool: ProcessPoolExecutor | None = None
        if n > 1:
            self._pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork"))
            list(self._pool.map(_ready, range(n)))  # n concurrent tasks start all n processes now

    def imap(self, batches: Iterable[list[Task]]) -> Iterator[list[dict]]:
        if self._pool is None:
            yield from super().imap(batches)
            return
        pool = self._pool

        def result(fut: Future) -> list[dict]:
            try:
                return fut.result()
            except BrokenProcessPool:
                raise SweepError(
                    "a worker process died (killed, or out of memory); the points finished so far are saved: "
                    "rerun with --resume"
                ) from None

        def wait_any(futs: set) -> set:
            return wait(futs, return_when=FIRST_COMPLETED).done

        yield from _windowed(lambda b: pool.submit(evaluate_batch, b), result, wait_any, batches, 2 * self.workers)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor(Executor):
    """Tasks on a Dask cluster: `local:N` starts a LocalCluster (N processes, one thread each), an address
    (`tcp://host:8786`) joins a running scheduler, `client=` uses a Client the caller owns."""

    def __init__(self, address: str | None = None, *, client: Any = None) -> None:
        import distributed  # imported only when a sweep asks for Dask

        self._cluster = None
        self._own_client = client is None
        if client is None:
            if address is None:
                raise SweepError("give --dask local:N or --dask tcp://HOST:PORT")
            client = self._connect(distributed, address)
        self.client = client
        self.workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
        self.description = f"Dask at {client.scheduler.address} ({self.workers} workers)"

    def _connect(self, distributed: Any, address: str) -> Any:
        if address.startswith("local:"):
            n = address.removeprefix("local:")
            if not n.isdigit() or int(n) < 1:
                raise SweepError(f"--dask {address!r}: write local:N with N >= 1 worker processes")
            self._cluster = distributed.LocalCluster(
                n_workers=int(n), threads_per_worker=1, processes=True, dashboard_address=None,
                silence_logs=logging.ERROR,
            )  # fmt: skip
            return distributed.Client(self._cluster, set_as_default=False)
        if "://" not in address:
            raise SweepError(f"--dask {address!r}: give local:N or a scheduler address such as tcp://host:8786")
        try:
            client = distributed.Client(address, timeout=DASK_CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SweepError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        try:
            client.wait_for_workers(1, timeout=DASK_WORKER_TIMEOUT_S)
        except TimeoutError:
            client.close()
            raise SweepError(
                f"the Dask scheduler at {address} has no workers after {DASK_WORKER_TIMEOUT_S} s"
            ) from None
        return client

    def imap(self, batches: Iterable[list[Task]]) -> Iterator[list[dict]]:
        import distributed

        source = iter(batches)
        inflight: set = set()
        done = distributed.as_completed(loop=self.client.loop)  # this client, not a global default one

        def submit() -> None:
            batch = next(source, None)
            if batch is not None:
                fut = self.client.submit(evaluate_batch, batch, pure=False)
                inflight.add(fut)
                done.add(fut)

        try:
            for _ in range(2 * self.workers):
                submit()
            for fut in done:
                inflight.discard(fut)
                try:
                    rows = fut.result()
                except distributed.KilledWorker as exc:
                    raise SweepError(
                        f"Dask lost the workers of a task ({exc}); finished points are saved: rerun with --resume"
                    ) from None
                submit()
                yield rows
        finally:
            for fut in inflight:
                fut.cancel()

    def close(self) -> None:
        if self._own_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


def make_executor(*, workers: int | None = None, dask: str | None = None) -> Executor:
    if dask is not None:
        if workers is not None:
            raise SweepError("give either --workers (local processes) or --dask, not both")
        return DaskExecutor(dask)
    return LocalExecutor(workers)
