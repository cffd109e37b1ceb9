"""Reference devices (CPU, GPU, phone) as rooflines with an efficiency factor.

A decode step reads every weight once and the KV cache once, and does 2 ops per MAC; the roofline
time of a token is max(bytes / memory bandwidth, ops / peak ops). Real software reaches a fraction of
it: `efficiency = measured / roofline` on the workload ROMA measured (4-bit Llama-3.2-3B, a 256-token
input). Devices without a measurement carry an efficiency marked as an assumption in the preset.
Bytes and MACs come from the op graph (romachip.graph), so the baselines and the chip count the same
model.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from romachip.errors import SpecError
from romachip.graph import decode_ops, totals
from romachip.quant.formats import WeightFormat
from romachip.spec._load import validate
from romachip.spec.model import ModelSpec, load_model_spec

#: The workload of ROMA's CPU/GPU measurements (ROMA.md): 4-bit Llama-3.2-3B, a 256-token input.
CALIBRATION_MODEL = "llama-3.2-3b"
CALIBRATION_FORMAT = WeightFormat(bits=4, group_size=128)
CALIBRATION_CONTEXT = 256


class DeviceSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    name: str = Field(description="Device name.")
    description: str = Field("", description="What the device is.")
    memory_bandwidth_bytes_per_s: PositiveFloat = Field(description="Peak DRAM bandwidth.")
    peak_ops_per_s: PositiveFloat = Field(description="Peak ops per second at the weights' compute precision.")
    power_w: PositiveFloat = Field(description="Power while decoding (TDP or board power).")
    kv_bytes_per_element: PositiveInt = Field(2, description="Bytes per KV-cache element.")
    measured_tokens_per_s: PositiveFloat | None = Field(
        None, description="Measured decode rate on the calibration workload."
    )
    efficiency: PositiveFloat | None = Field(
        None, le=1, description="Share of the roofline reached (when not measured)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> DeviceSpec:
        if (self.measured_tokens_per_s is None) == (self.efficiency is None):
            raise ValueError("give exactly one of measured_tokens_per_s (fits the efficiency) or efficiency")
        return self


class DeviceSet(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    schema_version: Literal[1] = Field(1, description="Version of this schema.")
    devices: list[DeviceSpec] = Field(description="The reference devices.")


@dataclass(frozen=True)
class BaselineResult:
    device: str
    roofline_tokens_per_s: float
    efficiency: float
    efficiency_source: str  # "fitted to a measurement" or "assumption"
    tokens_per_s: float
    energy_per_token_mj: float
    bound: str  # memory or compute


def load_devices() -> list[DeviceSpec]:
    text = (resources.files("romachip.spec") / "baselines" / "devices.yaml").read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"baseline devices preset is not valid YAML: {exc}") from None
    return validate(DeviceSet, data, "baseline devices preset").devices


def roofline(device: DeviceSpec, spec: ModelSpec, fmt: WeightFormat, context: int) -> tuple[float, str]:
    """(tokens/s, bound) of the roofline for one decode step at `context` tokens of KV cache."""
    t = totals(decode_ops(spec, context, fmt=fmt, kv_bytes_per_element=device.kv_bytes_per_element))
    bytes_per_token = t.weight_bits_read / 8 + t.kv_bytes_read
    memory_s = bytes_per_token / device.memory_bandwidth_bytes_per_s
    compute_s = 2 * t.macs / device.peak_ops_per_s
    return (1.0 / max(memory_s, compute_s), "memory" if memory_s >= compute_s else "compute")


def efficiency(device: DeviceSpec) -> tuple[float, str]:
    """The device's efficiency and where it comes from."""
    if device.efficiency is not None:
        return device.efficiency, "assumption"
    spec = load_model_spec(CALIBRATION_MODEL)
    peak, _ = roofline(device, spec, CALIBRATION_FORMAT, CALIBRATION_CONTEXT)
    return device.measured_tokens_per_s / peak, "fitted to a measurement"


def baseline(device: DeviceSpec, spec: ModelSpec, fmt: WeightFormat, context: int) -> BaselineResult:
    """Predicted decode rate and energy per token of a device on a model, format and context."""
    peak, bound = roofline(device, spec, fmt, context)
    eff, source = efficiency(device)
    rate = peak * eff
    return BaselineResult(device.name, peak, eff, source, rate, device.power_w / rate * 1e3, bound)
