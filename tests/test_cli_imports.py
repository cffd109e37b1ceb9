"""`romachip fit` and `romachip simulate` never import torch (a sweep pays for every import), and the CLI's
command table says which module registers each command."""

import importlib
import os
import subprocess
import sys

from romachip.cli.app import app
from romachip.cli.main import COMMAND_MODULES, COMMANDS

PROBE = """
import sys
from romachip.cli.main import main
rc = main({argv!r})
assert rc == 0, rc
print("torch" in sys.modules)
print(sorted(m for m in {mods!r} if m in sys.modules))
"""


HEAVY = ("torch", "transformers", "matplotlib", "fastapi")  # ~0.5-2 s each, wanted by a few commands only


def _probe(argv: list[str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv, mods=HEAVY)],
        capture_output=True, text=True, env=os.environ, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()


def _imports_torch(argv: list[str]) -> bool:
    return _probe(argv)[-2] == "True"


def test_help_imports_no_heavy_library():
    # `romachip --help` imports every command's module: each imports torch, matplotlib or FastAPI in the
    # command that uses it, so that listing the commands takes well under a second
    assert _probe(["--help"])[-1] == "[]"


def test_fit_and_simulate_do_not_import_torch():
    assert not _imports_torch(["fit", "--model", "llama-3.2-1b", "--json"])
    assert not _imports_torch(["simulate", "--model", "llama-3.2-1b", "--prompt", "8", "--generate", "2", "--json"])


def test_command_table_names_the_module_of_every_command():
    for name in COMMAND_MODULES:
        importlib.import_module(f"romachip.cli.{name}")
    registered = {}
    for cmd in app.registered_commands:
        registered[cmd.name or cmd.callback.__name__.replace("_", "-")] = cmd.callback.__module__
    for group in app.registered_groups:
        registered[group.name] = group.typer_instance.registered_commands[0].callback.__module__
    assert {k: f"romachip.cli.{v}" for k, v in COMMANDS.items()} == registered
