"""The typer application every command module registers on, and the helpers they share."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

app = typer.Typer(
    name="romachip",
    help="ROMA in software: burn LLaMA models into a ROM image, plug in LoRA adapters, run the chip "
    "bit-accurately, and measure what the silicon would do.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # reflows the wrapped docstrings into paragraphs
)

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    """Machine output: one JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def progress_bar() -> Progress:
    """The progress bar of long commands, on stderr so that --json stdout stays one document."""
    columns = (TextColumn("{task.description:<12}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    return Progress(*columns, console=err_console, transient=True)
