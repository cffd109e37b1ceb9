"""SweepSpec: a design-space exploration as data (YAML, validated by pydantic).

A spec names a base chip and technology, the axes to vary (dotted paths into ChipSpec / TechSpec),
derived ties, the workloads every design runs, the objectives and constraints, and a search. docs/dse.md
explains it; docs/dse-reference.md is generated from these models.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from romachip.errors import SweepError
from romachip.spec._load import validate
from romachip.tensor_bits import StoragePolicy

Strict = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # every number finite
Scalar = bool | int | float | str

#: Every metric a sweep row carries (per workload), and which way is better when ranking by it.
METRICS: dict[str, tuple[str, str]] = {
    "tokens_per_s": ("max", "decode tokens/s at the workload's context_tokens"),
    "mj_per_token": ("min", "decode energy per token (mJ) at context_tokens: events x energy table + leakage"),
    "tokens_per_j": ("max", "decoded tokens per joule at context_tokens (1000 / mj_per_token)"),
    "power_w": ("min", "decode power (W) at context_tokens"),
    "area_mm2": ("min", "die area (mm^2) from the area model"),
    "ttft_ms": ("min", "time to first token (ms) at the first of prompt_tokens; absent without prompt_tokens"),
    "max_context_tokens": ("max", "longest KV context next to the adapters (capacity planner)"),
    "tokens_per_j_per_mm2": ("max", "tokens_per_j / area_mm2"),
    "tokens_per_s_per_mm2": ("max", "tokens_per_s / area_mm2"),
    "rom_utilization": ("max", "fullest L-Unit's ROM bytes used / bytes it holds"),
}
_CONSTRAINT = re.compile(r"^\s*([a-z_0-9@]+)\s*(<=|>=)\s*(.+?)\s*$")


class ValueRange(BaseModel):
    """start, start + step, ... up to and including stop."""

    model_config = Strict
    start: float = Field(description="First value.")
    stop: float = Field(description="Last value (included when the steps land on it).")
    step: float = Field(gt=0, description="Increment.")


class LogRange(BaseModel):
    """`num` values spaced evenly in log scale from start to stop, both included."""

    model_config = Strict
    start: float = Field(gt=0, description="First value.")
    stop: float = Field(gt=0, description="Last value.")
    num: PositiveInt = Field(description="How many values.")
    integer: bool = Field(False, description="Round every value to the nearest whole number (duplicates dropped).")


class Axis(BaseModel):
    """The values one dotted path takes: exactly one of `values`, `range`, `log_range`."""

    model_config = Strict
    values: list[Scalar] | None = Field(None, description="An explicit list of values.")
    range: ValueRange | None = Field(None, description="A linear range.")
    log_range: LogRange | None = Field(None, description="A logarithmic range.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Axis:
        given = [k for k in ("values", "range", "log_range") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of values, range, log_range (got {', '.join(given) or 'none'})")
        return self

    def expand(self) -> list[Scalar]:
        """The axis's values, in order. Whole-number floats of a range become ints (macro counts, rows)."""
        if self.values is not None:
            return list(self.values)
        if self.range is not None:
            r = self.range
            n = math.floor((r.stop - r.start) / r.step + 1e-9) + 1
            vals = [r.start + i * r.step for i in range(max(n, 0))]
        else:
            g = self.log_range
            assert g is not None
            ratio = (g.stop / g.start) ** (1 / (g.num - 1)) if g.num > 1 else 1.0
            vals = [float(f"{g.start * ratio**i:.12g}") for i in range(g.num)]  # 1e9, not 1000000000.0000002
            if g.integer:
                vals = list(dict.fromkeys(float(round(v)) for v in vals))
        return [int(v) if float(v).is_integer() else v for v in vals]


class Base(BaseModel):
    """The design every axis varies from."""

    model_config = Strict
    chip: str = Field("roma", description="Chip preset name or a chip YAML path (relative to the spec file).")
    tech: str | None = Field(None, description="Technology preset or YAML path; default: the chip's own `tech`.")


class Workload(BaseModel):
    """What every design runs: a model, its format and adapters, the contexts and prompts to measure."""

    model_config = Strict
    name: str | None = Field(None, description="Short name for tables; default: model-<bits>b-r<rank>-<context>.")
    model: str = Field("llama-3.2-3b", description="Named model (`romachip models`) or a config.json path.")
    bits: int = Field(4, description="Weight code width.")
    group_size: int | None = Field(128, description="Weights per group; null: one group per row.")
    storage_policy: StoragePolicy = Field(StoragePolicy.ROM_WEIGHT, description="Where embedding / LM head go.")
    lora_rank: int = Field(16, ge=0, description="LoRA rank (0: no adapters).")
    lora_targets: list[str] | Literal["all"] = Field("all", description="Projections adapted, or 'all'.")
    context_tokens: int = Field(1024, ge=0, description="KV context the objectives are measured at (and fit at).")
    report_contexts: list[int] = Field(
        [], description="More decode contexts recorded as `tokens_per_s@C` and `mj_per_token@C` columns."
    )
    prompt_tokens: list[PositiveInt] = Field(
        [],
        description="Prompt lengths whose TTFT is recorded (`ttft_ms@P`); the first is `ttft_ms`. Empty: decode only.",
    )

    @property
    def label(self) -> str:
        return self.name or f"{self.model}-{self.bits}b-r{self.lora_rank}-{self.context_tokens}"


