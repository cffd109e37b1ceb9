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
from romachip.perf.energy import EnergyModel, EnergyReport, Event
from romachip.perf.event_kernel import Schedule, Simulator
from romachip.perf.mapping import PlacementView
from romachip.perf.phase import PhaseRun
from romachip.perf.physics import chip_physics
from romachip.perf.rates import ChipRates
from romachip.perf.timing import PhaseBuilder
from romachip.quant.formats import WeightFormat
from romachip.spec.chip import PRECISION_BYTES, ChipSpec
from romachip.spec.model import ModelSpec
from romachip.spec.tech import HostLinkSpec, TechSpec, load_host_link, load_tech
from romachip.tensor_bits import DEFAULT_POLICY, StoragePolicy
from romachip.workload import KvConfig, LoraConfig

#: Prefill token batches in flight at once: one projecting on the L-Units while the other attends on the
#: H-Units; the vector-unit SRAM holds both batches' activations and score tiles (`prefill_token_batch`).
BATCHES_IN_FLIGHT = 2


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
    voltage_v: float  # operating voltage at clock_hz (TechSpec voltage; 0 when the tech has no V/f relation)
    hops_per_cycle: int  # mesh hops per cycle, derived from wire delay unless the chip pins it
    host_link: str
    host_bytes_per_token: float  # decode: off-chip tables and token I/O over the host link, per token
    host_bandwidth_needed_bytes_per_s: float  # host_bytes_per_token x the run's average decode tokens/s

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["decode_tokens_per_s_by_context"] = {str(k): v for k, v in self.decode_tokens_per_s_by_context.items()}
        return d


