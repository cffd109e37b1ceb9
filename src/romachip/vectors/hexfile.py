"""Words as `$readmemh` text (IEEE 1800-2017 §21.4): the one encoding every vector file uses.

A file is a sequence of runs; each run starts with an address line `@ADDR` (hex, the word address of the
run's first word) and then holds one word per line, `width_bits / 4` hex digits, most significant digit
first, exactly as `$readmemh` reads them into `reg [width-1:0] mem [0:N-1]`. The file ends with a newline.

Element formats (`ELEMENTS`) say how an element becomes a word: signed integers in two's complement,
IEEE floats as their bit patterns (binary64 / binary32 / bfloat16 = the top half of a binary32,
fp8_e4m3 as its byte), unsigned integers as themselves. So "endianness" only arises inside a word, and
there it is the number's own: bit k of the word is bit k of the element.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from romachip.atomic import atomic_open
from romachip.errors import VectorsError


@dataclass(frozen=True)
class Element:
    """How one element of a vector file is held in a word."""

    name: str
    width_bits: int
    signed: bool  # two's complement integer (else the bit pattern as an unsigned word)
    numpy_dtype: str  # the dtype whose bits are the word (little-endian, as numpy stores it)


ELEMENTS = {
    e.name: e
    for e in (
        Element("int8", 8, True, "<i1"),
        Element("int16", 16, True, "<i2"),
        Element("int32", 32, True, "<i4"),
        Element("int64", 64, True, "<i8"),
        Element("uint8", 8, False, "<u1"),
        Element("uint64", 64, False, "<u8"),
        Element("fp8_e4m3", 8, False, "<u1"),  # the E4M3 code byte (sign, 4 exponent bits, 3 mantissa bits)
        Element("bf16", 16, False, "<u2"),  # the top 16 bits of the binary32
        Element("fp16", 16, False, "<u2"),
        Element("fp32", 32, False, "<u4"),
        Element("fp64", 64, False, "<u8"),
    )
}


def element(name: str) -> Element:
    if name not in ELEMENTS:
        raise VectorsError(f"unknown element format {name!r}; known: {', '.join(ELEMENTS)}")
    return ELEMENTS[name]


def to_words(values: np.ndarray, elem: Element) -> np.ndarray:
    """Array -> uint64 words (flattened, row-major) under `elem`."""
    v = np.ascontiguousarray(values)
    if elem.name == "bf16":
        bits = v.astype(np.float32).view("<u4")
        if np.any(bits & np.uint32(0xFFFF)):
            raise VectorsError("a bf16 element holds more than bf16 precision")
        return (bits >> np.uint32(16)).astype(np.uint64).reshape(-1)
    if elem.name == "fp16":
        if v.dtype != np.float16:
            raise VectorsError("an fp16 element must be given as float16 values")
        return v.view("<u2").astype(np.uint64).reshape(-1)
    if elem.name == "fp32":
        return v.astype(np.float32).view("<u4").astype(np.uint64).reshape(-1)
    if elem.name == "fp64":
        return v.astype(np.float64).view("<u8").reshape(-1).copy()
    if elem.signed:
        lim = 1 << (elem.width_bits - 1)
        if v.size and (int(v.min()) < -lim or int(v.max()) >= lim):
            raise VectorsError(f"a value does not fit {elem.name}: {int(v.min())}..{int(v.max())}")
        mask = np.uint64((1 << elem.width_bits) - 1)
        return v.astype(np.int64).reshape(-1).view(np.uint64) & mask
    return v.astype(np.uint64).reshape(-1)


def from_words(words: np.ndarray, elem: Element, shape: tuple[int, ...]) -> np.ndarray:
    """uint64 words -> the array they hold (int64 for integers, float32/float64 for floats, uint for codes)."""
    w = np.asarray(words, dtype=np.uint64).reshape(shape)
    if elem.name == "bf16":
        return (w.astype(np.uint32) << np.uint32(16)).view(np.float32)
    if elem.name == "fp16":
        return w.astype(np.uint16).view(np.float16).astype(np.float32)
    if elem.name == "fp32":
        return w.astype(np.uint32).view(np.float32)
    if elem.name == "fp64":
        return w.view(np.float64)
    if elem.signed and elem.width_bits == 64:
        return w.view(np.int64)
    if elem.signed:
        sign = np.uint64(1 << (elem.width_bits - 1))
        return (w ^ sign).astype(np.int64) - np.int64(int(sign))
    return w.astype(np.int64)


def format_runs(runs: list[tuple[int, np.ndarray]], width_bits: int) -> str:
    """`$readmemh` text of (start address, uint64 words) runs."""
    digits = width_bits // 4
    lines = []
    for start, words in runs:
        lines.append(f"@{start:x}")
        lines.extend(f"{int(w):0{digits}x}" for w in words)
    return "\n".join(lines) + "\n"


def write_hex(path: Path, runs: list[tuple[int, np.ndarray]], width_bits: int, *, atomic: bool = True) -> None:
    """Write a `$readmemh` file. atomic=False is for files inside a folder that is itself published by
    one rename (vectors/write.py): an fsync per file would cost more than the data (thousands of files)."""
    text = format_runs(runs, width_bits)
    if atomic:
        with atomic_open(path, "w") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="ascii")


def read_hex(path: Path, width_bits: int) -> dict[int, tuple[int, int]]:
    """address -> (word, line number) of a `$readmemh` file; VectorsError naming the line on bad text.
    (Comments `//` and blank lines are allowed, as $readmemh allows them.)"""
    digits = width_bits // 4
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise VectorsError(f"cannot read vector file {path}: {exc}") from None
    words: dict[int, tuple[int, int]] = {}
    addr = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        try:
            if line.startswith("@"):
                addr = int(line[1:], 16)
                continue
            if len(line) != digits:
                raise ValueError(f"expected {digits} hex digits")
            words[addr] = (int(line, 16), lineno)
        except ValueError as exc:
            raise VectorsError(f"{path}, line {lineno}: {raw!r} is not a {width_bits}-bit hex word ({exc})") from None
        addr += 1
    return words


def read_array(path: Path, elem: Element, shape: tuple[int, ...]) -> np.ndarray:
    """A whole data file (one run from address 0 covering every element) as words [n]; VectorsError if short."""
    n = int(np.prod(shape, dtype=np.int64))
    words = read_hex(path, elem.width_bits)
    if sorted(words) != list(range(n)):
        missing = next((a for a in range(n) if a not in words), n)
        raise VectorsError(f"{path}: holds {len(words)} words, the manifest says {n} (first missing word {missing})")
    return np.array([words[a][0] for a in range(n)], dtype=np.uint64)
