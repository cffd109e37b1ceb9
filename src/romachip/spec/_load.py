"""Shared loading of YAML presets into pydantic models, with errors that name the file and field."""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from romachip.errors import PathError, SpecError
from romachip.files import read_text

T = TypeVar("T", bound=BaseModel)

#: A chip or tech YAML is a page of numbers; anything larger is not a spec (and is not read whole).
MAX_SPEC_BYTES = 1 * 2**20


def preset_names(folder: str) -> list[str]:
    return list(_shipped_names(folder))


@lru_cache(maxsize=8)
def _shipped_names(folder: str) -> tuple[str, ...]:
    # listed once per process: the shipped folders do not change while it runs, and a sweep loads a
    # chip, tech and host preset at every design point
    root = resources.files("romachip.spec") / folder
    return tuple(sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml")))


def load_yaml_model(cls: type[T], name_or_path: str | Path, folder: str, kind: str) -> T:
    """Load a shipped preset by name, or a YAML file by path, into `cls`."""
    key = str(name_or_path)
    if key in _shipped_names(folder):
        return _load_preset(cls, key, folder, kind)
    return _load_file(cls, key, folder, kind)


@lru_cache(maxsize=64)
def _load_preset(cls: type[T], key: str, folder: str, kind: str) -> T:
    """A shipped preset, parsed once per process (the models are frozen, so sharing one is safe; a sweep
    builds thousands of ChipModels from the same technology)."""
    text = (resources.files("romachip.spec") / folder / f"{key}.yaml").read_text()
    return _parse(cls, text, f"{kind} preset {key!r}")


def _load_file(cls: type[T], key: str, folder: str, kind: str) -> T:
    path = Path(key)
    if not path.exists() and path.suffix not in (".yaml", ".yml") and os.sep not in key:
        raise SpecError(f"unknown {kind} {key!r}: not a preset ({', '.join(preset_names(folder))}) nor a YAML file")
    try:
        text = read_text(path, what=f"{kind} file", max_bytes=MAX_SPEC_BYTES)
    except PathError as exc:
        raise SpecError(str(exc)) from None
    return _parse(cls, text, f"{kind} file {path}")


def _parse(cls: type[T], text: str, where: str) -> T:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{where} must be a YAML mapping, got {type(data).__name__}")
    return validate(cls, data, where)


def validate(cls: type[T], data: dict, where: str) -> T:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise SpecError(f"{where}: field '{loc}': {err['msg']}") from None
