"""`romachip run` (generate from a ROM image), `romachip eval` (perplexity) and `romachip demo`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer
from rich.table import Table

from romachip.cli.adapters import adapter_ops_table, request_adapter
from romachip.cli.app import THREADS_HELP, app, console, err_console, finite, print_json, progress_bar
from romachip.errors import GenerationError, RomachipError
from romachip.files import read_text
from romachip.rom import RomImage
from romachip.sram.storage import AdapterView
from romachip.workload import KvConfig

if TYPE_CHECKING:  # the engine (and torch under it) is imported by the commands that run it, not by --help
    from romachip.engine.generate import Engine, Generation

DEFAULT_WINDOW = 256
ADAPTER_HELP = "A PEFT LoRA folder, or NAME=DIR; repeatable (several adapters resident, pick one with --use)."


def _open_engine(
    image: str | Path, activation: str | None, kv: str | None, threads: int = 1, expect_digest: str | None = None
) -> tuple[RomImage, Engine]:
    if threads < 1:
        raise GenerationError(f"--threads must be at least 1, got {threads}")
    from romachip.engine.generate import Engine

    rom = RomImage.open(image)
    if expect_digest is not None:
        rom.check_digest(expect_digest)
    # the image's own placement: attention splits the keys over its KV rings as the chip does; the engine
    # holds the weights packed, the unpacked copy is dropped (eval --reference re-reads the image)
    engine = Engine(rom.model(), activation=activation, kv=kv, chip=rom.chip, placement=rom.placement,
                    threads=threads, keep_weights=False)  # fmt: skip
    return rom, engine


class _Streamer:
    """Prints the text of the generated tokens as they come (decoding the whole tail keeps UTF-8 intact)."""

    def __init__(self, engine: Engine, enabled: bool) -> None:
        self.engine, self.enabled, self.ids, self.shown = engine, enabled, [], ""

    def __call__(self, token: int) -> None:
        self.ids.append(token)
        if not self.enabled:
            return
        text = self.engine.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.startswith(self.shown) and not text.endswith("\ufffd"):
            console.print(text[len(self.shown) :], end="", highlight=False, markup=False, soft_wrap=True)
            self.shown = text


def _generation_json(gen: Generation) -> dict:
    return {
        "text": gen.text,
        "token_ids": gen.token_ids,
        "prompt_tokens": gen.prompt_tokens,
        "generated_tokens": gen.generated_tokens,
        "decode_tokens_per_s": gen.decode_tokens_per_s,
        "prefill_s": gen.prefill_s,
        "decode_s": gen.decode_s,
        "stopped_on_eos": gen.stopped_on_eos,
        "options": gen.options,
    }


def _summary(gen: Generation) -> Table:
    table = Table(title="generation (measured on this host)", show_header=False)
    table.add_row("prompt", f"{gen.prompt_tokens} tokens, prefill {gen.prefill_s * 1e3:.0f} ms")
    table.add_row(
        "generated",
        f"{gen.generated_tokens} tokens"
        + (" (stopped on EOS)" if gen.stopped_on_eos else " (stopped at --max-tokens)"),
    )
    table.add_row("decode speed", f"{gen.decode_tokens_per_s:.1f} tokens/s (golden engine on this CPU, not the chip)")
    table.add_row("precision", f"activations {gen.options['activation']}, KV cache {gen.options['kv']}")
    table.add_row("host", f"{gen.options['kernel']} L-Unit kernel, {gen.options['threads']} thread(s)")
    return table


@app.command()
def run(
    image: str = typer.Argument(..., help="A ROM image written by `romachip burn`."),
    prompt: str = typer.Option(..., "--prompt", help="The prompt text."),
    max_tokens: int = typer.Option(64, "--max-tokens", min=1, help="Most tokens to generate (stops earlier on EOS)."),
    temperature: float = typer.Option(0.0, "--temperature", callback=finite(0, 100), help="0 = greedy; > 0 samples."),
    top_p: float = typer.Option(
        1.0, "--top-p", callback=finite(0, 1, min_open=True), help="Nucleus sampling mass (with --temperature > 0)."
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, max=2**63 - 1, help="Seed of the sampler's own RNG: same seed, same tokens."
    ),
    chat: bool = typer.Option(False, "--chat", help="Wrap the prompt in the model's chat template."),
    activation: str = typer.Option(
        None, "--activation", help="L-Unit activations: bf16 or int8 (default: the chip's)."
    ),
    kv: str = typer.Option(None, "--kv", help="KV cache precision: int8 or fp16 (default: the chip's)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of streaming text."),
    adapter: list[str] = typer.Option(None, "--adapter", help=ADAPTER_HELP),  # noqa: B008
    use: str = typer.Option(None, "--use", help="The loaded adapter this request runs with ('none': the base)."),
    lora_precision: str = typer.Option(None, "--lora-precision", help="fp8_e4m3, fp16 or bf16 (default: the chip's)."),
    threads: int = typer.Option(1, "--threads", min=1, help=THREADS_HELP),
    expect_digest: str = typer.Option(
        None, "--expect-digest", help="Refuse the image unless its SHA-256 is this (as `romachip inspect` prints)."
    ),
) -> None:
    """Generate text from a ROM image exactly as the chip computes it (docs/numerics.md), streaming tokens."""
    from romachip.engine.text import encode_prompt

    rom, engine = _open_engine(image, activation, kv, threads, expect_digest)
    ids = encode_prompt(engine.model, engine.tokenizer, prompt, chat=chat)
    lora, ops, engine.bank = request_adapter(
        rom, adapter or [], use, precision=lora_precision, kv=_request_kv(engine, ids, max_tokens)
    )
    streamer = _Streamer(engine, enabled=not as_json)
    gen = engine.generate(
        ids, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, on_token=streamer, adapter=lora
    )
    if as_json:
        print_json(
            {
                **_generation_json(gen),
                "adapter": lora.name if lora else None,
                "adapter_loads": [o.to_dict() for o in ops],
            }
        )
        return
    console.print()
    console.print(_summary(gen))
    if ops:
        console.print(adapter_ops_table(ops, lora.name if lora else None))


def _request_kv(engine: Engine, ids: list[int], max_tokens: int) -> KvConfig:
    """The KV context this request needs, in the engine's cache format (what an adapter load must leave)."""
    return KvConfig(dtype=engine.kv, context_tokens=len(ids) + max_tokens)  # the contract's scale bytes


