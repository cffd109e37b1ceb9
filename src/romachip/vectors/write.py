"""`write_vectors(image, prompt_ids, out_dir, ...) -> VectorsReport`: golden vectors for the RTL.

Runs the golden engine once (its tap reports every intermediate) and writes, for each selected unit:
its ROM as its macros hold it, its SRAM (LoRA A/B rows and scale words, KV entries per step), and each
op's inputs and expected outputs, plus `manifest.json` (versioned) that names every file. The folder is
built under a temporary name beside `out_dir` and renamed into place at the end, so a failed run leaves
no half-written folder (docs/vectors.md is the format).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from romachip import __version__
from romachip.atomic import atomic_open
from romachip.engine import Engine
from romachip.engine.text import encode_prompt
from romachip.errors import VectorsError
from romachip.rom import RomImage
from romachip.sram.bank import AdapterBank
from romachip.sram.storage import StoredAdapter
from romachip.vectors.capture import capture
from romachip.vectors.hexfile import ELEMENTS
from romachip.vectors.ops import StepWriter
from romachip.vectors.rom_dump import macro_dumps, runs
from romachip.vectors.store import VectorStore
from romachip.vectors.units import lora_a_rows, unit_tiles
from romachip.workload import KvConfig

MANIFEST = "manifest.json"
FORMAT_NAME = "romachip-vectors"
FORMAT_VERSION = 1
Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class VectorsReport:
    """What write_vectors wrote."""

    out_dir: Path
    files: int
    bytes_written: int
    ops: int
    units: list[int]
    layers: list[int]
    steps: int
    generated_ids: list[int]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "out_dir": str(self.out_dir)}


def image_sha256(image: RomImage) -> str:
    h = hashlib.sha256()
    with image.path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def write_vectors(
    image: RomImage,
    prompt: str | list[int],
    out_dir: str | Path,
    *,
    chat: bool = False,
    units: list[int],
    layers: list[int],
    steps: int = 1,
    adapter: str | Path | None = None,
    fmt: str = "hex",
    activation: str | None = None,
    kv: str | None = None,
    progress: Progress | None = None,
) -> VectorsReport:
    """Run the image's model on `prompt` (text, tokenized by the image's tokenizer, or token ids): prefill,
    then `steps` greedy decode steps; write the vectors of `units` (matrix units) and `layers` into
    `out_dir` (replaced if it is a vector folder, refused if it is anything else)."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    _check_target(out_dir)
    if steps < 0:
        raise VectorsError(f"--tokens must be >= 0, got {steps}")
    spec = image.spec
    for what, chosen, limit in (("layers", layers, spec.num_layers), ("units", units, len(image.manifest.units))):
        bad = [v for v in chosen if not 0 <= v < limit]
        if not chosen or bad:
            raise VectorsError(f"{what} {bad or chosen}: the image has {limit} {what} (0..{limit - 1})")
    qmodel = image.model()
    engine = Engine(qmodel, activation=activation, kv=kv, chip=image.chip, placement=image.placement)
    if isinstance(prompt, str):
        prompt_ids = encode_prompt(qmodel, engine.tokenizer, prompt, chat=chat)
    else:
        prompt_ids = [int(t) for t in prompt]
    if not prompt_ids:
        raise VectorsError("the prompt is empty: give at least one token")
    stored, view = _adapter(image, adapter, engine, len(prompt_ids) + steps)
    placement = image.placement
    recorded = capture(engine, prompt_ids, steps=steps, layers=layers, adapter=view)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        store = VectorStore(tmp, fmt)
        unit_info = [_dump_rom(store, image, u, progress, len(units)) for u in units]
        lora_rows = lora_a_rows(placement, dict(stored.ranks)) if stored else {}
        if stored:
            _dump_lora(store, stored, placement, units, lora_rows)
        formats = {e.name.removesuffix(".weight"): e.fmt for e in image.entries if e.fmt is not None}
        writer = StepWriter(store, placement, formats, units, qmodel.floats, qmodel.spec.rms_norm_eps, lora_rows,
                            engine.kv)  # fmt: skip
        for i, step in enumerate(recorded):
            writer.write(step)
            if progress:
                progress("ops", i + 1, len(recorded))
        store.finish()
        manifest = _manifest(image, engine, prompt_ids, recorded, units, layers, adapter, stored, unit_info,
                             writer.ops, store.files)  # fmt: skip
        with atomic_open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    nbytes = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return VectorsReport(
        out_dir, len(store.files) + 1, nbytes, len(writer.ops), units, layers, steps,
        [s.next_token for s in recorded], time.perf_counter() - t0,
    )  # fmt: skip


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists())):
        raise VectorsError(f"{out_dir} exists and is not a vector folder; give a new or empty folder with -o")


