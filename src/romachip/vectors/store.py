"""The vector folder being written: every array goes through `VectorStore.array`, which writes its
`$readmemh` file (and/or keeps it for `arrays.npz`) and records it in the manifest's file list."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from romachip.atomic import atomic_open
from romachip.errors import VectorsError
from romachip.vectors.hexfile import element, to_words, write_hex

FORMATS = ("hex", "npz", "both")
NUMERICS = "docs/numerics.md"
SECTIONS = {
    "rom": "docs/rom-format.md#b-rom-encoding",
    "activations": f"{NUMERICS}#activations-into-the-l-units",
    "linear": f"{NUMERICS}#the-l-unit-group-dot-product-and-the-linear-layer",
    "lora": f"{NUMERICS}#the-lora-path-h-unit",
    "lora_storage": f"{NUMERICS}#lora-storage-h-unit-sram",
    "kv": f"{NUMERICS}#kv-cache-h-unit-sram-and-the-precision-of-q",
    "attention": f"{NUMERICS}#attention-h-unit-per-head-query-position-t-keys-j--0--t1",
    "vector": f"{NUMERICS}#vector-unit-arithmetic-all-float32-data-binary64-intermediates-where-stated",
}


class VectorStore:
    """Writes arrays under `root` and remembers each file's manifest entry.

    `root` is a private temporary folder that write_vectors renames into place once complete, so files are
    written into it directly (no per-file temp name and fsync); the folder's rename is the atomic step."""

    def __init__(self, root: Path, fmt: str) -> None:
        if fmt not in FORMATS:
            raise VectorsError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
        self.root = root
        self.hex = fmt in ("hex", "both")
        self.npz = fmt in ("npz", "both")
        self.files: list[dict[str, Any]] = []
        self._arrays: dict[str, np.ndarray] = {}
        self._made: set[Path] = set()

    def _path(self, rel: str) -> Path:
        path = self.root / rel
        if path.parent not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)
        return path

    def array(self, rel: str, values: np.ndarray, elem: str, *, role: str, section: str, **where: Any) -> str:
        """Write one data file (`rel` without suffix): one run from address 0, row-major; returns `rel`."""
        e = element(elem)
        values = np.asarray(values)
        words = to_words(values, e)
        if self.hex:
            write_hex(self._path(rel + ".hex"), [(0, words)], e.width_bits, atomic=False)
        if self.npz:
            self._arrays[rel] = values
        self.files.append({
            "key": rel, "path": rel + ".hex" if self.hex else "arrays.npz", "role": role, **where,
            "shape": list(values.shape), "element": elem, "width_bits": e.width_bits, "section": SECTIONS[section],
        })  # fmt: skip
        return rel

    def rom_file(self, rel: str, runs: list[tuple[int, np.ndarray]], width_bits: int, **where: Any) -> str:
        """A ROM macro file (always `$readmemh`: it is what a simulator's ROM model loads)."""
        write_hex(self._path(rel), runs, width_bits, atomic=False)
        words = np.concatenate([w for _, w in runs]) if runs else np.zeros(0, np.uint64)
        self.files.append({
            "key": rel, "path": rel, "role": "rom", **where, "shape": [int(words.size)], "element": "uint64",
            "width_bits": width_bits, "section": SECTIONS["rom"],
            "crc32": zlib.crc32(np.ascontiguousarray(words, dtype="<u8").tobytes()),
        })  # fmt: skip
        return rel

    def finish(self) -> None:
        if self.npz and self._arrays:
            with atomic_open(self.root / "arrays.npz", "wb") as f:
                np.savez(f, **self._arrays)