@app.command(name="eval")
def eval_(
    image: str = typer.Argument(..., help="A ROM image written by `romachip burn`."),
    text: str = typer.Option(..., "--text", help="A UTF-8 text file to score."),
    max_tokens: int = typer.Option(None, "--max-tokens", min=1, help="Score only the first N tokens of the text."),
    window: int = typer.Option(
        DEFAULT_WINDOW, "--window", min=2, help="Tokens per window (each scored independently)."
    ),
    reference: bool = typer.Option(False, "--reference", help="Also score with transformers (dequantized weights)."),
    activation: str = typer.Option(
        None, "--activation", help="L-Unit activations: bf16 or int8 (default: the chip's)."
    ),
    kv: str = typer.Option(None, "--kv", help="KV cache precision: int8 or fp16 (default: the chip's)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    adapter: str = typer.Option(
        None, "--adapter", help="A PEFT LoRA folder to score with; --reference then applies it with PEFT."
    ),
    lora_precision: str = typer.Option(None, "--lora-precision", help="fp8_e4m3, fp16 or bf16 (default: the chip's)."),
    threads: int = typer.Option(1, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Perplexity of the chip's model over a text file, in fixed windows; --reference adds transformers'
    (with --adapter: PEFT applying the adapter's stored values, as the base uses the dequantized weights)."""
    from romachip.engine.perplexity import engine_perplexity

    if window < 2:
        raise GenerationError(f"--window must be at least 2 tokens, got {window}")
    content = read_text(text, what="text file")
    rom, engine = _open_engine(image, activation, kv, threads)
    ids = np.array(engine.tokenizer.encode(content, add_special_tokens=False).ids, dtype=np.int64)
    lora, _, engine.bank = request_adapter(rom, [adapter] if adapter else [], None, precision=lora_precision,
                              kv=_request_kv(engine, [], window))  # fmt: skip
    t0 = time.perf_counter()
    with progress_bar() as bar:
        ppl, count = engine_perplexity(engine, ids, window=window, max_tokens=max_tokens, bar=bar, adapter=lora)
        ref = None
        if reference:
            ref = _reference_perplexity(rom, ids, window, max_tokens, bar, (adapter, lora) if lora else None)
    out = {
        "perplexity": ppl,
        "tokens": count,
        "reference_perplexity": ref,
        "window": window,
        "activation": engine.activation,
        "kv": engine.kv,
        "model": rom.spec.name,
        "weight_format": rom.fmt.describe(),
        "adapter": adapter,
        "lora_precision": lora.precision if lora else None,
        "seconds": time.perf_counter() - t0,
        "threads": engine.threads,
        "kernel": engine.net.kernel,
    }
    if as_json:
        print_json(out)
        return
    table = Table(title=f"perplexity of {Path(text).name} ({count} predicted tokens, windows of {window})")
    table.add_column("model")
    table.add_column("perplexity", justify="right")
    table.add_row(f"ROM image ({rom.fmt.describe()}, act {engine.activation}, KV {engine.kv})", f"{ppl:.3f}")
    if ref is not None:
        table.add_row("transformers, dequantized weights (float32)", f"{ref:.3f}")
    console.print(table)


def _reference_perplexity(
    rom: RomImage,
    ids: np.ndarray,
    window: int,
    max_tokens: int | None,
    bar,  # noqa: ANN001
    lora=None,  # noqa: ANN001  ((adapter folder, AdapterView), or None)
) -> float:
    from romachip.quant.hf_reference import dequantized_tensors, hf_perplexity, llama_from_tensors

    qmodel = rom.model()
    model = llama_from_tensors(qmodel.spec, dequantized_tensors(qmodel))
    if lora is not None:  # (folder, view): PEFT with the values the chip stores
        from romachip.sram.peft_reference import peft_with_stored_values

        model = peft_with_stored_values(model, *lora)
    task = bar.add_task("transformers", total=1)

    def progress(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    ppl, _ = hf_perplexity(model, ids, window=window, max_tokens=max_tokens, progress=progress)
    return ppl


@app.command()
def demo(
    max_tokens: int = typer.Option(48, "--max-tokens", min=1, help="Most tokens of the answer."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of streaming text."),
) -> None:
    """Burn SmolLM2-135M for the ROMA chip (cached), answer a fixed question, and show the chip's timing."""
    from romachip.engine.demo_model import DEMO_PROMPT, ensure_demo_image
    from romachip.engine.text import encode_prompt

    with err_console.status("preparing the demo model") as status:
        path, burned = ensure_demo_image(progress=lambda msg: status.update(msg))
    rom, engine = _open_engine(path, None, None)
    ids = encode_prompt(engine.model, engine.tokenizer, DEMO_PROMPT, chat=True)
    if not as_json:
        console.print(f"[bold]image[/] {path}{' (burned now)' if burned else ' (cached)'}")
        console.print(f"[bold]user[/] {DEMO_PROMPT}")
        console.print("[bold]SmolLM2 on ROMA[/] ", end="")
    gen = engine.generate(ids, max_tokens=max_tokens, on_token=_Streamer(engine, enabled=not as_json))
    timing = _simulated_timing(rom, gen)
    if as_json:
        print_json({**_generation_json(gen), "image": str(path), "simulated": timing})
        return
    console.print()
    if not gen.stopped_on_eos and gen.generated_tokens >= max_tokens:
        console.print(f"[dim](stopped at the --max-tokens cap of {max_tokens}; the answer may go on)[/]")
    console.print(_summary(gen))
    if timing:
        table = Table(title=f"the same request on chip {engine.chip.name!r} (timing model)", show_header=False)
        table.add_row("time to first token", f"{timing['ttft_ms']:.3f} ms")
        table.add_row("decode speed", f"{timing['decode_tokens_per_s']:,.0f} tokens/s")
        table.add_row("energy per token", f"{timing['energy_per_token_mj']:.3f} mJ")
        table.add_row("power", f"{timing['power_w']:.1f} W")
        console.print(table)


def _simulated_timing(rom: RomImage, gen: Generation, adapter: AdapterView | None = None) -> dict | None:
    """The timing model's view of the same request on the image's chip and placement (its policy and
    strategy), with the adapter's workload, when romachip.perf is available."""
    try:
        from romachip.perf.simulate import simulate
    except ImportError:
        return None
    try:
        rep = simulate(
            rom.chip, rom.spec, fmt=rom.fmt, lora=adapter.workload() if adapter else None,
            prompt_tokens=gen.prompt_tokens, generate_tokens=max(gen.generated_tokens, 1), placement=rom.placement,
        )  # fmt: skip
    except RomachipError:
        return None
    keys = ("ttft_ms", "decode_tokens_per_s", "energy_per_token_mj", "power_w")
    return {k: getattr(rep, k) for k in keys}
