"""One design point, fast: does a model fit a chip, and what do decode, TTFT, energy and area come to.

What a design-space sweep asks of every chip it tries: the capacity plan (`romachip.capacity.plan`),
decode steps at a few contexts and the time to first token of one prompt, on one compiled placement.
The answers are the same `ChipModel` numbers `simulate` reports (exact, composed from layer-symmetric
simulations); nothing is interpolated. A design that does not fit gets NaN metrics and its reasons, so
the return shape never depends on the answer.

Placements are cached per process by what compiling reads (the mesh, the L-Unit ROM, the precisions, the
model, format, adapters, policy and strategy), so design points that differ only in physics (clock,
technology, MACs, lanes, NoC width, SRAM sizes) share one compilation.
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from romachip.capacity import plan
from romachip.compile import Placement, compile_placement
from romachip.graph import OpKind, decode_ops
from romachip.perf.energy import Event
from romachip.perf.simulate import ChipModel
from romachip.quant.formats import WeightFormat
from romachip.spec.chip import PRECISION_BYTES, ChipSpec
from romachip.spec.model import ModelSpec
from romachip.spec.tech import TechSpec, load_host_link
from romachip.tensor_bits import DEFAULT_POLICY, StoragePolicy
from romachip.workload import KvConfig, LoraConfig

NAN = float("nan")
_PLACEMENTS: OrderedDict[tuple, Placement] = OrderedDict()
PLACEMENT_CACHE_SIZE = 32


def _placement(
    chip: ChipSpec, spec: ModelSpec, fmt: WeightFormat, lora: LoraConfig | None, policy: StoragePolicy, strategy: str
) -> Placement:
    """The compiled placement, from the per-process cache when the inputs compiling reads are the same."""
    organisation = chip.model_dump_json(include={"name": True, "mesh": True, "l_unit": {"rom"}, "precision": True})
    key = (organisation, spec.model_dump_json(), fmt, lora if lora is not None and lora.enabled else None)
    key += (policy, strategy)
    if key in _PLACEMENTS:
        _PLACEMENTS.move_to_end(key)
        return _PLACEMENTS[key]
    kv = KvConfig(dtype=chip.precision.kv, context_tokens=0)
    placed = compile_placement(chip, spec, fmt, strategy=strategy, policy=policy, lora=key[3], kv=kv)
    _PLACEMENTS[key] = placed
    if len(_PLACEMENTS) > PLACEMENT_CACHE_SIZE:
        _PLACEMENTS.popitem(last=False)
    return placed


@dataclass(frozen=True)
class DesignPoint:
    """Metrics of one chip + model + workload. Rates in tokens/s, times in ms, energy in mJ, area in mm^2."""

    chip: str
    model: str
    fits: bool
    reasons: tuple[str, ...]
    decode_tokens_per_s: dict[int, float] = field(default_factory=dict)  # context -> rate
    energy_per_token_mj: dict[int, float] = field(default_factory=dict)  # context -> energy of that step
    power_w: dict[int, float] = field(default_factory=dict)
    ttft_ms: float = NAN
    prompt_tokens: int = 0
    area_mm2: float = NAN
    voltage_v: float = NAN
    host_bandwidth_needed_bytes_per_s: float = NAN  # at the first context's rate


def design_point(
    chip: ChipSpec,
    spec: ModelSpec,
    *,
    fmt: WeightFormat,
    lora: LoraConfig | None,
    contexts: tuple[int, ...] = (0, 1024),
    prompt_tokens: int = 256,
    policy: StoragePolicy | str = DEFAULT_POLICY,
    strategy: str = "spread",
    tech: TechSpec | None = None,
) -> DesignPoint:
    """Plan the fit at the longest context asked for, then decode at `contexts` and prefill `prompt_tokens`."""
    with _no_cycle_collection():
        return _design_point(chip, spec, fmt, lora, contexts, prompt_tokens, policy, strategy, tech)


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """The cyclic garbage collector paused while a design point runs: it allocates ~20,000 short-lived
    lists and tuples (the task graphs and event heaps), all freed by reference counting, and the collector
    would otherwise walk them several times a point (~10% of its time). Restored as it was found."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _design_point(
    chip: ChipSpec,
    spec: ModelSpec,
    fmt: WeightFormat,
    lora: LoraConfig | None,
    contexts: tuple[int, ...],
    prompt_tokens: int,
    policy: StoragePolicy | str,
    strategy: str,
    tech: TechSpec | None,
) -> DesignPoint:
    lora_cfg = lora if lora is not None else LoraConfig(rank=0)
    kv = KvConfig(dtype=chip.precision.kv, context_tokens=max(max(contexts) + 1, prompt_tokens))
    placement = _placement(chip, spec, fmt, lora, StoragePolicy.parse(policy), strategy)  # one compilation
    fit = plan(chip, spec, fmt=fmt, lora=lora_cfg, kv=kv, placement=placement)
    if not fit.fits:
        return DesignPoint(chip.name, spec.name, False, tuple(fit.reasons))
    cm = ChipModel(chip, spec, fmt=fmt, lora=lora, tech=tech, placement=placement)
    clock = chip.clock_hz
    rates, energy, power = {}, {}, {}
    runs = {c: cm.decode(c) for c in dict.fromkeys(contexts)}  # each context once
    for c in contexts:
        e = cm.energy(runs[c])
        rates[c], energy[c], power[c] = clock / runs[c].cycles, e.total_mj, e.power_w
    host_bytes = runs[contexts[0]].count(Event.HOST_BITS) / 8
    ttft_ms = cm.prefill_cycles(prompt_tokens) / clock * 1e3 if prompt_tokens > 0 else NAN
    return DesignPoint(
        chip=chip.name,
        model=spec.name,
        fits=True,
        reasons=(),
        decode_tokens_per_s=rates,
        energy_per_token_mj=energy,
        power_w=power,
        ttft_ms=ttft_ms,
        prompt_tokens=prompt_tokens,
        area_mm2=cm.area.total_mm2,
        voltage_v=cm.physics.op.voltage_v,
        host_bandwidth_needed_bytes_per_s=host_bytes * rates[contexts[0]],
    )


def host_bytes_per_token(chip: ChipSpec, spec: ModelSpec, *, fmt: WeightFormat, policy: StoragePolicy | str) -> float:
    """Bytes one decode step moves over the host link, as the timing model counts them: token ids, an
    off-chip embedding row, an off-chip LM head's table and its input (perf/timing.py)."""
    host = load_host_link(chip.host_link)
    pol = StoragePolicy.parse(policy)
    act = int(PRECISION_BYTES[chip.precision.activation])
    total = float(host.token_io_bytes)
    for op in decode_ops(spec, 0, fmt=fmt, policy=pol, activation_bytes=act):
        if op.weight_off_chip and op.kind == OpKind.EMBEDDING:
            total += op.weight_bits_read / 8
        elif op.weight_off_chip and op.kind == OpKind.LM_HEAD:
            total += op.weight_bits_read / 8 + op.activation_bytes_in
    return total
