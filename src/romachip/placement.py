"""The data of a placement: which tile of which tensor lives where (compile.py computes it).

`Placement` is a columnar tile table (one int64 array per column, sorted by unit then ROM offset) plus
per-unit shares of the H-Unit SRAM and the vector units' slices of the hidden state. See compile.py for
the splitting rule and the ROM layout it encodes.

KV cache layout (`kv_layout`, one rule read by the capacity planner, the adapter bank and the timing
model): **token_round_robin**. The H-Units that hold a layer's weight tiles form that layer's KV *ring*
(all matrix units for `spread`, the layer's group for `layer_groups`); units are ranked 0..n-1 in unit
order, and token t's K and V (every channel, every layer the ring serves) live in the unit of rank
t mod n. So a unit stores `kv_bytes_per_token[u]` bytes for each token it holds, holds ceil((L - rank)/n)
tokens at context L (`kv_tokens`), and attention partial results per unit combine flash-decoding style.
A ROM word's place in the macros is the chip spec's `RomArray.word_location` (docs/rom-format.md).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from romachip.errors import CapacityError
from romachip.native import optional_module
from romachip.quant.formats import WeightFormat
from romachip.spec.chip import ChipSpec
from romachip.tensor_bits import DEFAULT_POLICY, TensorKind
from romachip.workload import ALL_TARGETS, LoraConfig

#: The C sums' functions and arguments this module and perf/mapping.py call (TILES_ABI in _tiles.c).
TILES_ABI = 1

# optional (setup.py): without it the NumPy sums run, with the same numbers (tests hold them together)
_tiles = optional_module(
    "romachip._tiles", TILES_ABI, "the tile table's C sums", "Their NumPy forms run meanwhile (same numbers, slower)."
)


def _int64(column: np.ndarray) -> np.ndarray:
    """A tile column as the C sums read it (no copy for the compiler's own columns)."""
    return np.ascontiguousarray(column, dtype=np.int64)


#: The KV-cache layouts a Placement can state (see the module docstring). The only one today.
KV_TOKEN_ROUND_ROBIN = "token_round_robin"
KV_LAYOUTS: tuple[str, ...] = (KV_TOKEN_ROUND_ROBIN,)


Bits = TypeVar("Bits", int, np.ndarray)


def word_ceil(bits: Bits, word_bits: int) -> Bits:
    """`bits` rounded up to whole words (ints or int64 arrays)."""
    return -(-bits // word_bits) * word_bits


def segment_offsets(offset_bits: Bits, code_bits: Bits, scale_bits: Bits, word_bits: int) -> tuple[Bits, Bits, Bits]:
    """Bit offsets of a tile's codes, scales and zeros (each segment starts on a word boundary): the one
    definition the compiler, the ROM writer and the reader lay tiles out with (ints or int64 arrays)."""
    scales = offset_bits + word_ceil(code_bits, word_bits)
    return offset_bits, scales, scales + word_ceil(scale_bits, word_bits)


def tile_span_bits(code_bits: Bits, scale_bits: Bits, zero_bits: Bits, word_bits: int, align_bits: int) -> Bits:
    """ROM bits a tile occupies: its three word-aligned segments, rounded up to the tile alignment."""
    _, _, zeros = segment_offsets(0, code_bits, scale_bits, word_bits)
    return word_ceil(zeros + word_ceil(zero_bits, word_bits), align_bits)


@dataclass(frozen=True)
class TensorEntry:
    """A tensor to place: name, [out, in] shape, format (None: an FP16 norm vector, shape [1, hidden]),
    layer (-1: not part of a block) and kind (as the capacity breakdown groups tensors)."""

    name: str
    shape: tuple[int, int]
    fmt: WeightFormat | None
    layer: int = -1
    kind: str = TensorKind.ATTENTION

    @functools.cached_property  # asked per tensor by every KV, adapter and timing rule
    def module(self) -> str:
        """`q_proj` ... for projections, else the kind."""
        parts = self.name.split(".")
        return parts[-2] if len(parts) >= 2 and parts[-2] in ALL_TARGETS else str(self.kind)


@dataclass(frozen=True)
class Tile:
    """One tile: rows [row_start, row_stop) x cols [col_start, col_stop) of `tensor` in L-Unit `unit`."""

    unit: int
    mesh_row: int
    mesh_col: int
    tensor: str
    row_start: int
    row_stop: int
    col_start: int
    col_stop: int
    code_bits: int
    scale_bits: int
    zero_bits: int
    rom_offset_bits: int  # where the tile starts in the unit's ROM (a word boundary)
    rom_span_bits: int  # bits it occupies there, word padding included

    @property
    def bits(self) -> int:
        """The tile's own bits (codes + scales + zeros), padding excluded."""
        return self.code_bits + self.scale_bits + self.zero_bits


#: The columns of a Placement's tile table (one int64 array each).
TILE_COLUMNS = (
    "unit",
    "tensor",
    "row_start",
    "row_stop",
    "col_start",
    "col_stop",
    "code_bits",
    "scale_bits",
    "zero_bits",
    "rom_offset_bits",
    "rom_span_bits",
)


@dataclass
class Placement:
    """Where everything lives. Tile columns are int64 arrays of equal length, sorted by (unit, offset)."""

    chip_name: str
    strategy: str
    word_bits: int  # bits of one ROM word (macro columns x bits per cell)
    align_bits: int  # every tile starts on a multiple of this (word_bits x B-ROM rows per group)
    unit_rom_bits: int  # ROM capacity of one L-Unit
    unit_mesh_row: np.ndarray  # [units] mesh row of each matrix unit
    unit_mesh_col: np.ndarray  # [units]
    tensors: list[TensorEntry]
    tiles: dict[str, np.ndarray]  # one array per name in TILE_COLUMNS; `tensor` indexes `tensors`
    kv_bytes_per_token: np.ndarray  # [units] KV bytes each H-Unit stores per token it holds (K and V, its layers)
    lora_bytes: np.ndarray  # [units] LoRA A/B bytes each H-Unit stores
    vector_mesh_row: np.ndarray  # [vector units]
    vector_mesh_col: np.ndarray  # [vector units]
    vector_hidden_start: np.ndarray  # [vector units] hidden channels each vector unit owns
    vector_hidden_stop: np.ndarray
    unit_vector: np.ndarray  # [units] the vector unit (same mesh column) that serves each matrix unit
    kv_ring: np.ndarray  # [units] the KV ring each H-Unit belongs to (-1: it holds no KV)
    kv_rank: np.ndarray  # [units] the unit's position in its ring (token t lives at rank t mod ring size)
    kv_layer_ring: np.ndarray  # [layers] the ring that caches each layer's K/V (-1: a layer with no tiles)
    policy: str = str(DEFAULT_POLICY)  # the storage policy that chose the tensors (tensor_bits.py)
    head_dim: int = 1  # the model's head dimension (a KV vector's elements; 1 when placed without a spec)
    kv_layout: str = KV_TOKEN_ROUND_ROBIN  # how the rings split the KV cache (module docstring)
    _by_name: dict[str, int] = field(default_factory=dict, repr=False)
    _units_cache: tuple | None = field(default=None, init=False, repr=False, compare=False)
    _rings_cache: tuple | None = field(default=None, init=False, repr=False, compare=False)  # compile.with_workload
    _views: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # perf.mapping.PlacementView.of
    # what the tiles alone determine, shared by the placements with_workload derives (the adapters' shares,
    # keyed by LoraConfig; "used": unit_used_bits)
    _lora_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name = {t.name: i for i, t in enumerate(self.tensors)}

    @property
    def units(self) -> int:
        return len(self.unit_mesh_row)

    @property
    def num_tiles(self) -> int:
        return len(self.tiles["unit"])

    def tile(self, i: int) -> Tile:
        c = {k: int(self.tiles[k][i]) for k in TILE_COLUMNS}
        u = c.pop("unit")
        name = self.tensors[c.pop("tensor")].name
        return Tile(u, int(self.unit_mesh_row[u]), int(self.unit_mesh_col[u]), name, **c)

    def tile_indices(self, *, unit: int | None = None, tensor: str | None = None) -> np.ndarray:
        """Indices into the tile table, filtered by unit and/or tensor name, in table order."""
        mask = np.ones(self.num_tiles, dtype=bool)
        if unit is not None:
            mask &= self.tiles["unit"] == unit
        if tensor is not None:
            if tensor not in self._by_name:
                raise KeyError(f"no tensor {tensor!r} in this placement")
            mask &= self.tiles["tensor"] == self._by_name[tensor]
        return np.flatnonzero(mask)

    def unit_tiles(self, unit: int) -> list[Tile]:
        return [self.tile(i) for i in self.tile_indices(unit=unit)]

    def tensor_tiles(self, name: str) -> list[Tile]:
        """Tiles of one tensor, ordered by row."""
        idx = self.tile_indices(tensor=name)
        idx = idx[np.argsort(self.tiles["row_start"][idx], kind="stable")]
        return [self.tile(i) for i in idx]

    def tensor_entry(self, name: str) -> TensorEntry:
        return self.tensors[self._by_name[name]]

    def unit_bits(self) -> np.ndarray:
        """[units] the tiles' own bits (codes + scales + zeros) per L-Unit."""
        own = self.tiles["code_bits"] + self.tiles["scale_bits"] + self.tiles["zero_bits"]
        return np.bincount(self.tiles["unit"], weights=own, minlength=self.units).astype(np.int64)

    def unit_used_bits(self) -> np.ndarray:
        """[units] ROM bits each L-Unit uses, word padding included (counted once per tile table: the
        capacity plan and every fit check ask)."""
        key, cached = (self.tiles["unit"], self.tiles["rom_span_bits"]), self._lora_cache.get("used")
        if cached is None or cached[0] is not key[0] or cached[1] is not key[1]:
            used = np.bincount(key[0], weights=key[1], minlength=self.units).astype(np.int64)
            self._lora_cache["used"] = cached = (*key, used)
        return cached[2].copy()

    # -- the ROM fit verdict: a placement is computed whether or not it fits --------------------------------
    @property
    def rom_fits(self) -> bool:
        """Whether every L-Unit's tiles fit its own ROM (a unit cannot lend ROM to its neighbour)."""
        used = self.unit_used_bits()
        return not len(used) or int(used.max()) <= self.unit_rom_bits

    def rom_overflow(self) -> str | None:
        """What overflows, naming the fullest L-Unit (None when the placement fits)."""
        if self.rom_fits:
            return None
        used = self.unit_used_bits()
        u = int(np.argmax(used))
        over = int((used > self.unit_rom_bits).sum())
        need, have = math.ceil(int(used[u]) / 8), self.unit_rom_bits // 8
        return (
            f"L-Unit {u} (mesh row {int(self.unit_mesh_row[u])}, col {int(self.unit_mesh_col[u])}) needs "
            f"{need:,} bytes of ROM but holds {have:,} bytes ({over} of {self.units} units overflow, "
            f"strategy {self.strategy!r}); use fewer weight bits, a larger group size, or a chip with more ROM"
        )

    def require_rom_fit(self) -> None:
        """CapacityError naming the fullest L-Unit when any unit's tiles exceed its ROM."""
        message = self.rom_overflow()
        if message is not None:
            raise CapacityError(message)

    # -- LoRA shares (the one rule the compiler, the capacity planner and the adapter bank use) -------------
    def lora_unit_bytes(self, ranks: Mapping[str, int], dtype: str) -> np.ndarray:
        """[units] bytes of one adapter whose modules have their own ranks (module name -> rank, e.g.
        `model.layers.3.self_attn.q_proj`; rank_pattern / layers_to_transform adapters): B [out, rank] rows
        sit beside the base rows they add to; the rank rows of A [rank, in] are dealt round-robin over the
        units that hold the module, continuing from one module to the next; each matrix's scale word sits
        with its first row."""
        out = np.zeros(self.units, dtype=np.int64)
        cfg = LoraConfig(rank=0, dtype=dtype)
        e, t = cfg.bytes_per_element, self.tiles
        rank = np.array([ranks.get(x.name.removesuffix(".weight"), 0) if x.layer >= 0 else 0 for x in self.tensors])
        if not rank.any():
            return out
        per_row = rank.astype(np.int64) * e  # B rows beside their base rows
        if _tiles is not None:  # the same sum in one pass (_tiles.c)
            cols = (_int64(t[k]) for k in ("unit", "tensor", "row_start", "row_stop"))
            out += np.array(_tiles.unit_row_sums(*cols, per_row, self.units), dtype=np.int64)
        else:
            tile_bytes = (t["row_stop"] - t["row_start"]) * per_row[t["tensor"]]
            out += np.bincount(t["unit"], weights=tile_bytes, minlength=self.units).astype(np.int64)  # exact: < 2**53
        first_unit = self._tensor_units()[0]
        adapted, r, a_unit = self._lora_a_units(rank)
        a_bytes = np.repeat(np.array([self.tensors[i].shape[1] * e for i in adapted.tolist()], dtype=np.int64), r)
        out += np.bincount(a_unit, weights=a_bytes, minlength=self.units).astype(np.int64)
        scale = cfg.scale_bytes_per_matrix  # A's and B's scale words, with each matrix's first row
        np.add.at(out, first_unit[adapted], scale)
        np.add.at(out, a_unit[np.cumsum(r) - r], scale)
        return out

    def lora_a_units(self, ranks: Mapping[str, int]) -> dict[str, np.ndarray]:
        """Module name -> [rank] the unit holding each row of its A matrix (`lora_unit_bytes`'s rule)."""
        rank = np.array([ranks.get(x.name.removesuffix(".weight"), 0) if x.layer >= 0 else 0 for x in self.tensors])
        adapted, r, a_unit = self._lora_a_units(rank)
        ends = np.cumsum(r).tolist()
        return {
            self.tensors[i].name.removesuffix(".weight"): a_unit[end - ri : end]
            for i, ri, end in zip(adapted.tolist(), r.tolist(), ends, strict=True)
        }

    def _lora_a_units(self, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(adapted tensors, their ranks, the unit of every A row in module order): the rank rows of A are
        dealt round-robin over the units holding the module, each module starting where the previous
        module on the same units stopped."""
        members_of = self._tensor_units()[1]
        adapted = np.flatnonzero(rank)
        r = rank[adapted].astype(np.int64)
        if not len(adapted):
            return adapted, r, np.zeros(0, dtype=np.int64)
        sets: dict[int, int] = {}  # by id: `_tensor_units` gives equal unit sets as one tuple object
        set_of, start, next_unit = [], [], {}
        for i, ri in zip(adapted.tolist(), r.tolist(), strict=True):
            members = members_of[i]
            k = sets.setdefault(id(members), len(sets))
            set_of.append(k)
            start.append(next_unit.get(k, 0))
            next_unit[k] = (start[-1] + ri) % len(members)
        unit_sets = [members_of[i] for i in adapted[np.unique(set_of, return_index=True)[1]].tolist()]
        table = np.zeros((len(unit_sets), max(len(u) for u in unit_sets)), dtype=np.int64)
        size = np.array([len(u) for u in unit_sets], dtype=np.int64)
        for k, units in enumerate(unit_sets):
            table[k, : len(units)] = units
        set_of, start = np.array(set_of, dtype=np.int64), np.array(start, dtype=np.int64)
        row_set, row_start = np.repeat(set_of, r), np.repeat(start, r)  # one entry per A row
        row_k = np.arange(int(r.sum()), dtype=np.int64) - np.repeat(np.cumsum(r) - r, r)
        return adapted, r, table[row_set, (row_start + row_k) % size[row_set]]

    def _tensor_units(self) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """(the unit holding each tensor's first row, the sorted units holding each tensor): derived from the
        tile table once per placement (the adapters' rule reads it for every tensor of every adapter)."""
        key_names = ("tensor", "unit", "row_start")
        key = tuple(self.tiles[k] for k in key_names)
        cached = self._units_cache
        if cached is not None and all(a is b for a, b in zip(cached[0], key, strict=True)):
            return cached[1]
        t, n = self.tiles, len(self.tensors)
        if _tiles is not None:  # the same rule in one pass (_tiles.c)
            first_unit, members = _tiles.tensor_units(*(_int64(t[k]) for k in key_names), n, self.units)
            self._units_cache = (key, (np.array(first_unit, dtype=np.int64), members))
            return self._units_cache[1]
        held = np.zeros((n, self.units), dtype=bool)  # tensor x unit: does the unit hold a tile of it
        held[t["tensor"], t["unit"]] = True
        distinct: dict[bytes, tuple[int, ...]] = {}  # tensors spread over the same units share one tuple
        members = []
        for row in held:
            units = row.tobytes()
            if units not in distinct:
                distinct[units] = tuple(np.flatnonzero(row).tolist())
            members.append(distinct[units])
        # the tile of each tensor's first row: least (row_start, table index), one key (row_start < 2**31)
        tiles = len(t["unit"])
        key = t["row_start"] * tiles
        key += np.arange(tiles, dtype=np.int64)
        first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, t["tensor"], key)
        present = first < np.iinfo(np.int64).max
        first_unit = np.full(n, -1, dtype=np.int64)
        first_unit[present] = t["unit"][first[present] % max(tiles, 1)]
        self._units_cache = (key, (first_unit, members))
        return first_unit, members

    def uniform_ranks(self, lora: LoraConfig) -> dict[str, int]:
        """Module name -> rank of a LoraConfig (one rank on its targets of every layer)."""
        if not lora.enabled:
            return {}
        adapted = [e for e in self.tensors if e.layer >= 0 and lora.adapts(e.module)]
        return {e.name.removesuffix(".weight"): lora.rank for e in adapted}

    # -- the KV cache rule (module docstring): every reader of the KV layout goes through these -------------
    @property
    def kv_ring_units(self) -> np.ndarray:
        """[units] how many units share each unit's ring (0 for a unit that holds no KV)."""
        sizes = np.bincount(self.kv_ring[self.kv_ring >= 0], minlength=1)
        return np.where(self.kv_ring >= 0, sizes[np.maximum(self.kv_ring, 0)], 0)

    @property
    def kv_token_bytes(self) -> int:
        """KV bytes one token of context adds to the chip: K and V of every layer (each ring once)."""
        rings = self.kv_ring[self.kv_ring >= 0]
        first = np.unique(rings, return_index=True)[1]
        return int(self.kv_bytes_per_token[self.kv_ring >= 0][first].sum())

    def kv_unit_of(self, token: int, layer: int) -> int:
        """The H-Unit caching token `token`'s K and V of layer `layer`: rank token mod n of the layer's ring."""
        ring = int(self.kv_layer_ring[layer]) if 0 <= layer < len(self.kv_layer_ring) else -1
        if ring < 0:
            raise KeyError(f"layer {layer} has no KV ring in this placement (layers 0..{len(self.kv_layer_ring) - 1})")
        members = np.flatnonzero(self.kv_ring == ring)
        return int(members[np.argsort(self.kv_rank[members])][token % len(members)])

    def kv_tokens(self, context_tokens: int) -> np.ndarray:
        """[units] tokens whose K/V each H-Unit holds when `context_tokens` tokens are cached (ranks
        0..n-1 of a ring of n hold ceil((L - rank) / n) of L tokens)."""
        n = self.kv_ring_units
        held = -(-(int(context_tokens) - self.kv_rank) // np.maximum(n, 1))
        return np.where(n > 0, np.maximum(held, 0), 0).astype(np.int64)

    def kv_context_bound(self, free_bytes: np.ndarray) -> np.ndarray:
        """[units] the longest context each H-Unit allows with `free_bytes` (>= 0) left for KV: it holds
        cap = floor(free / bytes per token) tokens, so L <= cap * n + rank (int64 max: the unit holds no KV)."""
        free = np.asarray(free_bytes, dtype=np.int64)
        holds = (self.kv_ring >= 0) & (self.kv_bytes_per_token > 0)
        cap = free // np.where(holds, self.kv_bytes_per_token, 1)
        bound = cap * self.kv_ring_units + self.kv_rank
        return np.where(holds, bound, np.iinfo(np.int64).max).astype(np.int64)

    def bits_by_kind(self) -> dict[str, int]:
        """Own bits of all tiles, by kind: codes, scales, zeros, and word padding."""
        t = self.tiles
        own = int(t["code_bits"].sum() + t["scale_bits"].sum() + t["zero_bits"].sum())
        return {
            "code_bits": int(t["code_bits"].sum()),
            "scale_bits": int(t["scale_bits"].sum()),
            "zero_bits": int(t["zero_bits"].sum()),
            "padding_bits": int(t["rom_span_bits"].sum()) - own,
        }

    def summary(self) -> dict[str, Any]:
        used = self.unit_used_bits()
        return {
            "chip": self.chip_name,
            "strategy": self.strategy,
            "split": "output_rows",
            "policy": self.policy,
            "align_bits": self.align_bits,
            "matrix_units": self.units,
            "vector_units": len(self.vector_mesh_row),
            "tiles": self.num_tiles,
            "word_bits": self.word_bits,
            "unit_rom_bits": self.unit_rom_bits,
            "unit_used_bits_max": int(used.max()) if self.units else 0,
            "unit_used_bits_min": int(used.min()) if self.units else 0,
            **self.bits_by_kind(),
            "kv_layout": self.kv_layout,
            "kv_rings": int(self.kv_ring.max()) + 1 if self.units else 0,
            "kv_bytes_per_token": self.kv_token_bytes,
            "lora_bytes": int(self.lora_bytes.sum()),
        }


def matrix_unit_coords(chip: ChipSpec) -> tuple[np.ndarray, np.ndarray]:
    """Mesh (row, col) of each matrix unit, numbered row-major over the matrix rows of the mesh."""
    return _role_coords(chip, "matrix")


def vector_unit_coords(chip: ChipSpec) -> tuple[np.ndarray, np.ndarray]:
    return _role_coords(chip, "vector")


def _role_coords(chip: ChipSpec, role: str) -> tuple[np.ndarray, np.ndarray]:
    rows = np.array([r for r, x in enumerate(chip.mesh.row_roles) if x == role], dtype=np.int64)
    cols = np.arange(chip.mesh.cols, dtype=np.int64)
    return np.repeat(rows, len(cols)), np.tile(cols, len(rows))
