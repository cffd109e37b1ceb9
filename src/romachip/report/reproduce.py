"""`reproduce`: ROMA's reported figures from the model, beside the paper's, and the predictions it makes.

Writes into a folder: report.md (tables: paper vs model with relative error; predictions), results.json
(the same numbers for machines) and PNG plots. Every file is written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from romachip.atomic import atomic_open
from romachip.report.figures import (
    CONTEXTS,
    PROMPTS,
    SETUP_3B,
    SETUP_8B,
    SRAM_MB,
    Figure,
    baseline_table,
    calibration_figures,
    chip_model,
    decode_and_ttft,
    max_context_table,
    rank_sweep,
)
from romachip.report.sensitivity import STEP, sensitivity

TOLERANCE = 0.05  # every calibrated figure must land within 5%
SENSITIVITY_CONTEXT = 4096  # a context no figure of the paper fixes
STEPS = 2 * len(PROMPTS) + 4  # progress ticks: prefills of both setups, then figures, sweeps, plots, files


@dataclass(frozen=True)
class ReproduceResult:
    out_dir: Path
    figures: list[Figure]
    predictions: dict
    files: list[Path]

    @property
    def worst_calibration_error(self) -> float:
        return max(abs(f.rel_error) for f in self.figures if f.kind == "calibrated")


def _atomic_write(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def reproduce(out_dir: str | Path, progress: Callable[[], None] | None = None) -> ReproduceResult:
    """Compute everything and write the report, results and plots into `out_dir` (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tick = progress or (lambda: None)
    cm3 = chip_model(SETUP_3B)
    runs = {SETUP_3B.label: decode_and_ttft(cm3, tick), SETUP_8B.label: decode_and_ttft(chip_model(SETUP_8B), tick)}
    figures = calibration_figures(cm3)
    tick()
    base, rows = sensitivity(cm3, SENSITIVITY_CONTEXT)
    predictions = {
        "sensitivity": {
            "setup": SETUP_3B.label,
            "context": SENSITIVITY_CONTEXT,
            "at_preset": base,
            "rows": [asdict(r) for r in rows],
        },
        "decode_and_ttft": runs,
        "max_context_tokens": {
            SETUP_3B.label: max_context_table(SETUP_3B),
            SETUP_8B.label: max_context_table(SETUP_8B),
        },
        "lora_rank": {SETUP_3B.label: rank_sweep(SETUP_3B)},
        "baselines": {SETUP_3B.label: baseline_table(SETUP_3B), SETUP_8B.label: baseline_table(SETUP_8B)},
    }
    tick()
    from romachip.report.plots import write_plots  # matplotlib only when the plots are drawn

    files = write_plots(out, figures, predictions, TOLERANCE)
    tick()
    md = out / "report.md"
    _atomic_write(md, render_markdown(figures, predictions).encode())
    js = out / "results.json"
    payload = {"figures": [asdict(f) | {"rel_error": f.rel_error} for f in figures], "predictions": predictions}
    _atomic_write(js, json.dumps(payload, indent=1, default=str).encode())
    tick()
    return ReproduceResult(out, figures, predictions, [md, js, *files])


def _fmt(x: float) -> str:
    """Four significant digits below 1,000: the paper's 503.7 mm² prints as 503.7, not 504."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:,.4g}"


def render_markdown(figures: list[Figure], predictions: dict) -> str:
    lines = [
        "# ROMA reproduced by romachip",
        "",
        "4-bit Llama-3.2-3B with rank-16 FP8 LoRA on all projections, INT8 KV cache, on the `roma` preset "
        "(src/romachip/spec/presets/roma.yaml, tech n7.yaml). *calibrated*: a preset parameter was set "
        "from this figure (named); *derived-from-calibrated*: arithmetic on calibrated figures (named), so "
        "no test of the model; *predicted*: everything under Predictions, with the assumptions it depends "
        f"on most in the sensitivity table. Calibrated figures must land within {TOLERANCE:.0%}.",
        "",
        "| figure | unit | paper | model | error | kind | fitted parameter |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for f in figures:
        ok = "" if f.kind != "calibrated" or abs(f.rel_error) <= TOLERANCE else " ✗"
        lines.append(
            f"| {f.name} | {f.unit} | {_fmt(f.paper)} | {_fmt(f.model)} | {f.rel_error:+.1%}{ok} | {f.kind} | "
            f"{f.fitted_by} |"
        )
    lines += ["", "## Predictions (no figure of the paper fixes these)", ""]
    lines += _sensitivity_lines(predictions["sensitivity"])
    for label, run in predictions["decode_and_ttft"].items():
        limit = predictions["max_context_tokens"][label][16][SRAM_MB[-1]]
        lines += [
            f"### {label}, rank-16 LoRA",
            "",
            f"Longest context that fits the chip's SRAM beside the adapters: {limit:,} tokens; rows beyond it "
            "(marked †) are what the units would do with more SRAM.",
            "",
            "| context / prompt (tokens) | decode tok/s | mJ/token | TTFT ms |",
        ]
        lines.append("|---:|---:|---:|---:|")
        for c in sorted(set(run["decode_tokens_per_s"]) | set(run["ttft_ms"])):
            d = run["decode_tokens_per_s"].get(c)
            e = run["energy_per_token_mj"].get(c)
            t = run["ttft_ms"].get(c)
            cells = [_fmt(d) if d else "", f"{e:.3f}" if e else "", f"{t:.2f}" if t else ""]
            mark = " †" if c > limit else ""
            lines.append(f"| {c}{mark} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### Maximum context vs H-Unit SRAM (romachip.capacity)", ""]
    lines.append("| setup | rank | " + " | ".join(f"{mb} MiB" for mb in SRAM_MB) + " |")
    lines.append("|---|---:|" + "---:|" * len(SRAM_MB))
    for label, table in predictions["max_context_tokens"].items():
        for rank, row in table.items():
            lines.append(f"| {label} | {rank} | " + " | ".join(f"{row[mb]:,}" for mb in SRAM_MB) + " |")
    lines += ["", "### Throughput vs LoRA rank", "", "| setup | rank | decode tok/s, ctx 0 | ctx 1K | TTFT 256 ms |"]
    lines.append("|---|---:|---:|---:|---:|")
    for label, table in predictions["lora_rank"].items():
        for rank, row in table.items():
            lines.append(
                f"| {label} | {rank} | {_fmt(row['decode_ctx0'])} | {_fmt(row['decode_ctx1024'])} | "
                f"{row['ttft_256_ms']:.3f} |"
            )
    lines += ["", "### Reference devices (roofline x efficiency; 256-token context)", ""]
    lines.append("| setup | device | roofline tok/s | efficiency | source | tok/s | mJ/token |")
    lines.append("|---|---|---:|---:|---|---:|---:|")
    for label, rows in predictions["baselines"].items():
        for b in rows:
            lines.append(
                f"| {label} | {b['device']} | {_fmt(b['roofline_tokens_per_s'])} | {b['efficiency']:.3f} | "
                f"{b['efficiency_source']} | {_fmt(b['tokens_per_s'])} | {_fmt(b['energy_per_token_mj'])} |"
            )
    lines += ["", "Plots: decode_vs_context.png, ttft_vs_prompt.png, max_context_vs_sram.png, calibration.png", ""]
    return "\n".join(lines)


def _sensitivity_lines(sens: dict) -> list[str]:
    """The one-at-a-time table, rows ordered by their largest effect on any of the three predictions."""
    base = sens["at_preset"]
    lines = [
        f"### Sensitivity ({sens['setup']}, rank-16 LoRA, decode at {sens['context']:,} tokens of context)",
        "",
        f"At the preset: {base['tokens_per_s']:,.0f} tok/s, {base['mj_per_token']:.3f} mJ/token, "
        f"{base['area_mm2']:.1f} mm². Each uncalibrated assumption moved alone by -{STEP:.0%} / +{STEP:.0%}; "
        "% change of each prediction:",
        "",
        "| assumption | preset value | tok/s | mJ/token | mm² |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = sorted(sens["rows"], key=lambda r: -max(abs(x) for pair in r["change_pct"].values() for x in pair))
    for r in rows:
        cells = [
            f"{lo:+.1f} / {hi:+.1f}"
            for lo, hi in (r["change_pct"][k] for k in ("tokens_per_s", "mj_per_token", "area_mm2"))
        ]
        lines.append(f"| {r['what']} (`{r['spec']}.{r['field']}`) | {r['value']:.4g} | " + " | ".join(cells) + " |")
    return [*lines, ""]


__all__ = ["CONTEXTS", "ReproduceResult", "reproduce", "render_markdown"]
