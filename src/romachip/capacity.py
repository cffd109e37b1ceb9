"""Does a model, with its LoRA adapters and a KV context, fit a chip, and where does every byte go?

`plan(chip, spec, fmt=..., lora=..., kv=..., policy=...) -> CapacityReport` answers from three sources,
each the single definition of its quantity:

- ROM: the exact bits of every stored tensor (tensor_bits.py: codes, scales, zeros; FP16 norm vectors) and
  their per-unit layout (compile.py's Placement: whole output rows per L-Unit, segments on word
  boundaries, tiles on B-ROM group boundaries). It fits when the fullest L-Unit fits its own ROM; the
  chip-wide margin is reported too, but a unit cannot lend ROM to its neighbour.
- H-Unit SRAM (LoRA + KV): the KV cache is split by token position (the Placement's `kv_layout`,
  token_round_robin): with n units in a layer's ring, token t's K and V of every layer, every channel,
  live in the unit of rank t mod n, so a unit stores `kv_bytes_per_token[u]` (a whole token) for each
  of the ceil((L - rank) / n) tokens it holds at context L (`Placement.kv_tokens`). LoRA B [out, rank]
  rows sit beside the base rows they add to (the Placement's row split); the rank rows of every A
  [rank, in] are dealt round-robin over the units that hold the module, continuing from one module to
  the next, so no unit holds more than one A row above its fair share (`lora_unit_bytes`). Each
  matrix's FP32 scale word sits with its first row. The LoRA share is rounded up to whole SRAM words
  (macro columns); the rest of the unit holds KV: cap_u = floor(free_u / kv_bytes_per_token[u])
  tokens. The maximum context is the largest L every unit can hold, min over units of
  cap_u * n + rank_u (`Placement.kv_context_bound`), capped by the model's max_position_embeddings.
  Adapters that alone overflow a unit give 0 tokens and say why.
- Vector-unit SRAM (activations): the peak live activations of one decode step at the context (the
  largest op's input + output, from the graph, plus the residual stream), split evenly over the vector
  units and rounded up to whole bytes. Prefill is assumed chunked so that it never needs more.

The report is composed of three small ones, each computed on its own: `rom_fit` -> RomFit, the context
limit (`context_limit`) -> ContextLimit, and `sram_fit` -> SramFit at the requested context;
`CapacityReport.to_dict` flattens them into the document `romachip fit --json` prints.

Library code: no printing; bad input raises RomachipError subclasses.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from romachip.compile import Placement, compile_placement, with_workload
from romachip.errors import CapacityError
from romachip.graph import decode_ops
from romachip.quant.formats import WeightFormat
from romachip.spec.chip import ChipSpec
from romachip.spec.model import ModelSpec
from romachip.tensor_bits import DEFAULT_POLICY, StoragePolicy, TensorKind, model_tensors
from romachip.workload import KvConfig, LoraConfig

DEFAULT_FORMAT = WeightFormat()
DEFAULT_LORA = LoraConfig()
DEFAULT_KV = KvConfig()
DEFAULT_STRATEGY = "spread"

#: Reasons the maximum context stops where it does.
LIMIT_H_SRAM = "h_unit_sram"
LIMIT_LORA = "lora_overflows_h_unit_sram"
LIMIT_VECTOR = "vector_unit_sram"
LIMIT_MODEL = "model_max_position_embeddings"


@dataclass(frozen=True)
class BreakdownRow:
    """Bytes of one kind of content. ROM kinds give exact tensor bits (rounded up to bytes); `padding`
    is the layout's word/alignment padding; `kv_cache` is at the requested context."""

    kind: str
    memory: str  # rom | host | h_unit_sram | vector_sram | none
    tensors: int
    params: int
    code_bytes: int
    scale_bytes: int
    zero_bytes: int
    bytes: int


