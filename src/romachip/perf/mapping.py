"""What the placement means for timing: per weight tensor, the work of its busiest unit; mesh distances.

The timing model simulates one representative unit per unit type and group of units (all matrix units
for the `spread` strategy; one group per layer group otherwise). Units of a group start together and do
the same op, so the group finishes when its busiest unit does: each op costs what the busiest unit of
its tensor needs (most output rows, most ROM rows read from one macro).

Two layout rules come from the Placement and the chip spec, never assumed here: where a ROM word sits
(`RomArray.macro_words_max`, the closed form of `RomArray.word_location`) and which H-Unit caches which
token's K/V (`Placement.kv_tokens`, token round robin over the layer's KV ring).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from romachip import placement as placement_rules
from romachip.compile import EMBED_NAME, HEAD_NAME, Placement, linear_name
from romachip.spec.chip import ChipSpec

_FIGURE_COLUMNS = ("tensor", "row_start", "row_stop", "code_bits", "scale_bits", "zero_bits")  # _tiles.c's order


class TensorWork(NamedTuple):
    """One weight tensor as its busiest unit sees it (a named tuple: a view makes one per tensor)."""

    name: str
    out_features: int
    in_features: int
    weight_bits: int
    group: int  # index of the unit group that holds the tensor
    units: int  # units holding a tile of it
    rows_max: int  # most output rows on one unit
    rom_rows_max: int  # most ROM rows one macro of one unit reads for its tile (one full pass)
    bits_total: int  # codes + scales + zeros of the whole tensor


@dataclass(frozen=True)
class MeshView:
    """Distances of the mesh, in hops, for transfers between matrix units and the vector row."""

    cols: int
    vector_units: int
    column_hops_max: int  # farthest matrix unit from the vector row, along its column
    column_units: int  # matrix units in one half column (on one side of the vector row)
    row_hops_max: int  # one end of the vector row to the other
    spanning_links: int  # links of a tree spanning every node between the farthest units and the vector row(s)
    column_hops_mean: float  # mean hops from a matrix unit to its nearest vector row, along its column

    @property
    def broadcast_hops(self) -> int:
        return self.row_hops_max + self.column_hops_max


class PlacementView:
    """Per-tensor busiest-unit work and unit groups, computed once from a Placement (vectorised)."""

    @classmethod
    def of(cls, chip: ChipSpec, placement: Placement) -> PlacementView:
        """The view of `placement` on `chip`, kept on the placement by what the view reads of the chip (the
        L-Unit ROM and the mesh): chips that differ only in physics share it."""
        key = (chip.l_unit.rom.model_dump_json(), chip.mesh.model_dump_json())
        views = placement._views
        if key not in views or views[key][0] is not placement.tiles:
            view = cls(chip, placement)
            view._strong = None  # the placement keeps the view: a strong reference back would make a cycle,
            views[key] = (placement.tiles, view)  # and a dropped placement (4 MB of tiles) wait for the collector
        return views[key][1]

    def __init__(self, chip: ChipSpec, placement: Placement) -> None:
        self.chip = chip
        self._placement, self._strong = weakref.ref(placement), placement
        t = placement.tiles
        words = -(-t["rom_span_bits"] // placement.word_bits)
        first = t["rom_offset_bits"] // placement.word_bits
        macro_rows = chip.l_unit.rom.macro_words_max(first, words)  # rows the busiest macro reads per tile
        group_of_unit = self._unit_groups(placement)
        self.groups = int(group_of_unit.max()) + 1 if len(group_of_unit) else 1
        self.group_units = np.bincount(group_of_unit, minlength=self.groups)
        self.tensors: dict[str, TensorWork] = {}
        members = placement._tensor_units()[1]
        n_t, n_u = len(placement.tensors), placement.units
        one_tile = sum(len(m) for m in members) == len(t["unit"])  # one tile per (tensor, unit): the busiest tile
        native = placement_rules._tiles if one_tile else None
        if native is not None:  # the sums and maxima below in one pass (romachip/_tiles.c)
            cols = [placement_rules._int64(x) for x in (*(t[k] for k in _FIGURE_COLUMNS), macro_rows)]
            tiles_of, rows_max, rom_max, bits, first = native.tensor_figures(*cols, n_t)
        else:
            tiles_of, rows_max, rom_max, bits, first = self._figures(t, macro_rows, n_t, n_u, one_tile)
        group = [0] * n_t
        if self.groups > 1:  # the group of the unit holding the tensor's first tile in table order
            unit_of_first = t["unit"][np.maximum(np.asarray(first, dtype=np.int64), 0)].tolist()
            group = [int(group_of_unit[u]) if k else 0 for u, k in zip(unit_of_first, tiles_of, strict=True)]
        columns = zip(placement.tensors, tiles_of, group, members, rows_max, rom_max, bits, strict=True)
        for entry, tiles, g, units, rows_u, rom_u, bits_t in columns:  # sums of whole numbers below 2**53: exact
            if not tiles:
                continue
            weight_bits = entry.fmt.bits if entry.fmt is not None else 16
            self.tensors[entry.name] = TensorWork(  # in field order (positional: 254 of them per view)
                entry.name, entry.shape[0], entry.shape[1], weight_bits, g, len(units), int(rows_u), int(rom_u),
                int(bits_t),
            )  # fmt: skip
        self.mesh = self._mesh_view(chip, placement)
        self._layer_group: dict[int, int] = {}
        self._kv_keys: dict[tuple[int, int], tuple[int, int]] = {}  # kv_keys, once per (layer, keys)
        self._projections: dict[tuple[int, str], TensorWork] = {}
        for entry in placement.tensors:
            if entry.layer >= 0 and entry.name in self.tensors:
                self._layer_group.setdefault(entry.layer, self.tensors[entry.name].group)

    @staticmethod
    def _figures(t: dict[str, np.ndarray], macro_rows: np.ndarray, n_t: int, n_u: int, one_tile: bool) -> tuple:
        """Per tensor (lists): tiles, most output rows and most macro rows on one unit, bits, first tile in
        table order (-1: none). `one_tile`: every unit holds at most one tile of a tensor."""
        rows = t["row_stop"] - t["row_start"]
        tiles_of = np.bincount(t["tensor"], minlength=n_t)
        bits = np.bincount(t["tensor"], weights=t["code_bits"] + t["scale_bits"] + t["zero_bits"], minlength=n_t)
        if one_tile:
            rows_max, rom_max = np.zeros(n_t, dtype=np.int64), np.zeros(n_t, dtype=np.int64)
            np.maximum.at(rows_max, t["tensor"], rows)
            np.maximum.at(rom_max, t["tensor"], macro_rows)
        else:  # a unit's tiles of a tensor add up: per (tensor, unit), then the busiest unit
            at = t["tensor"] * n_u + t["unit"]
            rows_max = np.bincount(at, weights=rows, minlength=n_t * n_u).reshape(n_t, n_u).max(axis=1, initial=0)
            rom_max = np.bincount(at, weights=macro_rows, minlength=n_t * n_u).reshape(n_t, n_u).max(axis=1, initial=0)
        first = np.full(n_t, len(t["unit"]), dtype=np.int64)
        np.minimum.at(first, t["tensor"], np.arange(len(t["unit"]), dtype=np.int64))
        first[tiles_of == 0] = -1
        return tuple(x.tolist() for x in (tiles_of, rows_max, rom_max, bits, first))

    @staticmethod
    def _unit_groups(placement: Placement) -> np.ndarray:
        """Units that hold tiles of exactly the same layers form a group (one group for `spread`): units
        grouped by the last layer they hold, from the units each tensor's tiles are on."""
        group = np.zeros(placement.units, dtype=np.int64)
        last_of: dict[int, int] = {}  # by id: equal unit sets are one tuple object
        sets: dict[int, tuple[int, ...]] = {}
        for entry, units in zip(placement.tensors, placement._tensor_units()[1], strict=True):
            if entry.layer > last_of.get(id(units), -1) and units:
                last_of[id(units)], sets[id(units)] = entry.layer, units
        if not last_of:
            return group
        last_layer = np.full(placement.units, -1, dtype=np.int64)
        at: list[int] = []  # every (unit, layer) pair at once (a norm vector's unit set is one unit)
        layers: list[int] = []
        for k, layer in last_of.items():
            at += sets[k]
            layers += [layer] * len(sets[k])
        np.maximum.at(last_layer, at, layers)
        keys, inverse = np.unique(last_layer, return_inverse=True)
        return inverse.astype(np.int64) if len(keys) > 1 else group

    @staticmethod
    def _mesh_view(chip: ChipSpec, placement: Placement) -> MeshView:
        vrows = sorted(set(int(r) for r in placement.vector_mesh_row))
        mrows = placement.unit_mesh_row
        if vrows and len(mrows):
            offset = mrows[:, None] - np.array(vrows)[None, :]
            nearest = np.argmin(np.abs(offset), axis=1)
            signed = offset[np.arange(len(mrows)), nearest]
            column_hops = int(np.abs(signed).max())
            column_mean = float(np.abs(signed).mean())
            # units sharing one column link into the vector row: same column, same vector row, same side
            key = (nearest * 2 + (signed > 0)) * chip.mesh.cols + placement.unit_mesh_col
            per_side = int(np.bincount(key).max())
            rows = int(max(mrows.max(), max(vrows))) - int(min(mrows.min(), min(vrows))) + 1
        else:
            column_hops, column_mean, per_side, rows = 0, 0.0, 1, 1
        nv = max(len(placement.vector_mesh_row), 1)
        spanning = rows * chip.mesh.cols - 1  # the mesh rows a broadcast crosses, every column, as a tree
        return MeshView(chip.mesh.cols, nv, column_hops, per_side, max(chip.mesh.cols - 1, 0), spanning, column_mean)

    @property
    def placement(self) -> Placement:
        """The placement this view reads (a view from `of` lives on it, and refers back weakly)."""
        placement = self._placement()
        if placement is None:  # pragma: no cover - only a view taken from `of` and kept past its placement
            raise RuntimeError("this PlacementView's placement is gone; keep the placement as long as its view")
        return placement

    def tensor(self, name: str) -> TensorWork:
        return self.tensors[name]

    def projection(self, layer: int, module: str) -> TensorWork:
        """The TensorWork of one block's projection (every batch of every phase asks: kept by name parts)."""
        tw = self._projections.get((layer, module))
        if tw is None:
            tw = self._projections[layer, module] = self.tensors[linear_name(layer, module)]
        return tw

    def lm_head(self) -> TensorWork | None:
        return self.tensors.get(HEAD_NAME) or self.tensors.get(EMBED_NAME)

    def embedding(self) -> TensorWork | None:
        return self.tensors.get(EMBED_NAME)

    def layer_group(self, layer: int) -> int:
        """Group of the units holding a layer's weights (its KV cache and attention live there too)."""
        return self._layer_group.get(layer, 0)

    def kv_keys(self, layer: int, keys: int) -> tuple[int, int]:
        """(keys the busiest H-Unit of the layer's KV ring holds, units holding at least one) when `keys`
        tokens are cached, by the Placement's KV rule."""
        if (layer, keys) in self._kv_keys:  # every batch and layer of a phase asks (prefill: per past)
            return self._kv_keys[layer, keys]
        p = self.placement
        ring = int(p.kv_layer_ring[layer]) if 0 <= layer < len(p.kv_layer_ring) else -1
        held = p.kv_tokens(keys)[p.kv_ring == ring] if ring >= 0 else np.zeros(0, dtype=np.int64)
        out = (int(held.max()), int((held > 0).sum())) if len(held) else (keys, 1)
        self._kv_keys[layer, keys] = out
        return out

    def kv_signature(self, keys: int) -> tuple[int, ...]:
        """Keys the busiest H-Unit of each KV ring holds (what attention timing depends on), ring order."""
        p = self.placement
        held = p.kv_tokens(keys)
        rings = int(p.kv_ring.max()) + 1 if len(p.kv_ring) else 0
        out = np.zeros(rings, dtype=np.int64)
        np.maximum.at(out, p.kv_ring[p.kv_ring >= 0], held[p.kv_ring >= 0])
        return tuple(int(x) for x in out)
