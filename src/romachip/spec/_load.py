"""Shared loading of YAML presets into pydantic models, with errors that name the file and field."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from romachip.errors import SpecError

T = TypeVar("T", bound=BaseModel)


def preset_names(folder: str) -> list[str]:
    root = resources.files("romachip.spec") / folder
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def load_yaml_model(cls: type[T], name_or_path: str | Path, folder: str, kind: str) -> T:
    """Load a shipped preset by name, or a YAML file by path, into `cls`."""
    key = str(name_or_path)
    if key in preset_names(folder):
        text = (resources.files("romachip.spec") / folder / f"{key}.yaml").read_text()
        where = f"{kind} preset {key!r}"
    else:
        path = Path(key)
        if not path.is_file():
            raise SpecError(f"unknown {kind} {key!r}: not a preset ({', '.join(preset_names(folder))}) nor a YAML file")
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError(f"cannot read {kind} file {path}: {exc.strerror}") from None
        where = f"{kind} file {path}"
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
