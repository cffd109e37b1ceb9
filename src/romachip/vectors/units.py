"""What each selected unit holds and computes, read from the image's Placement (one rule each, shared
with the capacity planner and the adapter bank):

- L-Unit tiles: whole output rows of each tensor (compile.py);
- LoRA B rows beside the base rows they add to; the rank rows of A dealt round-robin over the units that
  hold the module, continuing from one module to the next (Placement.lora_a_units, the rule
  Placement.lora_unit_bytes counts bytes by);
- KV: token t of layer l in the unit of rank t mod n of the layer's ring (Placement.kv_unit_of).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from romachip.compile import Placement
from romachip.errors import VectorsError


@dataclass(frozen=True)
class UnitTile:
    """Rows [row_start, row_stop) of `tensor` in one L-Unit's ROM, at `rom_offset_bits` of its stream."""

    tensor: str
    row_start: int
    row_stop: int
    rom_offset_bits: int
    rom_span_bits: int
    code_bits: int
    scale_bits: int
    zero_bits: int


def unit_tiles(placement: Placement, unit: int, tensor: str) -> list[UnitTile]:
    """The tiles of `tensor` that `unit` holds, by row."""
    idx = placement.tile_indices(unit=unit, tensor=tensor)
    t = placement.tiles
    tiles = [
        UnitTile(
            tensor,
            int(t["row_start"][i]),
            int(t["row_stop"][i]),
            int(t["rom_offset_bits"][i]),
            int(t["rom_span_bits"][i]),
            int(t["code_bits"][i]),
            int(t["scale_bits"][i]),
            int(t["zero_bits"][i]),
        )  # fmt: skip
        for i in idx
    ]
    return sorted(tiles, key=lambda x: x.row_start)


def lora_a_rows(placement: Placement, ranks: dict[str, int]) -> dict[str, np.ndarray]:
    """Module name -> [rank] the unit holding each row of its A matrix (the Placement's rule)."""
    return placement.lora_a_units(ranks)


def kv_positions(placement: Placement, unit: int, layer: int, length: int) -> np.ndarray:
    """Positions 0..length-1 whose K/V of `layer` live in `unit`."""
    return np.array([p for p in range(length) if placement.kv_unit_of(p, layer) == unit], dtype=np.int64)


def parse_selection(text: str | None, limit: int, what: str) -> list[int]:
    """'0,3' / '0-3' / 'last' / '-1' -> sorted indices in [0, limit); VectorsError on anything else."""
    if text is None or text.strip() == "":
        raise VectorsError(f"give the {what} to dump (e.g. 0,3 or 0-3)")
    out: set[int] = set()
    for part in text.split(","):
        p = part.strip()
        try:
            if p == "last":
                out.add(limit - 1)
            elif "-" in p[1:]:
                lo, hi = (int(v) for v in p.split("-", 1))
                out.update(range(lo, hi + 1))
            else:
                v = int(p)
                out.add(v + limit if v < 0 else v)
        except ValueError:
            raise VectorsError(f"{what}: {p!r} is not an index, a range A-B or 'last'") from None
    bad = [v for v in sorted(out) if not 0 <= v < limit]
    if bad:
        raise VectorsError(f"{what}: {bad[0]} is out of range; the image has {limit} (0..{limit - 1})")
    return sorted(out)
