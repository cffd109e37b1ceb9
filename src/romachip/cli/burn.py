"""`romachip burn` (checkpoint -> quantized model -> ROM image) and `romachip inspect` (verify an image)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from romachip.capacity import AUTO_GROUP, AUTO_POLICY, DEFAULT_STRATEGY, check_weight_bits
from romachip.cli.app import app, console, err_console, print_json, progress_bar
from romachip.files import output_file, read_text
from romachip.quant.formats import WeightFormat
from romachip.quant.quantize import CALIBRATION_SEQUENCES, CALIBRATION_TOKENS, DEFAULT_QUANTIZER, check_quantizer
from romachip.quant.sampled import SAMPLED_SEQUENCES
from romachip.rom import RomImage
from romachip.rom.pipeline import burn_checkpoint
from romachip.spec import load_chip
from romachip.tensor_bits import StoragePolicy

DEFAULT_FMT = WeightFormat()
MIB = 2**20


def _mib(n: int) -> str:
    return f"{n / MIB:,.2f} MiB"


def _read_calibration(path: Path | None) -> str | None:
    return None if path is None else read_text(path, what="calibration text")


@app.command()
def burn(
    checkpoint: str = typer.Argument(..., help="A Hugging Face folder, a .gguf file, or the name smollm2-135m."),
    output: str = typer.Option(..., "-o", "--output", help="Where to write the ROM image (.rom)."),
    chip: str = typer.Option("roma", "--chip", help="Chip preset name or path to a chip YAML."),
    bits: int = typer.Option(DEFAULT_FMT.bits, "--bits", min=1, help="Weight code width (the chip must support it)."),
    group_size: int = typer.Option(
        None,
        "--group-size",
        min=0,
        help="Weights per quantization group along the input; 0 = a row [default: 32 when the model fits the "
        "chip's ROM at it, else 128; the output says which and what the scales cost].",
    ),
    symmetric: bool = typer.Option(DEFAULT_FMT.symmetric, "--symmetric", help="Symmetric codes: no zero-points."),
    quantizer: str = typer.Option(
        DEFAULT_QUANTIZER,
        "--quantizer",
        help="gptq (the default: error feedback from calibration activations; minutes on a small model, the "
        "progress bar shows the ETA), rtn (round to nearest: seconds, lower quality), or rtn-search (each "
        "group's scale/zero searched for the least norm-weighted error). Measured in docs/quantization.md.",
    ),
    calibration: str = typer.Option(
        None,
        "--calibration",
        help="UTF-8 text file for GPTQ calibration [default: text the model samples itself from its BOS token, "
        "seed 0, so the burn needs no data].",
    ),
    calibration_tokens: int = typer.Option(
        None,
        "--calibration-tokens",
        min=1,
        help=f"GPTQ's calibration budget in tokens, in windows of {CALIBRATION_TOKENS} (spread over a given "
        f"text) [default: {SAMPLED_SEQUENCES * CALIBRATION_TOKENS} sampled, "
        f"{CALIBRATION_SEQUENCES * CALIBRATION_TOKENS} of a --calibration text]; time grows with it.",
    ),
    strategy: str = typer.Option(DEFAULT_STRATEGY, "--strategy", help="Placement: spread or layer_groups."),
    storage_policy: str = typer.Option(
        AUTO_POLICY,
        "--storage-policy",
        help="Where the embedding table and LM head go: auto (rom_int8 when it fits, else rom_weight, said in "
        "the output), rom_weight, rom_int8, off_chip, off_chip_all (off-chip tables are written to the image's "
        "host region).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of tables."),
) -> None:
    """Quantize a checkpoint into the chip's weight format and burn it into a ROM image: every tile in
    its L-Unit's ROM, B-ROM encoded, with a CRC-32 per unit (format: docs/rom-format.md). A model that
    does not fit the chip is refused with the capacity planner's breakdown, before anything is written."""
    output_file(output, what="ROM image")
    chip_spec = load_chip(chip)
    check_weight_bits(chip_spec, bits)  # every option is checked before the checkpoint loads (seconds)
    WeightFormat(bits=bits, group_size=group_size or None, symmetric=symmetric)  # refuses a bad format up front
    calibration_text = _read_calibration(None if calibration is None else Path(calibration))
    check_quantizer(quantizer, calibration_text)
    if storage_policy != AUTO_POLICY:
        StoragePolicy.parse(storage_policy)
    with progress_bar() as bar:
        tasks: dict[str, int] = {}
        labels = {"load": "loading", "calibrate": "sample calibration", "quantize": "quantize", "burn": "burn"}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(labels[stage], total=total or None)
            bar.update(tasks[stage], completed=done, total=total or None)

        report = burn_checkpoint(
            checkpoint, output, chip_spec, chip_preset=chip, bits=bits, symmetric=symmetric,
            group_size=AUTO_GROUP if group_size is None else group_size or None, quantizer=quantizer,
            calibration_text=calibration_text, calibration_tokens=calibration_tokens, strategy=strategy,
            policy=storage_policy, progress=progress,
        )  # fmt: skip
    result = report.to_dict()
    for note in result["notes"]:
        err_console.print(f"[cyan]note:[/] {note}", highlight=False, soft_wrap=True)
    for warning in result["warnings"]:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if as_json:
        print_json(result)
        return
    console.print(_burn_table(result))


def _burn_table(r: dict) -> Table:
    t = Table(title=f"burned {r['model']} -> {r['path']}")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_column("how", style="dim")
    t.add_row("format", r["weight_format"], f"{r['quantizer']}, policy {r['storage_policy']}, {r['strategy']}")
    t.add_row("fits", "[green]yes[/]", f"fullest L-Unit {r['rom_unit_bytes_used_max']:,} of {r['rom_unit_bytes']:,} B")
    t.add_row("ROM used", _mib(r["rom_bytes_allocated"]), f"of {_mib(r['rom_bytes_available'])}; padding included")
    for kind, n in r["bytes_by_kind"].items():
        t.add_row(f"  {kind}", _mib(n), f"{n:,} B")
    t.add_row("image file", _mib(r["file_bytes"]), f"header {r['header_bytes']:,} B + payload {r['payload_bytes']:,} B")
    t.add_row("tiles", f"{r['tiles']:,}", f"over {r['units']} L-Units")
    walls = r["wall_s"]
    how = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in walls.items() if k != "total_s")
    t.add_row("wall time", f"{walls['total_s']:.1f} s", how)
    return t


@app.command()
def inspect(
    image: str = typer.Argument(..., help="A ROM image written by `romachip burn`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print a ROM image's manifest summary after verifying its header, sizes and every checksum."""
    t0 = time.perf_counter()
    img = RomImage.open(image)
    summary = {**img.summary(), "checksums": "ok", "verify_s": round(time.perf_counter() - t0, 3)}
    summary["sha256"] = img.digest()  # what `run --expect-digest` checks
    summary["tensors_by_kind"] = img.tensors_by_kind()
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"ROM image {image}")
    table.add_column("field")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if isinstance(value, int) and not isinstance(value, bool) and "bytes" in key:
            value = f"{value:,} B ({value / MIB:,.2f} MiB)"
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        table.add_row(key, str(value))
    console.print(table)
    spec, placement = img.spec, img.manifest.placement
    console.print(
        f"model {spec.name}: {spec.num_layers} layers, hidden {spec.hidden_size}, vocab {spec.vocab_size}; "
        f"{placement.tiles:,} tiles on {placement.matrix_units} L-Units; checksums verified (they catch "
        "accidents, not edits: record the sha256 and pass it to `run --expect-digest`)",
        highlight=False,
    )
