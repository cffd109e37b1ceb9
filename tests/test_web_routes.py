"""The sweep page's routes without a browser (tests/test_web.py drives both pages in Chromium): what the
page reads, its export, and the errors a user can cause."""

from __future__ import annotations

import pytest
import yaml
from dse_helpers import write_spec
from fastapi.testclient import TestClient

from romachip.cli.main import main
from romachip.dse import LocalExecutor, SweepPlan, load_results, load_sweep_spec, run_sweep
from romachip.dse.answer import analyse
from romachip.serve.sweep_page import create_sweep_app


@pytest.fixture(scope="module")
def results(tmp_path_factory):  # noqa: ANN001, ANN201
    tmp = tmp_path_factory.mktemp("sweep-routes")
    with LocalExecutor(1) as ex:
        run_sweep(SweepPlan(*load_sweep_spec(write_spec(tmp))), tmp / "R", executor=ex)
    return tmp / "R"


def test_the_document_holds_every_feasible_design_and_marks_the_front(results) -> None:  # noqa: ANN001
    (answer,) = analyse(load_results(results))
    client = TestClient(create_sweep_app(results))
    assert client.get("/", follow_redirects=False).headers["location"] == "/sweep"
    assert "<svg" in client.get("/sweep").text and client.get("/static/sweep.js").status_code == 200
    (w,) = client.get("/api/sweep").json()["workloads"]
    assert {p["key"] for p in w["points"]} == {r["key"] for r in answer.feasible}
    assert {p["key"] for p in w["points"] if p["front"]} == {r["key"] for r in answer.front}
    assert [o["metric"] for o in w["objectives"]] == ["tokens_per_j", "tokens_per_s", "area_mm2"]
    by_key = {r["key"]: r for r in answer.feasible}
    for p in w["points"]:
        assert p["metrics"]["tokens_per_s"] == by_key[p["key"]]["tokens_per_s"]
        assert p["axes"]["clock_hz"] == by_key[p["key"]]["axis:clock_hz"]


def test_export_writes_the_chip_yaml_and_refuses_what_is_not_there(results) -> None:  # noqa: ANN001
    (answer,) = analyse(load_results(results))
    client = TestClient(create_sweep_app(results))
    key = answer.front[0]["key"]
    r = client.get("/api/sweep/export", params={"workload": "1b", "key": key})
    assert r.status_code == 200 and r.headers["x-romachip-path"].startswith(str((results / "exported").resolve()))
    assert yaml.safe_load(r.text)["name"].endswith(key[:10])
    missing = client.get("/api/sweep/export", params={"workload": "1b", "key": "nope"})
    assert missing.status_code == 404 and "no feasible design 'nope'" in missing.json()["error"]["message"]
    wrong = client.get("/api/sweep/export", params={"workload": "7b", "key": key})
    assert wrong.status_code == 404 and "no workload '7b'" in wrong.json()["error"]["message"]
    assert client.get("/static/../sweep_page.py").status_code == 404
    assert client.get("/static/secret.txt").status_code == 404


def test_serve_on_a_folder_that_holds_no_sweep_exits_2_before_listening(tmp_path, capsys) -> None:  # noqa: ANN001
    assert main(["sweep", "show", str(tmp_path / "nothing"), "--serve", "--port", "1"]) == 2
    assert "error:" in capsys.readouterr().err
