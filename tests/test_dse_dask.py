"""The Dask path: a small LocalCluster (processes, one thread each) gives the rows the local path gives."""

import logging

import pytest
from dse_helpers import assert_same_rows, write_spec

from romachip.dse import DaskExecutor, LocalExecutor, SweepPlan, load_results, load_sweep_spec, run_sweep
from romachip.dse import executors as executors_mod

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=logging.ERROR)  # fmt: skip
    c = distributed.Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


def test_dask_rows_match_local_rows_and_resume(tmp_path, client):
    plan = SweepPlan(*load_sweep_spec(write_spec(tmp_path)))
    with LocalExecutor(1) as ex:
        run_sweep(plan, tmp_path / "local", executor=ex)
    with DaskExecutor(client=client) as ex:
        assert ex.workers == 2 and "Dask at tcp://" in ex.description
        summary = run_sweep(plan, tmp_path / "dask", executor=ex, batch_size=1)
    assert summary.by_status == {"ok": 4}
    assert_same_rows(load_results(tmp_path / "dask").rows, load_results(tmp_path / "local").rows)
    with DaskExecutor(client=client) as ex:
        again = run_sweep(plan, tmp_path / "dask", executor=ex, resume=True)
    assert again.computed == 0
    assert client.status == "running"  # a client the caller owns is left open


def test_dask_address_forms_are_checked():
    with pytest.raises(executors_mod.SweepError, match="give local:N or a scheduler address"):
        DaskExecutor("somehost:8786")
