"""Tokenizer and chat template of a model: the HF tokenizer.json it carries, and its Jinja chat template
rendered the way transformers renders it (sandboxed, trim_blocks, lstrip_blocks, loop controls)."""

from __future__ import annotations

from datetime import datetime

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from romachip.errors import GenerationError
from romachip.quant.tensor import QuantizedModel


def load_tokenizer(model: QuantizedModel) -> Tokenizer:
    """The model's tokenizer; raises GenerationError when the image carries none."""
    if not model.tokenizer_json:
        raise GenerationError(
            f"model {model.spec.name!r} carries no tokenizer; burn it from a checkpoint that has tokenizer.json "
            "(or a GGUF with its vocabulary), or pass token ids"
        )
    try:
        return Tokenizer.from_str(model.tokenizer_json)
    except Exception as exc:  # tokenizers raises plain Exception subclasses
        raise GenerationError(f"model {model.spec.name!r}: its tokenizer.json cannot be read: {exc}") from None


def _raise(message: str) -> None:
    raise TemplateError(message)


def render_chat(model: QuantizedModel, tokenizer: Tokenizer, user_text: str) -> str:
    """The prompt text for one user message with the generation prompt appended."""
    if not model.chat_template:
        raise GenerationError(f"model {model.spec.name!r} has no chat template; run without --chat")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    spec = model.spec

    def token_text(token_id: int | None) -> str:
        return "" if token_id is None else (tokenizer.id_to_token(token_id) or "")

    try:
        return env.from_string(model.chat_template).render(
            messages=[{"role": "user", "content": user_text}],
            add_generation_prompt=True,
            bos_token=token_text(spec.bos_token_id),
            eos_token=token_text(spec.eos_token_ids[0] if spec.eos_token_ids else None),
        )
    except TemplateError as exc:
        raise GenerationError(f"model {spec.name!r}: its chat template failed: {exc}") from None


def encode_prompt(model: QuantizedModel, tokenizer: Tokenizer, text: str, *, chat: bool) -> list[int]:
    """Token ids of a prompt; with `chat`, of the rendered chat template (its special tokens included)."""
    if chat:
        return tokenizer.encode(render_chat(model, tokenizer, text), add_special_tokens=False).ids
    return tokenizer.encode(text).ids
