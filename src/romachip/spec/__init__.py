"""What things are: chip, technology and model specs, validated pydantic models loaded from data."""

from romachip.spec.chip import ChipSpec, list_chips, load_chip
from romachip.spec.model import ModelSpec, list_models, load_model_spec
from romachip.spec.tech import TechSpec, load_tech

__all__ = [
    "ChipSpec",
    "ModelSpec",
    "TechSpec",
    "list_chips",
    "list_models",
    "load_chip",
    "load_model_spec",
    "load_tech",
]
