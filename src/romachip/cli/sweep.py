"""`romachip sweep SPEC --out DIR` runs a design-space sweep; `romachip sweep show DIR` reads its answer."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import typer
from rich.table import Table

from romachip.cli.app import app, console, err_console, print_json, progress_bar
from romachip.dse import (
    DEFAULT_MAX_POINTS,
    METRICS,
    SweepPlan,
    load_results,
    load_sweep_spec,
    make_executor,
    rank,
    run_sweep,
)
from romachip.dse.answer import WorkloadAnswer, analyse, export_rows, fmt_value, short_path
from romachip.dse.run import check_size
from romachip.dse.spec import check_metric
from romachip.errors import SweepError

try:  # typer vendors click from 0.2x on; its group class is what a default subcommand needs
    from typer.core import TyperGroup
except ImportError:  # pragma: no cover
    TyperGroup = None  # type: ignore[assignment,misc]

PLAIN_PROGRESS_EVERY_S = 5.0


class _SpecOrCommand(TyperGroup):
    """`romachip sweep SPEC ...` is `romachip sweep run SPEC ...`; `show` and `run` are subcommands."""

    def resolve_command(self, ctx, args):  # noqa: ANN001, ANN201 (click's signature)
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().resolve_command(ctx, args)


sweep_app = typer.Typer(
    cls=_SpecOrCommand,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="Design-space exploration: evaluate thousands of chip designs (locally or on Dask) and read the "
    "Pareto front. `romachip sweep SPEC --out DIR` runs a sweep spec (see examples/ and docs/dse.md); "
    "`romachip sweep show DIR` prints and plots its answer.",
)
app.add_typer(sweep_app, name="sweep")


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class _PlainProgress:
    """A progress line every few seconds on stderr, for logs and pipes (no terminal, no bar)."""

    def __init__(self, total: int) -> None:
        self.total, self.start, self.last = total, time.monotonic(), 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < PLAIN_PROGRESS_EVERY_S and done < total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        err_console.print(f"sweep: {done:,}/{total:,} points, {rate:,.1f} points/s, ETA {eta:,.0f} s", highlight=False)


def _summary_table(d: dict) -> Table:
    t = Table(title=f"sweep into {d['out']}")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    rows = [
        ("points planned", f"{d['points']:,}"),
        ("computed now", f"{d['computed']:,}"),
        ("already done (resumed, or a repeat)", f"{d['skipped']:,}"),
        ("by status", ", ".join(f"{k} {v:,}" for k, v in sorted(d["by_status"].items())) or "-"),
        ("time", f"{d['seconds']:.1f} s"),
        ("speed", f"{d['points_per_s']:.1f} points/s ({60 * d['points_per_s']:,.0f} points/min)"),
        ("executor", d["executor"]),
    ]
    for r in rows:
        t.add_row(*r)
    return t


@sweep_app.command("run")
def run(
    spec_path: str = typer.Argument(..., metavar="SPEC", help="Sweep spec (YAML), e.g. examples/roma-3b.yaml."),
    out: str = typer.Option(..., "--out", "-o", help="Results folder (Parquet parts + sweep.json)."),
    workers: int = typer.Option(None, "--workers", min=1, help="Local worker processes (default: one per core)."),
    dask: str = typer.Option(None, "--dask", help="local:N (a Dask LocalCluster) or a scheduler, tcp://HOST:8786."),
    resume: bool = typer.Option(False, "--resume", help="Continue a sweep in --out, skipping points done."),
    max_points: int = typer.Option(DEFAULT_MAX_POINTS, "--max-points", min=1, help="Refuse sweeps with more points."),
    batch: int = typer.Option(4, "--batch", min=1, help="Points per executor task."),
    as_json: bool = typer.Option(False, "--json", help="Print the run's summary as JSON."),
) -> None:
    """Run a sweep spec: every design point (the base design first) on every workload, through the
    capacity planner and the timing/energy/area model. Says how many points before starting and refuses
    above --max-points. Results are Parquet part-files keyed by a stable hash of design, workload and
    model version; Ctrl-C or a killed worker loses only the points in flight, and `--resume` skips
    every point already done. A point that does not fit or is invalid is a row with its reason."""
    spec, root = load_sweep_spec(spec_path)
    plan = SweepPlan(spec, root)
    total = check_size(plan, max_points)  # before any executor starts or any file is written
    with make_executor(workers=workers, dask=dask) as executor:
        err_console.print(
            f"{spec.name}: {total:,} points ({plan.grid_points:,} designs in the grid, "
            f"{len(plan.workloads)} workload(s), {spec.search.method}) on {executor.description} -> {out}",
            highlight=False,
        )
        options = {"executor": executor, "resume": resume, "max_points": max_points, "batch_size": batch}
        signal.signal(signal.SIGTERM, _stop)  # `kill` stops like Ctrl-C: the finished points are flushed
        try:
            if err_console.is_terminal:
                with progress_bar("points") as bar:
                    task = bar.add_task("sweep", total=total)
                    update = lambda d, t: bar.update(task, completed=d, total=t)  # noqa: E731
                    summary = run_sweep(plan, out, progress=update, **options)
            else:
                summary = run_sweep(plan, out, progress=_PlainProgress(total), **options)
        except KeyboardInterrupt:
            err_console.print(f"interrupted: the finished points are saved in {out}; add --resume to continue")
            raise typer.Exit(130) from None
    if as_json:
        print_json(summary.to_dict())
    else:
        console.print(_summary_table(summary.to_dict()))
        console.print(f"[dim]next: romachip sweep show {out}[/]", highlight=False)


def _vs_base(r: dict, base: dict | None, metric: str) -> float | None:
    """r's metric over the base design's (None when either is missing)."""
    if base is None or base.get(metric) in (None, 0) or r.get(metric) is None:
        return None
    return r[metric] / base[metric]


def _front_table(a: WorkloadAnswer, axes: list[str], metrics: list[str], title: str, rows: list[dict]) -> Table:
    t = Table(title=title)
    t.add_column("#", justify="right")
    for p in axes:
        t.add_column(short_path(p), justify="right")
    for m in metrics:
        t.add_column(m, justify="right", style="bold")
    t.add_column(f"{metrics[0]} / base", justify="right")
    t.add_column("key", style="dim")

    def cells(r: dict) -> list[str]:
        ratio = _vs_base(r, a.base, metrics[0])
        return [*(fmt_value(r.get(f"axis:{p}")) for p in axes), *(fmt_value(r.get(m)) for m in metrics),
                "-" if ratio is None else f"{ratio:.3f}x", r["key"][:8]]  # fmt: skip

    if a.base is not None and a.base.get("status") == "ok":
        t.add_row("base", *cells(a.base), style="cyan")
    for i, r in enumerate(rows, 1):
        t.add_row(str(i), *cells(r))
    return t


def _json_row(r: dict, axes: list[str], metrics: list[str], base: dict | None) -> dict:
    d = {"key": r["key"], "axes": {p: r.get(f"axis:{p}") for p in axes}}
    d.update({m: r.get(m) for m in metrics})
    d["vs_base"] = {m: _vs_base(r, base, m) for m in metrics}
    d["tied"] = json.loads(r["tied"]) if r.get("tied") else {}
    d["decode_bound"] = json.loads(r["decode_bound"]) if r.get("decode_bound") else {}
    d["decode_utilization"] = json.loads(r["decode_utilization"]) if r.get("decode_utilization") else {}
    d["decode_energy_mj"] = json.loads(r["decode_energy_mj"]) if r.get("decode_energy_mj") else {}
    return d


@sweep_app.command("show")
def show(
    results_dir: str = typer.Argument(..., metavar="RESULTS", help="A results folder written by `romachip sweep`."),
    workload: str = typer.Option(None, "--workload", help="Only this workload (default: all)."),
    rank_by: str = typer.Option(None, "--rank", help="Rank every feasible design by this metric instead of the front."),
    top: int = typer.Option(20, "--top", min=1, help="Rows to print per workload."),
    plots: str = typer.Option(None, "--plots", help="Folder for the PNG plots (default: RESULTS/plots)."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Write no plots."),
    export: str = typer.Option(None, "--export", help="Write every front design as a chip YAML into this folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    serve: bool = typer.Option(False, "--serve", help="Serve the front as an interactive page at /sweep instead."),
    host: str = typer.Option("127.0.0.1", "--host", help="With --serve: the address to listen on."),
    port: int = typer.Option(8001, "--port", min=1, max=65535, help="With --serve: the port to listen on."),
) -> None:
    """Print a sweep's Pareto front per workload (feasible designs that no other beats on every
    objective), or rank every feasible design by one metric (--rank); write the plots (Pareto scatter,
    parallel coordinates of the front, one-axis sensitivity) and, with --export, each front design as a
    chip YAML that `romachip simulate --chip FILE` runs unchanged. --serve instead serves the front as a
    page: hover a point for its design, pick two metrics for the axes, export a design as chip YAML."""
    if serve:
        _serve_page(results_dir, host, port, as_json)
        return
    results = load_results(results_dir)
    spec = results.spec
    if rank_by is not None:
        try:
            check_metric(rank_by)
        except ValueError as exc:
            raise SweepError(str(exc)) from None
    axes = results.axes()
    lead = [rank_by] if rank_by else []
    metrics = list(
        dict.fromkeys([*lead, *(o.metric for o in spec.objectives), "tokens_per_j", "tokens_per_s", "area_mm2"])
    )
    out_json = []
    for a in analyse(results, workload):
        listed = rank(a.feasible, rank_by)[:top] if rank_by else a.front[:top]
        cons = ", ".join(c.describe() for c in spec.parsed_constraints()) or "none"
        doc = {
            "workload": a.workload,
            "rows": len(a.rows),
            "by_status": a.by_status,
            "feasible": len(a.feasible),
            "constraints": cons,
            "objectives": [{"metric": o.metric, "goal": o.direction} for o in spec.objectives],
            "base": _json_row(a.base, axes, metrics, a.base) if a.base and a.base["status"] == "ok" else None,
            "front_size": len(a.front),
            ("ranked_by_" + rank_by) if rank_by else "front": [_json_row(r, axes, metrics, a.base) for r in listed],
        }
        if not no_plots:
            from romachip.dse.plots import write_plots  # matplotlib (0.5 s) only when plots are drawn

            folder = Path(plots) if plots else results.folder / "plots"
            doc["plots"] = [str(p) for p in write_plots(a, axes, list(spec.objectives), folder)]
        if export is not None:
            doc["exported"] = [str(p) for p in export_rows(a.front, export, prefix=a.workload)]
        out_json.append(doc)
        if not as_json:
            what = (
                f"ranked by {rank_by} ({METRICS[rank_by.split('@')[0]][0]})"
                if rank_by
                else f"Pareto front ({len(a.front)} designs)"
            )
            status = ", ".join(f"{k} {v:,}" for k, v in sorted(a.by_status.items()))
            title = f"{a.workload}: {what}; {len(a.feasible):,} feasible of {len(a.rows):,} rows ({status}); "
            title += f"constraints: {cons}"
            console.print(_front_table(a, axes, metrics, title, listed))
            for key in ("plots", "exported"):
                if key in doc:
                    console.print(f"[dim]{key}: {', '.join(doc[key])}[/]", highlight=False)
    if as_json:
        print_json(out_json)


def _serve_page(results_dir: str, host: str, port: int, as_json: bool) -> None:
    """The sweep page (romachip.serve.sweep_page) under uvicorn until Ctrl-C."""
    import uvicorn

    from romachip.serve.sweep_page import create_sweep_app

    web = create_sweep_app(results_dir)  # reads the folder now: a bad one fails before listening
    url = f"http://{host}:{port}/sweep"
    if as_json:
        print_json({"url": url, "results": results_dir})
    else:
        err_console.print(f"[bold]romachip sweep show[/] {results_dir} on {url} (Ctrl-C stops)")
    uvicorn.Server(uvicorn.Config(web, host=host, port=port, log_level="warning", access_log=False)).run()
