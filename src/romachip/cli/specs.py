"""`romachip presets` and `romachip models`: what ships with romachip."""

from __future__ import annotations

import typer
from rich.table import Table

from romachip.cli.app import app, console, print_json
from romachip.spec import list_chips, list_models, load_chip, load_model_spec


@app.command()
def presets(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the chip presets (use a name with --chip, or pass a YAML file path)."""
    rows = []
    for name in list_chips():
        chip = load_chip(name)
        rows.append(
            {
                "name": name,
                "description": chip.description,
                "clock_hz": chip.clock_hz,
                "matrix_units": chip.matrix_units,
                "vector_units": chip.vector_units,
                "rom_bytes": chip.rom_bytes,
                "h_sram_bytes": chip.h_sram_bytes,
                "vector_sram_bytes": chip.vector_sram_bytes,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table(title="chip presets")
    for col in ("name", "clock", "matrix units", "vector units", "ROM", "H-Unit SRAM", "vector SRAM", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            f"{r['clock_hz'] / 1e6:g} MHz",
            str(r["matrix_units"]),
            str(r["vector_units"]),
            f"{r['rom_bytes'] / 2**30:.3f} GiB",
            f"{r['h_sram_bytes'] / 2**20:.1f} MiB",
            f"{r['vector_sram_bytes'] / 2**20:.1f} MiB",
            r["description"],
        )
    console.print(table)


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the named models (use a name with --model, or pass a config.json path)."""
    rows = []
    for name in list_models():
        spec = load_model_spec(name)
        rows.append(
            {
                "name": name,
                "params": spec.total_params(),
                "layers": spec.num_layers,
                "hidden_size": spec.hidden_size,
                "heads": spec.num_heads,
                "kv_heads": spec.num_kv_heads,
                "vocab_size": spec.vocab_size,
                "tied_embeddings": spec.tie_word_embeddings,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table(title="models")
    for col in ("name", "params", "layers", "hidden", "heads / kv", "vocab", "tied"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            f"{r['params'] / 1e9:.3f} B",
            str(r["layers"]),
            str(r["hidden_size"]),
            f"{r['heads']} / {r['kv_heads']}",
            str(r["vocab_size"]),
            "yes" if r["tied_embeddings"] else "no",
        )
    console.print(table)
