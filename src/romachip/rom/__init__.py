"""The ROM image: B-ROM encoding, writer (`write_image`, `burn`) and the read-only `RomImage`.

The byte layout is specified in docs/rom-format.md.
"""

from __future__ import annotations

from pathlib import Path

from romachip.names import EMBED_NAME
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
    policy: StoragePolicy | str | None = None,
    num_groups: int | None = None,
    progress: Progress | None = None,
) -> RomImage:
    """Write `qmodel` as a ROM image for `chip` at `path` and open it (checksums verified).

    `policy` None: the one the model's tables were quantized for, as `burn_checkpoint` chooses it
    (rom_int8 when the embedding holds 8-bit codes and the weights fewer, else rom_weight)."""
    if policy is None:
        table = qmodel.weights.get(EMBED_NAME)
        int8 = table is not None and table.fmt.bits == 8 and qmodel.fmt.bits != 8
        policy = StoragePolicy.ROM_INT8 if int8 else DEFAULT_POLICY
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
