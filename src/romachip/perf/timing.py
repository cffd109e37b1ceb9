"""Cycles of each op on the chip, and the task graph of one phase (a prefill token batch, a decode step).

Dataflow of one layer (the graph's ops in order), with where each op runs:
- norms, RoPE, softmax, SwiGLU, residual adds: vector units (V), with a row all-reduce for the norm's
  sum of squares and the softmax's max and sum;
- projections: L-Units; the input is broadcast from V to every matrix unit (row all-gather, then
  multicast down the columns) and consumed while it streams in; outputs go up the columns to V;
- LoRA: A on the H-Units of the units that hold A rows (it streams on the same broadcast), its r
  outputs gathered and broadcast back (NoC), B on the H-Units beside the base rows, added in before the
  output leaves the unit;
- attention: the KV cache is split by sequence position over the H-Units of the layer's KV ring, as the
  Placement states it (`kv_layout` token_round_robin: each unit holds every channel of its share of
  tokens, read through `PlacementView.kv_keys`); q (and the new k, v) are broadcast to them; scores
  go up the columns to V for the softmax (a row all-reduce of max and sum), probabilities come back
  down, and the partial outputs are reduced in the network on their way to V.

Costs (busiest unit or busiest link of a class, see mapping.py):
- L-Unit: max(MACs / MACs-per-cycle at the weight width, ROM rows read) + pipeline fill; in prefill a
  ROM row read serves `prefill_token_batch` tokens;
- H-Unit: max(MACs / MACs-per-cycle, SRAM bits / read width) + pipeline fill;
- V: vector ops / (vector units x lanes);
- NoC: bytes on the busiest link / link bytes per cycle + path latency (hops, SMART bypass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from romachip.graph import Op, OpKind
from romachip.perf.energy import Event as E
from romachip.perf.energy import EventKey, l_macs
from romachip.perf.event_kernel import Simulator
from romachip.perf.mapping import PlacementView, TensorWork
from romachip.perf.rates import ChipRates, l_unit_cycles
from romachip.spec.chip import ChipSpec

LORA_KINDS = (OpKind.LORA_A, OpKind.LORA_B)
NOC_DOWN, NOC_UP, NOC_ROW = "noc.down", "noc.up", "noc.row"
LINK_CLASSES = (NOC_DOWN, NOC_UP, NOC_ROW)
HOST = "host"  # the host link, one resource
_KEYS = {e: EventKey(e) for e in E}  # an Event counts as EventKey(event)
_MATRIX_KINDS = (OpKind.PROJECTION, OpKind.LM_HEAD, OpKind.LORA_A, OpKind.LORA_B)  # outputs wait in the units


class PhaseBuilder:
    """Turns the ops of one token batch into tasks on a Simulator; call `batch` for each batch in order.

    `drop_layer`: also keep what the graph *without* that layer's ops needs (a one-layer graph from a
    two-layer build, for the phases composed from both): the task ranges its ops made (`dropped`), the
    task after which the next layer's ops start instead (`alias`: its last task -> the previous layer's),
    and the events of the other ops (`events_without`, added in the same order as a build without the
    layer would add them). `Simulator.without` then derives the graph; `derivable` is False when the
    layer's ops did not start and end on one task each (the caller then builds the smaller graph itself).
    """

    def __init__(
        self,
        sim: Simulator,
        chip: ChipSpec,
        view: PlacementView,
        rates: ChipRates | None = None,
        *,
        count_events: bool = True,
        drop_layer: int | None = None,
    ) -> None:
        self.sim, self.chip, self.view = sim, chip, view
        self.drop_layer = drop_layer
        self.dropped: list[tuple[int, int]] = []  # task id ranges [start, stop) of the dropped layer's ops
        self.alias: dict[int, int] = {}  # the dropped layer's last task -> the task before the layer
        self.derivable = True
        self.events_without: dict[EventKey, float] = {}
        self.lora_events_without: dict[EventKey, float] = {}
        self.counting = count_events  # False: timing only (a design point's TTFT), `events` stay empty
        self.rate = rates or ChipRates.of(chip)
        self.prev_batch_attention: dict[int, int] = {}  # layer -> score task of the previous batch
        self.events: dict[EventKey, float] = {}  # counted events of the base model's ops (for energy)
        self.lora_events: dict[EventKey, float] = {}  # counted events of the LoRA ops
        m, r = view.mesh, self.rate  # hops of a byte: over a tree spanning the mesh, or to the vector row
        self._spanning_hops, self._gather_hops = m.spanning_links, m.column_hops_mean + m.row_hops_max / 2
        # path latencies of the mesh, the same for every transfer of a phase
        self._row_path, self._column_path = r.path_cycles(m.row_hops_max), r.path_cycles(m.column_hops_max)
        self._gather_path = (self._column_path, r.path_cycles(m.column_hops_max + m.row_hops_max))  # [row]
        self._flit = max(1, r.path_cycles(m.broadcast_hops))  # from a broadcast's start to its first flit at
        # the farthest unit
        # cycles by the numbers they depend on, once per phase: every layer (and most batches) of a phase
        # asks the same few (the ops' shapes repeat); values as the helpers below compute them
        self._bcast_cycles: dict[float, tuple[int, int]] = {}  # bytes -> (all-gather, multicast)
        self._gather_cycles: tuple[dict[float, int], dict[float, int]] = ({}, {})  # [row] bytes per link ->
        self._vector_cycles: dict[int, int] = {}  # vector ops -> cycles
        self._l_cycles: dict[tuple, tuple[int, str]] = {}  # projection shape -> l_unit_cycles
        self._lora_cycles: dict[tuple, int] = {}  # LoRA op shape -> H-Unit cycles

    # -- NoC helpers -------------------------------------------------------------------------------
    def _broadcast(self, name: str, nbytes: float, after: list[int], op: str, prio: int) -> int:
        """V -> every matrix unit: row all-gather, then multicast down each column (full vector per link)."""
        cycles = self._bcast_cycles.get(nbytes)
        if cycles is None:
            r = self.rate
            cycles = r.link_cycles(nbytes / 2) + self._row_path, r.link_cycles(nbytes) + self._column_path
            self._bcast_cycles[nbytes] = cycles
        task = self.sim.task
        row = task(f"{name}.allgather", NOC_ROW, cycles[0], "noc", after, (), 0, 0, prio, op)
        return task(f"{name}.multicast", NOC_DOWN, cycles[1], "noc", (), (row,), 1, self._column_path, prio, op)

    def _gather(self, name: str, per_link_bytes: float, after: list[int], op: str, prio: int, row: bool) -> int:
        """Matrix units -> V up the columns (and along the vector row when the data changes owner)."""
        known = self._gather_cycles[row]
        cycles = known.get(per_link_bytes)
        if cycles is None:
            cycles = known[per_link_bytes] = self.rate.link_cycles(per_link_bytes) + self._gather_path[row]
        return self.sim.task(name, NOC_UP, cycles, "noc", after, (), 0, 0, prio, op)

    def _row_allreduce(self, name: str, nbytes: float, after: list[int], op: str, prio: int) -> int:
        cycles = self.rate.link_cycles(nbytes) + self._row_path
        return self.sim.task(name, NOC_ROW, cycles, "noc", after, (), 0, 0, prio, op)

    def _vector(self, op: Op, after: list[int], prio: int) -> int:
        cycles = self._vector_cycles.get(op.vector_ops)
        if cycles is None:
            cycles = self._vector_cycles[op.vector_ops] = self.rate.vector_cycles(op.vector_ops)
        return self.sim.task(op.name, "V", cycles, "vector", after, (), 0, 0, prio, op.name)

    def _count(self, op: Op, events: dict[E | EventKey, float]) -> None:
        """Add an op's events (an Event means EventKey(event); L-Unit MACs come keyed by weight width)."""
        accs = (self.events, self.lora_events) if op.kind in LORA_KINDS else (self.events,)
        if self.drop_layer is not None and op.layer != self.drop_layer:
            accs += (self.events_without, self.lora_events_without)[: len(accs)]
        for k, v in events.items():
            key = _KEYS.get(k, k)
            for acc in accs:
                acc[key] = acc.get(key, 0.0) + v

    # -- ops ---------------------------------------------------------------------------------------
    def batch(self, ops: list[Op], prio: int, after: list[int] | tuple[int, ...] = ()) -> int:
        """Add the tasks of one token batch (ops of `prefill_ops`/`decode_ops`), starting after the tasks
        `after` (e.g. the batch whose activation buffer this one reuses); return its last task."""
        st = _BatchState()
        st.ready = list(after)
        handlers, elementwise = _HANDLERS, PhaseBuilder._elementwise  # functions: bound methods kept on the
        # builder would make a cycle (and its graph wait for the cyclic collector)
        drop, entered = self.drop_layer, None  # entered: (first task, tasks ready before) of the dropped layer
        for op in ops:
            kind = op.kind
            if kind not in _MATRIX_KINDS and st.pending:
                self._flush(st, prio)
            if drop is not None and (op.layer == drop) != (entered is not None):
                entered = self._cross_dropped_layer(st, entered)
            if kind == OpKind.LM_HEAD:
                (self._host_lm_head if op.weight_off_chip else self._projection)(op, st, prio)
            else:  # norm, rope, swiglu, residual on the vector units unless the kind has its own handler
                handlers.get(kind, elementwise)(self, op, st, prio)
        self._flush(st, prio)
        if entered is not None:
            self._cross_dropped_layer(st, entered)
        return st.ready[-1] if st.ready else -1

    def _cross_dropped_layer(self, st: _BatchState, entered: tuple[int, list[int]] | None) -> tuple | None:
        """Mark where the dropped layer's tasks start (`entered` None) or end; return the new `entered`."""
        n = len(self.sim.graph.name)
        if entered is None:
            self.derivable &= not st.pending  # the layer's first op flushes nothing of the previous one
            return n, st.ready
        start, before = entered
        self.dropped.append((start, n))
        if len(before) == 1 and len(st.ready) == 1 and before[0] < start:
            self.alias[st.ready[0]] = before[0]
        else:
            self.derivable = False
        return None

    def _host_lm_head(self, op: Op, st: _BatchState, prio: int) -> None:
        """An LM head kept on the host (off_chip_all): its table crosses the host link every step (streamed
        in, or read by the host from the same memory: one cost either way), after the final norm."""
        nbytes = op.weight_bits_read / 8 + op.activation_bytes_in
        if self.counting:
            self._count(op, {E.HOST_BITS: 8 * nbytes})
        cycles = self.rate.host_cycles(nbytes)
        st.ready = [self.sim.add(op.name, HOST, cycles, "host", after=st.ready, priority=prio, op=op.name)]

    def _tensor_of(self, op: Op):
        if op.kind == OpKind.LM_HEAD:
            return self.view.lm_head()
        return self.view.projection(op.layer, op.module)

    def _embedding(self, op: Op, st: _BatchState, prio: int) -> None:
        d, t = op.out_features, op.tokens
        off_chip = op.weight_off_chip or self.view.embedding() is None
        host_bytes = t * self.rate.token_io_bytes + (op.weight_bits_read / 8 if off_chip else 0)
        if self.counting:
            self._count(
                op,
                {
                    E.ROM_BITS: 0 if off_chip else op.weight_bits_read,
                    E.VECTOR_SRAM_WRITE_BITS: 8 * op.activation_bytes_out,
                    E.HOST_BITS: 8 * host_bytes,
                },
            )
        after = st.ready
        if self.rate.host_bytes_per_cycle > 0:  # token ids (and off-chip table rows) come over the host link
            cycles = self.rate.host_cycles(host_bytes)
            after = [self.sim.add(f"{op.name}.host", HOST, cycles, "host", after=after, priority=prio, op=op.name)]
        if off_chip:  # the host writes the rows into V
            st.ready = [
                self.sim.add(op.name, "V", self.rate.vector_pipeline, "latency", after=after, priority=prio, op=op.name)
            ]
            return
        rom = self.chip.l_unit.rom
        row_words = math.ceil(op.weight_bits_read / max(t, 1) / self.view.placement.word_bits)
        per_macro = int(rom.macro_words_max(0, row_words))  # one table row, from a macro boundary
        look = self.sim.add(
            op.name, "L0", per_macro * self.rate.rom_access_cycles * t + self.rate.pipeline, "rom",
            after=after, priority=prio, op=op.name,
        )  # fmt: skip
        per_link = max(d * self.rate.partial_bytes, t * d * self.rate.partial_bytes / self.view.mesh.vector_units)
        if self.counting:
            self._noc_count(op, t * d * self.rate.partial_bytes, "gather")
        st.ready = [self._gather(f"{op.name}.to_vector", per_link, [look], op.name, prio, row=True)]

    def _projection(self, op: Op, st: _BatchState, prio: int) -> None:
        tw = self._tensor_of(op)
        if st.bcast is None:
            nbytes = op.in_features * op.tokens * self.rate.act_bytes
            st.bcast = self._broadcast(f"{op.name}.input", nbytes, st.ready, op.name, prio)
            if self.counting:
                self._noc_count(op, nbytes, "broadcast")
        shape = (tw.rows_max, tw.in_features, tw.weight_bits, op.tokens, tw.rom_rows_max)
        known = self._l_cycles.get(shape)
        if known is None:
            known = self._l_cycles[shape] = l_unit_cycles(
                self.chip, *shape, rom_access_cycles=self.rate.rom_access_cycles
            )
        cycles, bound = known
        if st.pending:  # back to back with the previous projection on the same input: no new pipeline fill
            cycles -= self.rate.pipeline
        task = self.sim.task(
            op.name, f"L{tw.group}", cycles, bound, (), (st.bcast,), self._flit, self.rate.pipeline, prio, op.name
        )
        reads = math.ceil(op.tokens / self.rate.token_batch)
        if self.counting:
            self._count(op, {E.ROM_BITS: tw.bits_total * reads, l_macs(tw.weight_bits): op.macs})
        st.pending.append(_Pending(op, tw, [task]))

    def _lora_a(self, op: Op, st: _BatchState, prio: int) -> None:
        base = st.pending[-1]
        tw = base.tw
        shape = (op.out_features, op.in_features, op.tokens, tw.units)
        cycles = self._lora_cycles.get(shape)
        if cycles is None:
            rows = math.ceil(op.out_features / tw.units)  # A rows go out one per unit (compile.py's split)
            macs = rows * op.in_features * op.tokens
            sram_bits = rows * op.in_features * self.rate.lora_bytes * 8
            cycles = max(math.ceil(macs / self.rate.lora_macs), self.rate.h_sram_cycles(sram_bits))
            cycles = self._lora_cycles[shape] = cycles + self.rate.h_pipeline
        # compile.py deals A rows round-robin over the units, module after module: the A ops of one
        # layer run on different H-Units, so each module gets its own representative unit
        a = self.sim.task(
            op.name, f"H{tw.group}.{op.module}", cycles, "lora", (), (st.bcast,), self._flit, self.rate.h_pipeline,
            prio, op.name,
        )  # fmt: skip
        r_bytes = op.out_features * op.tokens
        up = self._gather(f"{op.name}.gather", r_bytes * self.rate.partial_bytes, [a], op.name, prio, row=True)
        down = self._broadcast(f"{op.name}.share", r_bytes * self.rate.act_bytes, [up], op.name, prio)
        if self.counting:
            self._noc_count(op, r_bytes * self.rate.partial_bytes, "gather")
        if self.counting:
            self._noc_count(op, r_bytes * self.rate.act_bytes, "broadcast")
        if self.counting:
            self._count(op, {E.LORA_MACS: op.macs, E.H_SRAM_READ_BITS: op.weight_bits_read})
        base.lora_in = down

    def _lora_b(self, op: Op, st: _BatchState, prio: int) -> None:
        base = st.pending[-1]
        tw = base.tw
        shape = (tw.rows_max, op.in_features, op.tokens)  # B's shapes never meet A's: A's key has 4 numbers
        cycles = self._lora_cycles.get(shape)
        if cycles is None:
            macs = tw.rows_max * op.in_features * op.tokens
            sram_bits = tw.rows_max * op.in_features * self.rate.lora_bytes * 8
            cycles = max(math.ceil(macs / self.rate.lora_macs), self.rate.h_sram_cycles(sram_bits))
            cycles += math.ceil(tw.rows_max * op.tokens / self.rate.lora_macs)  # add B(Ax) into the base outputs
            cycles = self._lora_cycles[shape] = cycles + self.rate.h_pipeline
        after = (base.lora_in,) if base.lora_in is not None else ()
        b = self.sim.task(op.name, f"H{tw.group}", cycles, "lora", after, (), 0, 0, prio, op.name)
        if self.counting:
            events = {E.LORA_MACS: op.macs, E.H_SRAM_READ_BITS: op.weight_bits_read, E.VECTOR_OPS: op.vector_ops}
            self._count(op, events)
        base.done.append(b)

    def _flush(self, st: _BatchState, prio: int) -> None:
        """Send the outputs of the projections run since the last vector op up to the vector units."""
        if not st.pending:
            return
        col = self.view.mesh.column_units
        gathers = []
        for p in st.pending:
            op, tw = p.op, p.tw
            per_link = col * tw.rows_max * op.tokens * self.rate.partial_bytes
            if op.module == "v_proj":  # values need no RoPE: they go straight to their KV slots
                nbytes = op.out_features * op.tokens * self.rate.kv_bytes
                st.values = self._gather(f"{op.name}.to_kv", nbytes, p.done, op.name, prio, row=True)
                if self.counting:
                    self._noc_count(op, nbytes, "gather")
                continue
            gathers.append(self._gather(f"{op.name}.output", per_link, p.done, op.name, prio, row=False))
            if self.counting:
                self._noc_count(op, op.out_features * op.tokens * self.rate.partial_bytes, "gather")
        st.pending, st.bcast = [], None
        st.ready = gathers

    def _elementwise(self, op: Op, st: _BatchState, prio: int) -> None:
        task = self._vector(op, st.ready, prio)
        if self.counting:
            self._count(
                op, {E.VECTOR_OPS: op.vector_ops, E.VECTOR_SRAM_READ_BITS: 8 * op.activation_bytes_in,
                     E.VECTOR_SRAM_WRITE_BITS: 8 * op.activation_bytes_out},
            )  # fmt: skip
        if op.kind == OpKind.NORM:  # the sum of squares is reduced along the vector row
            task = self._row_allreduce(f"{op.name}.allreduce", 4 * op.tokens, [task], op.name, prio)
        st.ready, st.bcast = [task], None

    def _attention_unit_work(self, op: Op) -> tuple[int, int, int, int]:
        """(group, pairs on the busiest H-Unit, keys it holds, units with keys) of a score/value op. Keys
        per unit follow the Placement's KV rule; (query, key) pairs are spread evenly over the holders
        (every holder scores all queries against its keys; in decode that is exactly its keys)."""
        g = self.view.layer_group(op.layer)
        keys_u, holders = self.view.kv_keys(op.layer, op.context)
        holders = max(1, holders)
        pairs = op.macs // (op.heads * op.head_dim)
        return g, math.ceil(pairs / holders), keys_u, holders

    def _h_attention(self, op: Op, after: list[int], prio: int) -> tuple[int, int]:
        g, pairs_u, keys_u, _ = self._attention_unit_work(op)
        macs_u = op.heads * op.head_dim * pairs_u
        kv_bits_u = keys_u * op.kv_heads * (op.head_dim * self.rate.kv_bytes + self.rate.kv_scale_bytes) * 8
        mac_cycles = math.ceil(macs_u / self.rate.attention_macs)
        sram_cycles = self.rate.h_sram_cycles(kv_bits_u)
        bound = "attention" if mac_cycles >= sram_cycles else "kv_sram"
        cycles = max(mac_cycles, sram_cycles) + self.rate.h_pipeline
        task = self.sim.task(op.name, f"H{g}", cycles, bound, after, (), 0, 0, prio, op.name)
        if self.counting:
            self._count(
                op,
                {
                    E.ATTENTION_MACS: op.macs,
                    E.H_SRAM_READ_BITS: 8 * op.kv_bytes_read,
                    E.H_SRAM_WRITE_BITS: 8 * op.kv_bytes_written,
                },
            )
        return task, pairs_u

    def _score(self, op: Op, st: _BatchState, prio: int) -> None:
        s = op.heads * op.head_dim
        nbytes = (s + op.kv_heads * op.head_dim) * op.tokens * self.rate.act_bytes  # q, and k to its slot
        bcast = self._broadcast(f"{op.name}.qkv", nbytes, st.ready, op.name, prio)
        if self.counting:
            self._noc_count(op, nbytes, "broadcast")
        after = [bcast] + ([self.prev_batch_attention[op.layer]] if op.layer in self.prev_batch_attention else [])
        task, pairs_u = self._h_attention(op, after, prio)
        self.prev_batch_attention[op.layer] = task
        per_link = self.view.mesh.column_units * op.heads * pairs_u * self.rate.partial_bytes
        if self.counting:
            self._noc_count(op, op.macs // op.head_dim * self.rate.partial_bytes, "gather")
        st.ready = [self._gather(f"{op.name}.scores", per_link, [task], op.name, prio, row=False)]
        st.attn_pairs_u = pairs_u

    def _softmax(self, op: Op, st: _BatchState, prio: int) -> None:
        task = self._vector(op, st.ready, prio)
        if self.counting:
            self._count(op, {E.VECTOR_OPS: op.vector_ops, E.VECTOR_SRAM_READ_BITS: 8 * op.activation_bytes_in})
        red = self._row_allreduce(f"{op.name}.allreduce", 8 * op.heads * op.tokens, [task], op.name, prio)
        per_link = self.view.mesh.column_units * op.heads * st.attn_pairs_u * self.rate.act_bytes
        m, r = self.view.mesh, self.rate
        down = self.sim.add(
            f"{op.name}.probs", NOC_DOWN, r.link_cycles(per_link) + r.path_cycles(m.column_hops_max), "noc",
            after=[red], priority=prio, op=op.name,
        )  # fmt: skip
        if self.counting:
            self._noc_count(op, op.activation_bytes_out, "gather")
        st.ready = [down]

    def _value(self, op: Op, st: _BatchState, prio: int) -> None:
        task, _ = self._h_attention(op, st.ready + ([st.values] if st.values is not None else []), prio)
        nbytes = op.heads * op.head_dim * op.tokens * self.rate.partial_bytes  # reduced in the network
        if self.counting:
            self._noc_count(op, nbytes, "reduce")
        st.ready = [self._gather(f"{op.name}.reduce", nbytes, [task], op.name, prio, row=True)]
        st.bcast = None

    def _noc_count(self, op: Op, nbytes: float, pattern: str) -> None:
        """Bit-hops of a transfer: a broadcast or in-network reduction crosses every link of a tree spanning
        the mesh rows between the units and the vector row(s) once; a gather moves each byte over its own
        path (its unit's hops to the vector row, on average, plus half the vector row)."""
        hops = self._spanning_hops if pattern in ("broadcast", "reduce") else self._gather_hops
        if self.counting:
            self._count(op, {E.NOC_BIT_HOPS: 8 * nbytes * hops})


_HANDLERS = {
    OpKind.EMBEDDING: PhaseBuilder._embedding, OpKind.PROJECTION: PhaseBuilder._projection,
    OpKind.LORA_A: PhaseBuilder._lora_a, OpKind.LORA_B: PhaseBuilder._lora_b,
    OpKind.ATTENTION_SCORE: PhaseBuilder._score, OpKind.SOFTMAX: PhaseBuilder._softmax,
    OpKind.ATTENTION_VALUE: PhaseBuilder._value,
}  # fmt: skip  # the op kinds with their own handler; the others run on the vector units (_elementwise)


@dataclass
class _Pending:
    """A projection whose outputs are not yet sent to the vector units: its op, its busiest unit's work,
    the tasks that must end before its outputs leave (the L-Unit task, LoRA B), and LoRA A's shared r outputs."""

    op: Op
    tw: TensorWork
    done: list[int]
    lora_in: int | None = None


class _BatchState:
    """What the op walk of one batch carries from op to op."""

    def __init__(self) -> None:
        self.ready: list[int] = []  # tasks after which the current vector-unit activation is ready
        self.bcast: int | None = None  # broadcast of that activation, shared by the projections using it
        self.pending: list[_Pending] = []  # projections whose outputs are not yet sent to the vector units
        self.attn_pairs_u = 0
        self.values: int | None = None  # new values on their way to the KV cache
