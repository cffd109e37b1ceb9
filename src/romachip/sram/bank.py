"""The adapter bank: the LoRA adapters a chip holds in its H-Units' SRAM, next to the KV cache.

A bank belongs to one chip running one ROM image (its model shape, weight format and placement). It
loads, unloads and swaps adapters; each generation request names one resident adapter (or none) and
gets an immutable `AdapterView`, so a request never sees another's adapter and nothing done to the bank
later changes a request already running. The ROM image is never touched.

Accounting is the capacity planner's (capacity.py), so the bank and `romachip fit` agree by
construction: each adapter's bytes are dealt over the H-Units by `Placement.lora_unit_bytes` (B rows beside
the base rows they add to, A rows round-robin), each adapter's share of a unit rounded up to whole SRAM
words (an adapter is a region of its own, so it can be freed alone); the KV cache gets what is left,
and `context_limit` gives the maximum context under the Placement's KV rule (tokens round robin over
the H-Units, each holding whole tokens). A load that would leave less than the bank's reserved
context (`kv.context_tokens`) is refused with the budget shown.

Load time: the bytes each H-Unit receives, written one SRAM word per macro per cycle (all units in
parallel; the slowest unit sets the time), at the chip clock; energy: bits written x the technology's
SRAM write energy. Moving the adapter from the host onto the chip is not modelled (the ChipSpec has no
host link).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from romachip.capacity import DEFAULT_FORMAT, DEFAULT_KV, DEFAULT_STRATEGY, context_limit
from romachip.compile import Placement, compile_placement, with_workload
from romachip.errors import AdapterError, CapacityError
from romachip.perf.physics import operating_point
from romachip.quant.formats import WeightFormat
from romachip.rom import RomImage
from romachip.spec.chip import ChipSpec
from romachip.spec.model import ModelSpec
from romachip.spec.tech import load_host_link, load_tech
from romachip.sram.peft_import import PeftAdapter, read_peft_adapter
from romachip.sram.storage import AdapterView, StoredAdapter, check_precision, module_bytes, store_adapter
from romachip.tensor_bits import DEFAULT_POLICY, StoragePolicy
from romachip.workload import KvConfig


@dataclass(frozen=True)
class BankOp:
    """What one bank operation did to the SRAM, and what the chip's state is after it."""

    op: str  # load | unload | swap
    adapter: str
    sram_bytes_written: int  # adapter bytes written into the H-Units
    sram_bytes_freed: int
    write_cycles: int  # slowest H-Unit, one word per macro per cycle
    write_s: float
    write_energy_j: float
    lora_bytes_resident: int  # all resident adapters, after the op
    max_context_tokens: int  # after the op
    context_limit: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class FitVerdict:
    """Whether an adapter fits next to the resident ones and the reserved context, and what it costs."""

    fits: bool
    adapter_bytes: int
    max_context_before: int
    max_context_after: int
    context_limit: str
    message: str


@dataclass(frozen=True)
class PreparedAdapter:
    """An adapter read, validated, encoded and dealt over the H-Units (by `AdapterBank.prepare`)."""

    stored: StoredAdapter
    view: AdapterView
    unit_bytes: np.ndarray  # [units] exact bytes per H-Unit
    unit_alloc: np.ndarray  # [units] rounded up to SRAM words


