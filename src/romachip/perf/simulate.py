"""`simulate`: TTFT, decode tokens/s at every context of a run, energy, power and area of a chip + model.

Prefill runs as token batches of `prefill_token_batch` tokens that pipeline through the layers (batch
b+1 projects while batch b attends). Decode steps are simulated one per distinct context *signature*:
the timing of a step depends on the context only through the number of keys the busiest H-Unit holds
(the KV cache is split by position over a layer's units), so the steps of a run are simulated exactly,
once per distinct value, not interpolated. Energy counts are linear in the context, so the average
over a run is the mean of its first and last step (leakage uses the exact total time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from romachip.compile import Placement, compile_placement
from romachip.graph import Op, decode_ops, prefill_ops
from romachip.perf.area import AreaReport, chip_area
from romachip.perf.energy import EnergyReport, phase_energy
from romachip.perf.kernel import Schedule, Simulator
from romachip.perf.mapping import PlacementView
from romachip.perf.timing import PRECISION_BYTES, PhaseBuilder
from romachip.quant.formats import WeightFormat
from romachip.spec.chip import ChipSpec
from romachip.spec.model import ModelSpec
from romachip.spec.tech import TechSpec, load_tech
from romachip.storage import DEFAULT_POLICY, StoragePolicy
from romachip.workload import KvConfig, LoraConfig

UNIT_CLASSES = ("L", "H", "V", "noc.down", "noc.up", "noc.row")


@dataclass(frozen=True)
class PhaseRun:
    """One simulated phase: its schedule, the events it counted, and its energy."""

    schedule: Schedule
    events: dict[str, float]
    lora_events: dict[str, float]
    energy: EnergyReport
    cycles: int

    def bound_shares(self) -> dict[str, float]:
        crit = self.schedule.critical_bound_cycles()
        total = sum(crit.values()) or 1
        return {k: v / total for k, v in sorted(crit.items(), key=lambda kv: -kv[1])}

    def utilization(self) -> dict[str, float]:
        """Busy share of the busiest resource of each class (L, H, V and the NoC link classes)."""
        out: dict[str, float] = {}
        for res, busy in self.schedule.busy_cycles.items():
            cls = next((c for c in UNIT_CLASSES if res == c or (len(c) == 1 and res.startswith(c))), res)
            out[cls] = max(out.get(cls, 0.0), busy / max(self.cycles, 1))
        return out


@dataclass(frozen=True)
class SimReport:
    """What the chip does for one request. Times in ms, energy in mJ, power in W, area in mm^2."""

    chip: str
    model: str
    weight_bits: int
    lora_rank: int
    prompt_tokens: int
    generate_tokens: int
    clock_hz: float
    ttft_ms: float
    prefill_cycles: int
    decode_tokens_per_s: float  # generated tokens after the first / their total decode time
    decode_tokens_per_s_first: float  # at the first context of the run (the prompt length)
    decode_tokens_per_s_last: float  # at the last context of the run
    decode_tokens_per_s_by_context: dict[int, float]  # every simulated context signature, first and last
    decode_method: str
    energy_per_token_mj: float  # decode, averaged over the run
    energy_per_token_by_part_mj: dict[str, float]  # "unit.event" -> mJ per decoded token
    prefill_energy_mj: float
    power_w: float  # decode, average
    prefill_power_w: float
    bound_by_phase: dict[str, dict[str, float]]  # phase -> bound kind -> share of the critical path
    utilization_by_phase: dict[str, dict[str, float]]  # phase -> unit/link class -> busy share
    area_mm2: float
    area_breakdown_mm2: dict[str, float]
    area_parts_mm2: dict[str, float]
    lora_time_share: float  # share of the decode critical path spent on the LoRA path
    lora_energy_share: float  # share of decode dynamic energy spent on LoRA MACs and weight reads
    schedules: dict[str, Schedule] = field(repr=False, compare=False, default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "schedules"}
        d["decode_tokens_per_s_by_context"] = {str(k): v for k, v in self.decode_tokens_per_s_by_context.items()}
        return d


class ChipModel:
    """A chip, its technology, a model and its placement: the fixed part of many simulations."""

    def __init__(
        self,
        chip: ChipSpec,
        spec: ModelSpec,
        *,
        fmt: WeightFormat,
        lora: LoraConfig | None,
        tech: TechSpec | None = None,
        placement: Placement | None = None,
        strategy: str = "spread",
        policy: StoragePolicy = DEFAULT_POLICY,
    ) -> None:
        self.chip, self.spec, self.fmt, self.policy = chip, spec, fmt, policy
        self.lora = lora if lora is not None and lora.enabled else None
        self.tech = tech or load_tech(chip.tech)
        kv = KvConfig(dtype=chip.precision.kv, context_tokens=0)
        self.placement = placement or compile_placement(
            chip, spec, fmt, strategy=strategy, policy=policy, lora=self.lora, kv=kv
        )
        self.view = PlacementView(chip, self.placement)
        self.area: AreaReport = chip_area(chip, self.tech)
        self._decode_cache: dict[tuple[int, ...], PhaseRun] = {}

    def _graph_kwargs(self) -> dict:
        p = self.chip.precision
        return {
            "fmt": self.fmt,
            "lora": self.lora,
            "kv_bytes_per_element": int(PRECISION_BYTES[p.kv]),
            "activation_bytes": int(PRECISION_BYTES[p.activation]),
            "policy": self.policy,
        }

    def _run(self, batches: list[list[Op]]) -> PhaseRun:
        sim = Simulator()
        builder = PhaseBuilder(sim, self.chip, self.view)
        for i, ops in enumerate(batches):
            builder.batch(ops, prio=i)
        schedule = sim.run()
        events: dict[str, float] = {}
        lora_events: dict[str, float] = {}
        for name, counts in builder.work.items():
            for k, v in counts.items():
                events[k] = events.get(k, 0.0) + v
                if name.endswith((".lora_a", ".lora_b")):
                    lora_events[k] = lora_events.get(k, 0.0) + v
        cycles = schedule.makespan_cycles
        energy = phase_energy(
            events, self.chip, self.tech, time_s=cycles / self.chip.clock_hz,
            area_by_unit_mm2=self.area.by_unit_mm2, hop_mm=self.area.matrix_unit_pitch_mm,
        )  # fmt: skip
        return PhaseRun(schedule, events, lora_events, energy, cycles)

    def prefill(self, tokens: int) -> PhaseRun:
        """Prefill of a fresh prompt of `tokens` tokens, in pipelined token batches."""
        batch = self.chip.l_unit.prefill_token_batch
        n = math.ceil(tokens / batch)
        batches = []
        for i in range(n):
            t = min(batch, tokens - i * batch)
            ops = prefill_ops(self.spec, t, past_tokens=i * batch, **self._graph_kwargs())
            if i < n - 1:  # only the last batch computes logits
                ops = [op for op in ops if op.name not in ("final_norm", "lm_head")]
            batches.append(ops)
        return self._run(batches)

    def context_signature(self, context: int) -> tuple[int, ...]:
        """What a decode step's timing depends on: keys held by the busiest H-Unit, per group size."""
        keys = context + 1
        return tuple(math.ceil(keys / max(1, min(int(n), keys))) for n in sorted(set(self.view.group_units)))

    def decode(self, context: int) -> PhaseRun:
        """One decode step with `context` tokens in the KV cache (memoised by context signature for timing)."""
        return self._run([decode_ops(self.spec, context, **self._graph_kwargs())])

    def decode_cycles(self, context: int) -> int:
        sig = self.context_signature(context)
        if sig not in self._decode_cache:
            self._decode_cache[sig] = self.decode(context)
        return self._decode_cache[sig].cycles


