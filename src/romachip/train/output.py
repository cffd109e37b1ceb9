"""What `finetune` writes: a standard PEFT adapter folder, and one checkpoint file to resume from.

The folder holds `adapter_config.json` + `adapter_model.safetensors` (what `peft.PeftModel.from_pretrained`
and `romachip run/eval/serve --adapter` read), `checkpoint.pt` (the adapter, the optimizer state, the
step and the run's settings) and `training_log.json`. Every file is written through `atomic_open`, and
the checkpoint is a single file, so an interrupted run leaves the previous checkpoint whole.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch

from romachip.atomic import atomic_open
from romachip.errors import AdapterError

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
CHECKPOINT = "checkpoint.pt"
LOG = "training_log.json"
OUR_FILES = frozenset({CONFIG, WEIGHTS, CHECKPOINT, LOG})


def image_fingerprint(image_path: str | Path) -> str:
    """SHA-256 of the image's header and manifest region (every tensor's CRC is in the manifest)."""
    from romachip.rom import RomImage

    rom = RomImage.open(image_path, verify=False)
    with open(image_path, "rb") as f:
        head = f.read(rom.payload_start)
    return hashlib.sha256(head).hexdigest()


def prepare_folder(folder: Path, *, resume: bool) -> None:
    """Refuse a folder that holds anything else, or (without --resume) a run already; create it if needed."""
    if folder.exists() and not folder.is_dir():
        raise AdapterError(f"output {folder} exists and is not a folder")
    present = {p.name for p in folder.iterdir()} if folder.exists() else set()
    foreign = sorted(present - OUR_FILES)
    if foreign:
        raise AdapterError(
            f"output folder {folder} holds files finetune did not write ({', '.join(foreign[:3])}); "
            "choose an empty or new folder"
        )
    if resume and CHECKPOINT not in present:
        raise AdapterError(f"--resume: {folder} holds no {CHECKPOINT} to continue from")
    if not resume and present:
        raise AdapterError(f"output folder {folder} already holds a fine-tuning run; pass --resume to continue it")
    folder.mkdir(parents=True, exist_ok=True)


def peft_config_dict(rank: int, alpha: float, targets: tuple[str, ...], rslora: bool, base: str) -> dict:
    """adapter_config.json as this PEFT version writes it (built by peft.LoraConfig itself)."""
    from peft import LoraConfig

    config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, bias="none",
        use_rslora=rslora, task_type="CAUSAL_LM", base_model_name_or_path=base,
    )  # fmt: skip
    data = config.to_dict()
    data["target_modules"] = list(targets)
    return json.loads(json.dumps(data, default=lambda v: sorted(v) if isinstance(v, set) else str(v)))


def write_adapter(folder: Path, params: dict[str, torch.Tensor], config: dict) -> None:
    """The PEFT folder: weights first, then the config (a reader that finds the config finds the weights)."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().clone() for k, v in params.items()}
    with atomic_open(folder / WEIGHTS, "wb") as f:
        f.write(save(tensors, metadata={"format": "pt"}))
    with atomic_open(folder / CONFIG, "w") as f:
        json.dump(config, f, indent=2)


def save_checkpoint(folder: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_open(folder / CHECKPOINT, "wb") as f:
        f.write(buf.getvalue())


def load_checkpoint(folder: Path) -> dict:
    try:
        return torch.load(folder / CHECKPOINT, weights_only=False)
    except Exception as exc:  # noqa: BLE001 (any unreadable file is the same user error)
        raise AdapterError(f"cannot read {folder / CHECKPOINT}: {exc}") from None


def write_log(folder: Path, log: dict) -> None:
    with atomic_open(folder / LOG, "w") as f:
        json.dump(log, f, indent=2)
