"""`romachip vectors IMAGE ...` (write golden vectors for the RTL) and `romachip vectors check DIR`."""

from __future__ import annotations

import click
import typer
from rich.table import Table
from typer.core import TyperGroup

from romachip.cli.app import app, console, print_json, progress_bar
from romachip.rom import RomImage


class _WriteByDefault(TyperGroup):
    """`romachip vectors IMAGE ...` means `romachip vectors write IMAGE ...`; `check` is the other command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["write", *args]
        return super().parse_args(ctx, args)


vectors_app = typer.Typer(
    cls=_WriteByDefault,
    no_args_is_help=True,
    help="Golden test vectors for the RTL: `romachip vectors IMAGE --prompt TEXT -o DIR` writes, per unit and op, "
    "its ROM ($readmemh per macro), SRAM, inputs and expected outputs; `romachip vectors check DIR` recomputes "
    "them independently. Format: docs/vectors.md.",
)
app.add_typer(vectors_app, name="vectors")


@vectors_app.command("write")
def write(
    image: str = typer.Argument(..., help="A ROM image written by `romachip burn`."),
    prompt: str = typer.Option(..., "--prompt", help="The prompt text (tokenized by the image's tokenizer)."),
    out: str = typer.Option(..., "-o", "--out", help="The folder to write (replaced if it holds vectors)."),
    adapter: str = typer.Option(None, "--adapter", help="A PEFT LoRA folder, stored as the chip stores it."),
    layers: str = typer.Option("0,last", "--layers", help="Layers to dump: 0,3 / 0-3 / last."),
    units: str = typer.Option("0-3", "--units", help="Matrix units (L-Unit + H-Unit) to dump: 0,5 / 0-3."),
    tokens: int = typer.Option(1, "--tokens", min=0, help="Greedy decode steps after the prefill (each one step)."),
    fmt: str = typer.Option("hex", "--format", help="hex ($readmemh files), npz (arrays.npz) or both."),
    chat: bool = typer.Option(False, "--chat", help="Wrap the prompt in the model's chat template."),
    activation: str = typer.Option(None, "--activation", help="bf16 or int8 (default: the chip's)."),
    kv: str = typer.Option(None, "--kv", help="KV cache precision: int8 or fp16 (default: the chip's)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Run the golden engine on a prompt and write every selected unit's vectors (docs/vectors.md)."""
    from romachip.vectors import write_vectors  # the engine and torch, only for this command
    from romachip.vectors.units import parse_selection

    rom = RomImage.open(image)
    layer_ids = parse_selection(layers, rom.spec.num_layers, "--layers")
    unit_ids = parse_selection(units, len(rom.manifest.units), "--units")
    with progress_bar() as bar:
        task = bar.add_task("vectors", total=None)

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(task, description=phase, completed=done, total=total)

        report = write_vectors(
            rom, prompt, out, chat=chat, units=unit_ids, layers=layer_ids, steps=tokens,
            adapter=adapter, fmt=fmt, activation=activation, kv=kv, progress=progress,
        )  # fmt: skip
    if as_json:
        print_json(report.to_dict())
        return
    t = Table(title=f"golden vectors in {report.out_dir}")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("units / layers", f"{report.units} / {report.layers}")
    t.add_row("steps", f"prefill + {report.steps} decode")
    t.add_row("ops", f"{report.ops:,}")
    t.add_row("files", f"{report.files:,} ({report.bytes_written / 2**20:.2f} MiB)")
    t.add_row("wall time", f"{report.seconds:.1f} s")
    console.print(t)


@vectors_app.command("check")
def check(
    folder: str = typer.Argument(..., help="A vector folder (its expected files may hold an RTL simulator's dump)."),
    image: str = typer.Option(None, "--image", help="The ROM image (default: the path the manifest records)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Recompute every expected output from the folder's inputs and memory contents (an implementation
    independent of the engine) and report the first mismatch by file and word; exit 1 on a mismatch."""
    from romachip.vectors import check_vectors

    report = check_vectors(folder, image=image)
    if as_json:
        print_json(report.to_dict())
    elif report.ok:
        console.print(
            f"[green]ok[/]: {report.ops_checked:,} ops, {report.files_checked:,} files, "
            f"{report.words_checked:,} words match (ROM checked against the {report.rom_reference})"
        )
    else:
        console.print(f"[bold red]mismatch[/]: {report.mismatch.message()}", highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)