def _per_token_parts(energy: EnergyReport) -> dict[str, float]:
    return {f"{u}.{k}": v for (u, k), v in sorted(energy.parts_mj.items())}


def simulate(
    chip: ChipSpec,
    spec: ModelSpec,
    *,
    fmt: WeightFormat,
    lora: LoraConfig | None = None,
    prompt_tokens: int,
    generate_tokens: int,
    tech: TechSpec | None = None,
    strategy: str = "spread",
    policy: StoragePolicy = DEFAULT_POLICY,
) -> SimReport:
    """Simulate a prompt of `prompt_tokens` and the decode of `generate_tokens` tokens on `chip`.

    The first generated token comes out of the prefill (TTFT); the others are decode steps at contexts
    prompt_tokens .. prompt_tokens + generate_tokens - 2 (one step at prompt_tokens if only one token).
    """
    if prompt_tokens < 1 or generate_tokens < 1:
        from romachip.errors import CapacityError

        raise CapacityError(
            f"simulate needs a prompt and a generation of at least 1 token, got {prompt_tokens}/{generate_tokens}"
        )
    model = ChipModel(chip, spec, fmt=fmt, lora=lora, tech=tech, strategy=strategy, policy=policy)
    return report(model, prompt_tokens, generate_tokens)


def report(model: ChipModel, prompt_tokens: int, generate_tokens: int) -> SimReport:
    """Run the phases of one request on a prepared ChipModel and summarise them."""
    chip, clock = model.chip, model.chip.clock_hz
    pre = model.prefill(prompt_tokens)
    first_ctx = prompt_tokens
    last_ctx = prompt_tokens + max(generate_tokens - 2, 0)
    contexts = range(first_ctx, last_ctx + 1)
    total_cycles, by_ctx, seen = 0, {}, set()
    for c in contexts:
        sig = model.context_signature(c)
        cycles = model.decode_cycles(c)
        total_cycles += cycles
        if sig not in seen or c in (first_ctx, last_ctx):
            seen.add(sig)
            by_ctx[c] = clock / cycles
    steps = len(contexts)
    first, last = model.decode(first_ctx), model.decode(last_ctx)
    leak = {k: v for k, v in first.energy.parts_mj.items() if k[1] == "leakage"}
    step_s = total_cycles / clock / steps
    parts = {}
    for key in set(first.energy.parts_mj) | set(last.energy.parts_mj):
        if key[1] == "leakage":
            parts[key] = leak[key] / first.energy.time_s * step_s
        else:
            parts[key] = (first.energy.parts_mj.get(key, 0.0) + last.energy.parts_mj.get(key, 0.0)) / 2
    per_token = EnergyReport(parts, step_s)
    lora_dyn = _lora_energy(model, first)
    dyn = sum(v for k, v in first.energy.parts_mj.items() if k[1] != "leakage")
    crit = first.schedule.critical_bound_cycles()
    return SimReport(
        chip=chip.name,
        model=model.spec.name,
        weight_bits=model.fmt.bits,
        lora_rank=model.lora.rank if model.lora else 0,
        prompt_tokens=prompt_tokens,
        generate_tokens=generate_tokens,
        clock_hz=clock,
        ttft_ms=pre.cycles / clock * 1e3,
        prefill_cycles=pre.cycles,
        decode_tokens_per_s=1.0 / step_s,
        decode_tokens_per_s_first=clock / first.cycles,
        decode_tokens_per_s_last=clock / last.cycles,
        decode_tokens_per_s_by_context=by_ctx,
        decode_method=(
            f"{len(seen)} decode step(s) simulated for {steps} context(s): a step's timing depends on the context "
            "only through the keys the busiest H-Unit holds, so each distinct value is simulated once (exact)"
        ),
        energy_per_token_mj=per_token.total_mj,
        energy_per_token_by_part_mj=_per_token_parts(per_token),
        prefill_energy_mj=pre.energy.total_mj,
        power_w=per_token.power_w,
        prefill_power_w=pre.energy.power_w,
        bound_by_phase={
            "prefill": pre.bound_shares(),
            "decode_first": first.bound_shares(),
            "decode_last": last.bound_shares(),
        },
        utilization_by_phase={
            "prefill": pre.utilization(),
            "decode_first": first.utilization(),
            "decode_last": last.utilization(),
        },
        area_mm2=model.area.total_mm2,
        area_breakdown_mm2=dict(model.area.by_unit_mm2),
        area_parts_mm2=dict(model.area.by_part_mm2),
        lora_time_share=crit.get("lora", 0) / max(sum(crit.values()), 1),
        lora_energy_share=lora_dyn / dyn if dyn > 0 else 0.0,
        schedules={"prefill": pre.schedule, "decode_first": first.schedule, "decode_last": last.schedule},
    )


def _lora_energy(model: ChipModel, run: PhaseRun) -> float:
    if not run.lora_events:
        return 0.0
    e = phase_energy(
        run.lora_events, model.chip, model.tech, time_s=0.0, area_by_unit_mm2={}, hop_mm=model.area.matrix_unit_pitch_mm
    )
    return e.total_mj
