"""Reading a sweep's answer: per workload, the feasible designs, the Pareto front, the base design, and
front points written back as chip YAML files that `romachip simulate --chip` runs unchanged."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from romachip.atomic import atomic_open
from romachip.dse.pareto import feasible, pareto_front
from romachip.dse.results import Results
from romachip.errors import SweepError
from romachip.spec.chip import ChipSpec
from romachip.spec.tech import TechSpec, list_techs, load_tech


@dataclass(frozen=True)
class WorkloadAnswer:
    """One workload's rows, what was feasible, its Pareto front (best first objective first) and base row."""

    workload: str
    rows: list[dict]
    feasible: list[dict]
    front: list[dict]
    base: dict | None
    by_status: dict[str, int]


def analyse(results: Results, workload: str | None = None) -> list[WorkloadAnswer]:
    spec = results.spec
    names = results.workloads()
    if workload is not None and workload not in names:
        raise SweepError(f"no workload {workload!r} in {results.folder}; it has {', '.join(names)}")
    constraints = spec.parsed_constraints()
    out = []
    for name in [workload] if workload else names:
        rows = [r for r in results.rows if r["workload"] == name]
        base = next((r for r in rows if r["base"]), None)
        ok = [r for r in rows if feasible(r, constraints, base)]  # the base is a candidate like any design
        status: dict[str, int] = {}
        for r in rows:
            status[r["status"]] = status.get(r["status"], 0) + 1
        out.append(WorkloadAnswer(name, rows, ok, pareto_front(ok, spec.objectives), base, status))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def row_chip(row: dict) -> tuple[ChipSpec, TechSpec]:
    if not row.get("chip_json"):
        raise SweepError(f"row {row['key']} holds no resolved chip (status {row['status']}: {row['reason']})")
    return ChipSpec.model_validate(json.loads(row["chip_json"])), TechSpec.model_validate(json.loads(row["tech_json"]))


def _plain(obj: object) -> object:
    """model_dump output as YAML-safe plain data (dict keys stay ints where the schema has ints)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def export_rows(rows: list[dict], folder: str | Path, *, prefix: str) -> list[Path]:
    """Write each row's resolved chip as `<prefix>-<n>-<key>.yaml`. A technology that differs from the
    preset it is named after is written beside it (`...-tech.yaml`) and the chip points at that file."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for n, row in enumerate(rows, 1):
        chip, tech = row_chip(row)
        stem = f"{_slug(prefix)}-{n:02d}-{row['key'][:10]}"
        tech_name = chip.tech
        shipped = tech_name in list_techs() and load_tech(tech_name) == tech
        if not shipped and not (Path(tech_name).is_file() and load_tech(tech_name) == tech):
            tech_path = (out / f"{stem}-tech.yaml").resolve()
            with atomic_open(tech_path, "w") as f:
                f.write(f"# technology of sweep row {row['key']} (from {tech_name} with the sweep's tech axes)\n")
                yaml.safe_dump(_plain(tech.model_dump()), f, sort_keys=False)
            tech_name = str(tech_path)
        data = _plain(chip.model_dump())
        data["tech"] = tech_name
        data["name"] = f"{chip.name}-{row['key'][:10]}"
        data["description"] = f"sweep row {row['key']} ({row['workload']}); {chip.description}"
        path = out / f"{stem}.yaml"
        with atomic_open(path, "w") as f:
            axes = ", ".join(f"{k[5:]}={v}" for k, v in row.items() if k.startswith("axis:"))
            f.write(f"# exported by `romachip sweep show --export`: {axes}\n")
            f.write(f"# tied: {row.get('tied') or '{}'}\n")
            yaml.safe_dump(data, f, sort_keys=False)
        written.append(path)
    return written


def fmt_value(v: object) -> str:
    """Compact: 4 significant digits, thousands separators up to 1e6, SI prefixes above (500M, 1G)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return "-" if v is None else str(v)
    if isinstance(v, float) and math.isnan(v):
        return "-"
    a = abs(v)
    if a >= 1e6:
        for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
            if a >= scale:
                return f"{v / scale:.4g}{unit}"
    if a >= 1e4 or isinstance(v, int):
        return f"{v:,.0f}"
    return f"{v:.4g}"


def short_path(path: str) -> str:
    """The last two segments of a dotted path, for table headers (rom.macro_rows)."""
    return ".".join(path.split(".")[-2:])