class ChipModel:
    """A chip, its technology, a model and its placement: the fixed part of many simulations.

    `policy` takes a StoragePolicy or its string (as `plan` does); `placement` an already compiled
    Placement (else it is compiled here); `host` a host-link preset name, path or spec (default: the
    chip's `host_link`). A clock above the technology's f_max raises SpecError."""

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
        policy: StoragePolicy | str = DEFAULT_POLICY,
        host: HostLinkSpec | str | None = None,
    ) -> None:
        if placement is not None:  # the caller's (an image's, or the one its capacity check compiled)
            policy = placement.policy
        self.chip, self.spec, self.fmt, self.policy = chip, spec, fmt, StoragePolicy.parse(policy)
        self.lora = lora if lora is not None and lora.enabled else None
        self.tech = tech or load_tech(chip.tech)
        self.host = host if isinstance(host, HostLinkSpec) else load_host_link(host or chip.host_link)
        self.kv = KvConfig(dtype=chip.precision.kv, context_tokens=0)  # the engine's scale bytes per vector
        self.placement = placement or compile_placement(
            chip, spec, fmt, strategy=strategy, policy=self.policy, lora=self.lora, kv=self.kv
        )
        self.placement.require_rom_fit()
        self.view = PlacementView.of(chip, self.placement)
        self.area: AreaReport = chip_area(chip, self.tech)
        self.physics = chip_physics(chip, self.tech, self.area.matrix_unit_pitch_mm)
        self.rates = ChipRates.of(chip, self.physics, self.host)
        self.energy_model = EnergyModel(
            chip, self.tech, hop_mm=self.area.matrix_unit_pitch_mm, physics=self.physics, host=self.host
        )
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

    def _schedule(self, batches: list[list[Op]], *, count_events: bool = True) -> tuple[Schedule, PhaseBuilder]:
        sim = Simulator()
        builder = PhaseBuilder(sim, self.chip, self.view, self.rates, count_events=count_events)
        self._add_batches(builder, batches)
        return sim.run(), builder

    @staticmethod
    def _add_batches(builder: PhaseBuilder, batches: list[list[Op]]) -> None:
        last: list[int] = []
        for i, ops in enumerate(batches):  # batch i reuses the activation buffer of batch i - BATCHES_IN_FLIGHT
            reuse = last[i - BATCHES_IN_FLIGHT] if i >= BATCHES_IN_FLIGHT else None
            last.append(builder.batch(ops, prio=i, after=[reuse] if reuse is not None else []))

    def _run(self, batches: list[list[Op]]) -> PhaseRun:
        schedule, builder = self._schedule(batches)
        return _phase_run(schedule, builder.events, builder.lora_events)

    def _one_and_two_layers(
        self, two: list[list[Op]], *, count_events: bool = True
    ) -> tuple[tuple[Schedule, PhaseBuilder | None], tuple[Schedule, PhaseBuilder]]:
        """The schedules of two-layer batches and of the same batches without layer 1 (the one-layer
        graph), with the builders that counted their events (None: the two-layer builder's
        `events_without`). The one-layer graph is derived from the two-layer build (`Simulator.without`:
        the same tasks, in the same order, as building it alone gives; tests check it), else built apart."""
        sim = Simulator()
        builder = PhaseBuilder(sim, self.chip, self.view, self.rates, count_events=count_events, drop_layer=1)
        self._add_batches(builder, two)
        one = sim.without(builder.dropped, builder.alias) if builder.derivable else None
        if one is None:
            return self._schedule([_drop_layer(ops, 1) for ops in two], count_events=count_events), (sim.run(), builder)
        return (one.run(), None), (sim.run(), builder)

    def _composed(self, two: list[list[Op]], layers: int) -> PhaseRun:
        """A phase of `layers` identical layers from the one- and two-layer runs of its batches."""
        (one_s, one_b), (two_s, two_b) = self._one_and_two_layers(two)
        one_events = (one_b.events, one_b.lora_events) if one_b else (two_b.events_without, two_b.lora_events_without)
        one_run = _phase_run(one_s, *one_events)
        return one_run.extend(_phase_run(two_s, two_b.events, two_b.lora_events), layers - 1)

    def energy(self, run: PhaseRun, *, lora_only: bool = False) -> EnergyReport:
        """Energy of a phase: its events x the energy model, plus leakage over its time."""
        if lora_only:
            return self.energy_model.phase(run.lora_events, time_s=0.0, area_by_unit_mm2={})
        time_s = run.cycles / self.chip.clock_hz
        return self.energy_model.phase(run.events, time_s=time_s, area_by_unit_mm2=self.area.by_unit_mm2)

    def prefill_token_batch(self, tokens: int) -> int:
        """Tokens per prefill batch: the L-Unit's `prefill_token_batch`, fewer when the batch would not fit
        - the vector-unit SRAM, which holds two batches in flight (one attending, one projecting), each with
          its score tile (queries x heads x keys at the partial precision) and its activations, or
        - the H-Unit SRAM left beside the adapters and the prompt's KV cache, where the attending batch's
          scores over the unit's own keys wait for their probabilities (queries x heads x keys held); at
          least one token (with less room a unit would take its keys in chunks, which is not modelled)."""
        s, p, pl = self.spec, self.chip.precision, self.placement
        partial, act = PRECISION_BYTES[p.partial], PRECISION_BYTES[p.activation]
        per_token = s.num_heads * tokens * partial
        per_token += (2 * s.hidden_size + 2 * s.intermediate_size + s.q_size + 2 * s.kv_size) * act
        fits = int(self.chip.vector_sram_bytes // (BATCHES_IN_FLIGHT * per_token))
        if fits < 1:
            raise CapacityError(
                f"a {tokens:,}-token prompt needs {BATCHES_IN_FLIGHT * per_token:,.0f} B of vector-unit SRAM per "
                "prefill token (scores over every key and activations, two batches in flight) and the chip has "
                f"{self.chip.vector_sram_bytes:,} B; use a shorter prompt or more vector SRAM"
            )
        held = pl.kv_tokens(tokens)
        holders = pl.kv_ring >= 0
        if holders.any():
            free = int((self.chip.h_unit.sram.bytes - pl.lora_bytes - held * pl.kv_bytes_per_token)[holders].min())
            fits = min(fits, max(1, free // (s.num_heads * int(held[holders].max()) * partial)))
        return min(self.chip.l_unit.prefill_token_batch, int(fits))

    def prefill(self, tokens: int, *, every_layer: bool = False) -> PhaseRun:
        """Prefill of a fresh prompt of `tokens` tokens, in hardware token batches (`prefill_token_batch`)
        that pipeline through the layers: batch b+1 projects on the L-Units while batch b attends on the
        H-Units, and a batch's attention waits for its own Q/K/V and for the previous batch's K/V.

        With one unit group the layers are identical, and once the batches' pipeline is in its pattern
        every further layer adds the same cycles and events: the phase is composed from a one-layer and a
        two-layer simulation of every batch (tests check it against the whole, cycle for cycle, short and
        long prompts). `every_layer=True`, or several unit groups, simulates every layer."""
        layers = self.spec.num_layers
        if every_layer or self.view.groups > 1 or layers < 3:
            return self._run(self._prefill_batches(self.spec, tokens))
        return self._composed(self._prefill_batches(self.spec.model_copy(update={"num_layers": 2}), tokens), layers)

    def prefill_cycles(self, tokens: int) -> int:
        """`prefill(tokens).cycles` (the TTFT) alone: the same simulations, composed the same way, without
        counting events or walking the critical path, for callers that need only the time (a sweep's
        design point); tests check it equals the full prefill's."""
        layers = self.spec.num_layers
        if self.view.groups > 1 or layers < 3:
            return self._schedule(self._prefill_batches(self.spec, tokens), count_events=False)[0].makespan_cycles
        two = self._prefill_batches(self.spec.model_copy(update={"num_layers": 2}), tokens)
        (one, _), (two_s, _) = self._one_and_two_layers(two, count_events=False)
        return one.makespan_cycles + (layers - 1) * (two_s.makespan_cycles - one.makespan_cycles)

    def _prefill_batches(self, spec: ModelSpec, tokens: int) -> list[list[Op]]:
        batch = self.prefill_token_batch(tokens)
        n = math.ceil(tokens / batch)
        batches = []
        for i in range(n):
            t = min(batch, tokens - i * batch)
            ops = prefill_ops(spec, t, past_tokens=i * batch, **self._graph_kwargs())
            if i < n - 1:  # only the last batch computes logits
                ops = [op for op in ops if not _logits_op(op)]
            batches.append(ops)
        return batches

    def context_signature(self, context: int) -> tuple[int, ...]:
        """What a decode step's timing depends on the context through: the keys the busiest H-Unit holds
        (per KV ring, from the Placement) and the softmax's cycles on the vector units (all heads x all keys)."""
        keys = context + 1
        held = self.view.kv_signature(keys)  # the Placement's KV rule, busiest unit of each ring
        softmax_ops = self.spec.num_heads * keys * VECTOR_OPS_PER_ELEMENT[OpKind.SOFTMAX]
        return (*held, self.rates.vector_cycles(softmax_ops))

    def decode(self, context: int, *, every_layer: bool = False) -> PhaseRun:
        """One decode step with `context` tokens in the KV cache.

        With one unit group (the `spread` strategy) every layer does the same work on the same units and
        starts only after the previous layer's residual add, so the step is composed exactly from a
        one-layer and a two-layer simulation (tests check it against the whole step). `every_layer=True`,
        or several unit groups, simulates every layer (and keeps the schedule, e.g. for a trace).
        """
        layers = self.spec.num_layers
        if every_layer or self.view.groups > 1 or layers < 3:
            return self._run([decode_ops(self.spec, context, **self._graph_kwargs())])
        two = decode_ops(self.spec.model_copy(update={"num_layers": 2}), context, **self._graph_kwargs())
        return self._composed([two], layers)

    def schedules(self, prompt_tokens: int, generate_tokens: int) -> dict[str, Schedule]:
        """Whole-phase schedules of a request (prefill, first and last decode step), e.g. for a trace."""
        last = prompt_tokens + max(generate_tokens - 2, 0)
        out = {"prefill": self.prefill(prompt_tokens, every_layer=True).schedule}
        out[f"decode at context {prompt_tokens}"] = self.decode(prompt_tokens, every_layer=True).schedule
        if last != prompt_tokens:
            out[f"decode at context {last}"] = self.decode(last, every_layer=True).schedule
        return out

    def decode_cycles(self, context: int) -> int:
        sig = self.context_signature(context)
        if sig not in self._decode_cache:
            self._decode_cache[sig] = self.decode(context)
        return self._decode_cache[sig].cycles


def _phase_run(schedule: Schedule, events: dict, lora_events: dict) -> PhaseRun:
    busy = {k: float(v) for k, v in schedule.busy_cycles.items()}
    bound = {k: float(v) for k, v in schedule.critical_bound_cycles().items()}
    return PhaseRun(schedule.makespan_cycles, bound, busy, events, lora_events, schedule)


def _drop_layer(ops: list[Op], layer: int) -> list[Op]:
    """The graph without one block's ops (a block's ops depend on nothing but its index)."""
    return [op for op in ops if op.layer != layer]


def _logits_op(op: Op) -> bool:
    """The final norm and the LM head: only the prompt's last position needs them."""
    return op.kind == OpKind.LM_HEAD or (op.kind == OpKind.NORM and op.layer is None)


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
    host_bytes = (first.count(Event.HOST_BITS) + last.count(Event.HOST_BITS)) / 16  # mean of the two, in bytes
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
        voltage_v=model.physics.op.voltage_v,
        hops_per_cycle=model.physics.hops_per_cycle,
        host_link=model.host.name,
        host_bytes_per_token=host_bytes,
        host_bandwidth_needed_bytes_per_s=host_bytes / step_s,
    )
