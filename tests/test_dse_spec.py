"""Sweep specs: validation and its error messages, dotted paths, ties, stable hashes, Pareto fronts."""

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from dse_helpers import SMALL, write_spec

from romachip.dse import SweepPlan, SweepSpec, load_sweep_spec, non_dominated, pareto_front, planned_points
from romachip.dse.evaluate import evaluate
from romachip.dse.paths import resolve
from romachip.dse.points import stable_hash
from romachip.dse.spec import Axis, Constraint, Objective
from romachip.dse.ties import compile_tie
from romachip.errors import SweepError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def plan_of(data: dict, tmp_path: Path) -> SweepPlan:
    return SweepPlan(*load_sweep_spec(write_spec(tmp_path, data)))


def test_example_specs_load_and_count():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        plan = SweepPlan(*load_sweep_spec(path))
        assert planned_points(plan) >= 1
    roma = SweepPlan(*load_sweep_spec(EXAMPLES / "roma-3b.yaml"))
    assert roma.grid_points >= 500  # the issue's >= 500-point grid


def test_axis_ranges_expand_as_written():
    assert Axis(range={"start": 256, "stop": 1024, "step": 256}).expand() == [256, 512, 768, 1024]
    assert Axis(log_range={"start": 250e6, "stop": 1e9, "num": 3}).expand() == [250e6, 500e6, 1e9]
    assert Axis(log_range={"start": 1, "stop": 8, "num": 7, "integer": True}).expand() == [1, 2, 3, 4, 6, 8]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("l_unit.rom.macro_row", "has no field 'macro_row'; did you mean 'macro_rows'?"),
        ("mesh.rows.x", "'mesh.rows' is a plain value, it has no 'x'"),
        (
            "l_unit.macs_per_cycle_by_weight_bits.four",
            "key 'four' of 'l_unit.macs_per_cycle_by_weight_bits' must be a int",
        ),
        ("l_unit.rom", "names a whole section"),
        ("tech.energy.nope_pj", "EnergyTable has no field 'nope_pj'"),
        ("a..b", "empty segment"),
    ],
)
def test_unknown_paths_are_named(path, message):
    with pytest.raises(SweepError, match=message.replace("(", r"\(").replace("?", r"\?")):
        resolve(path)


def test_paths_reach_dict_keys_lists_and_the_tech():
    assert resolve("l_unit.macs_per_cycle_by_weight_bits.4").parts == ("l_unit", "macs_per_cycle_by_weight_bits", 4)
    assert resolve("mesh.row_roles.8").parts == ("mesh", "row_roles", 8)
    t = resolve("tech.energy.mac_pj.int8")
    assert (t.root, t.parts) == ("tech", ("energy", "mac_pj", "int8"))
    assert resolve("tech").root == "chip"  # the chip's tech preset name


