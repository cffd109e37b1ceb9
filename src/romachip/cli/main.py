"""Entry point: register the commands a command line needs, run, and turn RomachipError into a one-line
message + exit 2.

A command line imports only the module of its command (and `specs`, so that the app stays a group of
commands): `romachip fit` and `romachip simulate` never import torch, which `run`, `adapters` and
`serve` need. `--help`, no command or an unknown one import every module, in the order `--help` lists."""

from __future__ import annotations

import importlib
import sys

from romachip.cli.app import app, err_console
from romachip.errors import RomachipError

#: Command modules, in the order `romachip --help` lists their commands (a user's path through the tool).
COMMAND_MODULES = (
    "specs", "fit", "burn", "run", "adapters", "finetune", "simulate", "sweep", "serve", "vectors", "reproduce",
)  # fmt: skip
#: Command (or command group) -> the module that registers it (tests/test_cli_imports.py keeps it true).
COMMANDS = {
    "presets": "specs", "models": "specs", "fit": "fit", "burn": "burn", "inspect": "burn", "run": "run",
    "eval": "run", "demo": "run", "adapters": "adapters", "finetune": "finetune", "simulate": "simulate",
    "sweep": "sweep", "serve": "serve", "vectors": "vectors", "reproduce": "reproduce",
}  # fmt: skip
EXIT_BAD_INPUT = 2  # the same code click uses for usage errors


def load_commands(argv: list[str]) -> None:
    """Import the command modules `argv` needs (each registers its commands on `app` when imported)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    modules = ("specs", COMMANDS[command]) if command in COMMANDS else COMMAND_MODULES
    for name in modules:
        importlib.import_module(f"romachip.cli.{name}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; usage errors and RomachipError both exit 2 with a message and no traceback."""
    args = sys.argv[1:] if argv is None else argv
    try:
        load_commands(args)
        app(args=args, prog_name="romachip")
    except RomachipError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
