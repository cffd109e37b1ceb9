"""Cross-checks of a ROM image's manifest against itself: the CRCs prove the bytes are what the manifest
says, not that the manifest is true. An edited manifest with its CRC recomputed could claim another
model; here every tensor the model needs must be there with its shape, its tiles must cover its rows
exactly once and lie inside their unit's (or the host's) region, and the counts must agree."""

from __future__ import annotations

from romachip.errors import RomImageError
from romachip.quant.checkpoint import expected_shapes
from romachip.rom.manifest import Manifest

HOST_UNIT = -1


def check_manifest(m: Manifest, where: str) -> None:
    """RomImageError naming the first tensor or table that disagrees with the model and placement."""
    units = m.units
    if len(units) != m.chip.spec.matrix_units or m.placement.matrix_units != len(units):
        raise RomImageError(
            f"{where}: the manifest lists {len(units)} L-Units, its chip has {m.chip.spec.matrix_units} and its "
            f"placement {m.placement.matrix_units}; the image lies about its chip"
        )
    want = {name: tuple(shape) for name, shape in expected_shapes(m.model).items()}
    have = {t.name: t for t in m.tensors}
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    if missing or extra:
        what = f"lacks tensor {missing[0]!r}" if missing else f"holds tensor {extra[0]!r}, which"
        raise RomImageError(
            f"{where}: the manifest {what} the model it names ({m.model.name}, {m.model.num_layers} layers) "
            f"{'needs' if missing else 'does not have'}; the image lies about its model"
        )
    tiles = 0
    for name, t in have.items():
        _check_tensor(t, want[name], [u.payload_bytes for u in units], m.host.payload_bytes, where)
        tiles += sum(u != HOST_UNIT for u in t.tiles.unit)  # the placement counts tiles in L-Units
    if tiles != m.placement.tiles:
        raise RomImageError(f"{where}: the tensors hold {tiles:,} tiles, the placement says {m.placement.tiles:,}")


def _check_tensor(t, shape: tuple[int, ...], unit_bytes: list[int], host_bytes: int, where: str) -> None:  # noqa: ANN001
    at = f"{where}: tensor {t.name!r}"
    stored = tuple(t.shape)
    if stored != shape and not (len(shape) == 1 and stored == (1, shape[0])):  # norms are stored [1, hidden]
        raise RomImageError(f"{at} has shape {stored} in the manifest, the model implies {shape}")
    tt = t.tiles
    cols = [tt.unit, tt.row_start, tt.row_stop, tt.col_start, tt.col_stop, tt.rom_offset_bits, tt.rom_span_bits]
    n = len(tt.unit)
    if n == 0 or any(len(c) != n for c in (*cols, tt.code_bits, tt.scale_bits, tt.zero_bits, tt.crc32)):
        raise RomImageError(f"{at}: its tile table is empty or its columns differ in length")
    rows = stored[0]
    spans = sorted(zip(tt.row_start, tt.row_stop, strict=True))
    edge = 0
    for start, stop in spans:
        if start != edge or stop <= start:
            raise RomImageError(f"{at}: its tiles do not cover rows 0..{rows} exactly once (gap or overlap at {edge})")
        edge = stop
    if edge != rows:
        raise RomImageError(f"{at}: its tiles cover {edge} of its {rows} rows")
    for i in range(n):
        unit, off, span = tt.unit[i], tt.rom_offset_bits[i], tt.rom_span_bits[i]
        if tt.col_start[i] != 0 or tt.col_stop[i] != stored[1]:
            raise RomImageError(f"{at}: tile {i} spans columns {tt.col_start[i]}..{tt.col_stop[i]}, not whole rows")
        if unit == HOST_UNIT:
            region, what = host_bytes, "the host region"
        elif 0 <= unit < len(unit_bytes):
            region, what = unit_bytes[unit], f"L-Unit {unit}'s region"
        else:
            raise RomImageError(f"{at}: tile {i} names L-Unit {unit}, which the chip does not have")
        if off < 0 or span <= 0 or off % 8 or (off + span + 7) // 8 > region:
            raise RomImageError(
                f"{at}: tile {i} at bits {off:,}..{off + span:,} lies outside {what} ({region * 8:,} bits)"
            )
