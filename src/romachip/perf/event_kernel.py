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
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

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


@dataclass
class Schedule:
    """Start and end cycle of every task, and what each resource did."""

    tasks: list[Task]
    makespan_cycles: int
    busy_cycles: dict[str, int]

    def critical_bound_cycles(self) -> dict[str, int]:
        """The makespan split by bound kind along the critical path (walked back from the last task)."""
        out: dict[str, int] = {}
        if not self.tasks:
            return out
        i: int | None = max(range(len(self.tasks)), key=lambda k: (self.tasks[k].end, k))
        cursor = self.tasks[i].end
        while i is not None and cursor > 0:
            t = self.tasks[i]
            if t.stretched_by >= 0 and cursor > t.start + t.duration_cycles:
                # the tail past its own work waited for a streaming producer: that producer's bound
                tail = cursor - (t.start + t.duration_cycles)
                b = self.tasks[t.stretched_by].bound
                out[b] = out.get(b, 0) + tail
                cursor -= tail
            out[t.bound] = out.get(t.bound, 0) + max(0, cursor - t.start)
            cursor = min(cursor, t.start)
            if t.cause >= 0 and self.tasks[t.cause].end < cursor and t.cause_kind == FINISH:
                gap = cursor - self.tasks[t.cause].end  # a lag (hop latency) between producer and consumer
                out["latency"] = out.get("latency", 0) + gap
                cursor -= gap
            i = t.cause if t.cause >= 0 else None
        return out


class Simulator:
    """Build a task graph with `add`, then `run` it once."""

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
        return Schedule(tasks, makespan, busy_cycles)