class Objective(BaseModel):
    """A metric to optimise."""

    model_config = Strict
    metric: str = Field(description="One of the metrics in docs/dse.md (e.g. tokens_per_j, area_mm2).")
    goal: Literal["min", "max"] | None = Field(None, description="min or max; default: the metric's natural way.")

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        return check_metric(v)

    @property
    def direction(self) -> str:
        return self.goal or METRICS[self.metric.split("@")[0]][0]


class Constraint(BaseModel):
    """`metric <= value` or `metric >= value`; the value may be `base` (the base design's value), times a factor."""

    model_config = Strict
    metric: str
    op: Literal["<=", ">="]
    value: float | None = None  # None: relative to the base design
    base_factor: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Constraint:
        m = _CONSTRAINT.match(text)
        if not m:
            raise ValueError(f"constraint {text!r}: write 'METRIC <= VALUE' or 'METRIC >= VALUE' (VALUE may be 'base')")
        metric, op, rhs = m.groups()
        check_metric(metric)
        base = re.fullmatch(r"(?:([0-9.eE+-]+)\s*\*\s*)?base", rhs)
        if base:
            return cls(metric=metric, op=op, base_factor=float(base.group(1) or 1.0))
        try:
            return cls(metric=metric, op=op, value=float(rhs))
        except ValueError:
            raise ValueError(f"constraint {text!r}: {rhs!r} is not a number nor 'base' / 'F * base'") from None

    def describe(self) -> str:
        rhs = (
            f"{self.value:g}"
            if self.value is not None
            else ("base" if self.base_factor == 1 else f"{self.base_factor:g} * base")
        )
        return f"{self.metric} {self.op} {rhs}"


class Search(BaseModel):
    """How points are chosen."""

    model_config = Strict
    method: Literal["grid", "random", "nsga2"] = Field("grid", description="Every point, a seeded sample, or NSGA-II.")
    budget: PositiveInt | None = Field(None, description="Points to evaluate (random, nsga2); grid: all points.")
    seed: int = Field(0, description="Seed of random and nsga2.")
    population: PositiveInt = Field(24, description="NSGA-II population (points per generation).")

    @model_validator(mode="after")
    def _budget(self) -> Search:
        if self.method != "grid" and self.budget is None:
            raise ValueError(f"search method {self.method} needs a budget (points to evaluate)")
        return self


class SweepSpec(BaseModel):
    """A sweep: base design, axes, ties, workloads, objectives, constraints and search."""

    model_config = Strict
    schema_version: Literal[1] = Field(1, description="Version of this schema.")
    name: str = Field(description="Name of the sweep.")
    description: str = Field("", description="What it asks.")
    base: Base = Field(Base(), description="The base chip and technology.")
    axes: dict[str, Axis] = Field(
        description="Dotted path (ChipSpec field, `tech`, or `tech.<TechSpec field>`) -> values."
    )
    ties: dict[str, str] = Field(
        {}, description="Dotted path -> expression of other fields or a named helper, in order."
    )
    workloads: list[Workload] = Field(min_length=1, description="What every design runs.")
    objectives: list[Objective] = Field(min_length=1, description="Metrics the Pareto front is over.")
    constraints: list[str] = Field([], description="'METRIC <= VALUE' / '>= VALUE'; VALUE may be 'base' or 'F * base'.")
    search: Search = Field(Search(), description="How points are chosen.")

    @field_validator("axes")
    @classmethod
    def _axes(cls, axes: dict[str, Axis]) -> dict[str, Axis]:
        if not axes:
            raise ValueError("a sweep needs at least one axis")
        for path, axis in axes.items():
            if not axis.expand():
                raise ValueError(f"axis '{path}' has no values")
        return axes

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, items: list[str]) -> list[str]:
        for text in items:
            Constraint.parse(text)
        return items

    @model_validator(mode="after")
    def _unique_workloads(self) -> SweepSpec:
        labels = [w.label for w in self.workloads]
        if len(set(labels)) != len(labels):
            raise ValueError(f"workload names must differ, got {labels}; give each a `name`")
        if self.search.method == "nsga2" and len(self.workloads) != 1:
            raise ValueError("nsga2 optimises one workload; give exactly one")
        return self

    def parsed_constraints(self) -> list[Constraint]:
        return [Constraint.parse(t) for t in self.constraints]


def check_metric(name: str) -> str:
    """A metric name, or `tokens_per_s@C`-style per-context / per-prompt column."""
    head, _, at = name.partition("@")
    per = {"tokens_per_s", "mj_per_token", "ttft_ms"}
    if head not in METRICS or (at and (head not in per or not at.isdigit())):
        raise ValueError(
            f"unknown metric {name!r}; known: {', '.join(METRICS)} (and tokens_per_s@C, mj_per_token@C, ttft_ms@P)"
        )
    return name


def load_sweep_spec(path: str | Path) -> tuple[SweepSpec, Path]:
    """The spec and the folder its relative paths are resolved against. SweepError on bad input."""
    p = Path(path)
    if not p.is_file():
        raise SweepError(f"sweep spec {p} does not exist (examples/ has some to start from)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise SweepError(f"sweep spec {p} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SweepError(f"sweep spec {p} must be a YAML mapping, got {type(data).__name__}")
    try:
        return validate(SweepSpec, data, f"sweep spec {p}"), p.resolve().parent
    except Exception as exc:  # SpecError from validate: re-raise in the sweep's family
        raise SweepError(str(exc)) from None
