"""The functional golden model: a LLaMA forward pass whose every bit is defined by docs/numerics.md.

`Engine(model, activation=..., kv=..., float_mode=...)` holds one QuantizedModel (from `RomImage.model()`);
`Engine.start(prompt_ids, adapter) -> Session` runs one request a token at a time (`step`, `generate`);
`generate(...) -> Generation` runs a request to the end. `engine.tap` is the observer seam (docs/engine.md).
"""

from romachip.engine.generate import Engine, Generation, generate
from romachip.engine.session import Session
from romachip.engine.tap import Observer, OpKind, TapEvent

__all__ = ["Engine", "Generation", "Observer", "OpKind", "Session", "TapEvent", "generate"]
