"""Feasibility, Pareto fronts and rankings over result rows (plain functions, numpy underneath).

A row is feasible when its status is ok and every constraint holds; `base` constraints compare with the
base design's row on the same workload. The front is the set of feasible rows no other feasible row
dominates (at least as good in every objective and better in one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from romachip.dse.evaluate import STATUS_OK
from romachip.dse.spec import METRICS, Constraint, Objective


def _value(row: dict, metric: str) -> float:
    v = row.get(metric)
    return float(v) if v is not None and math.isfinite(float(v)) else math.nan


def constraint_margins(row: dict, constraints: Sequence[Constraint], base: dict | None) -> list[float]:
    """One number per constraint, <= 0 when it holds (Optuna's convention); +inf when it cannot be told."""
    out = []
    for c in constraints:
        limit = c.value if c.value is not None else (c.base_factor * _value(base, c.metric) if base else math.nan)
        v = _value(row, c.metric)
        margin = (v - limit) if c.op == "<=" else (limit - v)
        out.append(margin if math.isfinite(margin) else math.inf)
    return out


def feasible(row: dict, constraints: Sequence[Constraint], base: dict | None) -> bool:
    return row.get("status") == STATUS_OK and all(m <= 0 for m in constraint_margins(row, constraints, base))


def non_dominated(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Mask of the rows of `values` (n x m) that no other row dominates; `directions` are min / max per column.
    Rows with a NaN objective are never on the front."""
    v = np.asarray(values, dtype=float).copy()
    if v.size == 0:
        return np.zeros(len(v), dtype=bool)
    for j, d in enumerate(directions):
        if d == "max":
            v[:, j] = -v[:, j]
    ok = ~np.isnan(v).any(axis=1)
    mask = ok.copy()
    pts = v[ok]
    idx = np.flatnonzero(ok)
    for k, p in enumerate(pts):
        dominated = np.all(pts <= p, axis=1) & np.any(pts < p, axis=1)
        if dominated.any():
            mask[idx[k]] = False
    return mask


def pareto_front(rows: Sequence[dict], objectives: Sequence[Objective]) -> list[dict]:
    """The non-dominated rows among `rows` (already filtered for feasibility), sorted by the first objective."""
    if not rows:
        return []
    values = np.array([[_value(r, o.metric) for o in objectives] for r in rows])
    mask = non_dominated(values, [o.direction for o in objectives])
    front = [r for r, m in zip(rows, mask, strict=True) if m]
    first = objectives[0]
    return sorted(front, key=lambda r: _value(r, first.metric), reverse=first.direction == "max")


def rank(rows: Sequence[dict], metric: str, goal: str | None = None) -> list[dict]:
    """Rows with a value for `metric`, best first (`goal` min / max; default the metric's natural way)."""
    direction = goal or METRICS[metric.split("@")[0]][0]
    have = [r for r in rows if not math.isnan(_value(r, metric))]
    return sorted(have, key=lambda r: _value(r, metric), reverse=direction == "max")
