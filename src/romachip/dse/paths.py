"""Dotted paths into a chip design: `l_unit.rom.macro_rows`, `l_unit.macs_per_cycle_by_weight_bits.4`,
`clock_hz`, `tech` (the chip's technology preset) and `tech.<field>` (a field of that TechSpec).

A path is checked against the pydantic schema before any point runs (unknown segments are named, with
the closest match), and every value an axis or tie gives it is validated against the field's type.
Designs are plain dicts (`model_dump()` of ChipSpec and TechSpec); `get` and `put` walk them.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from romachip.errors import SweepError
from romachip.spec.chip import ChipSpec
from romachip.spec.tech import TechSpec

TECH_PREFIX = "tech."


@dataclass(frozen=True)
class FieldPath:
    """A checked path: which spec it addresses, its segments (dict keys already converted), its type."""

    text: str
    root: str  # "chip" or "tech"
    parts: tuple[str | int, ...]
    annotation: Any

    def check_value(self, value: Any, where: str) -> Any:
        """The value validated (and coerced) against the field's type, or SweepError naming both."""
        try:
            return TypeAdapter(self.annotation).validate_python(value)
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"]
            raise SweepError(f"{where}: {value!r} is not a valid value for '{self.text}': {msg}") from None


def _unwrap(annotation: Any) -> Any:
    """`X | None` -> X (the sweep sets a value, never None)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def resolve(text: str) -> FieldPath:
    """Check a dotted path against ChipSpec / TechSpec and return its segments and leaf type."""
    if not text or any(not seg for seg in text.split(".")):
        raise SweepError(f"path {text!r} is empty or has an empty segment; write e.g. 'l_unit.rom.macro_rows'")
    if text.startswith(TECH_PREFIX):
        root, model, segs = "tech", TechSpec, text[len(TECH_PREFIX) :].split(".")
    else:
        root, model, segs = "chip", ChipSpec, text.split(".")
    annotation: Any = model
    parts: list[str | int] = []
    for i, seg in enumerate(segs):
        annotation = _unwrap(annotation)
        origin = typing.get_origin(annotation)
        done = ".".join(segs[:i]) or root
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = annotation.model_fields
            if seg not in fields:
                close = difflib.get_close_matches(seg, list(fields), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; fields: {', '.join(fields)}"
                raise SweepError(f"unknown path '{text}': {annotation.__name__} has no field '{seg}'{hint}")
            parts.append(seg)
            annotation = fields[seg].annotation
        elif origin is dict:
            key_type, annotation = typing.get_args(annotation)
            try:
                parts.append(TypeAdapter(key_type).validate_python(seg, strict=False))
            except ValidationError:
                raise SweepError(f"path '{text}': key {seg!r} of '{done}' must be a {key_type.__name__}") from None
        elif origin is list:
            if not seg.isdigit():
                raise SweepError(f"path '{text}': '{done}' is a list, index it with a number, got {seg!r}")
            parts.append(int(seg))
            annotation = typing.get_args(annotation)[0]
        else:
            raise SweepError(f"path '{text}': '{done}' is a plain value, it has no '{seg}'")
    if isinstance(_unwrap(annotation), type) and issubclass(_unwrap(annotation), BaseModel):
        raise SweepError(f"path '{text}' names a whole section; sweep one of its fields (e.g. '{text}.<field>')")
    return FieldPath(text, root, tuple(parts), annotation)


def get(design: dict, path: FieldPath) -> Any:
    """The value at `path` in a design {'chip': dict, 'tech': dict}; None when a dict key is absent."""
    node: Any = design[path.root]
    for part in path.parts:
        if isinstance(node, dict):
            if part not in node:
                return None
            node = node[part]
        elif isinstance(node, list):
            if not 0 <= int(part) < len(node):
                return None
            node = node[int(part)]
        else:
            return None
    return node


def put(design: dict, path: FieldPath, value: Any) -> None:
    """Set `path` in a design in place (the caller owns the dicts; see `copy_design`)."""
    node: Any = design[path.root]
    for part in path.parts[:-1]:
        node = node[part]
    last = path.parts[-1]
    if isinstance(node, list) and not 0 <= int(last) < len(node):
        raise SweepError(f"path '{path.text}': index {last} is outside the list of {len(node)} items")
    node[last] = value


def copy_design(design: dict) -> dict:
    """A deep copy of a design's nested dicts and lists (values are scalars)."""

    def dup(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: dup(v) for k, v in x.items()}
        if isinstance(x, list):
            return [dup(v) for v in x]
        return x

    return dup(design)
