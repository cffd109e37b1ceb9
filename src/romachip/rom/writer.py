"""Write a QuantizedModel into a ROM image: place it, pack every tile into its L-Unit's ROM words, B-ROM
encode each unit, checksum, and write the file atomically (temp name in the same directory, fsync,
os.replace; the temp file is removed on any error)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from romachip.atomic import atomic_open
from romachip.compile import Placement, TensorEntry, model_tensors, place_tensors, rom_alignment
from romachip.errors import FormatError, PathError, RomImageError
from romachip.names import EMBED_NAME, HEAD_NAME, layer_of
from romachip.placement import segment_offsets, tile_span_bits
from romachip.quant.tensor import QuantizedModel
from romachip.rom.bits import pack_scales, pack_uint
from romachip.rom.brom import encode_words
from romachip.rom.layout import (
    ALIGN_BYTES,
    FORMAT_VERSION,
    HEADER_BYTES,
    HOST_UNIT,
    TILE_KEYS,
    align_up,
    format_to_json,
    pack_header,
)
from romachip.rom.manifest import (
    ChipRecord,
    EncodingRecord,
    HostRecord,
    Manifest,
    PlacementRecord,
    TensorRecord,
    TokenizerRecord,
    UnitRecord,
)
from romachip.spec.chip import ChipSpec
from romachip.tensor_bits import DEFAULT_POLICY, StoragePolicy

Progress = Callable[[int, int], None]  # (units done, units in all)


@dataclass(frozen=True)
class WriteReport:
    """What was written: sizes in bytes by kind, and where."""

    path: Path
    file_bytes: int
    header_bytes: int
    payload_bytes: int
    bytes_by_kind: dict[str, int]  # code, scale, zero, norm, padding (ROM + host)
    units: int
    tiles: int


def placed_tensors(qmodel: QuantizedModel, policy: StoragePolicy | str) -> list[TensorEntry]:
    """The model's on-chip tensors in the storage policy's order, with the formats they really have;
    refuses a model missing one, holding one of another shape, or holding tensors the image has no place
    for (FormatError naming the tensor)."""
    expected = model_tensors(qmodel.spec, qmodel.fmt, policy=policy)
    out: list[TensorEntry] = []
    for t in expected:
        if t.fmt is None:
            v = qmodel.floats.get(t.name)
            if v is None or np.asarray(v).reshape(-1).shape != (t.shape[1],):
                got = "missing" if v is None else f"shape {np.asarray(v).shape}"
                raise FormatError(f"norm weight {t.name!r}: expected [{t.shape[1]}], {got}")
            out.append(t)
            continue
        q = qmodel.weights.get(t.name)
        if q is None or q.shape != t.shape:
            got = "missing" if q is None else f"shape {list(q.shape)}"
            raise FormatError(f"weight {t.name!r}: expected {list(t.shape)}, {got} in the quantized model")
        out.append(TensorEntry(t.name, t.shape, q.fmt, t.layer, t.kind))
    known = {t.name for t in out}
    extra = sorted((set(qmodel.weights) | set(qmodel.floats)) - known - set(off_chip_names(qmodel, policy)))
    if extra:
        raise FormatError(f"the quantized model holds tensors the image has no place for: {extra[:5]}")
    return out


def off_chip_names(qmodel: QuantizedModel, policy: StoragePolicy | str) -> list[str]:
    """Tables the policy keeps in host memory (written to the image's host region)."""
    pol = StoragePolicy.parse(policy)
    spec = qmodel.spec
    names = []
    if not pol.embedding_on_chip:
        names.append(EMBED_NAME)
    if not pol.lm_head_on_chip and not spec.tie_word_embeddings:
        names.append(HEAD_NAME)
    return [n for n in names if n in qmodel.weights]


def _tile_bytes(qmodel: QuantizedModel, t: TensorEntry, r0: int, r1: int, word_bits: int, span_bits: int) -> np.ndarray:
    """Plain ROM bytes of rows [r0, r1) of a tensor: codes, scales, zeros, each word-aligned."""
    buf = np.zeros(span_bits // 8, dtype=np.uint8)
    if t.fmt is None:
        values = np.asarray(qmodel.floats[t.name], dtype=np.float32).reshape(1, -1)[r0:r1]
        data = values.astype("<f2").view(np.uint8).reshape(-1)
        buf[: data.size] = data
        return buf
    q = qmodel.weights[t.name]
    fmt = q.fmt
    codes = pack_uint(q.codes[r0:r1], fmt.bits)
    scales = pack_scales(q.scales[r0:r1], fmt.scale_dtype)
    _, s_off, z_off = segment_offsets(0, (r1 - r0) * t.shape[1] * fmt.bits, scales.size * 8, word_bits)
    buf[: codes.size] = codes
    buf[s_off // 8 : s_off // 8 + scales.size] = scales
    if fmt.zero_bits:
        zeros = pack_uint(q.zeros[r0:r1], fmt.zero_bits)
        buf[z_off // 8 : z_off // 8 + zeros.size] = zeros
    elif np.any(q.zeros[r0:r1] != fmt.symmetric_zero):
        raise FormatError(f"{t.name}: a symmetric format stores no zero-point, but some zeros are not 2**(bits-1)")
    return buf


def _check_codes(qmodel: QuantizedModel, entries: list[TensorEntry]) -> None:
    for t in entries:
        if t.fmt is not None:
            q = qmodel.weights[t.name]
            if q.codes.size and int(q.codes.max()) > t.fmt.qmax:
                raise FormatError(f"{t.name}: codes exceed {t.fmt.bits} bits (max {int(q.codes.max())})")
            if t.fmt.zero_bits and q.zeros.size and int(q.zeros.max()) > t.fmt.qmax:
                raise FormatError(f"{t.name}: zero-points exceed {t.fmt.bits} bits")


def build_payload(
    qmodel: QuantizedModel, chip: ChipSpec, placement: Placement, progress: Progress | None = None
) -> tuple[list[np.ndarray], list[dict[str, Any]], np.ndarray]:
    """Each unit's encoded ROM bytes, the unit table, and each tile's CRC-32 (in tile table order)."""
    word_bits, _ = rom_alignment(chip)
    t = placement.tiles
    used = placement.unit_used_bits()
    crcs = np.zeros(placement.num_tiles, dtype=np.int64)
    payloads, units = [], []
    bounds = np.searchsorted(t["unit"], np.arange(placement.units + 1))
    offset = 0
    for u in range(placement.units):
        raw = np.zeros(align_up(int(used[u]) // 8), dtype=np.uint8)
        for i in range(bounds[u], bounds[u + 1]):
            entry = placement.tensors[t["tensor"][i]]
            off, span = int(t["rom_offset_bits"][i]), int(t["rom_span_bits"][i])
            raw[off // 8 : (off + span) // 8] = _tile_bytes(
                qmodel, entry, int(t["row_start"][i]), int(t["row_stop"][i]), word_bits, span
            )
        enc = encode_words(raw, word_bits) if chip.l_unit.rom.brom else raw
        for i in range(bounds[u], bounds[u + 1]):
            off, span = int(t["rom_offset_bits"][i]) // 8, int(t["rom_span_bits"][i]) // 8
            crcs[i] = zlib.crc32(enc[off : off + span])
        payloads.append(enc)
        units.append(
            {
                "index": u,
                "mesh_row": int(placement.unit_mesh_row[u]),
                "mesh_col": int(placement.unit_mesh_col[u]),
                "payload_offset": offset,
                "payload_bytes": int(enc.size),
                "used_bits": int(used[u]),
                "crc32": zlib.crc32(enc),
            }
        )
        offset += enc.size
        if progress is not None:
            progress(u + 1, placement.units)
    return payloads, units, crcs


def _host_region(
    qmodel: QuantizedModel, names: list[str], word_bits: int, align_bits: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Off-chip tables, each one tile of all its rows, laid out like a unit's ROM but not B-ROM encoded."""
    chunks, entries, offset = [], [], 0
    for name in names:
        q = qmodel.weights[name]
        out_f, in_f = q.shape
        entry = TensorEntry(name, q.shape, q.fmt, layer_of(name), "host")
        tb = q.fmt.storage_bits(out_f, in_f)
        span = tile_span_bits(tb.code_bits, tb.scale_bits, tb.zero_bits, word_bits, align_bits)
        data = _tile_bytes(qmodel, entry, 0, out_f, word_bits, span)
        tile = dict(zip(TILE_KEYS, (HOST_UNIT, 0, out_f, 0, in_f, offset, span), strict=False))
        tile.update(code_bits=tb.code_bits, scale_bits=tb.scale_bits, zero_bits=tb.zero_bits, crc32=zlib.crc32(data))
        entries.append({"entry": entry, "tile": tile})
        chunks.append(data)
        offset += span
    raw = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)
    return np.concatenate([raw, np.zeros(align_up(raw.size) - raw.size, dtype=np.uint8)]), entries


def _tensor_json(entry: TensorEntry, location: str, tiles: dict[str, list[int]]) -> dict[str, Any]:
    return {
        "name": entry.name,
        "kind": str(entry.kind),
        "layer": entry.layer,
        "shape": list(entry.shape),
        "format": format_to_json(entry.fmt),
        "location": location,
        "tiles": tiles,
    }


def build_manifest(
    qmodel: QuantizedModel,
    chip: ChipSpec,
    chip_preset: str,
    placement: Placement,
    units: list[dict[str, Any]],
    crcs: np.ndarray,
    host: tuple[np.ndarray, list[dict[str, Any]]],
    num_groups: int | None,
) -> Manifest:
    word_bits, align_bits = rom_alignment(chip)
    t = placement.tiles
    tensors = []
    order = np.argsort(t["tensor"], kind="stable")
    bounds = np.searchsorted(t["tensor"][order], np.arange(len(placement.tensors) + 1))
    for ti, entry in enumerate(placement.tensors):
        idx = order[bounds[ti] : bounds[ti + 1]]
        cols = {k: (crcs[idx] if k == "crc32" else t[k][idx]).tolist() for k in TILE_KEYS}
        tensors.append(_tensor_json(entry, "rom", cols))
    host_raw, host_entries = host
    for h in host_entries:
        tensors.append(_tensor_json(h["entry"], "host", {k: [h["tile"][k]] for k in TILE_KEYS}))
    rom_bytes = sum(u["payload_bytes"] for u in units)
    return Manifest(
        version=FORMAT_VERSION,
        model=qmodel.spec,
        weight_format=format_to_json(qmodel.fmt),
        storage_policy=placement.policy,
        chip=ChipRecord(preset=chip_preset, spec=chip),
        placement=PlacementRecord(**placement.summary(), num_groups=num_groups),
        encoding=EncodingRecord(
            rom="brom4" if chip.l_unit.rom.brom else "plain",
            word_bits=word_bits,
            rows_per_group=chip.l_unit.rom.brom_rows_per_group if chip.l_unit.rom.brom else 1,
            align_bits=align_bits,
            bit_order="lsb-first",
            unit_align_bytes=ALIGN_BYTES,
            norm_dtype="fp16",
        ),
        tokenizer=TokenizerRecord(tokenizer_json=qmodel.tokenizer_json, chat_template=qmodel.chat_template),
        source=qmodel.source,
        metadata=dict(qmodel.metadata),
        units=[UnitRecord(**u) for u in units],
        host=HostRecord(payload_offset=rom_bytes, payload_bytes=int(host_raw.size), crc32=zlib.crc32(host_raw)),
        payload_bytes=rom_bytes + int(host_raw.size),
        tensors=[TensorRecord.model_validate(t) for t in tensors],
    )


def _bytes_by_kind(placement: Placement, host_entries: list[dict[str, Any]], payload_bytes: int) -> dict[str, int]:
    t = placement.tiles
    is_norm = np.array([e.fmt is None for e in placement.tensors] + [False])[t["tensor"]]
    out = {
        "code": int(t["code_bits"][~is_norm].sum()) // 8,
        "scale": int(t["scale_bits"].sum()) // 8,
        "zero": int(t["zero_bits"].sum()) // 8,
        "norm": int(t["code_bits"][is_norm].sum()) // 8,
        "host": sum(sum(h["tile"][k] for k in ("code_bits", "scale_bits", "zero_bits")) // 8 for h in host_entries),
    }
    out["padding"] = payload_bytes - sum(out.values())
    return out


def write_image(
    path: str | Path,
    qmodel: QuantizedModel,
    chip: ChipSpec,
    *,
    chip_preset: str | None = None,
    strategy: str = "spread",
    policy: StoragePolicy | str = DEFAULT_POLICY,
    num_groups: int | None = None,
    progress: Progress | None = None,
    placement: Placement | None = None,
) -> WriteReport:
    """Place (or take `placement`, e.g. the one the capacity check compiled: its policy and strategy
    then win), pack, encode and write `qmodel` for `chip`. CapacityError if it does not fit (nothing is
    written); FormatError for an inconsistent model or a placement of other tensors; RomImageError if the
    file cannot be written."""
    path = Path(path)
    if placement is not None:
        policy, strategy = placement.policy, placement.strategy
    entries = placed_tensors(qmodel, policy)
    _check_codes(qmodel, entries)
    if placement is None:
        placement = place_tensors(
            chip, entries, strategy=strategy, num_groups=num_groups, spec=qmodel.spec, policy=policy
        )
    else:
        _check_placement(placement, entries, chip)
    placement.require_rom_fit()
    payloads, units, crcs = build_payload(qmodel, chip, placement, progress)
    word_bits, align_bits = rom_alignment(chip)
    host = _host_region(qmodel, off_chip_names(qmodel, policy), word_bits, align_bits)
    manifest = build_manifest(qmodel, chip, chip_preset or chip.name, placement, units, crcs, host, num_groups)
    text = json.dumps(manifest.to_json_dict(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (align_up(HEADER_BYTES + len(text)) - HEADER_BYTES - len(text))
    header = pack_header(zlib.crc32(text), len(text))
    _atomic_write(path, [header, text, *payloads, host[0]])
    size = HEADER_BYTES + len(text) + manifest.payload_bytes
    return WriteReport(
        path=path,
        file_bytes=size,
        header_bytes=HEADER_BYTES + len(text),
        payload_bytes=manifest.payload_bytes,
        bytes_by_kind=_bytes_by_kind(placement, host[1], manifest.payload_bytes),
        units=placement.units,
        tiles=placement.num_tiles,
    )


def _check_placement(placement: Placement, entries: list[TensorEntry], chip: ChipSpec) -> None:
    """A given placement must place exactly these tensors, in these formats, for this chip."""
    if placement.chip_name != chip.name or placement.units != chip.matrix_units:
        raise FormatError(f"the placement is for chip {placement.chip_name!r}, not {chip.name!r}")
    placed = [(e.name, tuple(e.shape), e.fmt) for e in placement.tensors]
    have = [(e.name, tuple(e.shape), e.fmt) for e in entries]
    if placed != have:
        k = next((i for i, (p, h) in enumerate(zip(placed, have, strict=False)) if p != h), min(len(placed), len(have)))
        got = placed[k][0] if k < len(placed) else "nothing"
        want = have[k][0] if k < len(have) else "nothing"
        raise FormatError(f"the placement does not place the model's tensors as they are (tensor {k}: {got} vs {want})")


def _atomic_write(path: Path, chunks: list[bytes | np.ndarray]) -> None:
    """Write the image atomically; I/O failures become RomImageError naming the file."""
    try:
        with atomic_open(path, "wb", what="ROM image") as f:
            for chunk in chunks:
                f.write(chunk.tobytes() if isinstance(chunk, np.ndarray) else chunk)
    except PathError as exc:
        raise RomImageError(str(exc)) from None
