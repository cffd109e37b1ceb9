"""A battery of bad paths through the CLI: every writer checks its destination before the work, every
reader takes regular files only and bounds what it reads; each case exits 2, prints no traceback, names
the problem, and leaves no file behind. Runs in-process (romachip.cli.main.main) to stay quick."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from romachip.atomic import atomic_open
from romachip.cli.main import main
from romachip.errors import PathError
from romachip.files import MAX_TEXT_BYTES, input_file, output_dir, output_file, read_text


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:  # noqa: ANN001
    """A folder with one of each kind of thing a path can name."""
    w = tmp_path_factory.mktemp("world")
    (w / "file.txt").write_text("hello\n")
    (w / "folder").mkdir()
    (w / "empty.txt").write_bytes(b"")
    (w / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with (w / "huge.txt").open("wb") as f:  # sparse: no disk used, but larger than any text we read
        f.truncate(MAX_TEXT_BYTES + 1)
    os.mkfifo(w / "pipe")
    (w / "fake.rom").write_bytes(b"GGUF" + bytes(60))
    return w


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run(capsys, argv: list[str]) -> tuple[int, str]:  # noqa: ANN001
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


# What each writer is given -> the words its message must hold.
BAD_FILE_OUTPUTS = {
    "": "names no file",
    "{w}/folder": "is a folder",
    "{w}/file.txt/x.out": "is a file, not a folder",
    "{w}/missing/x.out": "does not exist",
    "{w}/pipe": "not a regular file",
    "{w}/folder/": "names no file",
}
BAD_DIR_OUTPUTS = {
    "{w}/file.txt": "is a file, not a folder",
    "{w}/file.txt/sub": "is a file, not a folder",
    "": "empty",
    "{w}/pipe": "is a file, not a folder",
}
FILE_WRITERS = {
    "simulate --trace": ["simulate", "--model", "llama-3.2-3b", "--trace", "{out}"],
    "burn -o": ["burn", "smollm2-135m", "-o", "{out}"],
}
DIR_WRITERS = {
    "reproduce --out": ["reproduce", "--out", "{out}"],
}
# What each reader is given -> the words its message must hold.
BAD_INPUT_FILES = {
    "{w}/missing.bin": "does not exist",
    "{w}/folder": "is a folder",
    "{w}/pipe": "not a regular file",
    "/dev/zero": "not a regular file",
    "{w}/file.txt/x": "is a file, not a folder",
}
FILE_READERS = {
    "run IMAGE": ["run", "{in}", "--prompt", "hi"],
    "eval IMAGE": ["eval", "{in}", "--text", "{w}/file.txt"],
    "inspect IMAGE": ["inspect", "{in}"],
    "fit --chip": ["fit", "--chip", "{in}", "--model", "llama-3.2-3b"],
    "simulate --chip": ["simulate", "--chip", "{in}", "--model", "llama-3.2-3b"],
    "burn --calibration": ["burn", "smollm2-135m", "-o", "{w}/out.rom", "--quantizer", "gptq", "--calibration", "{in}"],
}
BAD_TEXTS = {
    "{w}/huge.txt": "more than the",
    "{w}/latin1.txt": "not UTF-8",
    "/dev/zero": "not a regular file",
    "{w}/pipe": "not a regular file",
}
TEXT_READERS = {
    "burn --calibration": FILE_READERS["burn --calibration"],
}


def _cases(commands: dict[str, list[str]], paths: dict[str, str]) -> list:
    return [
        pytest.param(argv, path, words, id=f"{name}={path.replace('{w}/', '') or 'empty'}")
        for name, argv in commands.items()
        for path, words in paths.items()
    ]


@pytest.mark.parametrize(
    ("argv", "path", "words"),
    _cases(FILE_WRITERS, BAD_FILE_OUTPUTS)
    + _cases(DIR_WRITERS, BAD_DIR_OUTPUTS)
    + _cases(FILE_READERS, BAD_INPUT_FILES)
    + _cases(TEXT_READERS, BAD_TEXTS),
)
def test_bad_paths_exit_2_naming_the_problem(world, capsys, argv, path, words) -> None:  # noqa: ANN001
    before = _tree(world)
    real = path.format(w=world)
    args = [a.replace("{out}", real).replace("{in}", real).replace("{w}", str(world)) for a in argv]
    code, text = _run(capsys, args)
    assert code == 2, text
    assert "Traceback" not in text
    assert words in text, text
    assert _tree(world) == before


def test_a_text_reader_reads_a_plain_file_and_refuses_what_is_not_one(world) -> None:
    assert read_text(world / "file.txt") == "hello\n"
    assert read_text(world / "empty.txt") == ""
    with pytest.raises(PathError, match="6 bytes, more than the 5 this command reads"):
        read_text(world / "file.txt", max_bytes=5)
    with pytest.raises(PathError, match="is a folder"):
        input_file(world / "folder")
    with pytest.raises(PathError, match="empty"):
        input_file("")


def test_output_checks_accept_what_can_be_written(world, tmp_path) -> None:
    assert output_file(world / "file.txt") == world / "file.txt"  # replaced when the work succeeds
    assert output_file(tmp_path / "new.json") == tmp_path / "new.json"
    made = output_dir(tmp_path / "a" / "b")
    assert made.is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: no permission error to see")
def test_a_read_only_folder_is_named_as_such(tmp_path, capsys) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, text = _run(capsys, ["simulate", "--model", "llama-3.2-3b", "--trace", str(ro / "t.json")])
    assert code == 2 and "permission denied" in text


def test_atomic_open_reports_a_failed_write_as_a_path_error(tmp_path) -> None:
    with pytest.raises(PathError, match="missing/x.bin: No such file"), atomic_open(tmp_path / "missing" / "x.bin"):
        pass
    assert _tree(tmp_path) == set()


def test_written_files_follow_the_umask(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_open(tmp_path / "x.bin") as f:
            f.write(b"1")
    finally:
        os.umask(old)
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_write_leaves_no_temporary_file(tmp_path, signum) -> None:
    target = tmp_path / "image.rom"
    target.write_bytes(b"old")
    script = (
        "import os, signal, sys\n"
        "from romachip.atomic import atomic_open\n"
        f"with atomic_open({str(target)!r}) as f:\n"
        "    f.write(b'half')\n"
        f"    os.kill(os.getpid(), {int(signum)})\n"
        "    f.write(b' never')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -signum, proc.stderr.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.rom"]
    assert target.read_bytes() == b"old"