def test_axis_of_the_wrong_type_is_refused(tmp_path):
    data = copy.deepcopy(SMALL)
    data["axes"]["noc.link_width_bits"] = {"values": [2048, "wide"]}
    with pytest.raises(SweepError, match=r"axis 'noc.link_width_bits': 'wide' is not a valid value"):
        plan_of(data, tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(axes={}), "at least one axis"),
        (lambda d: d["axes"].update({"clock_hz": {"values": []}}), "axis 'clock_hz' has no values"),
        (lambda d: d["axes"].update({"clock_hz": {"values": [1.0], "range": {"start": 1, "stop": 2, "step": 1}}}),
         "exactly one of values, range, log_range"),
        (lambda d: d.update(objectives=[{"metric": "speed"}]), "unknown metric 'speed'"),
        (lambda d: d.update(constraints=["area_mm2 < 3"]), "write 'METRIC <= VALUE'"),
        (lambda d: d.update(search={"method": "random"}), "needs a budget"),
        (lambda d: d.update(surprise=1), "field 'surprise': Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_bad_specs_say_what_is_wrong(tmp_path, edit, message):
    data = copy.deepcopy(SMALL)
    edit(data)
    with pytest.raises(SweepError, match=message):
        plan_of(data, tmp_path)


def test_missing_spec_and_unknown_base_chip(tmp_path):
    with pytest.raises(SweepError, match="does not exist"):
        load_sweep_spec(tmp_path / "nope.yaml")
    data = copy.deepcopy(SMALL)
    data["base"] = {"chip": "no-such-chip"}
    with pytest.raises(Exception, match="unknown chip 'no-such-chip'"):
        plan_of(data, tmp_path)


def test_ties_parse_safely_and_name_their_faults():
    tie = compile_tie("h_unit.sram.macros", "ceil(18 * 8192 / h_unit.sram.macro_rows)")
    assert set(tie.paths) == {"h_unit.sram.macro_rows"}
    for expr, message in [
        ("__import__('os')", "unknown function __import__"),
        ("l_unit.rom.macro_rows.real", "has no 'real'"),
        ("[1, 2]", "is not allowed"),
        ("1 +", "not an expression"),
        ("fit_rom_macros(3)", "takes no arguments"),
    ]:
        with pytest.raises(SweepError, match=message):
            compile_tie("l_unit.rom.macros", expr)


def test_tie_values_reach_the_design(tmp_path):
    data = copy.deepcopy(SMALL)
    data["axes"] = {"h_unit.sram.macro_rows": {"values": [4096, 8192]}}
    data["ties"] = {"h_unit.sram.macros": "ceil(18 * 8192 / h_unit.sram.macro_rows)", "process_node_nm": "tech.node_nm"}
    plan = plan_of(data, tmp_path)
    rows = [evaluate(plan.task(v, plan.workloads[0])) for v in plan.grid()]
    tied = [json.loads(r["tied"]) for r in rows]
    assert tied == [{"h_unit.sram.macros": 36, "process_node_nm": 7}, {"h_unit.sram.macros": 18, "process_node_nm": 7}]
    # the same SRAM bytes either way, so the same maximum context
    assert rows[0]["max_context_tokens"] == rows[1]["max_context_tokens"]


def test_fit_rom_macros_gives_the_fewest_macros_that_fit(tmp_path):
    data = copy.deepcopy(SMALL)
    data["axes"] = {"l_unit.rom.macro_rows": {"values": [1024, 4096]}}
    data["ties"] = {"l_unit.rom.macros": "fit_rom_macros()"}
    plan = plan_of(data, tmp_path)
    for values in plan.grid():
        row = evaluate(plan.task(values, plan.workloads[0]))
        macros = json.loads(row["tied"])["l_unit.rom.macros"]
        assert row["status"] == "ok" and row["rom_utilization"] <= 1
        fewer = copy.deepcopy(json.loads(row["chip_json"]))
        fewer["l_unit"]["rom"]["macros"] = macros - 1
        task = plan.task(values, plan.workloads[0])
        short = evaluate(type(task)(task.key, task.workload, {"chip": fewer, "tech": task.design["tech"]}, (), {}))
        assert short["status"] == "does_not_fit", short["reason"]
        assert "ROM: the fullest L-Unit needs" in short["reason"]


def test_keys_are_stable_and_change_with_what_they_depend_on(tmp_path, monkeypatch):
    canonical = b'{"a":{"4":1},"b":[1,2.5,"x"]}'  # sorted keys, no spaces
    assert stable_hash({"b": [1, 2.5, "x"], "a": {"4": 1}}) == hashlib.sha256(canonical).hexdigest()[:20]
    plan = plan_of(SMALL, tmp_path)
    keys = [plan.task(v, plan.workloads[0]).key for v in plan.grid()]
    assert len(set(keys)) == 4
    # the axes in another order: the same designs, the same keys
    swapped = copy.deepcopy(SMALL)
    swapped["axes"] = dict(reversed(list(SMALL["axes"].items())))
    again = plan_of(swapped, tmp_path / "..")
    assert sorted(again.task(v, again.workloads[0]).key for v in again.grid()) == sorted(keys)
    other = copy.deepcopy(SMALL)
    other["workloads"][0]["lora_rank"] = 8
    assert plan_of(other, tmp_path).task((250.0e6, 2048), plan.workloads[0]).key == keys[0]
    changed = plan_of(other, tmp_path)
    assert changed.task((250.0e6, 2048), changed.workloads[0]).key != keys[0]
    monkeypatch.setattr(plan, "version", "0.0.0+other-model")
    assert plan.task((250.0e6, 2048), plan.workloads[0]).key != keys[0]


def test_non_dominated_on_a_hand_made_set():
    # (tokens/s max, mJ min): d is dominated by a; e by b; c and the duplicate of a stay
    pts = np.array([[10, 1.0], [20, 2.0], [30, 3.5], [9, 1.1], [19, 2.5], [10, 1.0], [np.nan, 0.1]])
    mask = non_dominated(pts, ["max", "min"])
    assert mask.tolist() == [True, True, True, False, False, True, False]
    assert non_dominated(pts[:3], ["min", "min"]).tolist() == [True, False, False]
    rows = [{"s": float(a), "e": float(b)} for a, b in pts]
    objs = [Objective(metric="tokens_per_s"), Objective(metric="mj_per_token")]
    rows = [{"tokens_per_s": r["s"], "mj_per_token": r["e"]} for r in rows]
    front = pareto_front(rows, objs)
    assert [r["tokens_per_s"] for r in front] == [30, 20, 10, 10]  # best first objective first


def test_constraints_parse_numbers_and_base():
    assert Constraint.parse("area_mm2 <= base").base_factor == 1.0
    c = Constraint.parse("tokens_per_s >= 1.5 * base")
    assert (c.op, c.value, c.base_factor) == (">=", None, 1.5)
    assert Constraint.parse("power_w <= 40").value == 40.0
    assert SweepSpec.model_validate(SMALL).parsed_constraints()[0].describe() == "area_mm2 <= base"


def test_dse_reference_is_current():
    from romachip.dse.reference import render

    doc = Path(__file__).resolve().parents[1] / "docs" / "dse-reference.md"
    assert doc.read_text() == render(), "regenerate: python -m romachip.dse.reference > docs/dse-reference.md"
    for name in ("`axes`", "`context_tokens`", "`log_range`", "`tokens_per_j`", "`fit_rom_macros()`"):
        assert name in render()
