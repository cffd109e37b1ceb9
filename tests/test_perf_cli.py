"""`romachip simulate` and `romachip reproduce` end to end, the Chrome trace, and their error paths."""

import json

import pytest

from romachip.cli.main import main
from romachip.report.reproduce import TOLERANCE


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_simulate_json_keys_and_trace(capsys, tmp_path):
    trace = tmp_path / "t.json"
    d = run_json(
        capsys,
        ["simulate", "--model", "llama-3.2-1b", "--prompt", "64", "--generate", "300", "--json", "--trace", str(trace)],
    )
    for key in ("ttft_ms", "decode_tokens_per_s", "decode_tokens_per_s_by_context", "energy_per_token_mj",
                "power_w", "area_mm2", "area_breakdown_mm2", "lora_time_share", "lora_energy_share"):  # fmt: skip
        assert key in d
    by_ctx = {int(k): v for k, v in d["decode_tokens_per_s_by_context"].items()}
    assert min(by_ctx) == 64 and max(by_ctx) == 64 + 300 - 2  # first and last context of the run
    assert by_ctx[64] >= by_ctx[362]
    assert d["decode_tokens_per_s_last"] <= d["decode_tokens_per_s"] <= d["decode_tokens_per_s_first"]
    assert sum(d["area_breakdown_mm2"].values()) == pytest.approx(d["area_mm2"])
    doc = json.loads(trace.read_text())
    events = doc["traceEvents"]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    procs = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert sorted(procs.values()) == ["decode at context 362", "decode at context 64", "prefill"]
    tracks = set(names.values())
    for track in ("L-Unit (group 0)", "H-Unit (group 0)", "vector units", "NoC links: vector row -> matrix units",
                  "NoC links: matrix units -> vector row", "NoC links: along the vector row"):  # fmt: skip
        assert track in tracks
    spans = [e for e in events if e["ph"] == "X"]
    assert spans and all(e["dur"] >= 0 and (e["pid"], e["tid"]) in names for e in spans)
    assert any(e["name"] == "layers.0.q_proj" for e in spans)


def test_simulate_table_output(capsys):
    assert main(["simulate", "--model", "llama-3.2-1b", "--prompt", "32", "--generate", "2"]) == 0
    out = capsys.readouterr().out
    assert "TTFT" in out and "tok/s" in out and "mJ" in out and "mm²" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prompt", "0"], "Invalid value for '--prompt'"),
        (["--storage-policy", "cloud"], "unknown storage policy 'cloud'"),
        (["--prompt", "100000"], "does not fit"),
        (["--chip", "nope"], "unknown chip 'nope'"),
    ],
)
def test_simulate_refuses_bad_requests(capsys, argv, message):
    assert main(["simulate", "--model", "llama-3.2-1b", *argv]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")


def test_reproduce_lands_every_calibration_figure(capsys, tmp_path):
    d = run_json(capsys, ["reproduce", "--out", str(tmp_path / "r"), "--json"])
    cal = [f for f in d["figures"] if f["kind"] == "calibrated"]
    # decode x2, TTFT, power, 4 area shares, 4 L-Unit areas and 4 powers, 4 ROM macro densities, CPU and GPU
    assert len(cal) == 22
    kinds = {f["name"]: f["kind"] for f in d["figures"]}
    assert kinds["die area"] == kinds["energy per token (33.1 W / 31.8K) [I]"] == "derived-from-calibrated"
    for f in cal:
        assert abs(f["rel_error"]) <= TOLERANCE, f
    names = {f["name"] for f in d["figures"]}
    assert {"decode, empty KV cache", "decode, 1K tokens in KV", "TTFT, 256-token prompt", "die area"} <= names
    for path in d["files"]:
        assert (tmp_path / "r" / path.split("/")[-1]).stat().st_size > 0
    report = (tmp_path / "r" / "report.md").read_text()
    assert "Predictions" in report and "Llama-3-8B, 2-bit" in report and "288 MiB" in report
    assert "### Sensitivity" in report and "`tech.energy.wire_pj_per_bit_mm`" in report
    assert "| die area | mm² | 503.7 |" in report  # the paper's figure as the paper gives it, not rounded to 504
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    sens = {r["field"]: r["change_pct"] for r in results["predictions"]["sensitivity"]["rows"]}
    # wire energy moves energy, not time or area; vector lanes move time, the MAC area moves area
    lo, hi = sens["energy.wire_pj_per_bit_mm"]["mj_per_token"]
    assert lo < 0 < hi and sens["energy.wire_pj_per_bit_mm"]["tokens_per_s"] == [0.0, 0.0]
    assert sens["mac_area_um2.bfp16_int4"]["area_mm2"][1] > 0
    decode = results["predictions"]["decode_and_ttft"]["Llama-3.2-3B, 4-bit"]["decode_tokens_per_s"]
    rates = [decode[k] for k in ("0", "256", "512", "1024", "2048", "4096")]
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
