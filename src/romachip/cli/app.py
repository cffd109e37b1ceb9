"""The typer application every command module registers on, and the helpers they share."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import typer
import typer.core
import typer.rich_utils
from rich.console import Console
from rich.markup import escape
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

#: The help of --threads on run, eval and serve.
THREADS_HELP = "Threads of the engine (the native L-Unit kernel's and torch's); the result never depends on it."


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


#: Seconds between the plain progress lines printed when stderr is not a terminal (CI logs, `> log`).
PLAIN_PROGRESS_EVERY_S = 5.0


class _LineProgress(Progress):
    """A Progress that draws nothing and instead prints a plain line (done/total, elapsed, time left)
    every PLAIN_PROGRESS_EVERY_S seconds and when a task completes: where no bar can be drawn, long work
    still says that it is alive and how far it got."""

    def __init__(self, *columns: ProgressColumn, console: Console) -> None:
        super().__init__(*columns, console=console, disable=True)
        self._last_line_s = time.monotonic()
        self._done_reported: set = set()

    def update(self, task_id, **kwargs) -> None:  # noqa: ANN001, ANN003
        super().update(task_id, **kwargs)
        self._line(task_id)

    def advance(self, task_id, advance: float = 1) -> None:  # noqa: ANN001
        super().advance(task_id, advance)
        self._line(task_id)

    def _line(self, task_id) -> None:  # noqa: ANN001
        task = self._tasks[task_id]
        now = time.monotonic()
        finished = task.finished and task_id not in self._done_reported
        if not finished and now - self._last_line_s < PLAIN_PROGRESS_EVERY_S:
            return
        self._last_line_s = now
        if task.finished:
            self._done_reported.add(task_id)
        count = f"{task.completed:,.0f}/{task.total:,.0f} ({task.percentage:.0f}%)" if task.total else "working"
        line = f"{task.description}: {count}, {task.elapsed or 0:.0f} s elapsed"
        if not task.finished and task.time_remaining is not None:
            line += f", about {task.time_remaining:.0f} s left"
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)


def progress_bar(rate_unit: str | None = None) -> Progress:
    """The progress bar of long commands, on stderr so that --json stdout stays one document. With a
    `rate_unit` (e.g. "points") it also shows done/total and the rate per second. The time remaining is
    always shown (GPTQ's ETA, a fine-tuning run's). When stderr is not a terminal it prints a plain line
    every few seconds instead (_LineProgress)."""
    columns = [TextColumn("{task.description:<12}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn()]
    if rate_unit is not None:
        columns[2:2] = [MofNCompleteColumn(), _RateColumn(rate_unit)]
    columns += [TextColumn("eta"), TimeRemainingColumn()]
    if not err_console.is_terminal:
        return _LineProgress(*columns, console=err_console)
    return Progress(*columns, console=err_console, transient=True)


# typer prints `<bool>` after every flag, as if `--json true` were the way to pass it (it is refused):
# flags show no type in --help.
_typer_display_type = typer.core.TyperOption.display_type
typer.core.TyperOption.display_type = lambda self, ctx: "" if self.is_flag else _typer_display_type(self, ctx)


def _one_line_usage_error(exc) -> None:  # noqa: ANN001 (typer's own click exception)
    """Usage errors (a bad option value, a missing argument) in the same one line as every RomachipError,
    instead of typer's usage block and panel: `error: <what> (see `romachip CMD --help`)`."""
    if exc.__class__.__name__ == "NoArgsIsHelpError":  # `romachip` alone printed its help already
        return
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    err_console.print(f"[bold red]error:[/] {escape(exc.format_message())}{hint}", highlight=False, soft_wrap=True)


typer.rich_utils.rich_format_error = _one_line_usage_error
