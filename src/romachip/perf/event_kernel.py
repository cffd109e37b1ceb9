"""A small discrete-event kernel (gem5/SimPy style): integer cycles, deterministic tie-break.

Work is a graph of tasks. A task needs one resource (a representative unit of a unit type, or a class
of NoC links) for `duration_cycles`; a resource serves one task at a time, the ready ones in order of
(ready time, priority, sequence number). A dependency is either
- `finish`: the task may start `lag` cycles after the other one ends, or
- `stream`: the task may start `lag` cycles after the other one *starts* and cannot end before
  `end_lag` cycles after the other one ends (a consumer fed by a producer that streams, e.g. an L-Unit
  accumulating an activation vector while the NoC is still delivering it: it starts when the first
  flit arrives and finishes a pipeline depth after the last one).

Events are (time, priority, seq) tuples on a heap, so two runs of the same graph give the same schedule
on any machine. Independent tasks on different resources overlap; tasks on one resource serialise.

`Simulator` keeps the graph in columns (one list per field, resources numbered) and builds Task objects
only when a caller reads `Schedule.tasks`: a design point runs ~1,500 tasks, and a sweep many design
points. Its event loop runs in C (`romachip.perf._events`, built by setup.py where a C compiler exists)
when the graph is one of int64 numbers, else in Python (`Simulator.run(kernel="python")`): the same loop,
the same schedule. `ReferenceSimulator` is the same kernel written plainly, one Task object per task;
tests hold both loops to it, task for task.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from itertools import chain

from romachip.native import optional_module

#: The C loop's functions and arguments this module calls (EVENTS_ABI in _events.c).
EVENTS_ABI = 1

# optional (setup.py): without it the Python loop runs every graph, with the same schedule
_events = optional_module(
    "romachip.perf._events",
    EVENTS_ABI,
    "the event kernel's C loop",
    "The Python loop runs meanwhile (same schedules, slower).",
)

#: Which event loop `Simulator.run` takes by default: "native" (the C loop) where it is built, else "python".
KERNEL = "native" if _events is not None else "python"
KERNELS = ("native", "python")

FINISH, STREAM = 0, 1
_READY, _END = 0, 1  # event kinds; at equal times, ends are handled after readiness of the same priority


@dataclass
class Task:
    name: str
    resource: str
    duration_cycles: int
    bound: str  # what limits this task: rom, macs, attention, lora, noc, vector, latency
    priority: int = 0
    deps: list[tuple[int, int, int]] = field(default_factory=list)  # (task id, FINISH|STREAM, lag cycles)
    end_lag: int = 0  # stream deps: cycles between the producer's end and this task's earliest end
    op: str = ""  # the graph op this task serves (several tasks may serve one op)
    start: int = -1
    end: int = -1
    cause: int = -1  # the task whose end (or start, when streamed) decided this task's start
    cause_kind: int = FINISH
    stretched_by: int = -1  # the streaming producer that made this task end later than start + duration


class Schedule:
    """Start and end cycle of every task, and what each resource did. `tasks` (Task objects) is built on
    first use from the columns the kernel filled: `start`, `end`, `cause`, `cause_kind`, `stretched_by`
    per task id, and the graph they ran (`graph`: names, resources, durations, bounds, ...)."""

    def __init__(self, graph: _Graph, start: list[int], end: list[int], cause: list[int], cause_kind: list[int],
                 stretched_by: list[int], makespan_cycles: int, busy_cycles: dict[str, int]) -> None:  # fmt: skip
        self.graph, self.start, self.end, self.cause, self.cause_kind = graph, start, end, cause, cause_kind
        self.stretched_by = stretched_by
        self.makespan_cycles, self.busy_cycles = makespan_cycles, busy_cycles
        self._tasks: list[Task] | None = None

    @classmethod
    def of_tasks(cls, tasks: list[Task], makespan_cycles: int, busy_cycles: dict[str, int]) -> Schedule:
        graph = _Graph()
        for t in tasks:
            graph.append(t.name, t.resource, t.duration_cycles, t.bound, t.priority, t.deps, t.end_lag, t.op)
        columns = ([t.start for t in tasks], [t.end for t in tasks], [t.cause for t in tasks])
        kinds, stretched = [t.cause_kind for t in tasks], [t.stretched_by for t in tasks]
        out = cls(graph, *columns, kinds, stretched, makespan_cycles, busy_cycles)
        out._tasks = tasks
        return out

    @property
    def tasks(self) -> list[Task]:
        if self._tasks is None:
            g = self.graph
            self._tasks = [
                Task(g.name[i], g.resources[g.res[i]], g.dur[i], g.bound[i], g.prio[i], g.deps(i), g.end_lag[i],
                     g.op[i], self.start[i], self.end[i], self.cause[i], self.cause_kind[i], self.stretched_by[i])
                for i in range(len(g.name))
            ]  # fmt: skip
        return self._tasks

    def critical_bound_cycles(self) -> dict[str, int]:
        """The makespan split by bound kind along the critical path (walked back from the last task)."""
        out: dict[str, int] = {}
        start, end, cause, stretched = self.start, self.end, self.cause, self.stretched_by
        dur, bound = self.graph.dur, self.graph.bound
        if not end:
            return out
        i = len(end) - 1 - end[::-1].index(max(end))  # the last task to end (ties: the latest added)
        cursor = end[i]
        while i >= 0 and cursor > 0:
            if stretched[i] >= 0 and cursor > start[i] + dur[i]:
                # the tail past its own work waited for a streaming producer: that producer's bound
                tail = cursor - (start[i] + dur[i])
                b = bound[stretched[i]]
                out[b] = out.get(b, 0) + tail
                cursor -= tail
            out[bound[i]] = out.get(bound[i], 0) + max(0, cursor - start[i])
            cursor = min(cursor, start[i])
            c = cause[i]
            if c >= 0 and end[c] < cursor and self.cause_kind[i] == FINISH:
                gap = cursor - end[c]  # a lag (hop latency) between producer and consumer
                out["latency"] = out.get("latency", 0) + gap
                cursor -= gap
            i = c
        return out


class _Graph:
    """A task graph in columns (task id -> field), resources numbered in order of first use."""

    def __init__(self) -> None:
        self.name: list[str] = []
        self.res: list[int] = []
        self.dur: list[int] = []
        self.bound: list[str] = []
        self.prio: list[int] = []
        self.after: list[tuple[int, ...]] = []
        self.stream: list[tuple[int, ...]] = []
        self.lag: list[int] = []
        self.end_lag: list[int] = []
        self.op: list[str] = []
        self.resources: list[str] = []
        self.res_id: dict[str, int] = {}

    def append(self, name, resource, duration, bound, priority, deps, end_lag, op) -> None:  # noqa: ANN001
        """A task from Task fields (deps as (task, kind, lag); one lag for all of a task's deps)."""
        after = tuple(d for d, kind, _ in deps if kind == FINISH)
        stream = tuple(d for d, kind, _ in deps if kind == STREAM)
        self.add(name, resource, duration, bound, priority, after, stream, deps[0][2] if deps else 0, end_lag, op)

    def add(self, name, resource, duration, bound, priority, after, stream, lag, end_lag, op) -> None:  # noqa: ANN001
        r = self.res_id.get(resource)
        if r is None:
            r = self.res_id[resource] = len(self.resources)
            self.resources.append(resource)
        self.name.append(name)
        self.res.append(r)
        self.dur.append(duration)
        self.bound.append(bound)
        self.prio.append(priority)
        self.after.append(after)
        self.stream.append(stream)
        self.lag.append(lag)
        self.end_lag.append(end_lag)
        self.op.append(op)

    def deps(self, i: int) -> list[tuple[int, int, int]]:
        lag = self.lag[i]
        return [(d, FINISH, lag) for d in self.after[i]] + [(d, STREAM, lag) for d in self.stream[i]]


class ReferenceSimulator:
    """Build a task graph with `add`, then `run` it once (the plain kernel `Simulator` is held to)."""

    def __init__(self) -> None:
        self.tasks: list[Task] = []

    def add(
        self,
        name: str,
        resource: str,
        duration_cycles: int,
        bound: str,
        *,
        after: list[int] | tuple[int, ...] = (),
        stream: list[int] | tuple[int, ...] = (),
        lag_cycles: int = 0,
        end_lag_cycles: int = 0,
        priority: int = 0,
        op: str = "",
    ) -> int:
        """Add a task; `after` are finish dependencies, `stream` are stream dependencies (both take the lag;
        stream dependencies also bound the end, `end_lag_cycles` after the producer's end)."""
        if duration_cycles < 0:
            raise ValueError(f"task {name!r}: negative duration {duration_cycles}")
        deps = [(d, FINISH, lag_cycles) for d in after] + [(d, STREAM, lag_cycles) for d in stream]
        for d, _, _ in deps:
            if not 0 <= d < len(self.tasks):
                raise ValueError(f"task {name!r} depends on unknown task {d}")
        self.tasks.append(Task(name, resource, int(duration_cycles), bound, priority, deps, int(end_lag_cycles), op))
        return len(self.tasks) - 1

    def run(self) -> Schedule:
        tasks = self.tasks
        n = len(tasks)
        waiting = [len(t.deps) for t in tasks]
        ready_at = [0] * n
        last_on: dict[str, int] = {}
        dependents: list[list[tuple[int, int, int]]] = [[] for _ in range(n)]
        for i, t in enumerate(tasks):
            for d, kind, lag in t.deps:
                dependents[d].append((i, kind, lag))
        events: list[tuple[int, int, int, int, int]] = []  # (time, kind, priority, seq, task)
        seq = 0
        for i in range(n):
            if waiting[i] == 0:
                events.append((0, _READY, tasks[i].priority, i, i))
        seq = n
        heapq.heapify(events)
        queues: dict[str, list[tuple[int, int, int, int]]] = {}  # resource -> heap (ready, prio, seq, task)
        busy_until: dict[str, int] = {}
        busy_cycles: dict[str, int] = {}
        makespan = 0

        def resolve(i: int, now: int, kind: int) -> None:
            nonlocal seq
            for j, dkind, lag in dependents[i]:
                if dkind != kind:
                    continue
                if now + lag >= ready_at[j]:
                    ready_at[j] = now + lag
                    tasks[j].cause, tasks[j].cause_kind = i, kind
                waiting[j] -= 1
                if waiting[j] == 0:
                    heapq.heappush(events, (ready_at[j], _READY, tasks[j].priority, seq, j))
                    seq += 1

        def dispatch(res: str, now: int) -> None:
            nonlocal seq
            q = queues.get(res)
            if not q or busy_until.get(res, -1) > now:
                return
            _, _, _, i = heapq.heappop(q)
            t = tasks[i]
            t.start = now
            if now > ready_at[i] and res in last_on:  # it waited for its resource, not for its inputs
                t.cause, t.cause_kind = last_on[res], FINISH
            last_on[res] = i
            end = now + t.duration_cycles
            for d, kind, _lag in t.deps:
                if kind == STREAM and tasks[d].end + t.end_lag > end:
                    end, t.stretched_by = tasks[d].end + t.end_lag, d
            t.end = end
            busy_until[res] = end
            busy_cycles[res] = busy_cycles.get(res, 0) + (end - now)
            resolve(i, now, STREAM)
            heapq.heappush(events, (end, _END, t.priority, seq, i))
            seq += 1

        while events:
            now, kind, _prio, _s, i = heapq.heappop(events)
            res = tasks[i].resource
            if kind == _READY:
                heapq.heappush(queues.setdefault(res, []), (now, tasks[i].priority, i, i))
            else:
                makespan = max(makespan, now)
                resolve(i, now, FINISH)
            dispatch(res, now)
        if any(t.end < 0 for t in tasks):
            stuck = next(t.name for t in tasks if t.end < 0)
            raise RuntimeError(f"task graph has a cycle or a missing dependency (first unscheduled: {stuck!r})")
        return Schedule.of_tasks(tasks, makespan, busy_cycles)


class Simulator:
    """Build a task graph with `add`, then `run` it once: `ReferenceSimulator`'s kernel on columns."""

    def __init__(self) -> None:
        self.graph = _Graph()

    def add(
        self,
        name: str,
        resource: str,
        duration_cycles: int,
        bound: str,
        *,
        after: list[int] | tuple[int, ...] = (),
        stream: list[int] | tuple[int, ...] = (),
        lag_cycles: int = 0,
        end_lag_cycles: int = 0,
        priority: int = 0,
        op: str = "",
    ) -> int:
        """Add a task; `after` are finish dependencies, `stream` are stream dependencies (both take the lag;
        stream dependencies also bound the end, `end_lag_cycles` after the producer's end)."""
        if duration_cycles < 0:
            raise ValueError(f"task {name!r}: negative duration {duration_cycles}")
        g = self.graph
        n = len(g.name)
        for d in (*after, *stream):
            if not 0 <= d < n:
                raise ValueError(f"task {name!r} depends on unknown task {d}")
        return self.task(name, resource, duration_cycles, bound, after, stream, lag_cycles, int(end_lag_cycles),
                         priority, op)  # fmt: skip

    def task(
        self,
        name: str,
        resource: str,
        duration_cycles: int,
        bound: str,
        after: tuple[int, ...] | list[int],
        stream: tuple[int, ...] | list[int],
        lag_cycles: int,
        end_lag_cycles: int,
        priority: int,
        op: str,
    ) -> int:
        """`add` with every argument in place and the dependencies taken as given: for the phase builder
        (timing.py), whose ~1,500 tasks a design point depend only on ids this simulator returned."""
        if duration_cycles < 0:
            raise ValueError(f"task {name!r}: negative duration {duration_cycles}")
        g = self.graph
        r = g.res_id.get(resource)
        if r is None:
            r = g.res_id[resource] = len(g.resources)
            g.resources.append(resource)
        g.name.append(name)
        g.res.append(r)
        g.dur.append(int(duration_cycles))
        g.bound.append(bound)
        g.prio.append(priority)
        g.after.append(tuple(after))
        g.stream.append(tuple(stream))
        g.lag.append(lag_cycles)
        g.end_lag.append(end_lag_cycles)
        g.op.append(op)
        return len(g.name) - 1

    def without(self, ranges: list[tuple[int, int]], alias: dict[int, int]) -> Simulator | None:
        """A new Simulator with this graph less the tasks of `ranges` ([start, stop) task ids, ascending,
        disjoint), the others renumbered in order, a dependency on a dropped task `d` redirected to
        `alias[d]`: the graph a build without those tasks' ops would have made, when what followed them
        waited only for the aliased tasks. None when a kept task depends on a dropped one without an alias
        (or the alias is itself dropped)."""
        g, out = self.graph, Simulator()
        n = len(g.name)
        new_id, kept, dropped, at = [], [], 0, 0  # old id -> new id (-1: dropped); kept id slices
        for start, stop in ranges:
            if not at <= start <= stop <= n:
                raise ValueError(f"task ranges must be ascending and disjoint within 0..{n}, got {ranges}")
            new_id += range(at - dropped, start - dropped)
            new_id += [-1] * (stop - start)
            kept.append(slice(at, start))
            dropped += stop - start
            at = stop
        new_id += range(at - dropped, n - dropped)
        kept.append(slice(at, n))
        for d, a in alias.items():  # a dropped task's dependents wait for its alias instead
            if new_id[d] < 0:
                if new_id[a] < 0:
                    return None
                new_id[d] = new_id[a]
        h = out.graph
        for name in ("name", "res", "dur", "bound", "prio", "lag", "end_lag", "op", "after", "stream"):
            column = getattr(g, name)
            setattr(h, name, list(chain.from_iterable([column[part] for part in kept])))
        for deps in (h.after, h.stream):
            for i, ds in enumerate(deps):
                if ds:
                    deps[i] = mapped = tuple([new_id[d] for d in ds])
                    if -1 in mapped:
                        return None
        h.resources, h.res_id = list(g.resources), dict(g.res_id)
        return out

    def run(self, *, kernel: str | None = None) -> Schedule:
        """Run the graph once. `kernel`: "native" (the C loop; an error where it is not built), "python", or
        None (the C loop where it is built and the graph is one of int64 numbers, else the Python loop)."""
        if kernel not in (None, *KERNELS):
            raise ValueError(f"unknown event kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
        if kernel == "native" and _events is None:
            raise RuntimeError("the event kernel's C loop (romachip.perf._events) is not built here")
        g = self.graph
        out = None
        if kernel != "python" and _events is not None:  # None: not an int64 graph, the Python loop takes it
            out = _events.run(g.res, g.dur, g.prio, g.lag, g.end_lag, g.after, g.stream, len(g.resources))
        if out is None:
            out = self._loop()
        start, end, cause, cause_kind, stretched_by, makespan, busy, first_use = out
        if -1 in end:
            stuck = g.name[end.index(-1)]
            raise RuntimeError(f"task graph has a cycle or a missing dependency (first unscheduled: {stuck!r})")
        busy_cycles = {g.resources[r]: busy[r] for r in first_use}
        return Schedule(g, start, end, cause, cause_kind, stretched_by, makespan, busy_cycles)

    def _loop(self) -> tuple:  # noqa: C901 - one event loop, kept whole so that its locals stay fast
        """The event loop in Python (_events.c is the same loop): (start, end, cause, cause_kind, stretched_by,
        makespan, busy cycles per resource id, resource ids in order of first use)."""
        g = self.graph
        n, res, dur, prio, lags, end_lags, streams = len(g.name), g.res, g.dur, g.prio, g.lag, g.end_lag, g.stream
        waiting = [len(a) + len(s) for a, s in zip(g.after, streams, strict=True)]
        ready_at, cause, cause_kind = [0] * n, [-1] * n, [FINISH] * n
        start, end, stretched_by = [-1] * n, [-1] * n, [-1] * n
        on_finish: list[list[int]] = [[] for _ in range(n)]  # dependents, in task order, by dependency kind
        on_start: list[list[int]] = [[] for _ in range(n)]
        for i in range(n):
            for d in g.after[i]:
                on_finish[d].append(i)
            for d in streams[i]:
                on_start[d].append(i)
        events = [(0, _READY, prio[i], i, i) for i in range(n) if waiting[i] == 0]  # (time, kind, prio, seq, task)
        heapq.heapify(events)
        seq = n
        resources = len(g.resources)
        queues: list[list[tuple[int, int, int, int]]] = [[] for _ in range(resources)]  # (ready, prio, seq, task)
        busy_until, last_on = [-1] * resources, [-1] * resources
        busy = [0] * resources
        first_use: list[int] = []  # resources in order of their first task (the busy dict's order)
        push, pop = heapq.heappush, heapq.heappop
        makespan = 0
        while events:
            now, kind, _prio, _s, i = pop(events)
            r = res[i]
            q = queues[r]
            if kind == _READY:
                if not q and busy_until[r] <= now:  # an idle resource, nothing queued: it takes this task now
                    k = i
                else:
                    push(q, (now, prio[i], i, i))
                    k = -1
            else:
                k = -1
                if now > makespan:
                    makespan = now
                for j in on_finish[i]:  # the dependents waiting for this task's end
                    t = now + lags[j]
                    if t >= ready_at[j]:
                        ready_at[j], cause[j], cause_kind[j] = t, i, FINISH
                    waiting[j] -= 1
                    if not waiting[j]:
                        push(events, (ready_at[j], _READY, prio[j], seq, j))
                        seq += 1
            if k < 0:
                if not q or busy_until[r] > now:
                    continue
                k = pop(q)[3]  # dispatch the resource's next ready task
            start[k] = now
            if now > ready_at[k] and last_on[r] >= 0:  # it waited for its resource, not for its inputs
                cause[k], cause_kind[k] = last_on[r], FINISH
            elif last_on[r] < 0:
                first_use.append(r)
            last_on[r] = k
            e = now + dur[k]
            for d in streams[k]:
                if end[d] + end_lags[k] > e:
                    e, stretched_by[k] = end[d] + end_lags[k], d
            end[k] = busy_until[r] = e
            busy[r] += e - now
            for j in on_start[k]:  # the dependents streaming from this task's start
                t = now + lags[j]
                if t >= ready_at[j]:
                    ready_at[j], cause[j], cause_kind[j] = t, k, STREAM
                waiting[j] -= 1
                if not waiting[j]:
                    push(events, (ready_at[j], _READY, prio[j], seq, j))
                    seq += 1
            push(events, (e, _END, prio[k], seq, k))
            seq += 1
        return start, end, cause, cause_kind, stretched_by, makespan, busy, first_use
