"""Generate docs/config-reference.md from the pydantic schemas, so the reference never drifts.

Run `python -m romachip.spec.reference > docs/config-reference.md`; a test checks it is current.
"""

from __future__ import annotations

import re
from types import UnionType
from typing import Union, get_args, get_origin

from pydantic import BaseModel

from romachip.spec.chip import ChipSpec
from romachip.spec.model import ModelSpec
from romachip.spec.tech import HostLinkSpec, TechSpec


def _type_name(annotation: object) -> str:
    name = getattr(annotation, "__name__", None)
    if name and "[" not in str(annotation):
        return name
    text = str(annotation).replace("typing.", "")
    return re.sub(r"Annotated\[(\w+), [^\]]*\]", r"\1", text)


def _nested_model(annotation: object) -> type[BaseModel] | None:
    """The pydantic model of a field typed `Model` or `Model | None` (expanded in the reference)."""
    union = get_origin(annotation) in (Union, UnionType)
    args = [a for a in get_args(annotation) if a is not type(None)] if union else [annotation]
    if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0]
    return None


def _model_rows(model: type[BaseModel], prefix: str, nested: list[tuple[str, type[BaseModel]]]) -> list[str]:
    rows = []
    for field_name, field in model.model_fields.items():
        ann = field.annotation
        sub = _nested_model(ann)
        if sub is not None:
            nested.append((f"{prefix}{field_name}.", sub))
            optional = " or none" if sub is not ann else ""
            desc = (field.description or (sub.__doc__ or "").strip().split("\n")[0]).replace("|", "\\|")
            rows.append(f"| `{prefix}{field_name}` | {sub.__name__}{optional} | {desc} |")
            continue
        desc = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{field_name}` | `{_type_name(ann)}` | {desc} |")
    return rows


def model_reference(model: type[BaseModel], title: str) -> str:
    lines = [f"## {title}", "", (model.__doc__ or "").strip().split("\n")[0], "", "| field | type | meaning |"]
    lines.append("|---|---|---|")
    queue: list[tuple[str, type[BaseModel]]] = [("", model)]
    while queue:
        prefix, cls = queue.pop(0)
        nested: list[tuple[str, type[BaseModel]]] = []
        lines.extend(_model_rows(cls, prefix, nested))
        queue.extend(nested)
    return "\n".join(lines) + "\n"


def render() -> str:
    parts = [
        "# Configuration reference",
        "",
        "Generated from the pydantic schemas by `python -m romachip.spec.reference`; do not edit by hand.",
        "Chip, technology and host-link specs are YAML (see `src/romachip/spec/presets/`, `spec/tech/` and",
        "`spec/hosts/`; `romachip presets --show NAME` prints one to start from); model specs",
        "are read from a Hugging Face `config.json`.",
        "",
        model_reference(ChipSpec, "ChipSpec (chip presets)"),
        model_reference(TechSpec, "TechSpec (technology presets)"),
        model_reference(HostLinkSpec, "HostLinkSpec (host link presets, spec/hosts/)"),
        model_reference(ModelSpec, "ModelSpec (from config.json)"),
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
