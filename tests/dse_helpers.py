"""A small sweep spec the dse tests share: llama-3.2-1b on roma, 2 x 2 designs + the base (~0.1 s each)."""

from pathlib import Path

import yaml

SMALL = {
    "name": "small",
    "base": {"chip": "roma"},
    "axes": {
        "clock_hz": {"values": [250.0e6, 500.0e6]},
        "noc.link_width_bits": {"values": [2048, 4096]},
    },
    "workloads": [{"name": "1b", "model": "llama-3.2-1b", "context_tokens": 256, "report_contexts": [0]}],
    "objectives": [{"metric": "tokens_per_j"}, {"metric": "tokens_per_s"}, {"metric": "area_mm2"}],
    "constraints": ["area_mm2 <= base"],
}


def write_spec(folder: Path, data: dict | None = None, name: str = "sweep.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data if data is not None else SMALL, sort_keys=False))
    return path


def comparable(rows: list[dict]) -> dict[str, dict]:
    """Rows by key (order and part-files do not matter)."""
    return {r["key"]: r for r in rows}


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    """Identical rows, or a message naming the first differing fields (a last-digit difference between
    processes usually means a sum over a set, whose order follows the per-process string hash seed)."""
    a, b = comparable(got), comparable(want)
    assert a.keys() == b.keys()
    diffs = [(k, c, a[k][c], b[k][c]) for k in a for c in a[k] if a[k][c] != b[k][c]]
    assert not diffs, f"rows differ between executors (first of {len(diffs)}): {diffs[:3]}"
