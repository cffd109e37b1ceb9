"""One simulated phase (a prefill, a decode step): cycles, bounds, busy cycles and counted events."""

from __future__ import annotations

from dataclasses import dataclass

from romachip.perf.energy import Event, EventKey
from romachip.perf.event_kernel import Schedule

UNIT_CLASSES = ("L", "H", "V", "noc.down", "noc.up", "noc.row", "host")


@dataclass(frozen=True)
class PhaseRun:
    """One simulated phase: cycles, critical-path cycles by bound, busy cycles by resource, counted events.

    `schedule` is the full task schedule when the phase was simulated whole (None when it was composed
    from a one-layer and a two-layer simulation, see `ChipModel.decode`)."""

    cycles: int
    bound_cycles: dict[str, float]
    busy_cycles: dict[str, float]
    events: dict[EventKey, float]
    lora_events: dict[EventKey, float]
    schedule: Schedule | None = None

    def count(self, key: Event | EventKey) -> float:
        """Counted events of one key; an Event alone sums every key of that event (all L-Unit MAC widths)."""
        if isinstance(key, EventKey):
            return self.events.get(key, 0.0)
        return sum(v for k, v in self.events.items() if k.event == key)

    def bound_shares(self) -> dict[str, float]:
        total = sum(self.bound_cycles.values()) or 1
        return {k: v / total for k, v in sorted(self.bound_cycles.items(), key=lambda kv: -kv[1]) if v > 0}

    def utilization(self) -> dict[str, float]:
        """Busy share of the busiest resource of each class (L, H, V and the NoC link classes)."""
        out: dict[str, float] = {}
        for res, busy in self.busy_cycles.items():
            cls = next((c for c in UNIT_CLASSES if res == c or (len(c) == 1 and res.startswith(c))), res)
            out[cls] = max(out.get(cls, 0.0), busy / max(self.cycles, 1))
        return out

    def extend(self, other: PhaseRun, repeats: int) -> PhaseRun:
        """self + repeats x (other - self): `self` simulated with n layers, `other` with n + 1, the layers
        being identical, so that each further layer adds what the (n + 1)-th did."""

        def lin(a: dict, b: dict) -> dict:
            # dict order, not a set's: a set of keys iterates in a per-process hash order, and the sums over
            # these dicts must come out the same bits in every process (a Dask worker vs the driver)
            keys = dict.fromkeys([*a, *b])
            return {k: max(0.0, a.get(k, 0.0) + repeats * (b.get(k, 0.0) - a.get(k, 0.0))) for k in keys}

        return PhaseRun(
            cycles=self.cycles + repeats * (other.cycles - self.cycles),
            bound_cycles=lin(self.bound_cycles, other.bound_cycles),
            busy_cycles=lin(self.busy_cycles, other.busy_cycles),
            events=lin(self.events, other.events),
            lora_events=lin(self.lora_events, other.lora_events),
        )
