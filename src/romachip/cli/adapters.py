"""`romachip adapters check`: does a PEFT LoRA adapter fit a ROM image's chip, and what does it cost?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from romachip.capacity import DEFAULT_KV
from romachip.cli.app import EXIT_DOES_NOT_FIT, app, console, err_console, finite, print_json
from romachip.errors import AdapterError, CapacityError
from romachip.rom import RomImage
from romachip.sram.bank import AdapterBank, BankOp
from romachip.sram.peft_import import read_peft_adapter
from romachip.sram.storage import AdapterView, storage_error
from romachip.workload import KvConfig

MIB = 2**20

adapters_app = typer.Typer(
    help="LoRA adapters in the H-Units' SRAM: check an adapter against a ROM image's chip.", no_args_is_help=True
)
app.add_typer(adapters_app, name="adapters")


def parse_adapter_options(values: list[str]) -> list[tuple[str, Path]]:
    """`--adapter DIR` or `--adapter name=DIR` (repeatable) -> [(name, folder)]; a bare DIR is named after
    its folder."""
    out: list[tuple[str, Path]] = []
    for value in values:
        name, sep, folder = value.partition("=")
        name, path = (name, Path(folder)) if sep and name and folder else (Path(value).name, Path(value))
        if name in [n for n, _ in out]:
            raise AdapterError(f"--adapter: the name {name!r} is given twice; name them with --adapter NAME=DIR")
        out.append((name, path))
    return out


def request_adapter(
    image: RomImage, values: list[str], use: str | None, *, precision: str | None, kv: KvConfig
) -> tuple[AdapterView | None, list[BankOp], AdapterBank]:
    """Load the `--adapter` folders into a bank of the image's chip, on the image's placement (refused if
    the request's context no longer fits), and return the view of the one `--use` names (`none`: the base
    model), the bank ops and the bank (which decides the engine's context)."""
    loaded = parse_adapter_options(values)
    if not loaded and use not in (None, "none"):
        raise AdapterError(f"--use {use!r}: no adapter is loaded; give it with --adapter {use}=DIR")
    bank = AdapterBank.for_image(image, kv=kv, precision=precision)
    ops = [bank.load(name, folder) for name, folder in loaded]
    if use is None and len(loaded) > 1:
        names = ", ".join(n for n, _ in loaded)
        raise AdapterError(f"{len(loaded)} adapters are loaded ({names}): pick the request's one with --use NAME")
    if use == "none" or not loaded:
        return None, ops, bank
    return bank.view(use or loaded[0][0]), ops, bank


def adapter_ops_table(ops: list[BankOp], used: str | None) -> Table:
    """What loading the adapters did to the chip's SRAM (over the host link, all H-Units writing in parallel)."""
    t = Table(title=f"adapters in H-Unit SRAM (this request: {used or 'none, the base model'})")
    for col in ("adapter", "SRAM written", "load time", "load energy", "max context after"):
        t.add_column(col, justify="left" if col == "adapter" else "right")
    for op in ops:
        t.add_row(
            op.adapter, f"{op.sram_bytes_written:,} B", f"{op.write_s * 1e6:.3g} µs ({op.write_cycles:,} cycles)",
            f"{op.write_energy_j * 1e6:.3g} µJ", f"{op.max_context_tokens:,} tokens",
        )  # fmt: skip
    return t


def _range(values: list[float], fmt: str = "{:g}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)} .. {fmt.format(hi)}"


def adapter_check(
    image: RomImage, folder: Path, *, precision: str | None, kv: KvConfig, sram_bytes: int | None
) -> dict[str, Any]:
    """Everything `adapters check` reports, as a JSON-able dict."""
    bank = AdapterBank.for_image(image, kv=kv, precision=precision, sram_bytes=sram_bytes)
    adapter = read_peft_adapter(folder, image.spec)
    prepared = bank.prepare(adapter, name=folder.name or "adapter")
    verdict = bank.verdict(prepared)
    nbytes, cycles, seconds, joules = bank.write_cost(prepared)
    mods = list(adapter.modules.values())
    return {
        "adapter": str(folder),
        "image": str(image.path),
        "model": image.spec.name,
        "chip": bank.chip.name,
        "adapter_base_model": adapter.base_model,
        "fits": verdict.fits,
        "message": verdict.message,
        "precision": prepared.stored.precision,
        "source_dtype": adapter.source_dtype,
        "sram_bytes": nbytes,
        "params": adapter.params,
        "modules": len(mods),
        "rank_min": min(m.rank for m in mods),
        "rank_max": adapter.max_rank,
        "targets": adapter.targets,
        "layers": adapter.layers,
        "use_rslora": adapter.use_rslora,
        "alpha_min": min(m.alpha for m in mods),
        "alpha_max": max(m.alpha for m in mods),
        "scale_min": min(m.scale for m in mods),
        "scale_max": max(m.scale for m in mods),
        "reserved_context_tokens": kv.context_tokens,
        "max_context_tokens_before": verdict.max_context_before,
        "max_context_tokens_after": verdict.max_context_after,
        "context_limit": verdict.context_limit,
        "load_cycles": cycles,
        "load_s": seconds,
        "load_energy_j": joules,
        **storage_error(adapter, prepared.stored),
        "notes": list(adapter.notes),
    }


def _table(r: dict[str, Any]) -> Table:
    t = Table(title=f"adapter {r['adapter']} on {r['model']} / {r['chip']}")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_column("how", style="dim")
    yes = {True: "[green]yes[/]", False: "[red]no[/]"}
    scaling = "alpha/sqrt(r) (rsLoRA)" if r["use_rslora"] else "alpha/r"
    layers = r["layers"]
    rows = [
        ("fits", yes[r["fits"]], f"next to a {r['reserved_context_tokens']:,}-token KV cache"),
        ("SRAM", f"{r['sram_bytes'] / MIB:,.3f} MiB", f"{r['sram_bytes']:,} B {r['precision']}; file {r['source_dtype']}"),  # noqa: E501
        ("parameters", f"{r['params']:,}", f"{r['modules']} adapted projections"),
        ("rank", _range([r["rank_min"], r["rank_max"]]), "r / rank_pattern"),
        ("targets", ", ".join(r["targets"]), f"layers {layers[0]}..{layers[-1]} ({len(layers)} of them)"),
        ("alpha", _range([r["alpha_min"], r["alpha_max"]]), "lora_alpha / alpha_pattern"),
        ("scale", _range([r["scale_min"], r["scale_max"]], "{:.6g}"), scaling),
        ("max context", f"{r['max_context_tokens_before']:,} -> {r['max_context_tokens_after']:,} tokens",
         f"without -> with this adapter; limited by {r['context_limit']}"),
        ("load time", f"{r['load_s'] * 1e6:.3g} µs", f"{r['load_cycles']:,} cycles over the host link"),
        ("load energy", f"{r['load_energy_j'] * 1e6:.3g} µJ", "bits x (host link + SRAM write) energy"),
        ("storage error", f"{r['delta_w_rel_error']:.2e}",
         f"||dW_stored - dW|| / ||dW||; worst module {r['worst_module_rel_error']:.2e}"),
    ]  # fmt: skip
    for row in rows:
        t.add_row(*row)
    return t


@adapters_app.command("check")
def check(
    image_path: Annotated[Path, typer.Argument(help="The ROM image (.rom) the adapter will run on.")],
    adapter_dir: Annotated[Path, typer.Argument(help="A PEFT adapter folder (adapter_config.json + safetensors).")],
    precision: Annotated[
        str | None, typer.Option("--precision", help="fp8_e4m3, fp16 or bf16 (default: the chip's).")
    ] = None,
    context: Annotated[
        int, typer.Option("--context", min=1, help="KV context the chip must still hold next to the adapter.")
    ] = DEFAULT_KV.context_tokens,
    kv_dtype: Annotated[str | None, typer.Option("--kv-dtype", help="int8 or fp16 (default: the chip's).")] = None,
    sram_mb: Annotated[
        float | None,
        typer.Option("--sram-mb", callback=finite(0), help="Override the chip's H-Unit SRAM (MiB, all units)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Check a PEFT LoRA adapter against a ROM image: does it fit the H-Unit SRAM next to the KV context,
    how many bytes, which rank, targets and scaling, how long it takes to load, and its storage error.
    Exit status: 0 when it fits, 1 when it does not (with the budget), 2 for bad input."""
    image = RomImage.open(image_path)
    if sram_mb is not None and sram_mb < 0:
        raise CapacityError(f"--sram-mb must be >= 0 MiB, got {sram_mb}")
    kv = KvConfig(dtype=kv_dtype or image.chip.precision.kv, context_tokens=context)
    sram_bytes = None if sram_mb is None else int(sram_mb * MIB)
    report = adapter_check(image, adapter_dir, precision=precision, kv=kv, sram_bytes=sram_bytes)
    if as_json:
        print_json(report)
    else:
        console.print(_table(report))
        for note in report["notes"]:
            console.print(f"- {note}", highlight=False)
    if not report["fits"]:
        err_console.print(f"[bold]does not fit:[/] {report['message']}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_DOES_NOT_FIT)
