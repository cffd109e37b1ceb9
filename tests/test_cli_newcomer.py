"""What a new user meets first: flags shown as flags in --help, progress that still reports where no bar
can be drawn (CI logs, `> log`), help that names no file outside the repository."""

from __future__ import annotations

import time

import pytest

import romachip.cli.app as cli_app
from romachip.cli.main import main


def test_flags_show_no_bool_type_in_help(capsys) -> None:  # noqa: ANN001
    assert main(["presets", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--json" in out and "<bool>" not in out


@pytest.mark.parametrize("command", ["reproduce", "fit", "simulate", "burn", "run"])
def test_help_names_no_file_outside_the_repository(capsys, command) -> None:  # noqa: ANN001
    assert main([command, "--help"]) == 0
    assert "ROMA.md" not in capsys.readouterr().out


def test_progress_prints_plain_lines_with_time_left_when_not_a_terminal(monkeypatch, capsys) -> None:  # noqa: ANN001
    monkeypatch.setattr(cli_app, "PLAIN_PROGRESS_EVERY_S", 0.0)
    with cli_app.progress_bar("points") as bar:  # pytest's capture is not a terminal
        task = bar.add_task("sweep", total=3)
        for _ in range(3):
            time.sleep(0.01)
            bar.advance(task)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("sweep: 1/3 (33%)") and "left" in lines[1]
    assert lines[-1].startswith("sweep: 3/3 (100%)") and len(lines) == 3


def test_plain_progress_is_quiet_between_its_lines(monkeypatch, capsys) -> None:  # noqa: ANN001
    monkeypatch.setattr(cli_app, "PLAIN_PROGRESS_EVERY_S", 3600.0)
    with cli_app.progress_bar() as bar:
        task = bar.add_task("burn", total=100)
        for _ in range(100):
            bar.advance(task)
    assert capsys.readouterr().err.splitlines() == ["burn: 100/100 (100%), 0 s elapsed"]
