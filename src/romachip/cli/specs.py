"""`romachip presets` and `romachip models`: what ships with romachip."""

from __future__ import annotations

from importlib import resources

import typer
from rich.table import Table

from romachip.cli.app import app, console, print_json
from romachip.errors import SpecError
from romachip.spec import list_chips, list_models, load_chip, load_model_spec
from romachip.spec.tech import list_host_links, list_techs, load_host_link, load_tech


def _preset_text(name: str) -> tuple[str, str, dict]:
    """(kind, YAML text with its source comments, validated fields) of a chip, technology or host-link preset."""
    kinds = (("chip", "presets", list_chips, load_chip), ("tech", "tech", list_techs, load_tech))
    kinds += (("host link", "hosts", list_host_links, load_host_link),)
    for kind, folder, names, load in kinds:
        if name in names():
            text = (resources.files("romachip.spec") / folder / f"{name}.yaml").read_text()
            return kind, text, load(name).model_dump(mode="json")
    known = ", ".join(list_chips() + list_techs() + list_host_links())
    raise SpecError(f"no preset named {name!r}; chip, technology and host-link presets are: {known}")


@app.command()
def presets(
    show: str = typer.Option(
        None, "--show", help="Print one preset's YAML (chip, technology or host link), to start a custom one from."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the chip presets (use a name with --chip, or pass a YAML file path), the technology presets
    a chip's `tech` names and the host links its `host_link` names. `--show NAME` prints a preset's YAML,
    with the source of every number, to copy into a file and edit."""
    if show is not None:
        kind, text, fields = _preset_text(show)
        if as_json:
            print_json({"name": show, "kind": kind, "spec": fields})
        else:
            typer.echo(text, nl=False)  # verbatim: a YAML file to copy, comments and line breaks kept
        return
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
    others = {"tech": list_techs(), "host_links": list_host_links()}
    if as_json:
        print_json({"chips": rows, **others})
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
    console.print(f"technologies: {', '.join(others['tech'])}; host links: {', '.join(others['host_links'])}")
    console.print("[dim]romachip presets --show NAME prints a preset's YAML to start a custom one from[/]")


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
