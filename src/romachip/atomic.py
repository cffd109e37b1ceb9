"""Atomic file writes: nothing is lost and no half-written file is left behind.

Every file romachip writes (ROM images, traces, reports, plots) goes through `atomic_open`: the data goes
to a temporary name in the target folder, is fsynced, then renamed over the target; on any error, and on
SIGINT, SIGTERM or SIGHUP, the temporary file is removed and the target is untouched. The published file
gets the permissions the umask gives a new file (mkstemp alone would leave it 0600).
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from romachip.files import write_error

#: Signals that end a process by default; while a temporary file is open they raise instead, so that the
#: cleanup below runs. SIGINT already raises KeyboardInterrupt.
_CLEANUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class _Terminated(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def _raise_terminated(signum: int, _frame: object) -> None:
    raise _Terminated(signum)


@contextmanager
def _signals_raise() -> Iterator[None]:
    """In the main thread, turn SIGTERM/SIGHUP (where they still have their default, fatal action) into an
    exception for the duration of a write, then die of the signal as the sender asked."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ours = [s for s in _CLEANUP_SIGNALS if signal.getsignal(s) == signal.SIG_DFL]
    for s in ours:
        signal.signal(s, _raise_terminated)
    try:
        yield
    except _Terminated as exc:
        for s in ours:
            signal.signal(s, signal.SIG_DFL)
        ours = []
        os.kill(os.getpid(), exc.signum)
        raise SystemExit(128 + exc.signum) from None  # not reached: the default action ends the process
    finally:
        for s in ours:
            signal.signal(s, signal.SIG_DFL)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", *, what: str = "file") -> Iterator[IO]:
    """Open a temporary file beside `path` for writing ('w' or 'wb'); publish it on a clean exit.
    OS failures (a missing or read-only folder, a full disk) raise PathError naming the path and cause."""
    path = Path(path)
    with _signals_raise():
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as exc:
            raise write_error(path, exc, what) from None
        try:
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise write_error(path, exc, what) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (not supported everywhere, hence best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