def _publish(tmp: Path, out_dir: Path) -> None:
    """Rename the finished folder into place; an old vector folder there is moved away first, then removed."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{tmp.name}")
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _adapter(image: RomImage, adapter: str | Path | None, engine: Engine, context: int):
    if adapter is None:
        return None, None
    bank = AdapterBank.for_image(image, kv=KvConfig(dtype=engine.kv, context_tokens=context))
    bank.load("adapter", adapter)
    return bank.stored("adapter"), bank.view("adapter")


def _dump_rom(store: VectorStore, image: RomImage, unit: int, progress: Progress | None, total: int) -> dict:
    word_bits = image.manifest.encoding.word_bits
    files = []
    for m in macro_dumps(image, unit):
        rel = f"rom/u{unit:03d}/m{m.macro:04d}.hex"
        store.rom_file(rel, runs(m.rows, m.words), word_bits, unit=unit, macro=m.macro)
        files.append({"macro": m.macro, "path": rel, "rows": int(m.rows.size)})
    if progress:
        progress("rom", len(store.files), total)
    u = image.manifest.units[unit]
    tiles = [
        {"shape": list(e.shape), **t.__dict__}
        for e in image.placement.tensors
        for t in unit_tiles(image.placement, unit, e.name)
    ]
    return {
        "unit": unit, "mesh_row": u.mesh_row, "mesh_col": u.mesh_col,
        "rom_words": u.payload_bytes * 8 // word_bits, "region_crc32": u.crc32, "rom_files": files,
        "tiles": tiles,
    }  # fmt: skip


def _dump_lora(store: VectorStore, stored: StoredAdapter, placement, units: list[int], lora_rows) -> None:
    """Each unit's LoRA SRAM: the A rows dealt to it, the B rows beside its base rows, the FP32 scale words."""
    code_elem = "fp8_e4m3" if stored.precision == "fp8_e4m3" else stored.precision
    for m in stored.modules:
        layer = int(m.name.split(".")[2])
        for unit in units:
            d = f"sram/u{unit:03d}/lora/{m.name}"
            where = {"unit": unit, "op": "lora", "layer": layer, "step": None}
            ks = np.flatnonzero(lora_rows[m.name] == unit)
            if ks.size:
                store.array(f"{d}/a", _codes(m.a_codes[ks], code_elem), code_elem, role="sram",
                            section="lora_storage", rank_rows=ks.tolist(), **where)  # fmt: skip
                store.array(f"{d}/a_scale", np.array([m.a_word], np.float32), "fp32", role="sram",
                            section="lora_storage", **where)  # fmt: skip
            tiles = unit_tiles(placement, unit, f"{m.name}.weight")
            if tiles:
                rows = np.concatenate([np.arange(t.row_start, t.row_stop) for t in tiles])
                store.array(f"{d}/b", _codes(m.b_codes[rows], code_elem), code_elem, role="sram",
                            section="lora_storage", rows=rows.tolist(), **where)  # fmt: skip
                store.array(f"{d}/b_scale", np.array([m.b_word], np.float32), "fp32", role="sram",
                            section="lora_storage", **where)  # fmt: skip


def _codes(codes: np.ndarray, elem: str) -> np.ndarray:
    if elem == "fp16":
        return codes.view(np.float16)
    if elem == "bf16":
        return (codes.astype(np.uint32) << 16).view(np.float32)
    return codes


def _manifest(image, engine, prompt_ids, recorded, units, layers, adapter, stored, unit_info, ops, files) -> dict:
    rom = image.chip.l_unit.rom
    m = image.manifest
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "written_by": f"romachip {__version__}",
        "image": {
            "path": str(image.path.resolve()), "file": image.path.name, "sha256": image_sha256(image),
            "model": m.model.name, "weight_format": m.weight_format["describe"],
            "storage_policy": m.storage_policy, "encoding": m.encoding.model_dump(mode="json"),
        },
        "chip": {
            "preset": m.chip.preset, "word_bits": m.encoding.word_bits, "macros": rom.macros,
            "macro_rows": rom.macro_rows, "word_interleave": rom.word_interleave,
            "matrix_units": len(m.units),
        },
        "run": {
            "prompt_ids": list(map(int, prompt_ids)), "decode_steps": len(recorded) - 1,
            "generated_ids": [s.next_token for s in recorded], "activation": engine.activation, "kv": engine.kv,
            "units": units, "layers": layers,
            "adapter": None if stored is None else {
                "source": str(adapter), "precision": stored.precision, "modules": len(stored.modules),
                "ranks": dict(stored.ranks),
            },
            "steps": [{"step": s.index, "positions": s.positions.tolist(), "token_ids": s.tokens.tolist()}
                      for s in recorded],
        },
        "elements": {k: {"width_bits": e.width_bits, "signed": e.signed} for k, e in ELEMENTS.items()},
        "units": unit_info,
        "ops": ops,
        "files": files,
    }  # fmt: skip
