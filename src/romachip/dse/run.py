"""The sweep driver: plan the points, skip those done, run the rest on an executor, write the results.

`run_sweep(plan, out, executor=...)` is the one entry point. The driver alone writes (ResultStore);
tasks are pure. It evaluates the base design first (the reference of `base` constraints and of every
comparison), then the grid, a seeded random sample, or NSGA-II generations (Optuna's sampler, asked
and told here so that its trials run on the same executor as everything else).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from romachip.dse.evaluate import STATUS_OK
from romachip.dse.executors import Executor
from romachip.dse.pareto import constraint_margins
from romachip.dse.points import SweepPlan, Task
from romachip.dse.results import ResultStore, read_rows
from romachip.errors import SweepError

DEFAULT_MAX_POINTS = 20_000
FLUSH_ROWS = 256
FLUSH_SECONDS = 10.0

Progress = Callable[[int, int], None]


@dataclass
class SweepSummary:
    """What a run did. `points` counts tasks (design x workload), base designs included."""

    out: str
    points: int
    computed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    executor: str = ""
    by_status: dict[str, int] = field(default_factory=dict)

    @property
    def points_per_s(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["points_per_s"] = self.points_per_s
        return d


def planned_points(plan: SweepPlan) -> int:
    """Tasks the sweep will run, before any starts: base designs plus the search's points x workloads."""
    s = plan.spec.search
    n = len(plan.workloads)
    if s.method == "grid":
        return n + plan.grid_points * n
    if s.method == "random":
        return n + min(s.budget or 0, plan.grid_points) * n
    return n + (s.budget or 0)


def _batches(tasks: Iterable[Task], size: int) -> Iterator[list[Task]]:
    batch: list[Task] = []
    for t in tasks:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Run:
    """One run's state: the store, the executor, progress and the summary."""

    def __init__(self, plan: SweepPlan, store: ResultStore, executor: Executor, summary: SweepSummary,
                 progress: Progress | None, batch_size: int) -> None:  # fmt: skip
        self.plan, self.store, self.executor, self.summary = plan, store, executor, summary
        self.progress, self.batch_size = progress, batch_size
        self.done = 0
        self.last_flush = time.monotonic()

    def tick(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.summary.points)

    def run(self, tasks: Iterable[Task]) -> list[dict]:
        """Evaluate the tasks not done yet; the rows of the computed ones."""
        todo = []
        for t in tasks:
            if t.key in self.store.done:
                self.summary.skipped += 1
                self.tick(1)
            else:
                todo.append(t)
        rows: list[dict] = []
        for batch_rows in self.executor.imap(_batches(todo, self.batch_size)):
            for row in batch_rows:
                if row.get("model_version") not in (None, self.plan.version):
                    raise SweepError(
                        f"a worker runs romachip model {row['model_version']}, the driver {self.plan.version}: "
                        "install the same romachip on every worker"
                    )
                self.summary.by_status[row["status"]] = self.summary.by_status.get(row["status"], 0) + 1
            self.store.add(batch_rows)
            self.summary.computed += len(batch_rows)
            rows += batch_rows
            self.tick(len(batch_rows))
            if len(self.store.pending) >= FLUSH_ROWS or time.monotonic() - self.last_flush > FLUSH_SECONDS:
                self.store.flush()
                self.last_flush = time.monotonic()
        return rows


def check_size(plan: SweepPlan, max_points: int) -> int:
    """The sweep's task count; SweepError (before anything is written) above `max_points`."""
    total = planned_points(plan)
    if total > max_points:
        raise SweepError(
            f"the sweep has {total:,} points ({plan.grid_points:,} designs x {len(plan.workloads)} workload(s)), "
            f"above --max-points {max_points:,}; raise --max-points to run it, or use search: random / nsga2"
        )
    return total


def run_sweep(
    plan: SweepPlan,
    out: str | Path,
    *,
    executor: Executor,
    resume: bool = False,
    max_points: int = DEFAULT_MAX_POINTS,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> SweepSummary:
    """Run a sweep into `out`. Refuses (SweepError, nothing written) above `max_points` tasks."""
    total = check_size(plan, max_points)
    store = ResultStore(out, plan, resume=resume)
    summary = SweepSummary(out=str(out), points=total, executor=executor.description)
    state = _Run(plan, store, executor, summary, progress, batch_size)
    start = time.monotonic()
    try:
        state.run(plan.base_task(w) for w in plan.workloads)
        s = plan.spec.search
        if s.method == "grid":
            state.run(plan.task(v, w) for v in plan.grid() for w in plan.workloads)
        elif s.method == "random":
            state.run(plan.task(v, w) for v in plan.sample(s.budget or 0, s.seed) for w in plan.workloads)
        else:
            _nsga2(plan, state)
    finally:
        store.flush()
        summary.seconds = time.monotonic() - start
    return summary


def _nsga2(plan: SweepPlan, state: _Run) -> None:
    """NSGA-II over the axes (categorical), one generation per executor round. Deterministic for a seed,
    so a resumed run asks the same points and finds them done."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec, wl = plan.spec, plan.workloads[0]
    known = {r["key"]: r for r in read_rows(state.store.out)}
    base = known.get(plan.base_task(wl).key)
    constraints = spec.parsed_constraints()
    sampler = optuna.samplers.NSGAIISampler(population_size=spec.search.population, seed=spec.search.seed)
    study = optuna.create_study(directions=[o.direction + "imize" for o in spec.objectives], sampler=sampler)
    dists = {ax.path.text: CategoricalDistribution(ax.values) for ax in plan.axes}
    asked = 0
    while asked < (spec.search.budget or 0):
        n = min(spec.search.population, (spec.search.budget or 0) - asked)
        trials = [study.ask(dists) for _ in range(n)]
        tasks = [plan.task(tuple(t.params[a.path.text] for a in plan.axes), wl) for t in trials]
        fresh = {t.key: t for t in tasks if t.key not in known}
        for row in state.run(fresh.values()):
            known[row["key"]] = row
        state.tick(n - len(fresh))  # trials whose point was already known
        for trial, task in zip(trials, tasks, strict=True):
            row = known[task.key]
            values = [row.get(o.metric) for o in spec.objectives]
            if row["status"] != STATUS_OK or any(v is None or not math.isfinite(v) for v in values):
                study.tell(trial, state=TrialState.FAIL)
                continue
            for i, margin in enumerate(constraint_margins(row, constraints, base)):
                trial.set_constraint(f"c{i}", margin)  # <= 0: feasible (constrained domination)
            study.tell(trial, values)
        asked += n
