"""`check_vectors(folder) -> CheckReport`: recompute every expected output of a vector folder from its
inputs and memory contents with the checker's own implementation (vectors/reference.py, independent of
the engine) and report the first word that differs, by file and word.

What is checked, in order: the ROM macro files against the image they came from (word by word when the
image is at hand — `image=`, the path the manifest records, or the image's file name beside the folder;
its SHA-256 must match — else each file's CRC-32 from the manifest); then every op in manifest order,
its expected files against the reference's results. Inputs (the `x` rows a unit receives) are taken as
given; every file an op lists under `expected`, and the KV words a `kv_write` stores, are checked. An
RTL team writes its simulator's outputs over the expected files and runs this.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from romachip.errors import RomachipError, VectorsError
from romachip.vectors import reference as ref
from romachip.vectors.hexfile import element, from_words, read_hex, to_words

MANIFEST = "manifest.json"
SUPPORTED_VERSION = 1


@dataclass(frozen=True)
class Mismatch:
    """The first word that differs: its file, word address (and line), what it holds, what it should."""

    file: str
    word: int | None
    line: int | None
    holds: str
    expected: str
    op: str

    def message(self) -> str:
        at = "" if self.word is None else f" word {self.word}" + ("" if self.line is None else f" (line {self.line})")
        return f"{self.file}{at}: holds {self.holds}, expected {self.expected} ({self.op})"


@dataclass(frozen=True)
class CheckReport:
    folder: Path
    ok: bool
    ops_checked: int
    files_checked: int
    words_checked: int
    rom_reference: str  # "image" (word by word) or "crc32" (per file)
    mismatch: Mismatch | None

    def to_dict(self) -> dict[str, Any]:
        d = {**self.__dict__, "folder": str(self.folder)}
        d["mismatch"] = (
            None if self.mismatch is None else {**self.mismatch.__dict__, "message": self.mismatch.message()}
        )
        return d


class _Found(Exception):
    def __init__(self, mismatch: Mismatch) -> None:
        self.mismatch = mismatch


class _Folder:
    """Reads a vector folder's files by manifest key, and compares them with recomputed values."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            self.manifest = json.loads((root / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise VectorsError(f"{root}: not a vector folder ({MANIFEST}: {exc})") from None
        m = self.manifest
        if not isinstance(m, dict) or m.get("format") != "romachip-vectors":
            raise VectorsError(f"{root / MANIFEST} is not a romachip vectors manifest")
        if m.get("version") != SUPPORTED_VERSION:
            raise VectorsError(f"{root}: vectors format version {m.get('version')} is not supported (this romachip "
                               f"reads version {SUPPORTED_VERSION}); write the vectors again")  # fmt: skip
        self.files = {f["key"]: f for f in m["files"]}
        self._npz = None
        self.words_checked = 0
        self.files_checked: set[str] = set()

    def entry(self, key: str) -> dict:
        if key not in self.files:
            raise VectorsError(f"{self.root}: the manifest names {key!r} but lists no such file")
        return self.files[key]

    def _words(self, key: str) -> tuple[np.ndarray, list[int] | None]:
        f = self.entry(key)
        n = int(np.prod(f["shape"], dtype=np.int64))
        if f["path"].endswith(".hex"):
            words = read_hex(self.root / f["path"], f["width_bits"])
            if sorted(words) != list(range(n)):
                missing = next((a for a in range(n) if a not in words), n)
                raise _Found(Mismatch(f["path"], missing, None, f"{len(words)} words", f"{n} words (addresses 0.."
                                      f"{n - 1})", "file length"))  # fmt: skip
            return np.array([words[a][0] for a in range(n)], dtype=np.uint64), [words[a][1] for a in range(n)]
        if self._npz is None:
            self._npz = np.load(self.root / "arrays.npz")
        return to_words(self._npz[key], element(f["element"])), None

    def load(self, key: str) -> np.ndarray:
        f = self.entry(key)
        words, _ = self._words(key)
        return from_words(words, element(f["element"]), tuple(f["shape"]))

    def compare(self, key: str, want: np.ndarray, op: str) -> None:
        """Raise _Found at the first word of file `key` that differs from `want`."""
        f = self.entry(key)
        e = element(f["element"])
        got, lines = self._words(key)
        want = np.asarray(want)
        if list(want.shape) != list(f["shape"]):
            raise VectorsError(f"{f['path']}: the manifest shape {f['shape']} is not the op's {list(want.shape)}")
        if e.name == "fp16":
            want = want.astype(np.float16)
        want_words = to_words(want, e)
        diff = np.flatnonzero(got != want_words)
        self.words_checked += got.size
        self.files_checked.add(key)
        if diff.size:
            i = int(diff[0])
            digits = e.width_bits // 4
            raise _Found(Mismatch(f["path"], i, lines[i] if lines else None, _show(got[i], e, digits),
                                  _show(want_words[i], e, digits), op))  # fmt: skip


