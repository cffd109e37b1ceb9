"""Reference devices: rooflines by hand, efficiencies fitted to ROMA's measurements, the phone's assumed."""

import pytest

from romachip.baselines import (
    CALIBRATION_CONTEXT,
    CALIBRATION_FORMAT,
    DeviceSpec,
    baseline,
    load_devices,
    roofline,
)
from romachip.graph import decode_ops, totals
from romachip.spec import load_model_spec


@pytest.fixture(scope="module")
def devices():
    return {d.name: d for d in load_devices()}


def test_roofline_is_bytes_over_bandwidth(devices):
    spec = load_model_spec("llama-3.2-3b")
    cpu = devices["i5-1135g7"]
    t = totals(decode_ops(spec, 256, fmt=CALIBRATION_FORMAT, kv_bytes_per_element=2))
    rate, bound = roofline(cpu, spec, CALIBRATION_FORMAT, 256)
    assert bound == "memory"
    assert rate == pytest.approx(51.2e9 / (t.weight_bits_read / 8 + t.kv_bytes_read))


def test_measured_devices_reproduce_their_measurement(devices):
    spec = load_model_spec("llama-3.2-3b")
    for name, measured in (("i5-1135g7", 6.8), ("rtx-4090", 219.0)):
        b = baseline(devices[name], spec, CALIBRATION_FORMAT, CALIBRATION_CONTEXT)
        assert b.efficiency_source == "fitted to a measurement"
        assert b.tokens_per_s == pytest.approx(measured)
        assert 0 < b.efficiency < 1


def test_phone_efficiency_is_an_assumption_and_longer_context_is_slower(devices):
    spec = load_model_spec("llama-3.2-3b")
    phone = devices["phone-lpddr5x"]
    short, long = (baseline(phone, spec, CALIBRATION_FORMAT, c) for c in (256, 4096))
    assert short.efficiency_source == "assumption" and short.efficiency == 0.5
    assert long.tokens_per_s < short.tokens_per_s
    assert short.energy_per_token_mj == pytest.approx(phone.power_w / short.tokens_per_s * 1e3)


def test_a_device_needs_exactly_one_efficiency_source():
    base = {"name": "x", "memory_bandwidth_bytes_per_s": 1e9, "peak_ops_per_s": 1e12, "power_w": 1.0}
    with pytest.raises(ValueError, match="exactly one"):
        DeviceSpec(**base)
    with pytest.raises(ValueError, match="exactly one"):
        DeviceSpec(**base, measured_tokens_per_s=1.0, efficiency=0.5)
