"""The functional golden model: a LLaMA forward pass whose every bit is defined by docs/numerics.md.

`Engine(model, activation=..., kv=..., exact=...)` holds one QuantizedModel (from `RomImage.model()`);
`generate(...) -> Generation` runs a request, optionally with a LoRA adapter (see `Engine`).
"""

from romachip.engine.generate import Engine, Generation, generate

__all__ = ["Engine", "Generation", "generate"]
