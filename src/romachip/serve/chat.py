"""A list of chat messages as the prompt text of the image's chat template, rendered as transformers'
`apply_chat_template` renders it (sandboxed Jinja, trim_blocks, lstrip_blocks, loop controls)."""

from __future__ import annotations

from datetime import datetime

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from romachip.errors import GenerationError
from romachip.quant.tensor import QuantizedModel


def _raise(message: str) -> None:
    raise TemplateError(message)


def render_messages(model: QuantizedModel, tokenizer: Tokenizer, messages: list[dict]) -> str:
    """The prompt text of `messages` ({"role", "content"} dicts) with the generation prompt appended."""
    if not model.chat_template:
        raise GenerationError(f"model {model.spec.name!r} has no chat template; use /v1/completions")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    spec = model.spec

    def token_text(token_id: int | None) -> str:
        return "" if token_id is None else (tokenizer.id_to_token(token_id) or "")

    try:
        return env.from_string(model.chat_template).render(
            messages=messages,
            add_generation_prompt=True,
            bos_token=token_text(spec.bos_token_id),
            eos_token=token_text(spec.eos_token_ids[0] if spec.eos_token_ids else None),
        )
    except TemplateError as exc:
        raise GenerationError(f"model {spec.name!r}: its chat template failed: {exc}") from None
