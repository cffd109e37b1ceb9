"""`romachip reproduce`: ROMA's reported figures from the model, beside the paper's, plus predictions."""

from __future__ import annotations

import typer
from rich.table import Table

from romachip.cli.app import app, console, print_json, progress_bar
from romachip.files import output_dir
from romachip.report.reproduce import STEPS, TOLERANCE
from romachip.report.reproduce import reproduce as run_reproduce


@app.command()
def reproduce(
    out: str = typer.Option("reproduce", "--out", help="Folder for report.md, results.json and the PNG plots."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON instead of a table."),
) -> None:
    """Regenerate every figure of the ROMA paper the model can produce (decode at 0 and 1K context, TTFT, power,
    area and its shares, the L-Unit comparison, ROM macro densities, the CPU and GPU comparison), each
    beside the paper's number with the relative error, and the predictions the paper does not pin
    (decode and TTFT up to 4K, the 2-bit 8B model, max context vs SRAM, LoRA rank)."""
    output_dir(out, what="report folder")
    with progress_bar() as bar:
        task = bar.add_task("reproducing ROMA", total=STEPS)
        result = run_reproduce(out, progress=lambda: bar.advance(task))
    if as_json:
        print_json(
            {
                "out_dir": str(result.out_dir),
                "files": [str(f) for f in result.files],
                "worst_calibration_error": result.worst_calibration_error,
                "figures": [
                    {"name": f.name, "unit": f.unit, "paper": f.paper, "model": f.model, "rel_error": f.rel_error,
                     "kind": f.kind, "fitted_by": f.fitted_by}
                    for f in result.figures
                ],
            }
        )  # fmt: skip
        return
    t = Table(title=f"ROMA figures: paper vs model (calibration tolerance {TOLERANCE:.0%})")
    for col in ("figure", "unit", "paper", "model", "error", "kind"):
        t.add_column(col, justify="right" if col in ("paper", "model", "error") else "left")
    for f in result.figures:
        bad = f.kind == "calibrated" and abs(f.rel_error) > TOLERANCE
        err = f"[red]{f.rel_error:+.1%}[/]" if bad else f"{f.rel_error:+.1%}"
        t.add_row(f.name, f.unit, f"{f.paper:,.4g}", f"{f.model:,.4g}", err, f.kind)
    console.print(t)
    console.print(f"report, results and plots in {result.out_dir}/: " + ", ".join(p.name for p in result.files))
