"""Where files come from and go to: one check for every input file and every output path.

Every command checks its destinations *before* the work (a trace is refused before the simulation runs, an
image path before the burn), and reads inputs only from regular files with a bound on their size: a named
pipe would block forever and /dev/zero would read without end. Each failure is a PathError that names the
path, what it was meant to be, and the real cause (permission denied is not "no such file").
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from romachip.errors import PathError

#: Text inputs (calibration, training and evaluation text, key files) are read up to this size.
MAX_TEXT_BYTES = 256 * 2**20


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise PathError(f"{path}: a part of the path is a file, not a folder") from None
    except OSError as exc:
        raise PathError(f"{path}: {exc.strerror or exc}") from None


def _named(path: str | Path, what: str) -> tuple[Path, os.stat_result | None]:
    """`path` (refused when empty) and what is there now (None: nothing)."""
    if str(path) == "":
        raise PathError(f"the {what} path is empty")
    return Path(path), _stat(Path(path))


def input_file(path: str | Path, *, what: str = "file") -> Path:
    """`path` as a readable regular file, or a PathError naming why not."""
    path, st = _named(path, what)
    if st is None:
        raise PathError(f"{what} {path} does not exist")
    if stat.S_ISDIR(st.st_mode):
        raise PathError(f"{what} {path} is a folder; give a file")
    if not stat.S_ISREG(st.st_mode):
        raise PathError(f"{what} {path} is not a regular file (a pipe, socket or device); give a file")
    if not os.access(path, os.R_OK):
        raise PathError(f"{what} {path}: permission denied (not readable)")
    return path


def input_dir(path: str | Path, *, what: str = "folder") -> Path:
    """`path` as a readable folder, or a PathError naming why not."""
    path, st = _named(path, what)
    if st is None:
        raise PathError(f"{what} {path} does not exist")
    if not stat.S_ISDIR(st.st_mode):
        raise PathError(f"{what} {path} is a file, not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise PathError(f"{what} {path}: permission denied (not readable)")
    return path


def read_text(path: str | Path, *, what: str = "text file", max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A UTF-8 regular file's text, refused past `max_bytes` (the size is checked before reading)."""
    path = input_file(path, what=what)
    size = path.stat().st_size
    if size > max_bytes:
        raise PathError(f"{what} {path} is {size:,} bytes, more than the {max_bytes:,} this command reads")
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise PathError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:  # the file grew while we read it
        raise PathError(f"{what} {path} is more than the {max_bytes:,} bytes this command reads")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PathError(f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def _writable_folder(folder: Path, target: Path, what: str) -> None:
    st = _stat(folder)
    if st is None:
        raise PathError(f"cannot write {what} {target}: the folder {folder} does not exist")
    if not stat.S_ISDIR(st.st_mode):
        raise PathError(f"cannot write {what} {target}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PathError(f"cannot write {what} {target}: permission denied in {folder}")


def output_file(path: str | Path, *, what: str = "output file") -> Path:
    """Check, before any work, that `path` can be written atomically (a regular file or nothing there yet,
    in an existing, writable folder). An existing regular file is replaced when the work succeeds."""
    if str(path) == "" or str(path).endswith(os.sep):
        raise PathError(f"the {what} path {str(path)!r} names no file")
    path = Path(path)
    _writable_folder(path.parent, path, what)
    st = _stat(path)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise PathError(f"cannot write {what} {path}: it is a folder; give a file name")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise PathError(f"cannot write {what} {path}: it is not a regular file (a pipe, socket or device)")
    return path


def output_dir(path: str | Path, *, what: str = "output folder") -> Path:
    """Check, before any work, that `path` is (or can be made) a writable folder; create it if missing."""
    path, st = _named(path, what)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise PathError(f"cannot write into {what} {path}: it is a file, not a folder")
    if st is None:
        parent = next((p for p in path.parents if _stat(p) is not None), Path("."))
        _writable_folder(parent, path, what)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PathError(f"cannot create {what} {path}: {exc.strerror or exc}") from None
    elif not os.access(path, os.W_OK | os.X_OK):
        raise PathError(f"cannot write into {what} {path}: permission denied")
    return path


def write_error(path: Path, exc: OSError, what: str = "file") -> PathError:
    """The PathError for a failed write (disk full, permission lost mid-way), naming the real cause."""
    cause = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        cause += " (the disk is full)"
    elif exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EROFS, errno.EPERM):
        cause += " (check that the folder exists and is writable)"
    return PathError(f"cannot write {what} {path}: {cause}")
