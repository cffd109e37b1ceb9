"""The demo model: SmolLM2-135M-Instruct burned for the `roma` chip in the ROMA format (uint4, groups of
128, RTN), cached under the user's cache directory so that it is burned once per machine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import platformdirs

from romachip.quant.checkpoint import SMOLLM2_NAME, load_checkpoint
from romachip.quant.formats import WeightFormat
from romachip.quant.quantize import quantize_checkpoint
from romachip.rom import FORMAT_VERSION, RomImage, burn
from romachip.spec.chip import load_chip

DEMO_CHIP = "roma"
DEMO_FORMAT = WeightFormat(bits=4, group_size=128)
DEMO_PROMPT = "What is the capital of France? Answer in one sentence."


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("romachip"))


def demo_image_path(folder: Path | None = None) -> Path:
    """Where the demo image lives; the name carries everything that changes its bytes."""
    fmt = DEMO_FORMAT
    name = f"{SMOLLM2_NAME}-{DEMO_CHIP}-uint{fmt.bits}-g{fmt.group_size}-rtn-v{FORMAT_VERSION}.rom"
    return (folder or cache_dir()) / name


def ensure_demo_image(
    folder: Path | None = None, *, progress: Callable[[str], None] | None = None
) -> tuple[Path, bool]:
    """(path, burned_now): burn SmolLM2 into the cache unless a valid image is already there."""
    path = demo_image_path(folder)
    if path.exists():
        try:
            # an image burned under an older preset (e.g. another activation precision) is burned again
            if RomImage.open(path, verify=False).chip == load_chip(DEMO_CHIP):
                return path, False
        except Exception:  # noqa: BLE001 (a damaged cache entry is simply burned again)
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        progress(f"loading {SMOLLM2_NAME}")
    ckpt = load_checkpoint(SMOLLM2_NAME)
    if progress:
        progress(f"quantizing to {DEMO_FORMAT.describe()}")
    qmodel = quantize_checkpoint(ckpt, DEMO_FORMAT)
    if progress:
        progress(f"burning for chip {DEMO_CHIP!r}")
    burn(qmodel, load_chip(DEMO_CHIP), path, chip_preset=DEMO_CHIP)
    return path, True
