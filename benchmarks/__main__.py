"""Run benchmarks: `python -m benchmarks [name ...]` runs each benchmarks/<name>.py's main() (all when
no name is given), each with its default arguments."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    names = sys.argv[1:] or sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))
    for name in names:
        path = HERE / f"{name}.py"
        if not path.is_file():
            sys.exit(f"no benchmark {name!r} in {HERE}")
        spec = importlib.util.spec_from_file_location(f"benchmarks.{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"== {name}", flush=True)
        sys.argv = [str(path)]
        module.main()


if __name__ == "__main__":
    main()
