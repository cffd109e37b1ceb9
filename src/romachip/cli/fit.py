"""`romachip fit`: does a model + LoRA adapters + KV context fit a chip, and where does every byte go?"""

from __future__ import annotations

import typer
from rich.table import Table

from romachip.capacity import (
    AUTO_GROUP,
    AUTO_POLICY,
    DEFAULT_FORMAT,
    DEFAULT_KV,
    DEFAULT_LORA,
    DEFAULT_STRATEGY,
    CapacityReport,
    check_weight_bits,
    choose_storage,
    plan,
)
from romachip.cli.app import EXIT_DOES_NOT_FIT, app, console, finite, print_json
from romachip.errors import CapacityError
from romachip.perf.design import host_bytes_per_token
from romachip.quant.formats import WeightFormat
from romachip.spec import ChipSpec, ModelSpec, load_chip, load_model_spec
from romachip.spec.tech import load_host_link
from romachip.tensor_bits import StoragePolicy
from romachip.workload import ALL_TARGETS, KvConfig, LoraConfig

DEFAULT_CHIP = "roma"
DEFAULT_MODEL = "llama-3.2-3b"
MIB = 2**20


def parse_lora_targets(text: str) -> tuple[str, ...]:
    if text.strip() == "all":
        return ALL_TARGETS
    if text.strip() in ("", "none"):
        return ()
    return tuple(t.strip() for t in text.split(","))


def _mib(n: int) -> str:
    return f"{n / MIB:,.2f} MiB"


def _summary_table(r: CapacityReport) -> Table:
    t = Table(title=f"{r.model} on {r.chip}: {r.weight_format}, policy {r.policy}", show_header=True)
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_column("how", style="dim")
    yes = {True: "[green]yes[/]", False: "[red]no[/]"}
    rows = [
        (
            "fits",
            yes[r.fits],
            f"ROM {yes[r.rom.rom_fits]}, SRAM at {r.context_tokens:,} tokens {yes[r.sram.sram_fits]}",
        ),
        ("ROM needed", _mib(r.rom.rom_bytes_needed), f"{r.rom.rom_bytes_needed:,} B exact tensor bits"),
        ("ROM allocated", _mib(r.rom.rom_bytes_allocated), "whole rows per L-Unit, word/B-ROM alignment"),
        ("ROM available", _mib(r.rom.rom_bytes_available), f"{r.rom.rom_bytes_available:,} B"),
        ("ROM margin", _mib(r.rom.rom_margin_bytes), f"{r.rom.rom_margin_bytes:,} B chip-wide"),
        ("fullest L-Unit", f"{r.rom.rom_unit_bytes_used_max:,} B", f"of {r.rom.rom_unit_bytes:,} B per unit"),
        ("L-Unit margin", f"{r.rom.rom_unit_margin_bytes:,} B", "decides the fit"),
        ("host memory", _mib(r.rom.host_bytes), "tables kept off chip by the policy"),
        ("H-Unit SRAM", _mib(r.sram.sram_bytes_available), f"{r.sram.sram_unit_bytes:,} B per unit, LoRA + KV"),
        (
            "LoRA",
            _mib(r.sram.lora_bytes),
            f"rank {r.lora_rank} {r.lora_dtype}; fullest unit {r.sram.lora_unit_bytes_max:,} B",
        ),
        ("KV per token", f"{r.sram.kv_bytes_per_token:,} B", f"{r.kv_dtype}; {r.sram.kv_layout} over the H-Units"),
        (
            "KV at context",
            _mib(r.sram.kv_bytes),
            f"{r.context_tokens:,} tokens; busiest unit {r.sram.kv_unit_tokens_max:,}",
        ),
        (
            "activations",
            f"{r.sram.activation_bytes:,} B",
            f"decode peak; {r.sram.activation_unit_bytes:,} B per vector unit",
        ),
        ("vector SRAM", _mib(r.sram.vector_sram_bytes_available), f"{r.sram.vector_unit_bytes:,} B per unit"),
        ("max context", f"{r.context.max_context_tokens:,} tokens", f"limited by {r.context.context_limit}"),
    ]
    for row in rows:
        t.add_row(*row)
    return t


def _host_link(chip: ChipSpec, spec: ModelSpec, fmt: WeightFormat, policy: str, tokens_per_s: float | None) -> dict:
    """What the host link carries per decoded token and, at `tokens_per_s`, the bandwidth that needs."""
    if tokens_per_s is not None and tokens_per_s <= 0:
        raise CapacityError(f"--tokens-per-s must be > 0, got {tokens_per_s}")
    link = load_host_link(chip.host_link)
    per_token = host_bytes_per_token(chip, spec, fmt=fmt, policy=policy)
    return {
        "name": link.name,
        "bandwidth_bytes_per_s": link.bandwidth_bytes_per_s,
        "bytes_per_token": per_token,
        "bandwidth_needed_bytes_per_s": per_token * tokens_per_s if tokens_per_s is not None else None,
    }


def _breakdown_table(r: CapacityReport) -> Table:
    t = Table(title="where the bytes go (MiB; total also in bytes)")
    for col in ("kind", "memory", "tensors", "codes", "scales", "zeros", "total", "total B"):
        t.add_column(col, justify="left" if col in ("kind", "memory") else "right")
    for b in r.breakdown:
        mib = (f"{n / MIB:,.2f}" for n in (b.code_bytes, b.scale_bytes, b.zero_bytes, b.bytes))
        t.add_row(b.kind, b.memory, f"{b.tensors:,}", *mib, f"{b.bytes:,}")
    return t