@dataclass(frozen=True)
class RomFit:
    """Does the model fit the L-Units' ROM? Sizes in bytes; a unit cannot lend ROM to its neighbour."""

    rom_fits: bool
    rom_bytes_needed: int  # exact bytes of the on-chip tensors (codes + scales + zeros + norms)
    rom_bytes_allocated: int  # what the per-unit layout occupies, padding included
    rom_bytes_available: int
    rom_margin_bytes: int  # available - needed (negative: short by that much chip-wide)
    rom_unit_bytes: int  # ROM of one L-Unit
    rom_unit_bytes_used_max: int  # the fullest L-Unit
    rom_unit_margin_bytes: int  # headroom of the fullest L-Unit (negative: it overflows)
    host_bytes: int  # tables the policy keeps in host memory
    breakdown: tuple[BreakdownRow, ...]  # per tensor kind, and the layout's padding
    reason: str | None  # what overflows (None: it fits)


@dataclass(frozen=True)
class ContextLimit:
    """The longest KV context every H-Unit and vector unit can hold next to the adapters, and what stops it."""

    max_context_tokens: int  # 0 when the adapters alone overflow an H-Unit
    context_limit: str  # LIMIT_*
    h_unit_context_tokens: int  # what the H-Unit SRAM alone allows (-1: the adapters overflow a unit)
    limiting_h_unit: int  # the unit that sets it (-1: none holds KV)


@dataclass(frozen=True)
class SramFit:
    """Where the H-Unit SRAM (LoRA + KV) and the vector units' SRAM (activations) go at the requested context."""

    sram_fits: bool
    sram_bytes_available: int  # H-Unit SRAM for LoRA + KV, all units
    sram_unit_bytes: int
    lora_bytes: int  # exact adapter bytes, all units
    lora_unit_bytes_max: int  # the fullest H-Unit's adapter share, rounded up to SRAM words
    kv_bytes_per_token: int  # all units
    kv_unit_bytes_per_token_max: int  # bytes one H-Unit stores per token it holds (K and V of its ring's layers)
    kv_layout: str  # the Placement's KV rule (token_round_robin)
    kv_unit_tokens_max: int  # tokens the busiest H-Unit holds at context_tokens
    kv_bytes: int  # at context_tokens
    activation_bytes: int  # peak of a decode step at context_tokens
    activation_unit_bytes: int
    vector_sram_bytes_available: int
    vector_unit_bytes: int
    breakdown: tuple[BreakdownRow, ...]  # lora, kv_cache, activations
    reasons: tuple[str, ...]  # what limits the context, and whether the requested one fits


@dataclass(frozen=True)
class CapacityReport:
    """The answer of `plan`: the request, and its ROM fit, context limit and SRAM fit. Every field is always
    present; sizes are bytes, contexts tokens. `to_dict` is the flat document `romachip fit --json` prints."""

    chip: str
    model: str
    weight_format: str
    policy: str
    strategy: str
    lora_rank: int
    lora_targets: tuple[str, ...]
    lora_dtype: str
    kv_dtype: str
    context_tokens: int
    rom: RomFit
    context: ContextLimit
    sram: SramFit

    @property
    def fits(self) -> bool:
        return self.rom.rom_fits and self.sram.sram_fits

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why it does not fit, or what limits the context."""
        return self.sram.reasons + ((self.rom.reason,) if self.rom.reason else ())

    @property
    def breakdown(self) -> tuple[BreakdownRow, ...]:
        return self.rom.breakdown + self.sram.breakdown

    def to_dict(self) -> dict:
        head = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("rom", "context", "sram")}
        parts = [_flat(self.rom, "breakdown", "reason"), _flat(self.sram, "breakdown", "reasons")]
        context = {k: getattr(self.context, k) for k in ("max_context_tokens", "context_limit")}
        d = {**head, "fits": self.fits, "rom_fits": self.rom.rom_fits, "sram_fits": self.sram.sram_fits}
        d.update({k: v for part in parts for k, v in part.items() if k not in ("rom_fits", "sram_fits")}, **context)
        d["lora_targets"] = list(self.lora_targets)
        d["reasons"] = list(self.reasons)
        d["breakdown"] = {row.kind: {k: v for k, v in asdict(row).items() if k != "kind"} for row in self.breakdown}
        return d


def _flat(report: object, *leave: str) -> dict:
    return {f.name: getattr(report, f.name) for f in fields(report) if f.name not in leave}


def check_weight_bits(chip: ChipSpec, bits: int) -> None:
    """CapacityError unless the chip's L-Units take `bits`-bit codes: the one list a user sees (the image
    format has 2/3/4/8-bit codes; a chip's `precision.weight_bits` says which of them its MACs run)."""
    widths = chip.precision.weight_bits
    if bits not in widths:
        raise CapacityError(
            f"chip {chip.name!r} runs {bits}-bit weights on no unit: its L-Units take "
            f"{', '.join(map(str, widths))}-bit codes (precision.weight_bits); pick one of those with --bits"
        )


