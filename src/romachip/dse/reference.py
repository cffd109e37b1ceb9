"""Generate docs/dse-reference.md from the SweepSpec schema, the metrics and the tie helpers.

Run `python -m romachip.dse.reference > docs/dse-reference.md`; a test checks it is current.
"""

from __future__ import annotations

from romachip.dse.spec import METRICS, Axis, LogRange, Objective, SweepSpec, ValueRange, Workload
from romachip.dse.ties import _FUNCTIONS, HELPERS
from romachip.spec.reference import model_reference


def render() -> str:
    lines = [
        "# Sweep spec reference",
        "",
        "Generated from the schema by `python -m romachip.dse.reference`; do not edit by hand. The guide is",
        "[dse.md](dse.md); dotted paths address the fields of [config-reference.md](config-reference.md).",
        "",
        model_reference(SweepSpec, "SweepSpec (sweep YAML)"),
        model_reference(Axis, "Axis (each value of `axes`)"),
        model_reference(ValueRange, "ValueRange (`range:` of an axis)"),
        model_reference(LogRange, "LogRange (`log_range:` of an axis)"),
        model_reference(Workload, "Workload (each entry of `workloads`)"),
        model_reference(Objective, "Objective (each entry of `objectives`)"),
        "## Metrics (objectives, constraints, `--rank`)",
        "",
        "| metric | better | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{name}` | {goal} | {meaning} |" for name, (goal, meaning) in METRICS.items()]
    lines += [
        "| `tokens_per_s@C`, `mj_per_token@C` | max, min | at decode context C (`context_tokens`, `report_contexts`) |",
        "| `ttft_ms@P` | min | time to first token of a P-token prompt (from `prompt_tokens`) |",
        "",
        "## Tie expressions",
        "",
        "Numbers, dotted paths (`x[4]` for a dict key), `+ - * / // % **`, unary minus, and the functions "
        + ", ".join(f"`{f}()`" for f in _FUNCTIONS)
        + ". Named helpers:",
        "",
        "| helper | gives |",
        "|---|---|",
    ]
    lines += [f"| `{name}()` | {what} |" for name, what in HELPERS.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
