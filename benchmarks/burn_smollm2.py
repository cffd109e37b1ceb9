"""Wall time of burning SmolLM2-135M-Instruct into a ROMA ROM image, by phase, and the image size.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/burn_smollm2.py [--bits 4] [--group-size 128] [--json]

Phases: load (GGUF read + dequantize + tokenizer), quantize (RTN), write (placement, packing, B-ROM
encoding, CRCs, atomic write), open (memory map + every checksum), model (decode every tile back into a
QuantizedModel). The issue's bar: load + quantize + write under 30 s. The round trip is checked exact.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from romachip.quant.checkpoint import load_checkpoint
from romachip.quant.formats import WeightFormat
from romachip.quant.quantize import quantize_checkpoint
from romachip.rom import RomImage, write_image
from romachip.spec import load_chip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    walls: dict[str, float] = {}
    t = time.perf_counter()
    ckpt = load_checkpoint("smollm2-135m")
    walls["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    qm = quantize_checkpoint(ckpt, WeightFormat(args.bits, args.group_size or None))
    walls["quantize_s"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "smollm2.rom"
        t = time.perf_counter()
        report = write_image(path, qm, load_chip("roma"), chip_preset="roma")
        walls["write_s"] = time.perf_counter() - t
        t = time.perf_counter()
        img = RomImage.open(path)
        walls["open_s"] = time.perf_counter() - t
        t = time.perf_counter()
        back = img.model()
        walls["model_s"] = time.perf_counter() - t
        exact = all(
            np.array_equal(back.weights[k].codes, q.codes)
            and np.array_equal(back.weights[k].scales, q.scales)
            and np.array_equal(back.weights[k].zeros, q.zeros)
            for k, q in qm.weights.items()
        )
    walls["burn_s"] = walls["load_s"] + walls["quantize_s"] + walls["write_s"]
    result = {
        "model": "smollm2-135m",
        "weight_format": qm.fmt.describe(),
        "file_bytes": report.file_bytes,
        "header_bytes": report.header_bytes,
        "payload_bytes": report.payload_bytes,
        "bytes_by_kind": report.bytes_by_kind,
        "tiles": report.tiles,
        "round_trip_exact": exact,
        "wall_s": {k: round(v, 2) for k, v in walls.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"SmolLM2-135M, {result['weight_format']}: image {report.file_bytes / 2**20:.2f} MiB "
          f"(manifest {report.header_bytes / 2**20:.2f} MiB, payload {report.payload_bytes / 2**20:.2f} MiB), "
          f"{report.tiles:,} tiles, round trip exact: {exact}")  # fmt: skip
    print("  " + ", ".join(f"{k} {v:.2f}" for k, v in result["wall_s"].items()))


if __name__ == "__main__":
    main()
