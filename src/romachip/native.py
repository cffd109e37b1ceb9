"""The optional C modules (setup.py builds them where a C compiler exists; each has a Python or NumPy form
that gives the same results), taken only when they were built from these sources."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType


def optional_module(name: str, abi: int, what: str, meanwhile: str) -> ModuleType | None:
    """The module `name` when it imports and carries the ABI number `abi` (its functions and arguments as
    this code calls them), else None. One built from other sources (a checkout that pulled C changes
    without rebuilding) could lack a function or take other arguments: it is not called, and a warning
    says to rebuild and what runs `meanwhile`."""
    try:
        module = importlib.import_module(name)
    except ImportError:  # depends on the build
        return None
    if getattr(module, "ABI", None) != abi:
        warnings.warn(
            f"romachip: {what} was built from other sources; rebuild it (`make`, or `python setup.py build_ext "
            f"--inplace`). {meanwhile}",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return module
