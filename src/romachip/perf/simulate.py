"""`simulate`: TTFT, decode tokens/s at every context of a run, energy, power and area of a chip + model.

Prefill runs as token batches that pipeline through the layers (batch b+1 projects while batch b
attends). Decode steps are simulated one per distinct context *signature*: a step depends on the
context only through the keys the busiest H-Unit holds (the KV cache is split by position over a
layer's units) and the softmax's cycles on the vector units, so every step of a run is simulated
exactly, once per distinct signature, not interpolated. Energy counts are linear in the context, so the average
over a run is the mean of its first and last step (leakage uses the exact total time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from romachip.compile import Placement, compile_placement
from romachip.errors import CapacityError
from romachip.graph import VECTOR_OPS_PER_ELEMENT, Op, OpKind, decode_ops, prefill_ops
from romachip.perf.area import AreaReport, chip_area
from romachip.perf.energy import EnergyReport, phase_energy
from romachip.perf.kernel import Schedule, Simulator
from romachip.perf.mapping import PlacementView
from romachip.perf.timing import PRECISION_BYTES, PhaseBuilder
from romachip.quant.formats import WeightFormat
from romachip.spec.chip import ChipSpec
from romachip.spec.model import ModelSpec
from romachip.spec.tech import TechSpec, load_tech
from romachip.tensor_bits import DEFAULT_POLICY, StoragePolicy
from romachip.workload import KvConfig, LoraConfig

UNIT_CLASSES = ("L", "H", "V", "noc.down", "noc.up", "noc.row")
MAX_PREFILL_BATCHES = 16


@dataclass(frozen=True)
class PhaseRun:
    """One simulated phase: cycles, critical-path cycles by bound, busy cycles by resource, counted events.

    `schedule` is the full task schedule when the phase was simulated whole (None when it was composed
    from a one-layer and a two-layer simulation, see `ChipModel.decode`)."""

    cycles: int
    bound_cycles: dict[str, float]
    busy_cycles: dict[str, float]
    events: dict[str, float]
    lora_events: dict[str, float]
    schedule: Schedule | None = None

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
        """self + repeats x (other - self): `self` simulated with one layer, `other` with two, the layers
        being identical and strictly serial (each starts after the previous one's residual add)."""

        def lin(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
            return {
                k: max(0.0, a.get(k, 0.0) + repeats * (b.get(k, 0.0) - a.get(k, 0.0))) for k in dict.fromkeys([*a, *b])
            }

        return PhaseRun(
            cycles=self.cycles + repeats * (other.cycles - self.cycles),
            bound_cycles=lin(self.bound_cycles, other.bound_cycles),
            busy_cycles=lin(self.busy_cycles, other.busy_cycles),
            events=lin(self.events, other.events),
            lora_events=lin(self.lora_events, other.lora_events),
        )


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

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
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
        if placement is not None:  # the caller's (an image's, or the one its capacity check compiled)
            policy = StoragePolicy.parse(placement.policy)
        self.chip, self.spec, self.fmt, self.policy = chip, spec, fmt, policy
        self.lora = lora if lora is not None and lora.enabled else None
        self.tech = tech or load_tech(chip.tech)
        self.kv = KvConfig(dtype=chip.precision.kv, context_tokens=0)  # the engine's scale bytes per vector
        self.placement = placement or compile_placement(
            chip, spec, fmt, strategy=strategy, policy=policy, lora=self.lora, kv=self.kv
        )
        self.placement.require_rom_fit()
        self.view = PlacementView(chip, self.placement)
        self.area: AreaReport = chip_area(chip, self.tech)
        self._decode_cache: dict[tuple[int, ...], PhaseRun] = {}

    def _graph_kwargs(self) -> dict:
        p = self.chip.precision
        return {
            "fmt": self.fmt,
            "lora": self.lora,
            "kv_bytes_per_element": int(PRECISION_BYTES[p.kv]),
            "kv_scale_bytes_per_vector": self.kv.scale_bytes_per_vector,
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
        busy = {k: float(v) for k, v in schedule.busy_cycles.items()}
        bound = {k: float(v) for k, v in schedule.critical_bound_cycles().items()}
        return PhaseRun(schedule.makespan_cycles, bound, busy, events, lora_events, schedule)

    def energy(self, run: PhaseRun, *, lora_only: bool = False) -> EnergyReport:
        """Energy of a phase: its events x the TechSpec's table, plus leakage over its time."""
        if lora_only:
            return phase_energy(
                run.lora_events, self.chip, self.tech, time_s=0.0, area_by_unit_mm2={},
                hop_mm=self.area.matrix_unit_pitch_mm,
            )  # fmt: skip
        return phase_energy(
            run.events, self.chip, self.tech, time_s=run.cycles / self.chip.clock_hz,
            area_by_unit_mm2=self.area.by_unit_mm2, hop_mm=self.area.matrix_unit_pitch_mm,
        )  # fmt: skip

    def prefill(self, tokens: int) -> PhaseRun:
        """Prefill of a fresh prompt of `tokens` tokens, in token batches that pipeline through the layers.

        The hardware reuses each ROM row for `prefill_token_batch` tokens; the simulation groups tokens
        into at most MAX_PREFILL_BATCHES batches (a coarser pipeline granularity for long prompts, so a
        4K-token prompt costs 16 batches of simulation, not 128); ROM reads still count the hardware batch.
        """
        batch = max(self.chip.l_unit.prefill_token_batch, math.ceil(tokens / MAX_PREFILL_BATCHES))
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
        """What a decode step's timing depends on the context through: the keys the busiest H-Unit holds
        (per KV ring, from the Placement) and the softmax's cycles on the vector units (all heads x all keys)."""
        keys = context + 1
        held = self.view.kv_signature(keys)  # the Placement's KV rule, busiest unit of each ring
        softmax_ops = self.spec.num_heads * keys * VECTOR_OPS_PER_ELEMENT[OpKind.SOFTMAX]
        return (*held, math.ceil(softmax_ops / (self.chip.vector_units * self.chip.vector_unit.lanes)))

    def decode(self, context: int, *, exact: bool = False) -> PhaseRun:
        """One decode step with `context` tokens in the KV cache.

        With one unit group (the `spread` strategy) every layer does the same work on the same units and
        starts only after the previous layer's residual add, so the step is composed exactly from a
        one-layer and a two-layer simulation (tests check it against the whole step). `exact=True`, or
        several unit groups, simulates every layer (and keeps the schedule, e.g. for a trace).
        """
        layers = self.spec.num_layers
        if exact or self.view.groups > 1 or layers < 3:
            return self._run([decode_ops(self.spec, context, **self._graph_kwargs())])
        runs = []
        for n in (1, 2):
            spec = self.spec.model_copy(update={"num_layers": n})
            runs.append(self._run([decode_ops(spec, context, **self._graph_kwargs())]))
        return runs[0].extend(runs[1], layers - 1)

    def schedules(self, prompt_tokens: int, generate_tokens: int) -> dict[str, Schedule]:
        """Whole-phase schedules of a request (prefill, first and last decode step), e.g. for a trace."""
        last = prompt_tokens + max(generate_tokens - 2, 0)
        out = {"prefill": self.prefill(prompt_tokens).schedule}
        out[f"decode at context {prompt_tokens}"] = self.decode(prompt_tokens, exact=True).schedule
        if last != prompt_tokens:
            out[f"decode at context {last}"] = self.decode(last, exact=True).schedule
        return out

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
    placement: Placement | None = None,
) -> SimReport:
    """Simulate a prompt of `prompt_tokens` and the decode of `generate_tokens` tokens on `chip`.

    `placement`: the model's placement when the caller has one (an image's): its policy and strategy win.

    The first generated token comes out of the prefill (TTFT); the others are decode steps at contexts
    prompt_tokens .. prompt_tokens + generate_tokens - 2 (one step at prompt_tokens if only one token).
    """
    if prompt_tokens < 1 or generate_tokens < 1:
        raise CapacityError(
            f"simulate needs a prompt and a generation of at least 1 token, got {prompt_tokens}/{generate_tokens}"
        )
    model = ChipModel(chip, spec, fmt=fmt, lora=lora, tech=tech, strategy=strategy, policy=policy, placement=placement)
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
    e_first, e_last = model.energy(first), model.energy(last)
    leak = {k: v for k, v in e_first.parts_mj.items() if k[1] == "leakage"}
    step_s = total_cycles / clock / steps
    parts = {}
    for key in dict.fromkeys([*e_first.parts_mj, *e_last.parts_mj]):  # not a set: its order varies by process
        if key[1] == "leakage":
            parts[key] = leak[key] / e_first.time_s * step_s
        else:
            parts[key] = (e_first.parts_mj.get(key, 0.0) + e_last.parts_mj.get(key, 0.0)) / 2
    per_token = EnergyReport(parts, step_s)
    lora_dyn = model.energy(first, lora_only=True).total_mj
    dyn = sum(v for k, v in e_first.parts_mj.items() if k[1] != "leakage")
    crit = first.bound_cycles
    e_pre = model.energy(pre)
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
            "only through the keys the busiest H-Unit holds and the softmax cycles, so each distinct signature "
            "is simulated once (exact, no interpolation)"
        ),
        energy_per_token_mj=per_token.total_mj,
        energy_per_token_by_part_mj=_per_token_parts(per_token),
        prefill_energy_mj=e_pre.total_mj,
        power_w=per_token.power_w,
        prefill_power_w=e_pre.power_w,
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
    )
