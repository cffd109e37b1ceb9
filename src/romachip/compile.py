"""Placement: which weight tile lives in which L-Unit's ROM, LoRA and KV in which H-Unit, activations on
which vector unit. The timing model, the capacity planner and the ROM image all read the same Placement.

Splitting rule (one, everywhere): **output rows**. A tile of a weight [out, in] is a range of whole output
rows with every input column, so the unit that holds it produces whole output elements (no partial sums
to reduce) and every quantization group (which runs along the input dimension of one row) lies wholly in
one unit: its codes, scale and zero are stored side by side in that unit's ROM. `col_start`/`col_stop`
are kept in the tile table for a future column split; today they are always [0, in).

Strategies:
- `spread` (default): every matrix of every layer is split over all matrix units (ROMA's figures fit
  this). Rows go out as evenly as possible; the units that get one row more rotate from tensor to tensor
  (per input width), so ROM use stays balanced to within one row of each tensor shape.
- `layer_groups`: the matrix units (mesh order) are cut into `num_groups` consecutive groups and
  consecutive layers are assigned to them; each layer is spread over its group. The embedding table and
  an untied LM head are not layers: they are spread over all units.

What is placed: the ROM-resident tensors `storage.model_tensors` lists under a StoragePolicy (the
capacity planner's list, so totals agree): the seven projections of every block, the FP16 RMSNorm
vectors ([1, hidden], one row: each lands whole in one unit), and the embedding table / LM head when the
policy keeps them on chip (a tied model's shared table once).

ROM layout of one unit: a linear address space of `word_bits`-bit words (one macro row each); which
macro and row word w occupies is the chip spec's `RomArray.word_location` (interleaved: macro w % macros,
row w // macros; contiguous: macro w // macro_rows, row w % macro_rows). Tiles follow one another in
execution order (tensor_bits.py's order: embedding, per block input norm, q,k,v,o,gate,up,down,
post-attention norm, final norm, LM head); inside
a tile its codes, then its scales, then its zeros, each segment starting on a word boundary (a unit
reads whole words), and each tile starting on a B-ROM group of `brom_rows_per_group` words, so that a
tile's B-ROM encoding is a byte range of its own. Padding bits are counted apart from the tensors' own
bits, so totals agree with `WeightFormat.storage_bits` and the capacity planner.

KV cache: split by token position, round robin over the units that hold a layer's tiles (placement.py's
`token_round_robin`; `_kv_rings` derives the rings, also for a tile table read back from a ROM image).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Literal, NamedTuple

import numpy as np

from romachip import tensor_bits
from romachip.errors import FormatError
from romachip.names import EMBED_NAME, HEAD_NAME, layer_of
from romachip.names import projection_name as linear_name
from romachip.placement import (  # re-exported: the data types live in placement.py
    TILE_COLUMNS,
    Placement,
    TensorEntry,
    Tile,
    matrix_unit_coords,
    tile_span_bits,
    vector_unit_coords,
)
from romachip.quant.formats import WeightFormat
from romachip.spec.chip import ChipSpec
from romachip.spec.model import ModelSpec
from romachip.tensor_bits import DEFAULT_POLICY, NORM_WEIGHT_BITS, StoragePolicy
from romachip.workload import ALL_TARGETS, KvConfig, LoraConfig

__all__ = [
    "EMBED_NAME",
    "HEAD_NAME",
    "LINEAR_MODULES",
    "STRATEGIES",
    "Placement",
    "TensorEntry",
    "Tile",
    "assemble_placement",
    "check_rom_capacity",
    "compile_placement",
    "layer_of",
    "linear_name",
    "matrix_unit_coords",
    "model_tensors",
    "place_tensors",
    "rom_alignment",
    "vector_unit_coords",
    "with_workload",
]

Strategy = Literal["spread", "layer_groups"]
STRATEGIES: tuple[str, ...] = ("spread", "layer_groups")
LINEAR_MODULES = ALL_TARGETS


def model_tensors(
    spec: ModelSpec, fmt: WeightFormat, *, policy: StoragePolicy | str = DEFAULT_POLICY
) -> list[TensorEntry]:
    """The ROM-resident tensors of a model in execution order, as the storage policy lists them
    (tensor_bits.py): projections, FP16 norm vectors, and the embedding table / LM head when on chip.
    A tied model stores its shared table once."""
    return list(_model_entries(spec, fmt, StoragePolicy.parse(policy)))


@functools.lru_cache(maxsize=64)
def _model_entries(spec: ModelSpec, fmt: WeightFormat, policy: StoragePolicy) -> tuple[TensorEntry, ...]:
    """`model_tensors` once per (model, format, policy) and process (frozen specs; a sweep over chips
    places the same model at every design point)."""
    return tuple(
        TensorEntry(t.name, (t.rows, t.cols), t.fmt, layer_of(t.name), t.kind)
        for t in tensor_bits.model_tensors(spec, fmt, policy)
        if t.on_chip
    )


def compile_placement(
    chip: ChipSpec,
    spec: ModelSpec,
    fmt: WeightFormat,
    *,
    strategy: str = "spread",
    policy: StoragePolicy | str = DEFAULT_POLICY,
    num_groups: int | None = None,
    lora: LoraConfig | None = None,
    kv: KvConfig | None = None,
) -> Placement:
    """Place a model on a chip. The Placement carries its own ROM verdict (`rom_fits`, `rom_overflow()`
    naming the fullest L-Unit): a model that overflows is placed all the same, so that the capacity
    planner can measure it; raises only for requests that make no sense (unknown strategy or policy).

    lora: adapters whose share each H-Unit holds (None: no adapter). kv: KV cache dtype (None: the
    chip's KV precision). num_groups (layer_groups only) defaults to min(layers, matrix units).
    """
    pol = StoragePolicy.parse(policy)
    return _place(
        chip, model_tensors(spec, fmt, policy=pol), _model_rows(spec, fmt, pol), strategy=strategy,
        num_groups=num_groups, lora=lora, kv=kv, spec=spec, policy=pol,
    )  # fmt: skip


@functools.lru_cache(maxsize=64)
def _model_rows(spec: ModelSpec, fmt: WeightFormat, policy: StoragePolicy) -> _TensorRows:
    """`_tensor_rows` of a model's tensors, once per (model, format, policy) and process: what the split
    reads of the tensors alone, the same for every organisation a sweep places the model on."""
    return _tensor_rows(list(_model_entries(spec, fmt, policy)))


def place_tensors(
    chip: ChipSpec,
    tensors: list[TensorEntry],
    *,
    strategy: str = "spread",
    num_groups: int | None = None,
    lora: LoraConfig | None = None,
    kv: KvConfig | None = None,
    spec: ModelSpec | None = None,
    policy: StoragePolicy | str = DEFAULT_POLICY,
) -> Placement:
    """Place an explicit list of tensors (the formats of the tensors a model really has); never raises
    for a ROM overflow (see `compile_placement`)."""
    return _place(chip, tensors, _tensor_rows(tensors), strategy=strategy, num_groups=num_groups, lora=lora,
                  kv=kv, spec=spec, policy=policy)  # fmt: skip


def _place(
    chip: ChipSpec,
    tensors: list[TensorEntry],
    rows: _TensorRows,
    *,
    strategy: str,
    num_groups: int | None,
    lora: LoraConfig | None,
    kv: KvConfig | None,
    spec: ModelSpec | None,
    policy: StoragePolicy | str,
) -> Placement:
    if strategy not in STRATEGIES:
        raise FormatError(f"unknown placement strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    n = chip.matrix_units
    num_layers = spec.num_layers if spec is not None else max((t.layer for t in tensors), default=-1) + 1
    unit_sets = _unit_sets(n, tensors, strategy, num_groups, num_layers)
    word_bits, align_bits = rom_alignment(chip)
    tiles, in_order = _split_tensors(tensors, rows, unit_sets, word_bits, align_bits)
    _assign_offsets(tiles, word_bits, align_bits, in_order=in_order)
    return assemble_placement(chip, tensors, tiles, strategy=strategy, policy=policy, spec=spec, kv=kv, lora=lora)


def rom_alignment(chip: ChipSpec) -> tuple[int, int]:
    """(word_bits, align_bits) of the chip's L-Unit ROM: a word is one macro row; tiles start on a
    B-ROM group of words (one word when the ROM is not a B-ROM)."""
    rom = chip.l_unit.rom
    word_bits = rom.macro_cols * rom.bits_per_cell
    return word_bits, word_bits * (rom.brom_rows_per_group if rom.brom else 1)


def assemble_placement(
    chip: ChipSpec,
    tensors: list[TensorEntry],
    tiles: dict[str, np.ndarray],
    *,
    strategy: str,
    policy: StoragePolicy | str = DEFAULT_POLICY,
    spec: ModelSpec | None = None,
    kv: KvConfig | None = None,
    lora: LoraConfig | None = None,
) -> Placement:
    """A Placement from a finished tile table (laid out, sorted by unit and offset), e.g. one read back
    from a ROM image: derives the KV layout and the adapters' shares; checks nothing (`rom_fits`)."""
    word_bits, align_bits = rom_alignment(chip)
    n = chip.matrix_units
    empty = np.zeros(n, dtype=np.int64)
    placement = _finish(chip, strategy, word_bits, align_bits, tensors, tiles, (empty, empty - 1, empty, empty), spec)
    placement.policy = str(StoragePolicy.parse(policy))
    return with_workload(placement, kv=kv or KvConfig(dtype=chip.precision.kv), lora=lora)


def with_workload(placement: Placement, *, kv: KvConfig, lora: LoraConfig | None = None) -> Placement:
    """The same tiles with the KV rule of another KV cache and the shares of other adapters (no tile moves;
    not a compilation): what a bank or an engine running another KV dtype reads from an image's placement."""
    n = placement.units
    key = (placement.tiles["unit"], placement.tiles["tensor"])
    cached = placement._rings_cache
    if cached is None or not all(a is b for a, b in zip(cached[0], key, strict=True)):
        cached = (key, _kv_rings(placement))  # the rings depend on the tiles only
    kv_bytes, kv_ring, kv_rank, kv_layer_ring = _kv_layout(placement.tensors, kv, placement.head_dim, cached[1])
    out = replace(
        placement, kv_bytes_per_token=kv_bytes, kv_ring=kv_ring, kv_rank=kv_rank, kv_layer_ring=kv_layer_ring,
        lora_bytes=np.zeros(n, dtype=np.int64),
    )  # fmt: skip
    out._units_cache, out._rings_cache = placement._units_cache, cached  # the same tiles: these still hold
    out._lora_cache = placement._lora_cache  # what the tiles alone determine (the same tiles)
    if lora is not None and lora.enabled:
        shares = out._lora_cache.get(lora)
        if shares is None or shares[0] is not key[0] or shares[1] is not key[1]:
            shares = (*key, out.lora_unit_bytes(out.uniform_ranks(lora), lora.dtype))
            out._lora_cache[lora] = shares
        out.lora_bytes = shares[2].copy()
    return out


def _kv_layout(
    tensors: list[TensorEntry], kv: KvConfig, head_dim: int, rings: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The token_round_robin KV rule (placement.py): (bytes per held token, ring, rank per unit; ring per
    layer), from the rings `_kv_rings` found. Per token a layer costs K and V of every KV head (+ a scale
    per head vector)."""
    ring, rank, layer_ring = rings
    layers = len(layer_ring)
    token_bytes = np.zeros(max(layers, 1), dtype=np.int64)
    for t in tensors:
        if t.layer >= 0 and t.module in ("k_proj", "v_proj"):  # K or V of every KV head: whole head vectors
            token_bytes[t.layer] += -(-t.shape[0] // head_dim) * kv.vector_bytes(head_dim)
    per_ring = np.bincount(layer_ring[layer_ring >= 0], weights=token_bytes[:layers][layer_ring >= 0])
    per_ring = np.concatenate((per_ring.astype(np.int64), [0]))  # exact: whole bytes far below 2**53
    per_token = np.where(ring >= 0, per_ring[np.where(ring >= 0, ring, len(per_ring) - 1)], 0).astype(np.int64)
    return per_token, ring, rank, layer_ring


def _kv_rings(placement: Placement) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ring, rank per unit; ring per layer) of the token_round_robin KV rule. A layer's ring is the set of
    units holding its weight tiles; layers whose unit sets overlap share one ring (the union), so every
    unit is in at most one ring and holds the same tokens for all the ring's layers."""
    tensors, n = placement.tensors, placement.units
    layers = max((t.layer for t in tensors), default=-1) + 1
    held = np.zeros((layers, n), dtype=bool)  # layer x unit: does the unit hold a tile of the layer
    layers_on: dict[int, tuple[tuple[int, ...], list[int]]] = {}  # by id: equal unit sets are one tuple
    for t, units in zip(tensors, placement._tensor_units()[1], strict=True):
        if t.layer >= 0 and units:
            on = layers_on.get(id(units))
            if on is None:
                on = layers_on[id(units)] = (units, [])
            on[1].append(t.layer)
    single_layers: list[int] = []  # norm vectors' one row each: (layer, unit) pairs marked in one go
    single_units: list[int] = []
    for units, on in layers_on.values():
        rows = list(dict.fromkeys(on))  # each layer once (its tensors on these units repeat it)
        if len(units) == 1:
            single_layers += rows
            single_units += units * len(rows)
        else:
            held[np.ix_(rows, units)] = True
    held[single_layers, single_units] = True
    label = np.full(n, -1, dtype=np.int64)
    layer_label = np.full(layers, -1, dtype=np.int64)
    first_of: dict[bytes, int] = {}  # a layer on the units of an earlier layer changes no label
    for layer in range(layers):  # union-find in the small: merge the labels a layer's units already carry
        units = held[layer]
        if first_of.setdefault(units.tobytes(), layer) != layer or not units.any():
            continue
        carried = label[units]
        old = np.unique(carried[carried >= 0])
        new = int(old[0]) if len(old) else layer
        if len(old) > 1:  # the layer joins rings: they become one
            label[np.isin(label, old)] = new
        label[units] = new
    for layer in range(layers):  # a layer's units always carry one label (they are relabelled together)
        first = first_of[held[layer].tobytes()]
        if first == layer and held[layer].any():
            layer_label[layer] = label[int(np.argmax(held[layer]))]
        elif first != layer:
            layer_label[layer] = layer_label[first]
    labels = np.unique(label[label >= 0])  # rings numbered by their label, i.e. in unit order of first layer
    ring = np.where(label >= 0, np.searchsorted(labels, label), -1)
    layer_ring = np.where(layer_label >= 0, np.searchsorted(labels, layer_label), -1)
    rank = np.zeros(n, dtype=np.int64)
    for r in range(len(labels)):
        members = np.flatnonzero(ring == r)
        rank[members] = np.arange(len(members))
    return ring.astype(np.int64), rank, layer_ring.astype(np.int64)


def _unit_sets(
    n: int, tensors: list[TensorEntry], strategy: str, num_groups: int | None, num_layers: int
) -> list[np.ndarray]:
    everyone = np.arange(n, dtype=np.int64)
    if strategy == "spread":
        return [everyone] * len(tensors)
    layers = max(num_layers, max((t.layer for t in tensors), default=-1) + 1)
    g = num_groups if num_groups is not None else min(max(layers, 1), n)
    if not 1 <= g <= n:
        raise FormatError(f"layer_groups needs 1..{n} groups (one unit at least per group), got {g}")
    bounds = [(k * n) // g for k in range(g + 1)]
    groups = [everyone[bounds[k] : bounds[k + 1]] for k in range(g)]
    return [everyone if t.layer < 0 else groups[(t.layer * g) // max(layers, 1)] for t in tensors]


def _split_tensors(
    tensors: list[TensorEntry], rows: _TensorRows, unit_sets: list[np.ndarray], word_bits: int, align_bits: int
) -> tuple[dict[str, np.ndarray], bool]:
    """The tile table before layout (offsets not yet assigned), and whether it is already in the layout's
    (unit, tensor) order: each tensor's output rows split over its units as evenly as possible, the
    `rows % parts` parts that get one row more starting at a rotation that advances from tensor to tensor
    of the same input width and unit set (so ROM use stays balanced), rows handed out in unit order; units
    that get no row hold no tile. All tensors at once: one [units, tensors] array per column."""
    if not tensors:
        return {k: np.zeros(0, dtype=np.int64) for k in TILE_COLUMNS if k != "rom_offset_bits"}, True
    out_f, in_f = rows.out_features, rows.in_features
    parts = np.array([len(u) for u in unit_sets], dtype=np.int64)
    rotation: dict[tuple[int, int, int], int] = {}
    rotations = []
    first_unit: dict[int, int] = {}  # by id: `spread` gives every tensor the same unit set
    for out_rows, width, units, n in zip(rows.out_list, rows.in_list, unit_sets, parts.tolist(), strict=True):
        first = first_unit.get(id(units))
        if first is None:
            first = first_unit[id(units)] = int(units[0])
        key = (width, first, n)  # one rotation per input width and unit set
        rotations.append(r := rotation.get(key, 0))
        rotation[key] = (r + out_rows % n) % n
    rotate = np.array(rotations, dtype=np.int64)
    width = int(parts.max())
    base, rem = np.divmod(out_f, parts)
    w1 = np.minimum(rem, parts - rotate)  # the extra rows go to parts [rotate, rotate + w1) and [0, w2)
    w2 = rem - w1
    everyone = unit_sets[0]
    # `spread` (one sorted unit set for every tensor): lay the arrays out [units, tensors], whose row-major
    # order is already the layout's (unit, tensor) order; else [tensors, units] and the layout sorts
    unit_major = all(u is everyone for u in unit_sets) and bool((np.diff(everyone) > 0).all())
    per_tensor = (lambda v: v[None, :]) if unit_major else (lambda v: v[:, None])
    part = np.arange(width, dtype=np.int64)
    part = part[:, None] if unit_major else part[None, :]
    r, w1, w2 = per_tensor(rotate), per_tensor(w1), per_tensor(w2)
    extra = ((part >= r) & (part < r + w1)) | (part < w2)  # bool: the big int arrays are few (each costs)
    counts = per_tensor(base.astype(np.int32)) + extra  # int32: a tensor's rows (< 2**31); fewer new pages
    if not unit_major:
        counts[part >= per_tensor(parts)] = 0
    axis = 0 if unit_major else 1
    start = np.cumsum(counts, axis=axis, dtype=np.int32)  # first row of a part: the rows of the parts before
    start -= counts
    keep = counts > 0
    # the whole table in one block, its columns rows of it, filled in place: a new organisation's table
    # is ~4 MB of fresh memory, and one block takes far fewer page faults than a dozen arrays and their
    # temporaries (the layout fills rom_offset_bits; the keys in the layout's order)
    names = [k for k in TILE_COLUMNS if k != "rom_offset_bits"] + ["rom_offset_bits"]
    tiles = dict(zip(names, np.empty((len(names), int(np.count_nonzero(keep))), dtype=np.int64), strict=True))
    tiles["row_start"][:] = start[keep]
    if unit_major:
        at_unit, tiles["tensor"][:] = np.nonzero(keep)  # row-major: in (unit, tensor) order
        np.take(everyone, at_unit, out=tiles["unit"])
    else:
        unit_of = np.full((len(tensors), width), -1, dtype=np.int64)
        for ti, u in enumerate(unit_sets):
            unit_of[ti, : len(u)] = u
        tiles["unit"][:] = unit_of[keep]
        tiles["tensor"][:] = np.repeat(np.arange(len(tensors), dtype=np.int64), keep.sum(axis=1))
    tensor = tiles["tensor"]
    # a tensor's tiles have base or base + 1 rows: their bits and ROM spans from a [tensors, 2] table
    variant = tensor * 2
    variant += extra[keep]
    table_rows = base[:, None] + np.array([0, 1], dtype=np.int64)[None, :]
    code, scale, zero = (table_rows * per_row[:, None] for per_row in (rows.code, rows.scale, rows.zero))
    span = tile_span_bits(code, scale, zero, word_bits, align_bits)
    for name, table in (("row_stop", table_rows), ("code_bits", code), ("scale_bits", scale), ("zero_bits", zero),
                        ("rom_span_bits", span)):  # fmt: skip
        np.take(table.reshape(-1), variant, out=tiles[name])
    tiles["row_stop"] += tiles["row_start"]
    tiles["col_start"][:] = 0
    np.take(in_f, tensor, out=tiles["col_stop"])
    return tiles, unit_major


class _TensorRows(NamedTuple):
    """What the split reads of the tensors alone: [tensors] shapes (arrays and lists) and the code (or FP16
    value), scale and zero bits of one whole row of each tensor (read-only arrays: a model's are shared)."""

    out_features: np.ndarray
    in_features: np.ndarray
    out_list: list[int]
    in_list: list[int]
    code: np.ndarray
    scale: np.ndarray
    zero: np.ndarray


def _tensor_rows(tensors: list[TensorEntry]) -> _TensorRows:
    out_list, in_list = [t.shape[0] for t in tensors], [t.shape[1] for t in tensors]
    arrays = [np.array(x, dtype=np.int64) for x in (out_list, in_list, *_row_bits(tensors))]
    for a in arrays:
        a.flags.writeable = False
    out_f, in_f, code, scale, zero = arrays
    return _TensorRows(out_f, in_f, out_list, in_list, code, scale, zero)


def _row_bits(tensors: list[TensorEntry]) -> tuple[list[int], list[int], list[int]]:
    """[tensors] code (or FP16 value), scale and zero bits of one whole row of each tensor."""
    code, scale, zero = [], [], []
    for t in tensors:
        in_f = t.shape[1]
        if t.fmt is None:
            code.append(in_f * NORM_WEIGHT_BITS), scale.append(0), zero.append(0)
            continue
        groups = t.fmt.groups_per_row(in_f)
        code.append(in_f * t.fmt.bits), scale.append(groups * t.fmt.scale_bits), zero.append(groups * t.fmt.zero_bits)
    return code, scale, zero


def _assign_offsets(tiles: dict[str, np.ndarray], word_bits: int, align_bits: int, *, in_order: bool = False) -> None:
    """Sort tiles by (unit, execution order) (unless `in_order`: they are) and lay them out back to back
    in each unit's ROM, each segment on a word boundary and each tile on an `align_bits` boundary (a B-ROM
    group of words); `rom_span_bits`, when given, are the tiles' spans (`tile_span_bits`)."""
    unit, tensor = tiles["unit"], tiles["tensor"]
    if not in_order and len(unit) > 1:
        order = np.lexsort((tensor, unit))
        for k in tiles:
            tiles[k] = tiles[k][order]
    span = tiles.get("rom_span_bits")
    if span is None:
        span = tile_span_bits(tiles["code_bits"], tiles["scale_bits"], tiles["zero_bits"], word_bits, align_bits)
    starts = np.cumsum(span)
    starts -= span
    first = np.ones(len(span), dtype=bool)
    first[1:] = tiles["unit"][1:] != tiles["unit"][:-1]
    unit_base = np.where(first, starts, 0)
    np.maximum.accumulate(unit_base, out=unit_base)
    offset = tiles.get("rom_offset_bits")  # a column of the split's block (filled here), else a new one
    if offset is None or offset.shape != span.shape:
        tiles["rom_offset_bits"] = offset = np.empty_like(span)
    np.subtract(starts, unit_base, out=offset)
    tiles["rom_span_bits"] = span


def _finish(
    chip: ChipSpec,
    strategy: str,
    word_bits: int,
    align_bits: int,
    tensors: list[TensorEntry],
    tiles: dict[str, np.ndarray],
    kv_rule: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    spec: ModelSpec | None,
) -> Placement:
    kv_bytes, kv_ring, kv_rank, kv_layer_ring = kv_rule
    mrow, mcol = matrix_unit_coords(chip)
    vrow, vcol = vector_unit_coords(chip)
    v = len(vrow)
    hidden_size = spec.hidden_size if spec is not None else 0
    hidden = np.array([(k * hidden_size) // v for k in range(v + 1)], dtype=np.int64) if v else np.zeros(1, np.int64)
    # the vector unit in the same mesh column serves a matrix unit (the vector row runs across the mesh)
    col_to_vec = {int(c): i for i, c in enumerate(vcol)}
    unit_vector = np.array([col_to_vec.get(int(c), -1) for c in mcol], dtype=np.int64)
    return Placement(
        chip_name=chip.name,
        strategy=strategy,
        word_bits=word_bits,
        align_bits=align_bits,
        unit_rom_bits=chip.l_unit.rom.bits,
        unit_mesh_row=mrow,
        unit_mesh_col=mcol,
        tensors=tensors,
        tiles=tiles,
        kv_bytes_per_token=kv_bytes,
        lora_bytes=np.zeros(len(mrow), dtype=np.int64),
        vector_mesh_row=vrow,
        vector_mesh_col=vcol,
        vector_hidden_start=hidden[:-1],
        vector_hidden_stop=hidden[1:],
        unit_vector=unit_vector,
        kv_ring=kv_ring,
        kv_rank=kv_rank,
        kv_layer_ring=kv_layer_ring,
        head_dim=spec.head_dim if spec is not None else 1,
    )


def check_rom_capacity(placement: Placement) -> None:
    """CapacityError naming the fullest L-Unit when any unit's tiles exceed its ROM."""
    placement.require_rom_fit()
