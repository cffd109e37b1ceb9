"""Chrome / Perfetto trace (JSON) of simulated schedules: one process per phase, one track per resource.

Each task is a complete event (`ph: "X"`) with its start and duration in microseconds at the chip's
clock; metadata events (`ph: "M"`) name the processes (phases) and threads (the representative
L-Unit, H-Unit and vector unit of each group, and the NoC link classes). Open the file at
https://ui.perfetto.dev or chrome://tracing.
"""

from __future__ import annotations

import json
from pathlib import Path

from romachip.atomic import atomic_open
from romachip.perf.event_kernel import Schedule

TRACK_NAMES = {
    "L": "L-Unit",
    "H": "H-Unit",
    "V": "vector units",
    "noc.down": "NoC links: vector row -> matrix units",
    "noc.up": "NoC links: matrix units -> vector row",
    "noc.row": "NoC links: along the vector row",
    "host": "host link",
}


def track_name(resource: str) -> str:
    """Human name of a resource: `L0` -> `L-Unit (group 0)`, `H0.q_proj` -> `H-Unit (group 0) q_proj`."""
    if resource in TRACK_NAMES:
        return TRACK_NAMES[resource]
    head, _, rest = resource.partition(".")
    kind, group = head[:1], head[1:]
    if kind in ("L", "H") and group.isdigit():
        name = f"{TRACK_NAMES[kind]} (group {group})"
        return f"{name} {rest}" if rest else name
    return resource


def trace_events(schedules: dict[str, Schedule], clock_hz: float) -> list[dict]:
    """traceEvents for several phases (each a process), tracks sorted by resource name."""
    us_per_cycle = 1e6 / clock_hz
    events: list[dict] = []
    for pid, (phase, schedule) in enumerate(schedules.items(), start=1):
        events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": phase}})
        resources = sorted({t.resource for t in schedule.tasks})
        tids = {r: i + 1 for i, r in enumerate(resources)}
        for r, tid in tids.items():
            events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": track_name(r)}})
        for t in schedule.tasks:
            events.append(
                {
                    "ph": "X",
                    "name": t.name,
                    "cat": t.bound,
                    "pid": pid,
                    "tid": tids[t.resource],
                    "ts": t.start * us_per_cycle,
                    "dur": (t.end - t.start) * us_per_cycle,
                    "args": {"op": t.op, "bound": t.bound, "start_cycle": t.start, "end_cycle": t.end},
                }
            )
    return events


def write_trace(path: str | Path, schedules: dict[str, Schedule], clock_hz: float) -> None:
    """Write the trace atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    doc = {"traceEvents": trace_events(schedules, clock_hz), "displayTimeUnit": "ns"}
    with atomic_open(path, "w") as f:
        json.dump(doc, f)