def _check_chip_support(chip: ChipSpec, fmt: WeightFormat, lora: LoraConfig, kv: KvConfig) -> None:
    p = chip.precision
    check_weight_bits(chip, fmt.bits)
    if lora.dtype not in p.supported_lora:
        raise CapacityError(f"chip {chip.name!r} cannot hold {lora.dtype} LoRA weights (supports {p.supported_lora})")
    if kv.dtype not in p.supported_kv:
        raise CapacityError(f"chip {chip.name!r} cannot hold a {kv.dtype} KV cache (supports {p.supported_kv})")


def _rom_rows(spec: ModelSpec, fmt: WeightFormat, policy: StoragePolicy) -> tuple[list[BreakdownRow], int, int]:
    """ROM breakdown rows per tensor kind, exact on-chip bits and host bytes."""
    rows, on_bits, host_bytes = _model_rom_rows(spec, fmt, policy)
    return list(rows), on_bits, host_bytes


@functools.lru_cache(maxsize=64)
def _model_rom_rows(spec: ModelSpec, fmt: WeightFormat, policy: StoragePolicy) -> tuple[tuple, int, int]:
    """`_rom_rows` once per (model, format, policy) and process (frozen specs: a sweep over chips asks the
    same model's breakdown at every design point)."""
    tensors = model_tensors(spec, fmt, policy)
    rows, on_bits, host_bits = [], 0, 0
    for kind in TensorKind:
        ts = [t for t in tensors if t.kind is kind]
        on = [t for t in ts if t.on_chip]
        memory = "none" if not ts else ("rom" if on else "host")
        pick = on or ts
        code, scale, zero = (sum(getattr(t.bits, k) for t in pick) for k in ("code_bits", "scale_bits", "zero_bits"))
        total = code + scale + zero
        rows.append(
            BreakdownRow(str(kind), memory, len(pick), sum(t.params for t in pick), math.ceil(code / 8),
                         math.ceil(scale / 8), math.ceil(zero / 8), math.ceil(total / 8))
        )  # fmt: skip
        on_bits += sum(t.bits.total_bits for t in on)
        host_bits += sum(t.bits.total_bits for t in ts if not t.on_chip)
    return tuple(rows), on_bits, math.ceil(host_bits / 8)


def lora_unit_bytes(placement: Placement, lora: LoraConfig) -> np.ndarray:
    """[units] LoRA bytes each H-Unit holds for a uniform adapter (Placement.lora_unit_bytes' rule)."""
    return placement.lora_unit_bytes(placement.uniform_ranks(lora), lora.dtype)


@functools.lru_cache(maxsize=256)
def _activation_peak_bytes(spec: ModelSpec, fmt: WeightFormat, context: int, act_bytes: int) -> int:
    """Peak live activation bytes of one decode step: the largest op's in + out, plus the residual stream
    (once per model, format, context and width in a process: a sweep asks it at every design point)."""
    ops = decode_ops(spec, context, fmt=fmt, activation_bytes=act_bytes)
    return max(op.activation_bytes_in + op.activation_bytes_out for op in ops) + spec.hidden_size * act_bytes


def _h_unit_max_context(unit_bytes: int, lora_u: np.ndarray, placement: Placement) -> tuple[int, int]:
    """(largest context every H-Unit can hold under the Placement's KV rule, the limiting unit); -1 tokens
    when adapters overflow."""
    free = unit_bytes - lora_u
    if (free < 0).any():
        return -1, int(np.argmin(free))
    bound = placement.kv_context_bound(free)
    i = int(np.argmin(bound))
    if bound[i] == np.iinfo(np.int64).max:
        return int(bound[i]), -1
    return int(bound[i]), i


