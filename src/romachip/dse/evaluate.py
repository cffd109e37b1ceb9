"""One design point on one workload -> one result row. A pure function of the Task: no files, no clock.

It applies the ties, validates the chip and technology, asks the capacity planner whether the workload
fits, and runs the timing/energy/area model (`romachip.perf.ChipModel`) at the workload's contexts and
prompt lengths. A point that is invalid or does not fit is a row with its status and reason, never a
crash of the sweep. Rows carry the resolved chip and technology, so any row can be exported and rerun.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any

from pydantic import ValidationError

from romachip.capacity import plan
from romachip.compile import compile_placement
from romachip.dse.paths import copy_design, put
from romachip.dse.points import Task, model_version
from romachip.dse.ties import compile_tie
from romachip.dse.ties import evaluate as eval_tie
from romachip.errors import RomachipError, SweepError
from romachip.perf.area import chip_area
from romachip.perf.simulate import ChipModel
from romachip.quant.formats import WeightFormat
from romachip.spec.chip import ChipSpec
from romachip.spec.model import ModelSpec, load_model_spec
from romachip.spec.tech import TechSpec
from romachip.tensor_bits import StoragePolicy
from romachip.workload import ALL_TARGETS, KvConfig, LoraConfig

STATUS_OK = "ok"
STATUS_NO_FIT = "does_not_fit"
STATUS_INVALID = "invalid"
STATUS_ERROR = "error"


@functools.lru_cache(maxsize=16)
def _model(name: str) -> ModelSpec:
    return load_model_spec(name)


@functools.lru_cache(maxsize=256)
def _tie(target: str, text: str):
    return compile_tie(target, text)


class _Workload:
    """The typed objects of a workload dict."""

    def __init__(self, wl: dict, chip: ChipSpec) -> None:
        self.label = wl["name"] or f"{wl['model']}-{wl['bits']}b-r{wl['lora_rank']}-{wl['context_tokens']}"
        self.spec = _model(wl["model"])
        self.fmt = WeightFormat(bits=wl["bits"], group_size=wl["group_size"] or None)
        targets = ALL_TARGETS if wl["lora_targets"] == "all" else tuple(wl["lora_targets"])
        self.lora = LoraConfig(rank=wl["lora_rank"], targets=targets, dtype=chip.precision.lora)
        self.policy = StoragePolicy(wl["storage_policy"])
        self.context = wl["context_tokens"]
        self.contexts = list(dict.fromkeys([self.context, *wl["report_contexts"]]))
        self.prompts = list(wl["prompt_tokens"])

    def place(self, chip: ChipSpec, context: int):
        """The placement (compiled once per point, shared by the capacity plan and the perf model) and the plan."""
        kv = KvConfig(dtype=chip.precision.kv, context_tokens=context)
        lora = self.lora if self.lora.enabled else None
        placement = compile_placement(chip, self.spec, self.fmt, policy=self.policy, lora=lora, kv=kv)
        return placement, plan(chip, self.spec, fmt=self.fmt, lora=self.lora, kv=kv, placement=placement)


def _helper(name: str, design: dict, wl: dict) -> Any:
    chip_d = design["chip"]
    if name == "vector_row_middle":
        rows = int(chip_d["mesh"]["rows"])
        return ["matrix"] * (rows // 2) + ["vector"] + ["matrix"] * (rows - rows // 2 - 1)
    if name == "fit_rom_macros":
        chip = ChipSpec.model_validate(chip_d)
        work = _Workload(wl, chip)
        used_bits = work.place(chip, 0)[1].rom.rom_unit_bytes_used_max * 8
        rom = chip.l_unit.rom
        return max(1, math.ceil(used_bits / (rom.macro_rows * rom.macro_cols * rom.bits_per_cell)))
    raise SweepError(f"unknown helper {name}()")


def _resolve(task: Task) -> tuple[dict, dict[str, Any]]:
    """The design with its ties applied, and the value each tie gave."""
    design = copy_design(task.design)
    tied: dict[str, Any] = {}
    for target, text in task.ties:
        tie = _tie(target, text)
        value = eval_tie(tie, design, lambda name: _helper(name, design, task.workload))
        put(design, tie.target, value)
        tied[target] = value
    return design, tied


def _row(task: Task, status: str, reason: str, **fields: Any) -> dict:
    label = task.workload["name"] or (
        f"{task.workload['model']}-{task.workload['bits']}b-r{task.workload['lora_rank']}-"
        f"{task.workload['context_tokens']}"
    )
    row = {"key": task.key, "workload": label, "base": task.is_base, "status": status, "reason": reason,
           "model_version": model_version()}  # fmt: skip
    row.update({f"axis:{k}": v for k, v in task.axis_values.items()})
    row.update(fields)
    return row


def _measure(chip: ChipSpec, tech: TechSpec, work: _Workload) -> tuple[str, str, dict[str, Any]]:
    placement, fit = work.place(chip, work.context)
    used = fit.rom.rom_unit_bytes_used_max / fit.rom.rom_unit_bytes if fit.rom.rom_unit_bytes else math.inf
    out: dict[str, Any] = {"max_context_tokens": float(fit.context.max_context_tokens), "rom_utilization": used}
    if not fit.fits:  # the area still tells how far from feasible the design is
        out["area_mm2"] = chip_area(chip, tech).total_mm2
        return STATUS_NO_FIT, "; ".join(fit.reasons), out
    model = ChipModel(chip, work.spec, fmt=work.fmt, lora=work.lora, tech=tech, placement=placement)
    out["area_mm2"] = model.area.total_mm2
    for c in work.contexts:
        if c > fit.context.max_context_tokens:
            continue  # that context does not fit: no figure rather than an impossible one
        run = model.decode(c)
        energy = model.energy(run)
        out[f"tokens_per_s@{c}"] = chip.clock_hz / run.cycles
        out[f"mj_per_token@{c}"] = energy.total_mj
        if c == work.context:
            out["power_w"] = energy.power_w
            out["decode_bound"] = json.dumps({k: round(v, 4) for k, v in run.bound_shares().items()})
            out["decode_utilization"] = json.dumps({k: round(v, 4) for k, v in sorted(run.utilization().items())})
            parts = sorted(energy.parts_mj.items(), key=lambda kv: -kv[1])
            out["decode_energy_mj"] = json.dumps({f"{u}.{k}": round(v, 6) for (u, k), v in parts})
    for p in work.prompts:
        out[f"ttft_ms@{p}"] = model.prefill_cycles(p) / chip.clock_hz * 1e3  # the TTFT alone, no event counts
    out["tokens_per_s"] = out[f"tokens_per_s@{work.context}"]
    out["mj_per_token"] = out[f"mj_per_token@{work.context}"]
    out["tokens_per_j"] = 1e3 / out["mj_per_token"]
    out["tokens_per_j_per_mm2"] = out["tokens_per_j"] / out["area_mm2"]
    out["tokens_per_s_per_mm2"] = out["tokens_per_s"] / out["area_mm2"]
    if work.prompts:
        out["ttft_ms"] = out[f"ttft_ms@{work.prompts[0]}"]
    return STATUS_OK, "; ".join(fit.reasons), out


def evaluate(task: Task) -> dict:
    """The result row of one task. Never raises for a bad design: the row says what was wrong."""
    try:
        design, tied = _resolve(task)
        extra = {
            "tied": json.dumps(tied),
            "chip_json": json.dumps(design["chip"]),
            "tech_json": json.dumps(design["tech"]),
        }
        try:
            chip = ChipSpec.model_validate(design["chip"])
            tech = TechSpec.model_validate(design["tech"])
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            return _row(task, STATUS_INVALID, f"field '{loc}': {err['msg']}", **extra)
        status, reason, metrics = _measure(chip, tech, _Workload(task.workload, chip))
        return _row(task, status, reason, **extra, **metrics)
    except RomachipError as exc:
        return _row(task, STATUS_INVALID, str(exc))
    except Exception as exc:  # a bug or an unforeseen corner: recorded, the sweep goes on
        return _row(task, STATUS_ERROR, f"{type(exc).__name__}: {exc}")


def evaluate_batch(tasks: list[Task]) -> list[dict]:
    """Rows of a batch of tasks (one executor task carries several points to amortise its overhead)."""
    return [evaluate(t) for t in tasks]
