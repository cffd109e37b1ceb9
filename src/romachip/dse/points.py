"""From a SweepSpec to design points: the base design, checked axes and ties, tasks with stable keys.

A design is {'chip': ChipSpec dict, 'tech': TechSpec dict}. A point sets every axis's value on a copy of
the base (the `tech` axis first: it swaps the whole TechSpec, then `tech.<field>` axes edit it); ties
are applied by the task, because named helpers need the workload. A row's key is a SHA-256 of the
point's design, its ties, its workload and MODEL_VERSION (a hash of the sources and model configs the
figures come from), so a result is recomputed exactly when something it depends on changed.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import romachip
from romachip.dse.paths import FieldPath, copy_design, get, put, resolve
from romachip.dse.spec import SweepSpec, Workload
from romachip.dse.ties import Tie, compile_tie
from romachip.errors import RomachipError, SweepError
from romachip.spec.chip import load_chip
from romachip.spec.tech import load_tech

TECH_AXIS = "tech"
#: Parts of the romachip package that cannot change a row's figures (everything else is hashed: a
#: rename or a new module below the perf model can only cause a recompute, never a stale row).
_NOT_MODEL = ("cli", "serve", "vectors", "engine", "rom", "report", "train", "dse")
_MODEL_DSE = ("dse/evaluate.py", "dse/ties.py", "dse/paths.py")


@functools.cache
def model_version() -> str:
    """romachip's version plus a hash of the model's sources and shipped specs (model configs, presets,
    technologies, host links: a design names some of them by name)."""
    root = Path(romachip.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root).as_posix()
        if f.suffix not in (".py", ".json", ".yaml") or "__pycache__" in rel:
            continue
        if rel.split("/")[0] in _NOT_MODEL and rel not in _MODEL_DSE:
            continue
        h.update(rel.encode())
        h.update(f.read_bytes())
    return f"{romachip.__version__}+{h.hexdigest()[:12]}"


def stable_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Task:
    """One design point on one workload: everything the pure evaluation needs, nothing else."""

    key: str
    workload: dict  # Workload.model_dump(mode="json")
    design: dict
    ties: tuple[tuple[str, str], ...]
    axis_values: dict[str, Any]
    is_base: bool = False


@dataclass(frozen=True)
class CheckedAxis:
    path: FieldPath
    values: list[Any]


class SweepPlan:
    """A spec with its base design loaded and every path, value and tie checked."""

    def __init__(self, spec: SweepSpec, root: Path) -> None:
        self.spec, self.root = spec, root
        chip = load_chip(self._local(spec.base.chip))
        tech_name = self._local(spec.base.tech) if spec.base.tech else chip.tech
        chip_dict = chip.model_dump()
        chip_dict["tech"] = tech_name
        self.base = {"chip": chip_dict, "tech": self._tech_dict(tech_name)}
        axes = [CheckedAxis(resolve(p), []) for p in spec.axes]
        for ax, (p, axis) in zip(axes, spec.axes.items(), strict=True):
            where = f"axis '{p}'"
            if p == TECH_AXIS:
                values = [self._local(str(v)) for v in axis.expand()]
                for v in values:
                    self._tech_dict(v)  # fails now, not in a worker
            else:
                values = [ax.path.check_value(v, where) for v in axis.expand()]
            if len(set(map(repr, values))) != len(values):
                raise SweepError(f"{where} repeats a value: {values}")
            ax.values.extend(values)
        # the tech axis swaps the whole TechSpec, so it goes before any tech.<field> axis
        self.axes = sorted(axes, key=lambda a: a.path.text != TECH_AXIS)
        self.ties: list[Tie] = [compile_tie(p, e) for p, e in spec.ties.items()]
        self.tie_items = tuple((t.target.text, t.text) for t in self.ties)
        self.workloads: list[Workload] = list(spec.workloads)
        self.version = model_version()

    def _local(self, name: str) -> str:
        """A preset name as is; a relative path resolved against the spec's folder."""
        p = Path(name)
        if name.endswith((".yaml", ".yml")) or len(p.parts) > 1:
            return str((self.root / p).resolve()) if not p.is_absolute() else name
        return name

    @staticmethod
    @functools.cache
    def _tech_dict_cached(name: str) -> str:
        return json.dumps(load_tech(name).model_dump())

    def _tech_dict(self, name: str) -> dict:
        try:
            return json.loads(self._tech_dict_cached(name))
        except RomachipError as exc:
            raise SweepError(f"technology {name!r}: {exc}") from None

    @property
    def grid_points(self) -> int:
        return math.prod(len(a.values) for a in self.axes)

    def design(self, values: Sequence[Any]) -> dict:
        d = copy_design(self.base)
        for ax, v in zip(self.axes, values, strict=True):
            if ax.path.text == TECH_AXIS:
                d["tech"] = self._tech_dict(v)
            put(d, ax.path, v)
        return d

    def task(self, values: Sequence[Any], workload: Workload) -> Task:
        design = self.design(values)
        wl = workload.model_dump(mode="json")
        key = stable_hash({"design": design, "ties": self.tie_items, "workload": wl, "model": self.version})
        axis_values = {ax.path.text: v for ax, v in zip(self.axes, values, strict=True)}
        return Task(key, wl, design, self.tie_items, axis_values)

    def base_task(self, workload: Workload) -> Task:
        """The base design as given (no axis values, no ties): the reference of `base` constraints."""
        wl = workload.model_dump(mode="json")
        key = stable_hash({"design": self.base, "ties": (), "workload": wl, "model": self.version})
        axis_values = {ax.path.text: get(self.base, ax.path) for ax in self.axes}
        return Task(key, wl, copy_design(self.base), (), axis_values, is_base=True)

    def grid(self) -> Iterator[tuple[Any, ...]]:
        return itertools.product(*(a.values for a in self.axes))

    def sample(self, budget: int, seed: int) -> Iterator[tuple[Any, ...]]:
        """`budget` distinct grid points drawn with a seeded RNG (all of them if the grid is smaller)."""
        total = self.grid_points
        picks = random.Random(seed).sample(range(total), min(budget, total))
        sizes = [len(a.values) for a in self.axes]
        for index in picks:
            values = []
            for ax, n in zip(reversed(self.axes), reversed(sizes), strict=True):
                index, i = divmod(index, n)
                values.append(ax.values[i])
            yield tuple(reversed(values))

    def identity(self) -> dict[str, str]:
        """Hashes of what a results folder must share with this spec to be resumed into."""
        s = self.spec
        return {
            "base": stable_hash(self.base),
            "axes": stable_hash([[a.path.text, a.values] for a in self.axes]),
            "ties": stable_hash(self.tie_items),
            "workloads": stable_hash([w.model_dump(mode="json") for w in self.workloads]),
            "search": stable_hash(s.search.model_dump(exclude={"budget"})),
            "model_version": self.version,
        }
