"""One request on the golden engine: a Session holds its own KV cache, sampler and adapter, and yields
tokens one `step()` at a time, so a server can run many requests on one Engine and interleave them.

`Engine.start(prompt_ids, adapter, ...) -> Session`; `Engine.generate` is a Session run to the end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch

from romachip.engine.kv import KVCache
from romachip.engine.model import Adapter, decode_one_token, prefill
from romachip.engine.sampler import Sampler
from romachip.engine.tap import Observer
from romachip.errors import GenerationError

if TYPE_CHECKING:
    from romachip.engine.generate import Engine

# torch's intra-op thread count is process state in most builds (set_num_threads; with the OpenMP backend
# it is the calling thread's OpenMP setting). Two sessions setting it from two threads would race, and a
# count set for one call would leak into the next. So every engine computation runs under this one
# process-wide lock, sets its count after taking it and restores the previous count before releasing it:
# whatever the build, no engine computation runs under a count it did not ask for, and the caller's count
# is back when the call returns. Serializing costs this engine nothing: a call already uses the threads it
# is given, and the lock also guards the state sessions share (one EngineModel's lazily grown RoPE tables).
_COMPUTE_LOCK = threading.RLock()


@contextmanager
def scoped_threads(threads: int | None) -> Iterator[None]:
    """Run a block of engine computation with `threads` torch threads (None: leave the count as it is),
    serialized with every other engine computation in the process (see _COMPUTE_LOCK)."""
    with _COMPUTE_LOCK:
        previous = torch.get_num_threads()
        change = threads is not None and threads != previous
        if change:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if change:
                torch.set_num_threads(previous)


class Session:
    """One sequence being generated: prompt, KV cache, sampler (its own seeded RNG), adapter.

    `step()` returns the next token (the first call runs the prompt's prefill); `generate(n, on_token)`
    steps up to n times. A session is finished after an EOS token or `max_tokens` tokens; stepping a
    finished session raises GenerationError. Timings are measured on this host.
    """

    def __init__(
        self,
        engine: Engine,
        prompt_ids: list[int],
        cache: KVCache,
        sampler: Sampler,
        adapter: Adapter | None,
        max_tokens: int,
        observer: Observer | None = None,
    ) -> None:
        self.engine, self.prompt_ids, self.cache, self.sampler = engine, list(prompt_ids), cache, sampler
        self.adapter, self.max_tokens, self.observer = adapter, max_tokens, observer
        self.tokens: list[int] = []
        self.stopped_on_eos = False
        self.prefill_s = 0.0
        self.decode_s = 0.0  # the decode steps' compute and sampling (the first token comes from the prefill)
        self._eos = set(engine.model.spec.eos_token_ids)

    @property
    def finished(self) -> bool:
        return self.stopped_on_eos or len(self.tokens) >= self.max_tokens

    def step(self) -> int:
        """Compute and sample the next token."""
        if self.finished:
            why = "it stopped on EOS" if self.stopped_on_eos else f"it has its {self.max_tokens} tokens"
            raise GenerationError(f"the session is finished ({why}); start a new one")
        engine = self.engine
        t0 = time.perf_counter()
        with engine.compute_threads():
            if not self.tokens:
                ids = np.asarray(self.prompt_ids, dtype=np.int64)
                logits = prefill(engine.net, ids, self.cache, mode=engine.activation, adapter=self.adapter,
                                 observer=self.observer)[-1]  # fmt: skip
            else:
                logits = decode_one_token(engine.net, self.tokens[-1], self.cache, mode=engine.activation,
                                          adapter=self.adapter, observer=self.observer)  # fmt: skip
            token = self.sampler(logits)
        elapsed = time.perf_counter() - t0
        if self.tokens:
            self.decode_s += elapsed
        else:
            self.prefill_s = elapsed
        self.tokens.append(token)
        self.stopped_on_eos = token in self._eos
        return token

    def generate(self, n: int, on_token: Callable[[int], None] | None = None) -> list[int]:
        """Step up to n times (fewer when the session finishes); the tokens of these steps."""
        if n < 0:
            raise GenerationError(f"the number of tokens must be >= 0, got {n}")
        out = []
        while len(out) < n and not self.finished:
            out.append(self.step())
            if on_token is not None:
                on_token(out[-1])
        return out

    @property
    def decode_tokens_per_s(self) -> float:
        steps = max(len(self.tokens) - 1, 0)
        return steps / self.decode_s if steps and self.decode_s > 0 else 0.0