def _show(word: np.uint64, e, digits: int) -> str:
    value = from_words(np.array([word], dtype=np.uint64), e, (1,))[0]
    return (
        f"0x{int(word):0{digits}x} ({value!r})"
        if e.name.startswith(("fp", "bf"))
        else f"0x{int(word):0{digits}x} ({int(value)})"
    )


def check_vectors(folder: str | Path, *, image: str | Path | None = None) -> CheckReport:
    """Check a vector folder (see the module docstring); the report names the first mismatch, if any."""
    folder = Path(folder)
    vf = _Folder(folder)
    ops_done = 0
    reference = "crc32"
    mismatch = None
    try:
        roms, reference = _check_rom(vf, image)
        for op in vf.manifest["ops"]:
            _check_op(vf, op, roms)
            ops_done += 1
    except _Found as found:
        mismatch = found.mismatch
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise VectorsError(f"{folder}: malformed vector folder ({type(exc).__name__}: {exc})") from None
    return CheckReport(folder, mismatch is None, ops_done, len(vf.files_checked), vf.words_checked, reference,
                       mismatch)  # fmt: skip


# -- ROM ---------------------------------------------------------------------------------------------
def _image_words(vf: _Folder, image: str | Path | None):
    """The image's stored words per unit, or None when the image is not at hand."""
    from romachip.rom import RomImage  # the raw payload bytes only; nothing of the engine
    from romachip.vectors.rom_dump import unit_words
    from romachip.vectors.write import image_sha256

    info = vf.manifest["image"]
    if image is not None:
        path = Path(image)
        if not path.exists():
            raise VectorsError(f"image {path} does not exist")
    else:  # where it was written from, else beside or inside the folder (moved together)
        candidates = [Path(info["path"]), vf.root.parent / info["file"], vf.root / info["file"]]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            return None
    try:
        img = RomImage.open(path, verify=False)
    except RomachipError as exc:
        raise VectorsError(f"cannot read the vectors' image: {exc}") from None
    if image_sha256(img) != info["sha256"]:
        raise VectorsError(f"image {path} is not the image these vectors were written from (SHA-256 differs from the "
                           f"manifest's {info['sha256'][:16]}...)")  # fmt: skip
    return lambda unit: unit_words(img, unit)


def _check_rom(vf: _Folder, image: str | Path | None) -> tuple[dict[int, ref.UnitRom], str]:
    m = vf.manifest
    chip = m["chip"]
    wb, macros, rows_per_macro = chip["word_bits"], chip["macros"], chip["macro_rows"]
    brom = m["image"]["encoding"]["rom"] == "brom4"
    image_words = _image_words(vf, image)
    roms = {}
    for unit in m["units"]:
        u = unit["unit"]
        words: dict[int, int] = {}
        want = image_words(u) if image_words else None
        for rf in unit["rom_files"]:
            entry = vf.entry(rf["path"])
            held = read_hex(vf.root / rf["path"], wb)
            vf.files_checked.add(rf["path"])
            macro = rf["macro"]
            for row, (word, line) in sorted(held.items()):
                w = row * macros + macro if chip["word_interleave"] else macro * rows_per_macro + row
                words[w] = word
                if want is not None and (w >= want.size or int(want[w]) != word):
                    expected = "no word (outside the unit's region)" if w >= want.size else f"0x{int(want[w]):016x}"
                    raise _Found(Mismatch(rf["path"], row, line, f"0x{word:0{wb // 4}x}", expected,
                                          f"L-Unit {u} ROM, logical word {w}"))  # fmt: skip
            vf.words_checked += len(held)
            if want is None:
                crc = zlib.crc32(np.array([held[r][0] for r in sorted(held)], dtype="<u8").tobytes())
                if crc != entry["crc32"]:
                    raise _Found(Mismatch(rf["path"], None, None, f"CRC-32 {crc:#010x}", f"{entry['crc32']:#010x}",
                                          f"L-Unit {u} ROM; give --image to name the word"))  # fmt: skip
        if want is not None and len(words) != want.size:
            missing = next(w for w in range(want.size) if w not in words)
            raise _Found(Mismatch(f"rom/u{u:03d}", missing, None, "no word", f"0x{int(want[missing]):016x}",
                                  f"L-Unit {u} ROM: logical word {missing} is in no macro file"))  # fmt: skip
        roms[u] = ref.UnitRom(words, wb, brom)
    return roms, "image" if image_words else "crc32"


# -- ops ---------------------------------------------------------------------------------------------
def _desc(op: dict) -> str:
    unit = op["unit"] if op["unit"] == "vector" else f"unit {op['unit']}"
    return f"{op['kind']} {op['module']}, layer {op['layer']}, step {op['step']}, {unit}"


