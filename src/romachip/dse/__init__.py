"""Design-space exploration: sweep specs, executors (local processes, Dask), Parquet results, Pareto fronts.

`load_sweep_spec` + `SweepPlan` turn a YAML spec into checked design points; `run_sweep` evaluates them on
an `Executor` (`LocalExecutor`, `DaskExecutor`) into a results folder; `load_results`, `pareto_front` and
`rank` read the answer back. Every point is evaluated by the capacity planner and the perf model
(`romachip.capacity.plan`, `romachip.perf.ChipModel`) through their Python APIs.
"""

from romachip.dse.executors import DaskExecutor, Executor, LocalExecutor, make_executor
from romachip.dse.pareto import feasible, non_dominated, pareto_front, rank
from romachip.dse.points import SweepPlan, Task, model_version
from romachip.dse.results import Results, load_results
from romachip.dse.run import DEFAULT_MAX_POINTS, SweepSummary, planned_points, run_sweep
from romachip.dse.spec import METRICS, SweepSpec, load_sweep_spec

__all__ = [
    "DEFAULT_MAX_POINTS",
    "METRICS",
    "DaskExecutor",
    "Executor",
    "LocalExecutor",
    "Results",
    "SweepPlan",
    "SweepSpec",
    "SweepSummary",
    "Task",
    "feasible",
    "load_results",
    "load_sweep_spec",
    "make_executor",
    "model_version",
    "non_dominated",
    "pareto_front",
    "planned_points",
    "rank",
    "run_sweep",
]
