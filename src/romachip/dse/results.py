"""Sweep results: a folder holding `sweep.json` (the spec and what identifies it) and a Parquet dataset,
one part-file per batch under `parts/`, each written to a temporary name and renamed.

Every row is keyed by its task's stable hash; a resumed sweep skips the keys already present, so a
killed run loses at most the points that were in flight. A folder written by a different spec (other
base design, axes, ties, workloads or search) or by another version of the model is refused rather
than mixed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import romachip
from romachip.atomic import atomic_open
from romachip.dse.points import SweepPlan
from romachip.dse.spec import METRICS, SweepSpec
from romachip.errors import SweepError

MANIFEST = "sweep.json"
PARTS = "parts"
TEXT_COLUMNS = ("key", "workload", "status", "reason", "tied", "chip_json", "tech_json", "decode_bound",
                "decode_utilization", "decode_energy_mj")  # fmt: skip
_PART = re.compile(r"^part-(\d+)\.parquet$")


def _arrow_type(values: list[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()


def metric_columns(plan: SweepPlan) -> list[str]:
    cols = list(METRICS)
    for w in plan.workloads:
        for c in dict.fromkeys([w.context_tokens, *w.report_contexts]):
            cols += [f"tokens_per_s@{c}", f"mj_per_token@{c}"]
        cols += [f"ttft_ms@{p}" for p in w.prompt_tokens]
    return list(dict.fromkeys(cols))


def schema(plan: SweepPlan) -> pa.Schema:
    """The one schema of every part-file of a sweep, so that the dataset reads as one table."""
    fields = [pa.field(c, pa.string()) for c in TEXT_COLUMNS[:4]] + [pa.field("base", pa.bool_())]
    for ax in plan.axes:
        base_value = plan.base_task(plan.workloads[0]).axis_values[ax.path.text]
        t = _arrow_type([*ax.values, base_value])
        fields.append(pa.field(f"axis:{ax.path.text}", t))
    fields += [pa.field(c, pa.string()) for c in TEXT_COLUMNS[4:]]
    fields += [pa.field(c, pa.float64()) for c in metric_columns(plan)]
    return pa.schema(fields)


def _coerce(row: dict, sch: pa.Schema) -> dict:
    out = {}
    for f in sch:
        v = row.get(f.name)
        if v is not None and pa.types.is_string(f.type) and not isinstance(v, str):
            v = str(v)
        elif v is not None and pa.types.is_floating(f.type):
            v = float(v)
        out[f.name] = v
    return out


class ResultStore:
    """The driver's side of a results folder: checks it, knows the keys done, appends part-files."""

    def __init__(self, out: str | Path, plan: SweepPlan, *, resume: bool) -> None:
        self.out = Path(out)
        self.schema = schema(plan)
        self.pending: list[dict] = []
        identity = plan.identity()
        manifest = self.out / MANIFEST
        if self.out.exists() and not self.out.is_dir():
            raise SweepError(f"--out {self.out} is a file; give a folder for the results")
        if manifest.is_file():
            old = read_manifest(self.out)
            differ = [k for k, v in identity.items() if old.get("identity", {}).get(k) != v]
            if differ:
                what = ", ".join(differ)
                raise SweepError(
                    f"{self.out} holds results of another sweep (its {what} differ{'s' if len(differ) == 1 else ''}); "
                    "results of different sweeps are never mixed: give another --out"
                )
            if not resume:
                raise SweepError(f"{self.out} already holds results of this sweep; add --resume to continue it")
        elif self.out.is_dir() and any(self.out.iterdir()):
            raise SweepError(f"{self.out} is not empty and holds no {MANIFEST}: not a sweep results folder")
        (self.out / PARTS).mkdir(parents=True, exist_ok=True)
        doc = {
            "name": plan.spec.name,
            "romachip_version": romachip.__version__,
            "identity": identity,
            "spec": plan.spec.model_dump(mode="json"),
            "spec_root": str(plan.root),
            "columns": self.schema.names,
        }
        with atomic_open(manifest, "w") as f:  # rewritten on resume: objectives may have changed
            json.dump(doc, f, indent=2)
        self.done = {r["key"] for r in read_rows(self.out, columns=["key"])}
        self._next = 1 + max((int(m.group(1)) for m in map(_PART.match, self._parts()) if m), default=0)

    def _parts(self) -> list[str]:
        return sorted(p.name for p in (self.out / PARTS).iterdir())

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            if row["key"] not in self.done:
                self.done.add(row["key"])
                self.pending.append(_coerce(row, self.schema))

    def flush(self) -> int:
        """Write the pending rows as one part-file; the number written."""
        if not self.pending:
            return 0
        table = pa.Table.from_pylist(self.pending, schema=self.schema)
        with atomic_open(self.out / PARTS / f"part-{self._next:06d}.parquet", "wb") as f:
            pq.write_table(table, f, compression="zstd")
        self._next += 1
        n, self.pending = len(self.pending), []
        return n


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise SweepError(
            f"{folder} holds no {MANIFEST}: not a sweep results folder (run `romachip sweep SPEC --out DIR`)"
        )
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SweepError(f"{path} is unreadable: {exc}") from None


def read_rows(folder: str | Path, *, columns: list[str] | None = None) -> list[dict]:
    """Every row of a results folder, one per key (the first written wins), in the order written."""
    parts = Path(folder) / PARTS
    if not parts.is_dir():
        return []
    rows, seen = [], set()
    for p in sorted(parts.glob("part-*.parquet")):
        try:
            table = pq.read_table(p, columns=columns)
        except (OSError, pa.ArrowException) as exc:
            raise SweepError(f"{p} is not a readable Parquet part ({exc}); remove it and rerun with --resume") from None
        for row in table.to_pylist():
            if row["key"] not in seen:
                seen.add(row["key"])
                rows.append(row)
    return rows


@dataclass(frozen=True)
class Results:
    """A results folder read back: its spec and rows."""

    folder: Path
    spec: SweepSpec
    rows: list[dict]

    def workloads(self) -> list[str]:
        return [w.label for w in self.spec.workloads]

    def axes(self) -> list[str]:
        return list(self.spec.axes)


def load_results(folder: str | Path) -> Results:
    doc = read_manifest(folder)
    spec = SweepSpec.model_validate(doc["spec"])
    return Results(Path(folder), spec, read_rows(folder))
