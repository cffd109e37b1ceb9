"""The typer application every command module registers on, and the helpers they share."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

app = typer.Typer(
    name="romachip",
    help="ROMA in software: burn LLaMA models into a ROM image, plug in LoRA adapters, run the chip "
    "bit-accurately, and measure what the silicon would do.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # reflows the wrapped docstrings into paragraphs
)

#: Exit status of a check whose answer is "no" (`fit`, `adapters check`: does not fit): a verdict, not an
#: error. Bad input exits 2 (cli/main.py), as click does for usage errors.
EXIT_DOES_NOT_FIT = 1


def _print_version(value: bool) -> None:
    if value:
        from romachip import __version__

        typer.echo(f"romachip {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print romachip's version and exit."
    ),
) -> None:
    """ROMA in software: burn LLaMA models into a ROM image, plug in LoRA adapters, run the chip
    bit-accurately, and measure what the silicon would do."""


console = Console()
err_console = Console(stderr=True)


def finite(min: float | None = None, max: float | None = None, *, min_open: bool = False) -> Callable:
    """The callback of every float option: the value must be finite (click's float type takes 'nan' and
    'inf', and NaN passes every range check) and within [min, max] (min excluded with `min_open`).
    tests/test_bad_numbers.py gives every float option of every command NaN, inf and -1."""

    def check(value: float | None) -> float | None:
        if value is None:
            return value
        if not math.isfinite(value):
            raise typer.BadParameter(f"{value} is not a finite number")
        if min is not None and (value <= min if min_open else value < min):
            raise typer.BadParameter(f"{value} must be {'>' if min_open else '>='} {min}")
        if max is not None and value > max:
            raise typer.BadParameter(f"{value} must be <= {max}")
        return value

    return check


def print_json(data: Any) -> None:
    """Machine output: one JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


class _RateColumn(ProgressColumn):
    """Items per second, e.g. '14.2 points/s'."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} {self.unit}/s", style="progress.data.speed")


def progress_bar(rate_unit: str | None = None) -> Progress:
    """The progress bar of long commands, on stderr so that --json stdout stays one document. With a
    `rate_unit` (e.g. "points") it also shows done/total and the rate per second. The time remaining is
    always shown (GPTQ's ETA, a fine-tuning run's)."""
    columns = [TextColumn("{task.description:<12}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn()]
    if rate_unit is not None:
        columns[2:2] = [MofNCompleteColumn(), _RateColumn(rate_unit)]
    columns += [TextColumn("eta"), TimeRemainingColumn()]
    return Progress(*columns, console=err_console, transient=True)