def _check_op(vf: _Folder, op: dict, roms: dict[int, ref.UnitRom]) -> None:
    kind, inp, exp, mem, p = (
        op["kind"],
        op.get("inputs", {}),
        op.get("expected", {}),
        op.get("memory", {}),
        op["params"],
    )
    d = _desc(op)
    if kind == "align":
        x = vf.load(inp["x"])
        if p["activation"] == "bf16":
            xi, e = ref.align_bf16(x, p["group_len"])
            vf.compare(exp["xi"], xi, d)
            vf.compare(exp["exponent"], e, d)
        else:
            xi, a = ref.align_int8(x)
            vf.compare(exp["xi"], xi, d)
            vf.compare(exp["scale"], a, d)
    elif kind == "linear":
        _check_linear(vf, op, roms[op["unit"]], d)
    elif kind == "rms_norm":
        vf.compare(exp["y"], ref.rms_norm(vf.load(inp["x"]), vf.load(inp["weight"]), p["eps"]), d)
    elif kind == "swiglu":
        vf.compare(exp["y"], ref.swiglu(vf.load(inp["gate"]), vf.load(inp["up"])), d)
    elif kind == "residual":
        vf.compare(exp["y"], vf.load(inp["x"]) + vf.load(inp["delta"]), d)
    elif kind == "lora_a":
        precision = vf.manifest["run"]["adapter"]["precision"]
        a_scale = float(vf.load(mem["a_scale"])[0])
        vf.compare(exp["u"], ref.lora_a(vf.load(inp["x"]), vf.load(mem["a"]), a_scale, precision), d)
    elif kind == "lora_b":
        precision = vf.manifest["run"]["adapter"]["precision"]
        alpha = float(vf.load(mem["b_scale"])[0])
        delta, y = ref.lora_b(vf.load(inp["u"]), vf.load(mem["b"]), alpha, vf.load(inp["base"]), precision)
        vf.compare(exp["delta"], delta, d)
        vf.compare(exp["y"], y, d)
    elif kind == "kv_write":
        rows = np.asarray(p["rows_in_memory"], dtype=np.int64)
        for name in ("k", "v"):
            codes, scale = ref.kv_encode(vf.load(inp[name]), p["kv"])
            held = vf.load(mem[name]).copy()
            held[rows] = codes
            vf.compare(mem[name], held, d)
            if scale is not None:
                held_s = vf.load(mem[f"{name}_scale"]).copy()
                held_s[rows] = scale
                vf.compare(mem[f"{name}_scale"], held_s, d)
    elif kind == "attention_share":
        k, v = _kv_memory(vf, mem, "k", p["kv"]), _kv_memory(vf, mem, "v", p["kv"])
        got = ref.attention_share(vf.load(inp["q"]), *k, *v, p["key_positions"], p["query_positions"])
        for name, key in exp.items():
            vf.compare(key, got[name], d)
    elif kind == "attention_combine":
        alpha, y = ref.attention_combine(vf.load(inp["max"]), vf.load(inp["sum"]), vf.load(inp["partial"]))
        if "rescale" in exp:
            vf.compare(exp["rescale"], alpha, d)
        vf.compare(exp["y"], y, d)
    else:
        raise VectorsError(f"{vf.root}: unknown op kind {kind!r} (written by a newer romachip?)")


def _kv_memory(vf: _Folder, mem: dict, name: str, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """A unit's K or V as the attention MACs read them: (integers int64 [P, kvh, d], scales float64 [P, kvh])."""
    if mode == "int8":
        return vf.load(mem[name]).astype(np.int64), vf.load(mem[f"{name}_scale"]).astype(np.float64)
    return ref.fp16_align(vf.load(mem[name]))


def _check_linear(vf: _Folder, op: dict, rom: ref.UnitRom, d: str) -> None:
    inp, exp = op["inputs"], op["expected"]
    tiles = [ref.read_tile(rom, t) for t in op["memory"]["rom_tiles"]]
    w = np.concatenate([t["w"] for t in tiles])
    s = np.concatenate([t["scales"] for t in tiles])
    g = tiles[0]["group_len"]
    xi = vf.load(inp["xi"])
    if op["params"]["activation"] == "bf16":
        a = np.ldexp(1.0, vf.load(inp["exponent"]) - ref.BF16_WINDOW_BITS)
    else:
        a = np.repeat(vf.load(inp["scale"]).astype(np.float64)[:, None], s.shape[1], axis=1)
    ints, terms, y = ref.linear(xi, a, w, s, g, zero_adds_plus0=op["params"]["activation"] == "bf16")
    vf.compare(exp["group_integers"], ints, d)
    vf.compare(exp["group_terms"], terms, d)
    vf.compare(exp["y"], y, d)
