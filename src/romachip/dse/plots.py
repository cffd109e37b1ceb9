"""PNG plots of a sweep's answer: Pareto scatter, parallel coordinates of the front, one-axis sensitivity.

Matplotlib's object API (no pyplot, no global backend); every file goes through atomic_open.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from romachip.atomic import atomic_open
from romachip.dse.answer import WorkloadAnswer, _slug, fmt_value
from romachip.dse.spec import Objective


def _save(fig: Figure, path: Path) -> Path:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    return path


def _num(rows: list[dict], col: str) -> np.ndarray:
    vals = [r.get(col) for r in rows]
    if all(isinstance(v, int | float) or v is None for v in vals):
        return np.array([math.nan if v is None else float(v) for v in vals])
    cats = sorted({str(v) for v in vals})
    return np.array([cats.index(str(v)) for v in vals], dtype=float)


def pareto_scatter(a: WorkloadAnswer, path: Path) -> Path:
    """tokens/s vs mJ/token of every feasible design, colour = area; the front ringed, the base a star."""
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    pts = a.feasible
    if pts:
        sc = ax.scatter(_num(pts, "tokens_per_s"), _num(pts, "mj_per_token"), c=_num(pts, "area_mm2"), s=14,
                        cmap="viridis")  # fmt: skip
        fig.colorbar(sc, ax=ax, label="area (mm²)")
    if a.front:
        ax.scatter(_num(a.front, "tokens_per_s"), _num(a.front, "mj_per_token"), s=60, facecolors="none",
                   edgecolors="crimson", label=f"Pareto front ({len(a.front)})")  # fmt: skip
    if a.base and a.base.get("tokens_per_s") is not None:
        ax.scatter(
            [a.base["tokens_per_s"]], [a.base["mj_per_token"]], marker="*", s=220, c="black", label="base design"
        )
    ax.set_xlabel("decode tokens/s")
    ax.set_ylabel("energy per token (mJ)")
    ax.set_title(f"{a.workload}: {len(pts)} feasible designs")
    ax.legend(loc="best")
    return _save(fig, path)


def parallel_coordinates(a: WorkloadAnswer, axes: list[str], objectives: list[Objective], path: Path) -> Path:
    """Each front design a line over the axes and objectives, each column scaled to the feasible range."""
    cols = [f"axis:{p}" for p in axes] + [o.metric for o in objectives]
    fig = Figure(figsize=(max(7, 1.4 * len(cols)), 4.5))
    ax = fig.add_subplot()
    if a.front and a.feasible:
        ref = a.feasible
        for col_rows, style in ((a.front, {"alpha": 0.7, "lw": 1.2}),):
            data = np.stack([_num(col_rows, c) for c in cols], axis=1)
            lo = np.array([np.nanmin(_num(ref, c)) for c in cols])
            hi = np.array([np.nanmax(_num(ref, c)) for c in cols])
            scaled = (data - lo) / np.where(hi > lo, hi - lo, 1.0)
            for line in scaled:
                ax.plot(range(len(cols)), line, **style)
    ax.set_xticks(range(len(cols)), [c.removeprefix("axis:") for c in cols], rotation=30, ha="right")
    ax.set_ylabel("scaled to the feasible range (0 = lowest)")
    ax.set_title(f"{a.workload}: the {len(a.front)} front designs")
    return _save(fig, path)


def sensitivity(a: WorkloadAnswer, axes: list[str], objective: Objective, path: Path) -> Path:
    """For each axis, the objective as that axis alone moves from the best feasible design (others held);
    where a search did not sample those neighbours, the best design at each value instead."""
    fig = Figure(figsize=(3.2 * max(1, len(axes)), 3.2))
    best = a.front[0] if a.front else None
    rows = [r for r in a.rows if r.get("status") == "ok" and not r["base"]]
    for i, p in enumerate(axes):
        ax = fig.add_subplot(1, max(1, len(axes)), i + 1)
        col = f"axis:{p}"
        if best is not None:
            others = [f"axis:{q}" for q in axes if q != p]
            line = [r for r in rows if all(r.get(o) == best.get(o) for o in others)]
            label = "others held at the best design"
            if len(line) < 2:
                by: dict = {}
                for r in rows:
                    v = r.get(objective.metric)
                    if v is not None and (r[col] not in by or (v > by[r[col]]) == (objective.direction == "max")):
                        by[r[col]] = v
                line = [{col: k, objective.metric: v} for k, v in by.items()]
                label = "best design at each value"
            line.sort(key=lambda r: (isinstance(r[col], str), r[col]))
            xs = [fmt_value(r[col]) for r in line]
            ax.plot(xs, [r.get(objective.metric) for r in line], marker="o", label=label)
            ax.tick_params(axis="x", rotation=45)
        ax.set_title(p, fontsize=8)
        if i == 0:
            ax.set_ylabel(objective.metric)
    fig.suptitle(f"{a.workload}: one-axis sensitivity of {objective.metric}")
    return _save(fig, path)


def write_plots(a: WorkloadAnswer, axes: list[str], objectives: list[Objective], folder: str | Path) -> list[Path]:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    slug = _slug(a.workload)
    return [
        pareto_scatter(a, out / f"pareto-{slug}.png"),
        parallel_coordinates(a, axes, objectives, out / f"parallel-{slug}.png"),
        sensitivity(a, axes, objectives[0], out / f"sensitivity-{slug}.png"),
    ]
