"""Open a ROM image read-only (memory-mapped), validate it, and read the model back exactly."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from romachip.compile import Placement, TensorEntry, assemble_placement
from romachip.errors import PathError, RomachipError, RomImageError
from romachip.files import input_file
from romachip.placement import segment_offsets
from romachip.quant.formats import WeightFormat
from romachip.quant.tensor import QuantizedModel, QuantizedTensor
from romachip.rom.bits import unpack_scales, unpack_uint
from romachip.rom.brom import decode_words
from romachip.rom.crosscheck import check_manifest
from romachip.rom.layout import (
    ALIGN_BYTES,
    HEADER_BYTES,
    HOST_UNIT,
    TILE_KEYS,
    format_from_json,
    unpack_header,
)
from romachip.rom.manifest import Manifest
from romachip.spec.chip import ChipSpec
from romachip.spec.model import ModelSpec


@contextmanager
def _malformed(where: str) -> Iterator[None]:
    """A manifest whose CRC matches but whose content is not what this version writes (hand-edited, or
    written by a buggy tool) must still give a RomImageError, never a KeyError deep in the reader."""
    try:
        yield
    except RomachipError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise RomImageError(
            f"{where}: malformed manifest ({type(exc).__name__}: {exc}); burn the image again"
        ) from None


class RomImage:
    """A ROM image opened read-only. `open` validates the header, sizes and every checksum."""

    def __init__(self, path: Path, data: np.memmap, manifest: Manifest, payload_start: int) -> None:
        self.path = path
        self._data = data
        self.manifest = manifest
        self.payload_start = payload_start

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> RomImage:
        """Memory-map `path` (mode 'r'); RomImageError for a bad magic/version, a truncated or padded
        file, a corrupted manifest, or (verify=True) a unit whose checksum fails, naming unit and tensors."""
        path = Path(path)
        where = f"ROM image {path}"
        try:
            input_file(path, what="ROM image")
        except PathError as exc:
            raise RomImageError(str(exc)) from None
        try:
            size = path.stat().st_size
            with path.open("rb") as f:
                head = f.read(HEADER_BYTES)
        except OSError as exc:
            raise RomImageError(f"cannot open {where}: {exc.strerror}") from None
        _, crc, mlen = unpack_header(head, where)
        if HEADER_BYTES + mlen > size:
            raise RomImageError(
                f"{where}: truncated inside the manifest (file {size} bytes, manifest ends at "
                f"{HEADER_BYTES + mlen}); burn the image again"
            )
        data = np.memmap(path, dtype=np.uint8, mode="r")
        text = bytes(data[HEADER_BYTES : HEADER_BYTES + mlen])
        if zlib.crc32(text) != crc:
            raise RomImageError(f"{where}: the manifest is corrupted (CRC-32 mismatch); burn the image again")
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RomImageError(f"{where}: the manifest is not valid JSON ({exc})") from None
        try:
            manifest = Manifest.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            at = ".".join(str(p) for p in first["loc"]) or "the manifest"
            raise RomImageError(f"{where}: malformed manifest ({at}: {first['msg']}); burn the image again") from None
        image = cls(path, data, manifest, HEADER_BYTES + mlen)
        with _malformed(where):
            image._check_structure(size)
            if verify:
                image.verify()
        return image

    # -- validation -------------------------------------------------------------------------------
    def _where(self) -> str:
        return f"ROM image {self.path}"

    def _check_structure(self, size: int) -> None:
        m = self.manifest
        units, host, payload = m.units, m.host, m.payload_bytes
        expected = self.payload_start + payload
        if size < expected:
            cut = [u.index for u in units if self.payload_start + u.payload_offset + u.payload_bytes > size]
            host_end = self.payload_start + host.payload_offset + host.payload_bytes
            host_cut = host.payload_bytes > 0 and host_end > size
            raise RomImageError(
                f"{self._where()}: truncated: the file has {size} bytes, header + payload need {expected}; "
                f"{_units_text(cut)} cut off{' and the host region' if host_cut else ''} (tensors "
                f"{_names(self._tensors_of(cut))}); burn the image again"
            )
        if size > expected:
            raise RomImageError(
                f"{self._where()}: {size - expected} unexpected bytes after the payload (header + payload = "
                f"{expected}, file = {size}); the file is not a single ROM image"
            )
        offset = 0
        for k, u in enumerate(units):
            if u.index != k or u.payload_offset != offset or u.payload_bytes % ALIGN_BYTES:
                raise RomImageError(f"{self._where()}: unit table is inconsistent at L-Unit {k} (holes or overlap)")
            offset += u.payload_bytes
        if host.payload_offset != offset or offset + host.payload_bytes != payload:
            raise RomImageError(f"{self._where()}: the host region does not end the payload (holes or overlap)")
        check_manifest(m, self._where())

    def verify(self) -> None:
        """Check every unit's CRC-32 (and the host region's); name the unit and the tensors whose tiles
        no longer match their own CRC-32."""
        bad = []
        for u in self.manifest.units:
            if zlib.crc32(self.unit_payload(u.index)) != u.crc32:
                bad.append(u.index)
        host_bad = zlib.crc32(self.host_payload()) != self.manifest.host.crc32
        if not bad and not host_bad:
            return
        hit = self._tiles_failing(bad, host_bad)
        where = _units_text(bad) + (" and the host region" if host_bad else "") if bad else "the host region"
        raise RomImageError(
            f"{self._where()}: checksum mismatch in {where}: corrupted bits in tensor(s) {_names(hit)}; "
            "burn the image again"
        )

    def _tiles_failing(self, units: list[int], host_bad: bool) -> list[str]:
        bad_units = set(units)
        hit = []
        for t in self.manifest.tensors:
            tiles = t.tiles
            for i, u in enumerate(tiles.unit):
                if u in bad_units or (u == HOST_UNIT and host_bad):
                    off, span = tiles.rom_offset_bits[i] // 8, tiles.rom_span_bits[i] // 8
                    region = self.host_payload() if u == HOST_UNIT else self.unit_payload(u)
                    if zlib.crc32(region[off : off + span]) != tiles.crc32[i]:
                        hit.append(t.name)
                        break
        return hit

    def _tensors_of(self, units: list[int]) -> list[str]:
        s = set(units)
        return [t.name for t in self.manifest.tensors if s.intersection(t.tiles.unit)]

    # -- raw access -------------------------------------------------------------------------------
    def unit_payload(self, unit: int) -> np.ndarray:
        """The encoded bytes of one L-Unit's ROM as stored (a read-only view of the memory map)."""
        u = self.manifest.units[unit]
        start = self.payload_start + u.payload_offset
        return self._data[start : start + u.payload_bytes]

    def host_payload(self) -> np.ndarray:
        h = self.manifest.host
        start = self.payload_start + h.payload_offset
        return self._data[start : start + h.payload_bytes]

    def unit_rom(self, unit: int) -> np.ndarray:
        """The plain ROM bytes of one L-Unit (B-ROM decoded): word w is bytes [w*8, (w+1)*8) for 64-bit words."""
        enc = np.asarray(self.unit_payload(unit))
        if self.manifest.encoding.rom == "brom4":
            return decode_words(enc, self.manifest.encoding.word_bits)
        return enc.copy()

    # -- typed views ------------------------------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        return self.manifest.model

    @property
    def chip(self) -> ChipSpec:
        return self.manifest.chip.spec

    @cached_property
    def fmt(self) -> WeightFormat:
        fmt = format_from_json(self.manifest.weight_format, self._where())
        if fmt is None:
            raise RomImageError(f"{self._where()}: the model's weight format cannot be an FP16 vector")
        return fmt

    @cached_property
    def entries(self) -> list[TensorEntry]:
        return [
            TensorEntry(t.name, tuple(t.shape), format_from_json(t.format, self._where()), t.layer, t.kind)
            for t in self.manifest.tensors
        ]

    @cached_property
    def placement(self) -> Placement:
        """The Placement the image was burned with (ROM tensors only), rebuilt from the tile tables."""
        with _malformed(self._where()):
            return self._placement()

    def _placement(self) -> Placement:
        rom = [(e, t) for e, t in zip(self.entries, self.manifest.tensors, strict=True) if t.location == "rom"]
        cols: dict[str, list[int]] = {k: [] for k in (*TILE_KEYS, "tensor")}
        for ti, (_, t) in enumerate(rom):
            for k in TILE_KEYS:
                cols[k] += t.tiles.column(k)
            cols["tensor"] += [ti] * len(t.tiles.unit)
        tiles = {k: np.asarray(v, dtype=np.int64) for k, v in cols.items() if k != "crc32"}
        order = np.lexsort((tiles["rom_offset_bits"], tiles["unit"]))
        tiles = {k: v[order] for k, v in tiles.items()}
        try:
            placement = assemble_placement(
                self.chip,
                [e for e, _ in rom],
                tiles,
                strategy=self.manifest.placement.strategy,
                policy=self.manifest.storage_policy,
                spec=self.spec,
            )
            placement.require_rom_fit()
            return placement
        except RomachipError as exc:
            raise RomImageError(f"{self._where()}: its placement is invalid: {exc}") from None

    def model(self) -> QuantizedModel:
        """Decode every tile back into a QuantizedModel: codes, scales and zeros exactly as burned; norm
        weights as float32 holding the stored FP16 values."""
        with _malformed(self._where()):
            return self._model()

    def _model(self) -> QuantizedModel:
        word_bits = self.manifest.encoding.word_bits
        units = self.manifest.units
        parts = [self.unit_rom(u.index) for u in units] + [np.asarray(self.host_payload())]
        starts = np.cumsum([0] + [p.size for p in parts])
        region_start = {u.index: int(starts[k]) for k, u in enumerate(units)}
        region_start[HOST_UNIT] = int(starts[-2])
        plain = np.concatenate(parts)
        weights: dict[str, QuantizedTensor] = {}
        floats: dict[str, np.ndarray] = {}
        for e, t in zip(self.entries, self.manifest.tensors, strict=True):
            tiles = {k: np.asarray(t.tiles.column(k), dtype=np.int64) for k in TILE_KEYS}
            tiles["rom_offset_bits"] = tiles["rom_offset_bits"] + 8 * np.array(
                [region_start[int(u)] for u in tiles["unit"]], dtype=np.int64
            )
            b = _read_tensor(plain, e, tiles, word_bits, self._where())
            if e.fmt is None:
                floats[e.name] = b["values"].astype(np.float32).reshape(-1)
            else:
                weights[e.name] = QuantizedTensor(codes=b["codes"], scales=b["scales"], zeros=b["zeros"], fmt=e.fmt)
        m = self.manifest
        return QuantizedModel(
            spec=self.spec,
            fmt=self.fmt,
            weights=weights,
            floats=floats,
            tokenizer_json=m.tokenizer.tokenizer_json,
            chat_template=m.tokenizer.chat_template,
            source=m.source,
            metadata=dict(m.metadata),
        )

    def digest(self) -> str:
        """SHA-256 of the whole file (header, manifest, payload): what a user records and checks for trust,
        since the per-unit CRCs catch accidents but not an edited image whose CRCs were recomputed."""
        return file_digest(self.path)

    def check_digest(self, expected: str) -> None:
        """RomImageError unless the file's SHA-256 is `expected` (hex, case ignored; 'sha256:' allowed)."""
        want = expected.strip().lower().removeprefix("sha256:")
        if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
            raise RomImageError(f"--expect-digest {expected!r} is not a SHA-256 (64 hex digits, as `inspect` prints)")
        got = self.digest()
        if got != want:
            raise RomImageError(
                f"ROM image {self.path} has SHA-256 {got}, not the expected {want}: it is not the image you "
                "recorded (edited, re-burned or another file); refused"
            )

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "path": str(self.path),
            "version": m.version,
            "model": m.model.name,
            "chip": m.chip.preset,
            "weight_format": m.weight_format["describe"],
            "storage_policy": m.storage_policy,
            "strategy": m.placement.strategy,
            "tensors": len(m.tensors),
            "tiles": m.placement.tiles,
            "units": len(m.units),
            "file_bytes": self.payload_start + m.payload_bytes,
            "header_bytes": self.payload_start,
            "payload_bytes": m.payload_bytes,
            "rom_bytes_used": sum(u.used_bits for u in m.units) // 8,
            "rom_bytes_available": m.placement.unit_rom_bits // 8 * len(m.units),
            "host_bytes": m.host.payload_bytes,
            "has_tokenizer": bool(m.tokenizer.tokenizer_json),
            "has_chat_template": bool(m.tokenizer.chat_template),
        }

    def tensors_by_kind(self) -> dict[str, int]:
        """How many tensors of each kind the image holds (ROM and host)."""
        kinds: dict[str, int] = {}
        for t in self.manifest.tensors:
            kinds[t.kind] = kinds.get(t.kind, 0) + 1
        return kinds


