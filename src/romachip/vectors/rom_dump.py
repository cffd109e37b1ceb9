"""An L-Unit's ROM as its macros hold it: one `$readmemh` file per macro.

The image payload keeps each unit's stored bytes (B-ROM encoded when `encoding.rom == "brom4"`) in logical
word order; word w of a unit is stored bytes [w * word_bits/8, (w + 1) * word_bits/8), little-endian, so
stream bit k of the word is bit k of the hex number. The chip spec's `RomArray.word_location` puts word w
in (macro, row): the file of macro m lists, at address `row`, the word it holds there. Only macros that
hold words of the unit's region get a file; rows past the region are not written (a simulator's ROM model
keeps its reset value there).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from romachip.errors import VectorsError
from romachip.rom import RomImage


@dataclass(frozen=True)
class MacroDump:
    """The words one macro of one unit holds: rows (ascending) and their words, with the logical words."""

    macro: int
    rows: np.ndarray  # int64 [n]
    words: np.ndarray  # uint64 [n]
    logical: np.ndarray  # int64 [n] the logical word address of each row


def unit_words(image: RomImage, unit: int) -> np.ndarray:
    """The unit's stored words (uint64, logical order), exactly the bytes of its payload region."""
    word_bits = image.manifest.encoding.word_bits
    if word_bits % 8 or word_bits > 64:
        raise VectorsError(f"vectors support ROM words of whole bytes up to 64 bits, the image has {word_bits}")
    raw = np.asarray(image.unit_payload(unit))
    per = word_bits // 8
    if raw.size % per:
        raise VectorsError(f"L-Unit {unit}: its region is not a whole number of {word_bits}-bit words")
    b = raw.reshape(-1, per).astype(np.uint64)
    shifts = (8 * np.arange(per, dtype=np.uint64))[None, :]
    return np.bitwise_or.reduce(b << shifts, axis=1) if per > 1 else b[:, 0]


def macro_dumps(image: RomImage, unit: int) -> list[MacroDump]:
    """Every macro of `unit` that holds a word of its region, in macro order."""
    words = unit_words(image, unit)
    rom = image.chip.l_unit.rom
    logical = np.arange(words.size, dtype=np.int64)
    macro, row = rom.word_location(logical)
    order = np.lexsort((row, macro))
    macro, row, logical = macro[order], row[order], logical[order]
    cuts = np.flatnonzero(np.diff(macro)) + 1
    return [
        MacroDump(int(m[0]), r, words[lg], lg)
        for m, r, lg in zip(np.split(macro, cuts), np.split(row, cuts), np.split(logical, cuts), strict=True)
        if m.size
    ]


def runs(rows: np.ndarray, words: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Consecutive rows grouped into (first row, words) runs, one `@` address each."""
    if rows.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(rows) != 1) + 1
    return [(int(r[0]), w) for r, w in zip(np.split(rows, cuts), np.split(words, cuts), strict=True)]


def words_crc32(words: np.ndarray) -> int:
    """CRC-32 of words as little-endian uint64 (what the manifest records for each ROM file)."""
    return zlib.crc32(np.ascontiguousarray(words, dtype="<u8").tobytes())
