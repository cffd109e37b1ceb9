"""The ROM image: B-ROM encoding, writer (`write_image`, `burn`) and the read-only `RomImage`.

The byte layout is specified in docs/rom-format.md.
"""

from __future__ import annotations

from pathlib import Path

from romachip.quant.tensor import QuantizedModel
from romachip.rom.layout import FORMAT_VERSION, MAGIC
from romachip.rom.pipeline import BurnReport, burn_checkpoint
from romachip.rom.reader import RomImage
from romachip.rom.writer import Progress, WriteReport, write_image
from romachip.spec.chip import ChipSpec
from romachip.tensor_bits import DEFAULT_POLICY, StoragePolicy


def burn(
    qmodel: QuantizedModel,
    chip: ChipSpec,
    path: str | Path,
    *,
    chip_preset: str | None = None,
    strategy: str = "spread",
    policy: StoragePolicy | str = DEFAULT_POLICY,
    num_groups: int | None = None,
    progress: Progress | None = None,
) -> RomImage:
    """Write `qmodel` as a ROM image for `chip` at `path` and open it (checksums verified)."""
    write_image(
        path,
        qmodel,
        chip,
        chip_preset=chip_preset,
        strategy=strategy,
        policy=policy,
        num_groups=num_groups,
        progress=progress,
    )
    return RomImage.open(path)


__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "BurnReport",
    "RomImage",
    "WriteReport",
    "burn",
    "burn_checkpoint",
    "write_image",
]
