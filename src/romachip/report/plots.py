"""The PNG plots of `reproduce` (matplotlib, imported only when a report is written)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter  # noqa: E402

from romachip.atomic import atomic_open  # noqa: E402
from romachip.report.figures import PROMPTS, SRAM_MB, Figure  # noqa: E402


def write_plots(out: Path, figures: list[Figure], predictions: dict, tolerance: float) -> list[Path]:
    """The four PNGs of the report, written atomically into `out`."""
    files = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, run in predictions["decode_and_ttft"].items():
        xs = sorted(run["decode_tokens_per_s"])
        ax.plot(xs, [run["decode_tokens_per_s"][x] / 1e3 for x in xs], marker="o", label=f"model: {label}")
    ax.scatter([0, 1024], [31.8, 24.6], color="k", marker="x", zorder=3, label="ROMA (paper), 3B 4-bit")
    ax.set(xlabel="tokens in KV cache", ylabel="decode K tokens/s", title="Decode throughput vs context")
    ax.legend(fontsize=8)
    files.append(out / "decode_vs_context.png")
    _save_plot(fig, files[-1])
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, run in predictions["decode_and_ttft"].items():
        ax.plot(PROMPTS, [run["ttft_ms"][p] for p in PROMPTS], marker="o", mfc="none", label=f"model: {label}")
    # drawn last, larger and filled, so that the model's point at the same place does not hide it
    ax.scatter([256], [5.6], color="crimson", marker="*", s=140, zorder=5, label="ROMA (paper)")
    ax.set(xlabel="prompt tokens", ylabel="TTFT (ms)", title="Time to first token", xscale="log", yscale="log")
    _plain_log_ticks(ax, PROMPTS)
    ax.legend(fontsize=8)
    files.append(out / "ttft_vs_prompt.png")
    _save_plot(fig, files[-1])
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, table in predictions["max_context_tokens"].items():
        for rank, row in table.items():
            ax.plot(SRAM_MB, [row[mb] for mb in SRAM_MB], marker="o", label=f"{label}, rank {rank}")
    ax.set(xlabel="H-Unit SRAM (MiB)", ylabel="max context (tokens)", title="Longest context that fits")
    ax.legend(fontsize=8)
    files.append(out / "max_context_vs_sram.png")
    _save_plot(fig, files[-1])
    fig, ax = plt.subplots(figsize=(7, 5))
    cal = [f for f in figures if f.kind == "calibrated"]
    ax.barh([f.name for f in cal], [100 * f.rel_error for f in cal])
    ax.axvline(-100 * tolerance, color="r", ls="--", label=f"±{tolerance:.0%} calibration tolerance")
    ax.axvline(100 * tolerance, color="r", ls="--")
    ax.set(xlabel="model vs paper (%)", title="Calibration figures")
    ax.legend(fontsize=8, loc="lower right")
    ax.tick_params(axis="y", labelsize=7)
    files.append(out / "calibration.png")
    _save_plot(fig, files[-1])
    return files


def _plain_log_ticks(ax, xs: list[int]) -> None:  # noqa: ANN001
    """Log axes with one plain label per measured x and plain y labels (matplotlib's default log minor
    labels overlap at this size)."""
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())


def _save_plot(fig, path: Path) -> None:
    try:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
