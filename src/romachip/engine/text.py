"""Tokenizer and chat template of a model: the HF tokenizer.json it carries, and its Jinja chat template
rendered the way transformers renders it (sandboxed, trim_blocks, lstrip_blocks, loop controls), for one
user message (`render_chat`) or a whole system/user/assistant conversation (`render_messages`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


CHAT_ROLES = ("system", "user", "assistant")


def render_chat(model: QuantizedModel, tokenizer: Tokenizer, user_text: str) -> str:
    """The prompt text for one user message with the generation prompt appended."""
    return render_messages(model, tokenizer, [{"role": "user", "content": user_text}])


def render_messages(
    model: QuantizedModel, tokenizer: Tokenizer, messages: Sequence[Mapping[str, str]], *,
    add_generation_prompt: bool = True,
) -> str:  # fmt: skip
    """A conversation (system/user/assistant messages, in order) rendered by the model's chat template
    exactly as transformers' `apply_chat_template(..., tokenize=False)` renders it."""
    if not model.chat_template:
        raise GenerationError(f"model {model.spec.name!r} has no chat template; run without --chat")
    messages = _checked_messages(messages)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    spec = model.spec

    def token_text(token_id: int | None) -> str:
        return "" if token_id is None else (tokenizer.id_to_token(token_id) or "")

    try:
        return env.from_string(model.chat_template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=token_text(spec.bos_token_id),
            eos_token=token_text(spec.eos_token_ids[0] if spec.eos_token_ids else None),
        )
    except TemplateError as exc:
        raise GenerationError(f"model {spec.name!r}: its chat template failed: {exc}") from None


def _checked_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    if isinstance(messages, (str, bytes)) or not messages:
        raise GenerationError("a chat needs a non-empty list of messages ({'role': ..., 'content': ...})")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or set(m) != {"role", "content"}:
            raise GenerationError(f"message {i} must have exactly the keys 'role' and 'content', got {m!r}")
        if m["role"] not in CHAT_ROLES:
            raise GenerationError(f"message {i}: role must be one of {', '.join(CHAT_ROLES)}, got {m['role']!r}")
        if not isinstance(m["content"], str):
            raise GenerationError(f"message {i}: content must be a string, got {type(m['content']).__name__}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def encode_messages(
    model: QuantizedModel, tokenizer: Tokenizer, messages: Sequence[Mapping[str, str]], *,
    add_generation_prompt: bool = True,
) -> list[int]:  # fmt: skip
    """Token ids of a rendered conversation (the template's special tokens included, none added)."""
    text = render_messages(model, tokenizer, messages, add_generation_prompt=add_generation_prompt)
    return tokenizer.encode(text, add_special_tokens=False).ids


def encode_prompt(model: QuantizedModel, tokenizer: Tokenizer, text: str, *, chat: bool) -> list[int]:
    """Token ids of a prompt; with `chat`, of the rendered chat template (its special tokens included)."""
    if chat:
        return encode_messages(model, tokenizer, [{"role": "user", "content": text}])
    return tokenizer.encode(text).ids
