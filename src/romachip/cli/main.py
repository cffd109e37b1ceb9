"""Entry point: register every command, run, and turn RomachipError into a one-line message + exit 2."""

from __future__ import annotations

import sys

import romachip.cli.adapters  # noqa: F401  (registers `romachip adapters check`)
import romachip.cli.burn  # noqa: F401  (registers `romachip burn` and `romachip inspect`)
import romachip.cli.fit  # noqa: F401  (registers `romachip fit`)
import romachip.cli.reproduce  # noqa: F401  (registers `romachip reproduce`)
import romachip.cli.run  # noqa: F401  (registers `romachip run`, `romachip eval` and `romachip demo`)
import romachip.cli.simulate  # noqa: F401  (registers `romachip simulate`)
from romachip.cli import specs  # noqa: F401  (each import registers its commands on `app`)
from romachip.cli.app import app, err_console
from romachip.errors import RomachipError

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