def _vector_max_context(spec: ModelSpec, fmt: WeightFormat, act: int, units: int, unit_bytes: int, hi: int) -> int:
    """Largest context <= hi whose decode activations fit each vector unit (-1 if even 0 does not)."""

    def fits(n: int) -> bool:
        return math.ceil(_activation_peak_bytes(spec, fmt, n, act) / units) <= unit_bytes

    if fits(hi):
        return hi
    if not fits(0):
        return -1
    lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _sram_rows(spec: ModelSpec, lora: LoraConfig, kv_bytes: int, act_bytes: int) -> list[BreakdownRow]:
    shapes = spec.linear_shapes()
    adapted = [shapes[m] for m in lora.targets] if lora.enabled else []
    layers = spec.num_layers
    params = layers * sum(lora.rank * (o + i) for o, i in adapted)
    lora_total = layers * sum(lora.module_bytes(o, i) for o, i in adapted)
    elements = params * lora.bytes_per_element
    return [
        BreakdownRow("lora", "h_unit_sram" if adapted else "none", 2 * layers * len(adapted), params, elements,
                     lora_total - elements, 0, lora_total),
        BreakdownRow("kv_cache", "h_unit_sram", 0, 0, 0, 0, 0, kv_bytes),
        BreakdownRow("activations", "vector_sram", 0, 0, 0, 0, 0, act_bytes),
    ]  # fmt: skip


def context_limit(
    chip: ChipSpec, spec: ModelSpec, fmt: WeightFormat, sram_unit: int, lora_u: np.ndarray, placement: Placement
) -> tuple[int, int, int, str]:
    """(H-Unit context, limiting H-Unit, maximum context, what limits it) for per-unit LoRA bytes `lora_u`
    (already rounded to SRAM words) and the KV rule of `placement` (its per-unit bytes per held token and
    token round robin); H-Unit context -1 and maximum 0 when the adapters alone overflow a unit. `plan`
    and the adapter bank both decide with it."""
    h_ctx, h_unit = _h_unit_max_context(sram_unit, lora_u, placement)
    if h_ctx < 0:
        return h_ctx, h_unit, 0, LIMIT_LORA
    cap = min(h_ctx, spec.max_position_embeddings)
    limit = LIMIT_H_SRAM if h_ctx <= spec.max_position_embeddings else LIMIT_MODEL
    act = int(chip.precision.activation_bytes)
    v_ctx = _vector_max_context(spec, fmt, act, chip.vector_units, chip.vector_unit.sram.bytes, cap)
    if v_ctx < cap:
        limit = LIMIT_VECTOR
    return h_ctx, h_unit, max(v_ctx, 0), limit