def _alloc(e: TensorEntry) -> dict[str, np.ndarray]:
    out_f, in_f = e.shape
    if e.fmt is None:
        return {"values": np.zeros((out_f, in_f), dtype=np.float16)}
    g = e.fmt.groups_per_row(in_f)
    sdt = np.float16 if e.fmt.scale_dtype == "fp16" else np.float32
    zeros = np.full((out_f, g), e.fmt.symmetric_zero if e.fmt.symmetric else 0, dtype=np.uint8)
    return {"codes": np.zeros((out_f, in_f), np.uint8), "scales": np.zeros((out_f, g), sdt), "zeros": zeros}


def _read_tensor(
    plain: np.ndarray, e: TensorEntry, tiles: dict[str, np.ndarray], word_bits: int, where: str
) -> dict[str, np.ndarray]:
    """One tensor from the plain (decoded) bytes of all regions; `rom_offset_bits` are absolute there.
    When every segment is whole bytes (the usual case) the tiles' segments, in row order, concatenate
    into the tensor's own packed arrays, so each is unpacked once; otherwise tile by tile."""
    order = np.argsort(tiles["row_start"], kind="stable")
    t = {k: v[order] for k, v in tiles.items()}
    if (
        t["row_start"].size == 0
        or t["row_start"][0] != 0
        or (t["row_start"][1:] != t["row_stop"][:-1]).any()
        or (t["row_stop"][-1] != e.shape[0])
    ):
        raise RomImageError(f"{where}: the tiles of {e.name} do not cover its {e.shape[0]} rows exactly once")
    buf = _alloc(e)
    c_off, s_off, z_off = segment_offsets(t["rom_offset_bits"], t["code_bits"], t["scale_bits"], word_bits)

    def values(off: np.ndarray, nbits: np.ndarray, bits: int) -> np.ndarray:
        """All tiles' values of one segment kind, in row order: one unpack when every segment is whole
        bytes (they then concatenate into the tensor's packed array), else one unpack per tile."""
        spans = list(zip((off // 8).tolist(), nbits.tolist(), strict=True))
        if (nbits % 8 == 0).all():
            return unpack_uint(
                np.concatenate([plain[a : a + n // 8] for a, n in spans]), bits, int(nbits.sum()) // bits
            )
        return np.concatenate([unpack_uint(plain[a : a + -(-n // 8)], bits, n // bits) for a, n in spans])

    out_f, in_f = e.shape
    if e.fmt is None:
        buf["values"][:] = values(c_off, t["code_bits"], 8).view("<f2").reshape(out_f, in_f)
        return buf
    g = e.fmt.groups_per_row(in_f)
    buf["codes"][:] = values(c_off, t["code_bits"], e.fmt.bits).reshape(out_f, in_f)
    scale_bytes = values(s_off, t["scale_bits"], 8)  # 16- or 32-bit scales: always whole bytes
    buf["scales"][:] = unpack_scales(scale_bytes, e.fmt.scale_dtype, out_f * g).reshape(out_f, g)
    if e.fmt.zero_bits:
        buf["zeros"][:] = values(z_off, t["zero_bits"], e.fmt.zero_bits).reshape(out_f, g)
    return buf


def _units_text(units: list[int]) -> str:
    if len(units) == 1:
        return f"L-Unit {units[0]}"
    shown = ", ".join(str(u) for u in units[:8])
    return f"L-Units {shown}{', ...' if len(units) > 8 else ''} ({len(units)} units)"


def _names(names: list[str], limit: int = 6) -> str:
    if not names:
        return "(none)"
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def file_digest(path: str | Path, chunk_bytes: int = 2**22) -> str:
    """Hex SHA-256 of a file, read in chunks (an image is up to gigabytes)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()