@app.command()
def fit(
    chip: str = typer.Option(DEFAULT_CHIP, "--chip", help="Chip preset name or path to a chip YAML."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Named model (see `romachip models`) or a config.json."),
    bits: int = typer.Option(
        DEFAULT_FORMAT.bits, "--bits", min=1, help="Weight code width (the chip must support it)."
    ),
    group_size: int = typer.Option(
        None,
        "--group-size",
        min=0,
        help="Weights per quantization group along the input; 0 = a row [default: as `burn` chooses, 32 when "
        "the model fits the ROM at it, else 128].",
    ),
    symmetric: bool = typer.Option(DEFAULT_FORMAT.symmetric, "--symmetric", help="Symmetric codes: no zero-points."),
    lora_rank: int = typer.Option(DEFAULT_LORA.rank, "--lora-rank", min=0, help="LoRA rank (0: no adapters)."),
    lora_targets: str = typer.Option(
        "all", "--lora-targets", help=f"Comma-separated modules to adapt, or 'all' ({','.join(ALL_TARGETS)})."
    ),
    lora_dtype: str = typer.Option(None, "--lora-dtype", help="fp8_e4m3, fp16 or bf16 [default: the chip's]."),
    kv_dtype: str = typer.Option(None, "--kv-dtype", help="int8 or fp16 [default: the chip's]."),
    context: int = typer.Option(DEFAULT_KV.context_tokens, "--context", min=1, help="KV context to check, in tokens."),
    kv_scale_bytes: int = typer.Option(
        None,
        "--kv-scale-bytes",
        min=0,
        help="Scale bytes per cached head vector per token [default: the engine's for the KV dtype: 4 for int8 "
        "(a float32 scale), 0 for fp16; docs/numerics.md].",
    ),
    sram_mb: float = typer.Option(
        None,
        "--sram-mb",
        callback=finite(0, min_open=True),
        help="Override the chip's H-Unit SRAM for LoRA + KV, in MiB (all units together).",
    ),
    storage_policy: str = typer.Option(
        AUTO_POLICY,
        "--storage-policy",
        help="Where the embedding table and LM head go: auto (as `burn` chooses: rom_int8 when it fits, else "
        "rom_weight), rom_weight, rom_int8, off_chip (embedding on the host), off_chip_all (embedding and LM "
        "head on the host). See docs/capacity.md.",
    ),
    strategy: str = typer.Option(DEFAULT_STRATEGY, "--strategy", help="Placement: spread or layer_groups."),
    tokens_per_s: float = typer.Option(
        None,
        "--tokens-per-s",
        callback=finite(0, min_open=True),
        help="Decode rate to size the host link for (off-chip tables and token ids).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Check that a model, its LoRA adapters and a KV context fit a chip's ROM and SRAM, and find the
    longest context that fits. Sizes are exact (codes, scales, zeros) and allocated per unit. With
    `--tokens-per-s`, also the host-link bandwidth that decode rate needs.

    Exit status: 0 when it fits, 1 when it does not (a verdict, with the reasons), 2 for bad input."""
    chip_spec = load_chip(chip)
    check_weight_bits(chip_spec, bits)  # this chip's widths, not only the format's
    spec = load_model_spec(model)
    if sram_mb is not None and sram_mb < 0:
        raise CapacityError(f"--sram-mb must be >= 0 MiB, got {sram_mb}")
    WeightFormat(bits=bits, group_size=group_size or None, symmetric=symmetric)  # refuses a bad format up front
    if storage_policy != AUTO_POLICY:
        StoragePolicy.parse(storage_policy)
    group = AUTO_GROUP if group_size is None else group_size or None
    choice = choose_storage(chip_spec, spec, bits=bits, symmetric=symmetric, group_size=group,
                            policy=storage_policy, strategy=strategy)  # fmt: skip
    fmt, storage_policy = choice.fmt, choice.policy.value
    lora = LoraConfig(
        rank=lora_rank, targets=parse_lora_targets(lora_targets), dtype=lora_dtype or chip_spec.precision.lora
    )
    kv = KvConfig(
        dtype=kv_dtype or chip_spec.precision.kv, context_tokens=context, scale_bytes_per_vector=kv_scale_bytes
    )
    sram_bytes = None if sram_mb is None else int(sram_mb * MIB)
    # the choice's placement when choose_storage compiled one (one compilation per command)
    report = plan(chip_spec, spec, fmt=fmt, lora=lora, kv=kv, policy=storage_policy, strategy=strategy,
                  sram_bytes=sram_bytes, placement=choice.placement)  # fmt: skip
    host = _host_link(chip_spec, spec, fmt, storage_policy, tokens_per_s)
    if as_json:
        print_json(report.to_dict() | {"host_link": host, "notes": list(choice.notes)})
        _exit_with_verdict(report.fits)
        return
    for note in choice.notes:
        console.print(f"[cyan]note:[/] {note}", highlight=False, soft_wrap=True)
    console.print(_summary_table(report))
    console.print(_breakdown_table(report))
    need = host["bandwidth_needed_bytes_per_s"]
    line = f"host link {host['name']}: {host['bytes_per_token']:,.0f} B per decoded token"
    if need is not None:
        have = host["bandwidth_bytes_per_s"] / 1e9
        line += f"; {tokens_per_s:,.0f} tok/s need {need / 1e9:,.3g} GB/s of its {have:,.3g}"
    console.print(line, highlight=False)
    for reason in report.reasons:
        console.print(f"- {reason}", highlight=False)
    _exit_with_verdict(report.fits)


def _exit_with_verdict(fits: bool) -> None:
    if not fits:
        raise typer.Exit(EXIT_DOES_NOT_FIT)
