"""`romachip finetune`: train a LoRA adapter against the exact base a ROM image holds (docs/finetune.md)."""

from __future__ import annotations

import numpy as np
import typer
from rich.table import Table

from romachip.cli.app import app, console, err_console, finite, print_json, progress_bar
from romachip.errors import AdapterError
from romachip.files import read_text
from romachip.train.settings import ALL_TARGETS, FinetuneSettings, StepInfo

DEFAULTS = FinetuneSettings()
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT


def eval_perplexity(image: str, text: str, *, adapter: str | None, window: int, max_tokens: int) -> float:
    """Perplexity on the chip engine with its exact numerics (the chip's activation/KV/LoRA precision)."""
    from romachip.engine import Engine
    from romachip.engine.perplexity import engine_perplexity
    from romachip.rom import RomImage
    from romachip.sram.bank import AdapterBank
    from romachip.workload import KvConfig

    rom = RomImage.open(image)
    engine = Engine(rom.model(), chip=rom.chip)
    ids = np.array(engine.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
    view = None
    if adapter is not None:
        bank = AdapterBank.for_image(rom, kv=KvConfig(dtype=rom.chip.precision.kv, context_tokens=window))
        bank.load("finetuned", adapter)
        view = bank.view("finetuned")
    ppl, _ = engine_perplexity(engine, ids, window=window, max_tokens=max_tokens, adapter=view)
    return ppl


class _Reporter:
    """A progress bar with loss, tokens/s and ETA on a terminal; a plain line every N steps otherwise."""

    def __init__(self, bar, every: int, quiet: bool) -> None:  # noqa: ANN001
        self.bar, self.every, self.quiet, self.task = bar, every, quiet, None

    def __call__(self, info: StepInfo) -> None:
        line = f"step {info.step}/{info.total} loss {info.loss:.4f} {info.tokens_per_s:,.0f} tok/s"
        if self.quiet:
            return
        if err_console.is_terminal:
            if self.task is None:
                self.task = self.bar.add_task("train", total=info.total)
            self.bar.update(
                self.task, completed=info.step, description=f"loss {info.loss:.3f}, {info.tokens_per_s:,.0f} tok/s"
            )
        elif info.step % self.every == 0 or info.step == info.total:
            err_console.print(f"{line} eta {info.eta_s:,.0f} s", highlight=False)


@app.command(name="finetune")
def finetune_cmd(
    image: str = typer.Argument(..., help="The ROM image whose exact weights are the frozen base."),
    text: str = typer.Option(..., "--text", help="UTF-8 training text (tokenized with the image's tokenizer)."),
    output: str = typer.Option(..., "-o", "--output", help="Adapter folder to write (new or empty, or --resume)."),
    eval_text: str = typer.Option(
        None, "--eval-text", help="Held-out text: perplexity before and after, on the chip engine."
    ),
    eval_tokens: int = typer.Option(2048, "--eval-tokens", min=1, help="Tokens of --eval-text to score."),
    rank: int = typer.Option(DEFAULTS.rank, "--rank", min=1, help="LoRA rank r."),
    alpha: float = typer.Option(
        DEFAULTS.alpha,
        "--alpha",
        callback=finite(0, min_open=True),
        help="LoRA alpha (scaling alpha/r, or alpha/sqrt(r)).",
    ),
    targets: str = typer.Option(",".join(ALL_TARGETS), "--targets", help="Comma-separated projections to adapt."),
    rslora: bool = typer.Option(False, "--rslora", help="rsLoRA scaling alpha/sqrt(r)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Optimizer steps [default: one epoch]."),
    epochs: float = typer.Option(
        None,
        "--epochs",
        callback=finite(0, min_open=True),
        help="Passes over the training windows (instead of --steps).",
    ),
    lr: float = typer.Option(
        DEFAULTS.lr, "--lr", callback=finite(0, min_open=True), help="AdamW learning rate, constant (QLoRA's 2e-4)."
    ),
    seq_len: int = typer.Option(
        DEFAULTS.seq_len,
        "--seq-len",
        min=1,
        help="Tokens per training window; also the context the SRAM check reserves.",
    ),
    batch: int = typer.Option(DEFAULTS.batch, "--batch", min=1, help="Windows per micro-batch."),
    grad_accum: int = typer.Option(
        DEFAULTS.grad_accum, "--grad-accum", min=1, help="Micro-batches per optimizer step."
    ),
    seed: int = typer.Option(DEFAULTS.seed, "--seed", min=0, help="Seeds the LoRA init and the window order."),
    threads: int = typer.Option(
        None, "--threads", min=1, help="torch threads [default: torch's]; resume with the same for bit-exact results."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run checkpointed in --output."),
    chip_numerics: bool = typer.Option(
        False,
        "--chip-numerics",
        help="Forward with the L-Units' bf16 block-aligned activations (straight-through gradient).",
    ),
    checkpoint_every: int = typer.Option(
        DEFAULTS.checkpoint_every, "--checkpoint-every", min=1, help="Steps between checkpoints."
    ),
    log_every: int = typer.Option(
        10, "--log-every", min=1, help="Steps between plain progress lines when stderr is not a terminal."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of a table."),
) -> None:
    """Train a LoRA adapter (QLoRA) whose frozen base is exactly the weights the ROM image holds, and write
    it as a standard PEFT folder that `peft.PeftModel.from_pretrained` and `romachip run/eval --adapter`
    load. Checks first that the adapter fits the chip's SRAM at --seq-len; checkpoints atomically; Ctrl-C
    keeps the last checkpoint, and --resume continues it bit for bit."""
    import torch

    from romachip.train.finetune import finetune

    settings = FinetuneSettings(
        rank=rank, alpha=alpha, targets=tuple(t.strip() for t in targets.split(",") if t.strip()), rslora=rslora,
        steps=steps, epochs=epochs, lr=lr, seq_len=seq_len, batch=batch, grad_accum=grad_accum, seed=seed,
        chip_numerics=chip_numerics, checkpoint_every=checkpoint_every,
    )  # fmt: skip
    settings.check()
    train = read_text(text, what="training text")
    held_out = read_text(eval_text, what="evaluation text") if eval_text else None
    if eval_tokens < 2:
        raise AdapterError(f"--eval-tokens must be at least 2, got {eval_tokens}")
    if threads is not None:
        if threads < 1:
            raise AdapterError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    before = after = None
    try:
        with progress_bar() as bar:
            result = finetune(image, train, output, settings, resume=resume,
                              on_step=_Reporter(bar, log_every, quiet=False))  # fmt: skip
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted: the last checkpoint in {output} is whole; continue with the same command and --resume",
            highlight=False,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if held_out is not None:
        with err_console.status("evaluating on the chip engine"):
            before = eval_perplexity(image, held_out, adapter=None, window=seq_len, max_tokens=eval_tokens)
            after = eval_perplexity(image, held_out, adapter=output, window=seq_len, max_tokens=eval_tokens)
    summary = {
        "output": result.out_dir, "steps": result.steps, "resumed_from": result.resumed_from,
        "windows": result.windows, "train_tokens": result.train_tokens, "seconds": round(result.seconds, 2),
        "first_loss": result.losses[0] if result.losses else None,
        "final_loss": result.losses[-1] if result.losses else None,
        "eval_perplexity_before": before, "eval_perplexity_after": after, "fit": result.fit,
    }  # fmt: skip
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"fine-tuned adapter -> {result.out_dir}", show_header=False)
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
