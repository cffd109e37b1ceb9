"""`romachip simulate`: what a chip does for one request: TTFT, tokens/s, energy, power, bounds, area."""

from __future__ import annotations

import typer
from rich.table import Table

from romachip.capacity import DEFAULT_FORMAT, DEFAULT_LORA, DEFAULT_STRATEGY, check_weight_bits, plan
from romachip.cli.app import app, console, err_console, print_json
from romachip.cli.fit import DEFAULT_CHIP, DEFAULT_MODEL, parse_lora_targets
from romachip.compile import compile_placement
from romachip.errors import CapacityError
from romachip.files import output_file
from romachip.perf.simulate import ChipModel, SimReport, report
from romachip.perf.trace import write_trace
from romachip.quant.formats import WeightFormat
from romachip.spec import load_chip, load_model_spec
from romachip.tensor_bits import DEFAULT_POLICY, StoragePolicy
from romachip.workload import KvConfig, LoraConfig


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _tables(r: SimReport) -> list[Table]:
    head = Table(title=f"{r.model} ({r.weight_bits}-bit, LoRA rank {r.lora_rank}) on {r.chip}")
    head.add_column("quantity")
    head.add_column("value", justify="right")
    head.add_column("how", style="dim")
    rows = [
        ("TTFT", f"{r.ttft_ms:.3f} ms", f"prefill of {r.prompt_tokens} tokens, {r.prefill_cycles:,} cycles"),
        ("decode, first", f"{r.decode_tokens_per_s_first:,.0f} tok/s", f"context {r.prompt_tokens}"),
        (
            "decode, last",
            f"{r.decode_tokens_per_s_last:,.0f} tok/s",
            f"context {r.prompt_tokens + max(r.generate_tokens - 2, 0)}",
        ),
        ("decode, average", f"{r.decode_tokens_per_s:,.0f} tok/s", "decoded tokens / their total time"),
        ("energy per token", f"{r.energy_per_token_mj:.3f} mJ", "decode: event counts x energy table + leakage"),
        ("power", f"{r.power_w:.2f} W", "decode average"),
        ("prefill energy", f"{r.prefill_energy_mj:.2f} mJ", f"{r.prefill_power_w:.2f} W"),
        ("LoRA share", f"{_pct(r.lora_time_share)} time", f"{_pct(r.lora_energy_share)} of decode dynamic energy"),
        ("area", f"{r.area_mm2:.1f} mm²", ", ".join(f"{k} {v:.1f}" for k, v in r.area_breakdown_mm2.items())),
        ("operating point", f"{r.voltage_v:.3g} V", f"{r.clock_hz / 1e6:,.0f} MHz, {r.hops_per_cycle} hops per cycle"),
        (
            "host link",
            f"{r.host_bytes_per_token:,.0f} B/token",
            f"{r.host_link}: needs {r.host_bandwidth_needed_bytes_per_s / 1e9:,.3g} GB/s at the average decode rate",
        ),
    ]
    for row in rows:
        head.add_row(*row)
    bound = Table(title="what bounds each phase (share of the critical path) and busy share per unit")
    bound.add_column("phase")
    bound.add_column("bound by")
    bound.add_column("utilisation (busiest unit of each type)")
    for phase, shares in r.bound_by_phase.items():
        b = ", ".join(f"{k} {_pct(v)}" for k, v in shares.items() if v >= 0.005)
        u = ", ".join(f"{k} {_pct(v)}" for k, v in sorted(r.utilization_by_phase[phase].items()))
        bound.add_row(phase, b, u)
    energy = Table(title="energy per decoded token (mJ)")
    energy.add_column("unit.event")
    energy.add_column("mJ", justify="right")
    energy.add_column("share", justify="right")
    for k, v in sorted(r.energy_per_token_by_part_mj.items(), key=lambda kv: -kv[1]):
        energy.add_row(k, f"{v:.4f}", _pct(v / r.energy_per_token_mj))
    return [head, bound, energy]


@app.command()
def simulate(
    chip: str = typer.Option(DEFAULT_CHIP, "--chip", help="Chip preset name or path to a chip YAML."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Named model (see `romachip models`) or a config.json."),
    bits: int = typer.Option(DEFAULT_FORMAT.bits, "--bits", min=1, help="Weight code width."),
    group_size: int = typer.Option(
        DEFAULT_FORMAT.group_size,
        "--group-size",
        min=0,
        help="Weights per group; 0 = a row. The default is the paper's format; `fit` and `burn` may choose 32 "
        "(see their note) - pass it here to simulate that.",
    ),
    lora_rank: int = typer.Option(DEFAULT_LORA.rank, "--lora-rank", min=0, help="LoRA rank (0: no adapters)."),
    lora_targets: str = typer.Option("all", "--lora-targets", help="Comma-separated modules to adapt, or 'all'."),
    prompt: int = typer.Option(256, "--prompt", min=1, help="Prompt tokens (prefill)."),
    generate: int = typer.Option(
        256, "--generate", min=1, help="Tokens to generate (the first comes from the prefill)."
    ),
    storage_policy: str = typer.Option(
        DEFAULT_POLICY.value,
        "--storage-policy",
        help="rom_weight, rom_int8, off_chip or off_chip_all (`fit` and `burn` choose rom_int8 where it fits).",
    ),
    strategy: str = typer.Option(DEFAULT_STRATEGY, "--strategy", help="Placement: spread or layer_groups."),
    trace: str = typer.Option(None, "--trace", help="Write a Chrome/Perfetto trace (JSON) of the timeline here."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Simulate a request on a chip with the event-driven timing model: time to first token, decode
    tokens/s at the first and last context of the run and on average, energy per token, power, what
    bounds each phase, utilisation per unit type, and the die area. Every number comes from the chip
    and technology presets (calibrated values are marked there) and the model's op graph."""
    if prompt < 1 or generate < 1:
        raise CapacityError(f"--prompt and --generate must be >= 1 token, got {prompt} and {generate}")
    chip_spec = load_chip(chip)
    check_weight_bits(chip_spec, bits)  # this chip's widths, not only the format's
    spec = load_model_spec(model)
    fmt = WeightFormat(bits=bits, group_size=group_size or None, scale_dtype=DEFAULT_FORMAT.scale_dtype)
    lora = LoraConfig(rank=lora_rank, targets=parse_lora_targets(lora_targets), dtype=chip_spec.precision.lora)
    policy = StoragePolicy.parse(storage_policy)
    kv = KvConfig(dtype=chip_spec.precision.kv, context_tokens=prompt + generate)
    placement = compile_placement(chip_spec, spec, fmt, strategy=strategy, policy=policy, lora=lora, kv=kv)
    fit = plan(chip_spec, spec, fmt=fmt, lora=lora, kv=kv, placement=placement)
    if not fit.fits:
        raise CapacityError(
            f"{model} with rank-{lora_rank} LoRA and {prompt + generate} tokens of context does not fit {chip}: "
            + "; ".join(fit.reasons)
            + " (see `romachip fit`)"
        )
    if trace is not None:
        output_file(trace, what="trace")
    with err_console.status("simulating", spinner="dots"):
        cm = ChipModel(chip_spec, spec, fmt=fmt, lora=lora, placement=placement)
        r = report(cm, prompt, generate)
        if trace is not None:
            write_trace(trace, cm.schedules(prompt, generate), chip_spec.clock_hz)
    if as_json:
        print_json(r.to_dict())
    else:
        for t in _tables(r):
            console.print(t)
        console.print(f"[dim]{r.decode_method}[/]", highlight=False)
    if trace is not None:
        err_console.print(f"trace written to {trace} (open at https://ui.perfetto.dev)")