class AdapterBank:
    """The adapters resident in one chip's H-Unit SRAM (see the module docstring)."""

    def __init__(
        self,
        chip: ChipSpec,
        spec: ModelSpec,
        *,
        fmt: WeightFormat = DEFAULT_FORMAT,
        kv: KvConfig = DEFAULT_KV,
        policy: StoragePolicy | str = DEFAULT_POLICY,
        strategy: str = DEFAULT_STRATEGY,
        precision: str | None = None,
        sram_bytes: int | None = None,
        num_groups: int | None = None,
        placement: Placement | None = None,
    ):
        """`placement`: where the model sits on this chip when the caller has it (an image's); policy,
        strategy and num_groups then come from it. Otherwise it is compiled from them."""
        self.chip, self.spec, self.fmt, self.kv = chip, spec, fmt, kv
        self.precision = check_precision(precision or chip.precision.lora)
        if self.precision not in chip.precision.supported_lora:
            supported = ", ".join(chip.precision.supported_lora)
            raise CapacityError(f"chip {chip.name!r} cannot hold {self.precision} LoRA weights (supports {supported})")
        if placement is None:
            placement = compile_placement(
                chip, spec, fmt, strategy=strategy, policy=policy, kv=kv, num_groups=num_groups
            )
        self._placement = with_workload(placement, kv=kv)
        total = chip.h_sram_bytes if sram_bytes is None else int(sram_bytes)
        self.sram_unit_bytes = total // chip.matrix_units
        sram = chip.h_unit.sram
        self._word_bytes = sram.macro_cols * sram.bits_per_cell // 8
        self._write_bits_per_cycle = sram.macro_cols * sram.macros * sram.bits_per_cell  # [assumption] = read width
        tech = load_tech(chip.tech)
        # at the chip's operating voltage (perf/physics.py: the table holds at nominal, energy ~ V^2)
        self._write_pj_per_bit = tech.energy.sram_write_pj_per_bit * operating_point(chip, tech).dynamic_energy_scale
        self._host = load_host_link(chip.host_link)  # adapters arrive over the host link
        self._resident: dict[str, PreparedAdapter] = {}
        self._context_cache: dict[tuple, int] = {}  # context_for by extra adapter; emptied when residents change

    @classmethod
    def for_image(
        cls,
        image: RomImage,
        *,
        kv: KvConfig = DEFAULT_KV,
        precision: str | None = None,
        sram_bytes: int | None = None,
    ) -> AdapterBank:
        """The bank of the chip an image was burned for, on the placement the image holds (its model, format,
        policy and strategy); the image itself is only read."""
        return cls(
            image.chip, image.spec, fmt=image.fmt, kv=kv, precision=precision, sram_bytes=sram_bytes,
            placement=image.placement,
        )  # fmt: skip

    @property
    def placement(self) -> Placement:
        """Where the model, and so each adapter's B rows and the KV tokens, sit on this chip."""
        return self._placement

    # -- what is resident ------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._resident)

    def stored(self, name: str) -> StoredAdapter:
        return self._get(name).stored

    def view(self, name: str | None) -> AdapterView | None:
        """The immutable adapter a request runs with (None: the base model alone)."""
        return None if name is None else self._get(name).view

    @property
    def lora_bytes(self) -> int:
        return sum(r.stored.nbytes for r in self._resident.values())

    def _unit_alloc(self, residents: list[PreparedAdapter]) -> np.ndarray:
        out = np.zeros(self.chip.matrix_units, dtype=np.int64)
        for r in residents:
            out += r.unit_alloc
        return out

    def context(self, residents: list[PreparedAdapter] | None = None) -> tuple[int, str]:
        """(maximum context tokens, what limits it) with these adapters resident (default: the current ones)."""
        residents = list(self._resident.values()) if residents is None else residents
        _, _, max_ctx, limit = context_limit(
            self.chip, self.spec, self.fmt, self.sram_unit_bytes, self._unit_alloc(residents), self._placement,
        )  # fmt: skip
        return max_ctx, limit

    @property
    def max_context_tokens(self) -> int:
        return self.context()[0]

    def context_for(self, adapter: Mapping[str, tuple[np.ndarray, np.ndarray, float]] | None = None) -> int:
        """Maximum context tokens while a request runs `adapter`: the KV cache gets what the resident adapters
        leave, less `adapter`'s own share when it is not one of them (an engine adapter mapping, module name
        -> (A [r, in], B [out, r], scale), or another bank's view). What the engine sizes its caches with."""
        residents = list(self._resident.values())
        key: tuple = ()
        extra: dict[str, int] = {}
        precision = self.precision
        if adapter and not any(r.view is adapter for r in residents):
            extra = {name: int(a.shape[0]) for name, (a, _, _) in adapter.items()}
            precision = check_precision(getattr(adapter, "precision", None) or self.precision)
            key = (precision, tuple(sorted(extra.items())))
        if key not in self._context_cache:
            alloc = self._unit_alloc(residents)
            if extra:
                alloc = alloc + self._alloc(self._placement.lora_unit_bytes(extra, precision))
            self._context_cache[key] = context_limit(
                self.chip, self.spec, self.fmt, self.sram_unit_bytes, alloc, self._placement
            )[2]
        return self._context_cache[key]

    # -- operations ------------------------------------------------------------------------------------
    def prepare(self, source: str | Path | PeftAdapter, *, name: str, precision: str | None = None) -> PreparedAdapter:
        """Read (if a folder), validate and encode an adapter, and deal it over the H-Units; writes nothing."""
        adapter = source if isinstance(source, PeftAdapter) else read_peft_adapter(source, self.spec)
        precision = check_precision(precision or self.precision)
        if precision not in self.chip.precision.supported_lora:
            raise CapacityError(f"chip {self.chip.name!r} cannot hold {precision} LoRA weights")
        stored = store_adapter(adapter, precision, name=name)
        unit_bytes = self._placement.lora_unit_bytes(stored.ranks, precision)
        return PreparedAdapter(stored, stored.view(), unit_bytes, self._alloc(unit_bytes))

    def load(self, name: str, source: str | Path | PeftAdapter, *, precision: str | None = None) -> BankOp:
        """Write an adapter into SRAM under `name`; CapacityError (budget shown) if the reserved context no
        longer fits next to it."""
        if name in self._resident:
            raise AdapterError(f"an adapter named {name!r} is already loaded; unload it or use swap()")
        new = self.prepare(source, name=name, precision=precision)
        self._admit(new, list(self._resident.values()))
        self._resident[name] = new
        return self._op("load", name, written=new, freed=0)

    def unload(self, name: str) -> BankOp:
        """Free an adapter's SRAM (no bytes written); requests holding its view keep running unchanged."""
        old = self._resident.pop(self._check_name(name))
        return self._op("unload", name, written=None, freed=old.stored.nbytes)

    def swap(self, old: str, name: str, source: str | Path | PeftAdapter, *, precision: str | None = None) -> BankOp:
        """Replace adapter `old` by a new one in place (hot swap): the budget is checked without `old`."""
        self._check_name(old)
        if name != old and name in self._resident:
            raise AdapterError(f"an adapter named {name!r} is already loaded; pick another name")
        new = self.prepare(source, name=name, precision=precision)
        self._admit(new, [r for n, r in self._resident.items() if n != old])
        freed = self._resident.pop(old).stored.nbytes
        self._resident[name] = new
        return self._op("swap", name, written=new, freed=freed)

    # -- helpers ---------------------------------------------------------------------------------------
    def _get(self, name: str) -> PreparedAdapter:
        return self._resident[self._check_name(name)]

    def _check_name(self, name: str) -> str:
        if name not in self._resident:
            loaded = ", ".join(self._resident) or "none"
            raise AdapterError(f"no adapter named {name!r} is loaded (loaded: {loaded})")
        return name

    def verdict(self, prepared: PreparedAdapter, *, replacing: str | None = None) -> FitVerdict:
        """Would this prepared adapter fit next to the resident ones (less `replacing`, for a swap)?"""
        others = [r for n, r in self._resident.items() if n != replacing]
        s = prepared.stored
        return self._verdict(s.name, s.nbytes, s.precision, s.ranks, prepared.unit_alloc, others)

    def _admit(self, new: PreparedAdapter, others: list[PreparedAdapter]) -> None:
        verdict = self._verdict(new.stored.name, new.stored.nbytes, new.stored.precision, new.stored.ranks,
                                new.unit_alloc, others)  # fmt: skip
        if not verdict.fits:
            raise CapacityError(verdict.message)

    def what_if(self, ranks: dict[str, int], *, name: str = "adapter", precision: str | None = None) -> FitVerdict:
        """Would an adapter of these per-module ranks (module name -> rank) fit next to the resident ones?
        The same arithmetic as `load`, without reading or storing any values."""
        precision = check_precision(precision or self.precision)
        alloc = self._alloc(self._placement.lora_unit_bytes(ranks, precision))
        shapes = self.spec.linear_shapes()
        nbytes = sum(module_bytes(r, *shapes[m.rsplit(".", 1)[1]], precision) for m, r in ranks.items())
        return self._verdict(name, nbytes, precision, ranks, alloc, list(self._resident.values()))

    def _alloc(self, unit_bytes: np.ndarray) -> np.ndarray:
        return -(-unit_bytes // self._word_bytes) * self._word_bytes

    def _verdict(
        self,
        name: str,
        nbytes: int,
        precision: str,
        ranks: dict[str, int],
        alloc: np.ndarray,
        others: list[PreparedAdapter],
    ) -> FitVerdict:
        before, limit_before = self.context(others)
        want = self.kv.context_tokens
        if before < want:  # the context itself is the problem, not this adapter
            return FitVerdict(False, nbytes, before, before, limit_before, (
                f"a {want:,}-token KV cache does not fit even before adapter {name!r} is loaded: the chip holds "
                f"at most {before:,} tokens ({limit_before}) with the resident adapters; ask for a shorter context "
                f"or unload adapters"
            ))  # fmt: skip
        others_alloc = self._unit_alloc(others)
        h_ctx, h_unit, max_ctx, limit = context_limit(
            self.chip, self.spec, self.fmt, self.sram_unit_bytes, others_alloc + alloc, self._placement,
        )  # fmt: skip
        fits = h_ctx >= 0 and max_ctx >= want
        fullest = h_unit if h_unit >= 0 else int(np.argmax(others_alloc + alloc))  # the unit that limits
        kv_u = int(self._placement.kv_bytes_per_token[fullest])
        ring = int(self._placement.kv_ring_units[fullest])
        message = (
            f"adapter {name!r} ({nbytes:,} bytes in {precision}, rank {max(ranks.values(), default=0)}) "
            f"{'fits' if fits else 'does not fit'} next to a {want:,}-token KV cache: H-Unit {fullest} holds "
            f"{self.sram_unit_bytes:,} bytes for LoRA + KV; resident adapters use {int(others_alloc[fullest]):,}, "
            f"this one needs {int(alloc[fullest]):,} more, and KV takes {kv_u:,} bytes for each token it holds there "
            f"(one token in {ring}, round robin); the maximum "
            f"context goes from {before:,} to {max_ctx:,} tokens ({limit})"
        )
        if not fits:
            fp8 = ", store it in fp8_e4m3" if precision != "fp8_e4m3" else ""
            message += f". Unload an adapter{fp8}, lower its rank, or reserve a shorter context"
        return FitVerdict(fits, nbytes, before, max_ctx, limit, message)

    def write_cost(self, prepared: PreparedAdapter) -> tuple[int, int, float, float]:
        """(bytes, cycles, seconds, joules) to load a prepared adapter: its bytes cross the host link (latency
        + bytes / bandwidth, pJ/bit) while every H-Unit writes its share, one word per macro per cycle in
        parallel; the slower of the two sets the time (the writes keep up with the link as it streams)."""
        nbytes = prepared.stored.nbytes
        write_cycles = int(math.ceil(int(prepared.unit_bytes.max()) * 8 / self._write_bits_per_cycle))
        host_s = self._host.latency_s + nbytes / self._host.bandwidth_bytes_per_s
        cycles = max(write_cycles, int(math.ceil(host_s * self.chip.clock_hz)))
        joules = nbytes * 8 * (self._write_pj_per_bit + self._host.energy_pj_per_bit) * 1e-12
        return nbytes, cycles, cycles / self.chip.clock_hz, joules

    def _op(self, op: str, name: str, *, written: PreparedAdapter | None, freed: int) -> BankOp:
        self._context_cache.clear()  # every op changes the residents
        max_ctx, limit = self.context()
        nbytes, cycles, seconds, joules = self.write_cost(written) if written is not None else (0, 0, 0.0, 0.0)
        return BankOp(
            op=op,
            adapter=name,
            sram_bytes_written=nbytes,
            sram_bytes_freed=freed,
            write_cycles=cycles,
            write_s=seconds,
            write_energy_j=joules,
            lora_bytes_resident=self.lora_bytes,
            max_context_tokens=max_ctx,
            context_limit=limit,
        )