def plan(
    chip: ChipSpec,
    spec: ModelSpec,
    *,
    fmt: WeightFormat = DEFAULT_FORMAT,
    lora: LoraConfig = DEFAULT_LORA,
    kv: KvConfig = DEFAULT_KV,
    policy: StoragePolicy | str = DEFAULT_POLICY,
    strategy: str = DEFAULT_STRATEGY,
    sram_bytes: int | None = None,
    placement: Placement | None = None,
) -> CapacityReport:
    """Check ROM, H-Unit SRAM and vector SRAM for a model + adapters + context on a chip.

    `sram_bytes` overrides the chip's H-Unit SRAM for LoRA + KV (all units together; each unit gets an
    equal whole-byte share). `placement`: the model's placement on this chip when the caller has it (its
    policy and strategy then win); otherwise it is compiled here. Raises CapacityError only for requests
    that make no sense (unsupported precision, negative sizes); a model that does not fit is reported.
    """
    if placement is not None:
        policy, strategy = placement.policy, placement.strategy
    pol = StoragePolicy.parse(policy)
    _check_chip_support(chip, fmt, lora, kv)
    if sram_bytes is not None and sram_bytes < 0:
        raise CapacityError(f"SRAM override must be >= 0 bytes, got {sram_bytes}")
    if placement is None:
        placement = compile_placement(chip, spec, fmt, strategy=strategy, policy=pol, lora=lora, kv=kv)
    else:
        placement = with_workload(placement, kv=kv, lora=lora)
    sram_unit = (chip.h_sram_bytes if sram_bytes is None else int(sram_bytes)) // chip.matrix_units
    word_bytes = chip.h_unit.sram.macro_cols * chip.h_unit.sram.bits_per_cell // 8
    lora_u = -(-placement.lora_bytes // word_bytes) * word_bytes  # with_workload/compile dealt `lora`'s shares
    limit = ContextLimit(*_reorder(context_limit(chip, spec, fmt, sram_unit, lora_u, placement)))
    return CapacityReport(
        chip=chip.name, model=spec.name, weight_format=fmt.describe(), policy=pol.value, strategy=strategy,
        lora_rank=lora.rank, lora_targets=lora.targets, lora_dtype=lora.dtype, kv_dtype=kv.dtype,
        context_tokens=kv.context_tokens,
        rom=rom_fit(chip, spec, fmt, pol, placement),
        context=limit,
        sram=sram_fit(chip, spec, fmt, lora, kv, placement, sram_unit, lora_u, limit),
    )  # fmt: skip


def _reorder(limit: tuple[int, int, int, str]) -> tuple[int, str, int, int]:
    h_ctx, h_unit, max_ctx, what = limit
    return max_ctx, what, h_ctx, h_unit


def rom_fit(chip: ChipSpec, spec: ModelSpec, fmt: WeightFormat, policy: StoragePolicy, placement: Placement) -> RomFit:
    """The ROM sub-report: exact tensor bytes by kind (tensor_bits.py) and the placement's per-unit layout."""
    rows, on_bits, host_bytes = _rom_rows(spec, fmt, policy)
    rows.append(BreakdownRow("padding", "rom", 0, 0, 0, 0, 0, math.ceil(placement.bits_by_kind()["padding_bits"] / 8)))
    used = placement.unit_used_bits()
    used_max, unit_rom_bits = int(used.max()), placement.unit_rom_bits
    needed = math.ceil(on_bits / 8)
    reason = None
    if not placement.rom_fits:
        reason = (
            f"ROM: the fullest L-Unit needs {math.ceil(used_max / 8):,} bytes but holds {unit_rom_bits // 8:,} "
            f"(chip-wide the model needs {needed:,} of {chip.rom_bytes:,} bytes); use fewer weight "
            f"bits, a larger group, or a storage policy that keeps the embedding/LM head off the L-Units"
        )
    return RomFit(
        rom_fits=placement.rom_fits,
        rom_bytes_needed=needed,
        rom_bytes_allocated=math.ceil(int(used.sum()) / 8),
        rom_bytes_available=chip.rom_bytes,
        rom_margin_bytes=chip.rom_bytes - needed,
        rom_unit_bytes=unit_rom_bits // 8,
        rom_unit_bytes_used_max=math.ceil(used_max / 8),
        rom_unit_margin_bytes=(unit_rom_bits - used_max) // 8,
        host_bytes=host_bytes,
        breakdown=tuple(rows),
        reason=reason,
    )


def sram_fit(
    chip: ChipSpec,
    spec: ModelSpec,
    fmt: WeightFormat,
    lora: LoraConfig,
    kv: KvConfig,
    placement: Placement,
    sram_unit: int,
    lora_u: np.ndarray,
    limit: ContextLimit,
) -> SramFit:
    """The SRAM sub-report at the requested context: adapters and KV in the H-Units, activations in the
    vector units, and whether the context fits under `limit`."""
    context, max_ctx = kv.context_tokens, limit.max_context_tokens
    if limit.h_unit_context_tokens < 0:
        u = limit.limiting_h_unit
        reasons = [
            f"LoRA adapters (rank {lora.rank}, {lora.dtype}, {len(lora.targets)} targets) need "
            f"{int(lora_u[u]):,} bytes in H-Unit {u}, which holds {sram_unit:,} bytes for LoRA + KV: "
            f"no room for any KV cache; lower the rank, adapt fewer modules, or give the chip more SRAM"
        ]
    else:
        reasons = [f"maximum context {max_ctx:,} tokens, limited by {limit.context_limit}"]
        if context > max_ctx:
            what = limit.context_limit
            reasons.append(f"the requested context of {context:,} tokens exceeds the maximum of {max_ctx:,} ({what})")
    per_token = kv.token_bytes(layers=spec.num_layers, kv_heads=spec.num_kv_heads, head_dim=spec.head_dim)
    act_peak = _activation_peak_bytes(spec, fmt, context, int(chip.precision.activation_bytes))
    rows = _sram_rows(spec, lora, per_token * context, act_peak)
    return SramFit(
        sram_fits=limit.h_unit_context_tokens >= 0 and context <= max_ctx,
        sram_bytes_available=sram_unit * chip.matrix_units,
        sram_unit_bytes=sram_unit,
        lora_bytes=rows[0].bytes,
        lora_unit_bytes_max=int(lora_u.max()),
        kv_bytes_per_token=per_token,
        kv_unit_bytes_per_token_max=int(placement.kv_bytes_per_token.max()),
        kv_layout=placement.kv_layout,
        kv_unit_tokens_max=int(placement.kv_tokens(context).max()),
        kv_bytes=per_token * context,
        activation_bytes=act_peak,
        activation_unit_bytes=math.ceil(act_peak / chip.vector_units),
        vector_sram_bytes_available=chip.vector_sram_bytes,
        vector_unit_bytes=chip.vector_unit.sram.bytes,
        breakdown=tuple(rows),
        reasons=tuple(reasons),
    )


def max_context_tokens(
    chip: ChipSpec,
    spec: ModelSpec,
    *,
    fmt: WeightFormat = DEFAULT_FORMAT,
    lora: LoraConfig = DEFAULT_LORA,
    kv: KvConfig = DEFAULT_KV,
    policy: StoragePolicy | str = DEFAULT_POLICY,
    strategy: str = DEFAULT_STRATEGY,
    sram_bytes: int | None = None,
) -> int:
    """The longest KV context (tokens) that fits next to the adapters; 0 when the adapters alone overflow."""
    report = plan(chip, spec, fmt=fmt, lora=lora, kv=kv, policy=policy, strategy=strategy, sram_bytes=sram_bytes)
    return report.context.max_context_tokens


#: `burn`'s default: the best storage policy that fits (see `auto_policy`).
AUTO_POLICY = "auto"


def auto_policy(
    chip: ChipSpec,
    spec: ModelSpec,
    fmt: WeightFormat,
    *,
    strategy: str = DEFAULT_STRATEGY,
    int8_placement: Placement | None = None,
) -> tuple[StoragePolicy, str | None]:
    """The storage policy a burn uses when none is asked for, and a note when it had to give something up.

    The embedding table / LM head at 8 bits (`rom_int8`) when the model fits the ROM that way, else in
    the weight format (`rom_weight`): on SmolLM2 at 4 bits the 8-bit tables alone take perplexity from
    1.51x to 1.29x the float model's (docs/quantization.md), for a few percent more ROM. Pass the rom_int8
    placement when the caller has compiled it (burn does, to use it when it fits).
    """
    kv = KvConfig(dtype=chip.precision.kv, context_tokens=0)
    lora = LoraConfig(rank=0, dtype=chip.precision.lora)
    report = plan(chip, spec, fmt=fmt, lora=lora, kv=kv, policy=StoragePolicy.ROM_INT8, strategy=strategy,
                  placement=int8_placement)  # fmt: skip
    if report.rom.rom_fits or fmt.bits >= 8:
        return StoragePolicy.ROM_INT8, None
    return StoragePolicy.ROM_WEIGHT, (
        f"the embedding table / LM head at 8 bits (rom_int8) does not fit ({report.rom.rom_bytes_needed:,} B of ROM "
        f"needed, {report.rom.rom_bytes_available:,} B available): they are stored at {fmt.bits} bits instead, which "
        "costs quality (docs/quantization.md)"
    )


#: Group sizes a default burn tries, smallest first: g32 when the model fits the ROM at it, else the
#: paper's g128. On SmolLM2 (GPTQ, 8-bit tables) g32 takes held-out perplexity from ~1.25x to ~1.15x
#: the shipped model's; g64 is not tried, since with RTN it measured no better than g128
#: (docs/quantization.md).
AUTO_GROUP_SIZES = (32, 128)
AUTO_GROUP = "auto"


@dataclass(frozen=True)
class StorageChoice:
    """The weight format and table policy a default burn (and `fit`) uses, the placement compiled for it
    when one was (at context 0, no adapters), and notes on what the choice costs or gave up."""

    fmt: WeightFormat
    policy: StoragePolicy
    placement: Placement | None
    notes: tuple[str, ...]


def _overhead_note(chip: ChipSpec, spec: ModelSpec, fmt: WeightFormat, larger: WeightFormat) -> str:
    """What the smaller group costs: scale + zero bits per projection weight, and the extra ROM."""
    projections = [t for t in model_tensors(spec, fmt) if t.kind in (TensorKind.ATTENTION, TensorKind.MLP)]
    params = sum(t.params for t in projections)
    small = sum(t.bits.total_bits - t.bits.code_bits for t in projections)
    large = sum(larger.storage_bits(t.rows, t.cols).total_bits - t.bits.code_bits for t in projections)
    return (
        f"group size {fmt.group_size}: the model fits {chip.name}'s ROM at it, and its scales and zeros take "
        f"{small / params:.3g} bits per weight instead of {large / params:.3g} at g{larger.group_size} "
        f"({(small - large) / 8 / 2**20:,.1f} MiB more ROM); --group-size {larger.group_size} stores the paper's format"
    )


def choose_storage(
    chip: ChipSpec,
    spec: ModelSpec,
    *,
    bits: int = DEFAULT_FORMAT.bits,
    symmetric: bool = DEFAULT_FORMAT.symmetric,
    group_size: int | None | str = AUTO_GROUP,
    policy: StoragePolicy | str = AUTO_POLICY,
    strategy: str = DEFAULT_STRATEGY,
) -> StorageChoice:
    """The format and policy of a burn that leaves them to the default (`group_size`/`policy` "auto").

    Auto group size: the smallest of AUTO_GROUP_SIZES at which the model fits the ROM (with the 8-bit
    tables when the policy is auto too: the tables matter more than the group size), else the largest.
    Auto policy: `auto_policy` for the chosen format. A given group size or policy is kept as it is.
    """
    if group_size != AUTO_GROUP and policy != AUTO_POLICY:  # nothing to choose: nothing compiled
        fmt = WeightFormat(bits=bits, group_size=group_size, symmetric=symmetric)  # type: ignore[arg-type]
        return StorageChoice(fmt, StoragePolicy.parse(policy), None, ())
    kv = KvConfig(dtype=chip.precision.kv, context_tokens=0)
    lora = LoraConfig(rank=0, dtype=chip.precision.lora)
    sizes = AUTO_GROUP_SIZES if group_size == AUTO_GROUP else (group_size,)
    fmts = [WeightFormat(bits=bits, group_size=g, symmetric=symmetric) for g in sizes]
    wanted = StoragePolicy.ROM_INT8 if policy == AUTO_POLICY else StoragePolicy.parse(policy)
    notes: list[str] = []
    for fmt in fmts[:-1]:  # a smaller group only when it fits as wanted
        placement = compile_placement(chip, spec, fmt, strategy=strategy, policy=wanted, kv=kv)
        if plan(chip, spec, fmt=fmt, lora=lora, kv=kv, placement=placement).rom.rom_fits:
            return StorageChoice(fmt, wanted, placement, (_overhead_note(chip, spec, fmt, fmts[-1]),))
    fmt = fmts[-1]
    if len(fmts) > 1:
        notes.append(f"group size {fmts[0].group_size} does not fit {chip.name}'s ROM ({wanted.value} tables): "
                     f"the weights are stored at g{fmt.group_size}")  # fmt: skip
    placement = compile_placement(chip, spec, fmt, strategy=strategy, policy=wanted, kv=kv)
    if policy != AUTO_POLICY:
        return StorageChoice(fmt, wanted, placement, tuple(notes))
    pol, note = auto_policy(chip, spec, fmt, strategy=strategy, int8_placement=placement)
    return StorageChoice(fmt, pol, placement if pol is wanted else None, (*notes, *([note] if note else [])))
