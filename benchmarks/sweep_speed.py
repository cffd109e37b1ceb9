"""Sweep speed: design points per minute for decode-only objectives, 1 and 2 local workers, as a ratio
against one `romachip simulate` call.

    .venv/bin/python benchmarks/sweep_speed.py [--points 120] [--json]

Measured in one run:
- `simulate_call_s`: the wall time of one `romachip simulate` command (Llama-3.2-3B 4-bit, rank-16 LoRA,
  the roma preset; imports included): what answering one design question costs without a sweep;
- a grid of `--points` designs around roma (clock, NoC width, attention MACs, L-Unit MACs; no ties), each
  point = the capacity plan at 1K context + decode at contexts 1024 and 0 + energy and area (the
  "decode-only objectives" of issue 9), run by `run_sweep` into a temporary folder with 1 worker (in
  process) and with 2 local worker processes;
- `points_per_simulate_call`: how many sweep points fit in the time of one simulate call, per worker;
- `scaling_2_over_1`: the 2-worker rate over the 1-worker rate (2.0 is linear). The goal is >= 1,000
  points/min with 2 workers on a 2-core machine;
- `points_per_cpu_min_*`: points per CPU-minute (this process and its workers), which a machine shared
  with other work moves much less than the wall-clock rates.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from romachip.dse import LocalExecutor, SweepPlan, SweepSpec, run_sweep

GOAL_POINTS_PER_MIN = 1000


def _spec(points: int) -> SweepSpec:
    clocks = [250e6 + 25e6 * i for i in range(max(1, points // 36 + 1))]
    return SweepSpec.model_validate(
        {
            "name": "sweep-speed",
            "axes": {
                "noc.link_width_bits": {"values": [1024, 2048, 4096, 8192]},
                "h_unit.attention_macs_per_cycle": {"values": [96, 192, 384]},
                "l_unit.macs_per_cycle_by_weight_bits.4": {"values": [512, 1024, 2048]},
                "clock_hz": {"values": clocks},
            },
            "workloads": [{"model": "llama-3.2-3b", "context_tokens": 1024, "report_contexts": [0]}],
            "objectives": [{"metric": "tokens_per_j"}, {"metric": "tokens_per_s"}],
        }
    )


def _simulate_call_s() -> float:
    cmd = [sys.executable, "-m", "romachip.cli.main", "simulate", "--model", "llama-3.2-3b", "--json"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def _cpu_s() -> float:
    """CPU seconds of this process and of its reaped children (the pool's workers, once shut down)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _rate(workers: int, points: int) -> tuple[float, float, int]:
    """(points/min of wall time, points per CPU-minute, points)."""
    plan = SweepPlan(_spec(points), Path.cwd())
    cpu = _cpu_s()
    with tempfile.TemporaryDirectory() as tmp, LocalExecutor(workers) as ex:  # the pool is reaped on exit
        s = run_sweep(plan, Path(tmp) / "R", executor=ex, batch_size=4)
    cpu = _cpu_s() - cpu
    assert s.by_status.get("ok", 0) == s.computed, s.by_status
    return s.points_per_s * 60, s.computed / cpu * 60, s.computed


def measure(points: int) -> dict:
    sim_s = _simulate_call_s()
    one, one_cpu, n1 = _rate(1, points)
    two, two_cpu, _ = _rate(2, points)
    return {
        "simulate_call_s": sim_s,
        "points": n1,
        "points_per_min_1_worker": one,
        "points_per_min_2_workers": two,
        "scaling_2_over_1": two / one,
        "points_per_cpu_min_1_worker": one_cpu,
        "points_per_cpu_min_2_workers": two_cpu,
        "points_per_simulate_call": sim_s * one / 60,
        "goal_points_per_min": GOAL_POINTS_PER_MIN,
        "meets_goal": two >= GOAL_POINTS_PER_MIN,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=120, help="Designs in the grid (rounded up to a multiple of 36).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = measure(args.points)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"one `romachip simulate` call: {r['simulate_call_s']:.2f} s")
    print(f"sweep of {r['points']} decode-only points: {r['points_per_min_1_worker']:,.0f} points/min on 1 worker, "
          f"{r['points_per_min_2_workers']:,.0f} on 2 (x{r['scaling_2_over_1']:.2f})")  # fmt: skip
    print(f"CPU cost: {r['points_per_cpu_min_1_worker']:,.0f} points per CPU-minute on 1 worker, "
          f"{r['points_per_cpu_min_2_workers']:,.0f} on 2 (an idle 2-core machine: twice that per minute)")  # fmt: skip
    print(f"{r['points_per_simulate_call']:.1f} sweep points per worker in the time of one simulate call")
    print(f"goal >= {GOAL_POINTS_PER_MIN:,} points/min on 2 workers: {'met' if r['meets_goal'] else 'not met'}")


if __name__ == "__main__":
    main()
