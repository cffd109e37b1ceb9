"""Entry point: register every command, run, and turn RomachipError into a one-line message + exit 2."""

from __future__ import annotations

import importlib
import sys

from romachip.cli.app import app, err_console
from romachip.errors import RomachipError

#: Command modules, in the order `romachip --help` lists their commands (a user's path through the tool).
COMMAND_MODULES = ("specs", "fit", "burn", "run", "adapters", "simulate", "sweep", "serve", "vectors", "reproduce")
for _name in COMMAND_MODULES:
    importlib.import_module(f"romachip.cli.{_name}")  # each module registers its commands on `app`

EXIT_BAD_INPUT = 2  # the same code click uses for usage errors


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; usage errors and RomachipError both exit 2 with a message and no traceback."""
    try:
        app(args=argv, prog_name="romachip")
    except RomachipError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
