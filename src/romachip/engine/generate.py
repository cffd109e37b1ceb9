"""Generation on the golden engine: the Engine (one model + options) and `generate(...) -> Generation`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from romachip.compile import Placement
from romachip.engine.kernels import HARDWARE_ACTIVATION_MODES, kernel_threads
from romachip.engine.kv import HARDWARE_KV_MODES, MAX_CONTEXT_TOKENS, KVCache
from romachip.engine.model import Adapter, EngineModel, prefill
from romachip.engine.sampler import Sampler
from romachip.engine.session import Session, scoped_threads
from romachip.engine.tap import Observer
from romachip.engine.text import load_tokenizer
from romachip.errors import AdapterError, GenerationError
from romachip.quant.tensor import QuantizedModel
from romachip.spec.chip import ChipSpec, load_chip
from romachip.sram.bank import AdapterBank
from romachip.workload import KV_SCALE_BYTES_PER_VECTOR, KvConfig

# The engine's defaults come from the chip preset (`precision.activation`, `precision.kv`), so the engine
# and the timing model read one definition; these apply only when a preset names a precision the engine
# does not run. bf16 meets the >= 98% greedy agreement bar on SmolLM2; int8 does not (docs/numerics.md).
DEFAULT_ACTIVATION = "bf16"
DEFAULT_KV = "int8"


@dataclass(frozen=True)
class Generation:
    """What one generate() call produced; decode_tokens_per_s is measured on this host."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    generated_tokens: int
    decode_tokens_per_s: float
    prefill_s: float
    decode_s: float
    stopped_on_eos: bool
    options: dict[str, object] = field(default_factory=dict)


class Engine:
    """Runs one QuantizedModel as the chip computes it.

    activation: "bf16" or "int8", the precision of activations into the L-Units; None (default) takes the
                chip's `precision.activation` (bf16 for the `roma` preset).
    kv:         "int8" or "fp16", the KV cache precision; None (default) takes the chip's `precision.kv`.
    float_mode: True turns activation and KV quantization off (float32 weights s*(q - z), float32 KV);
                for agreement tests against transformers only, not part of the bit-exact contract.
                (`exact=False` is the older spelling of `float_mode=True`, still accepted.)
    chip:       the chip the engine's default precisions come from (default: the `roma` preset).
    bank:       the adapter bank that decides the KV context (see `bank`; default: an empty bank of `chip`).
    kv_shares:  per layer (or one int for all), over how many H-Units attention splits the keys
                (docs/numerics.md, "Attention"); None (default) takes each layer's KV ring from
                `placement`; 1 is the global softmax.
    placement:  the Placement the model runs on (a ROM image's `RomImage.placement`); None takes the bank's.
    threads:    threads while the engine computes, the native kernel's and torch's (default 1: on a shared
                CPU idle-waiting thread teams cost more than they give); None leaves torch's setting and
                gives the native kernel as many. The thread count never changes a result: every product is
                an exact integer product, and each output of the native kernel is formed by one thread. It
                is set per computation, under a process-wide lock (session.scoped_threads), never left set.
    kernel:     "native" (the C kernel on packed codes) or "numpy" (the fallback); None takes
                $ROMACHIP_KERNEL, else native where it built. Both give the same bits.
    keep_weights: False drops the weight tensors from `engine.model` once the engine has prepared its own
                (packed, with the native kernel), so that a large model is held once, at bits/8 bytes a
                weight; `engine.model` then keeps spec, format, tokenizer and the norm weights.

    Each request may carry a LoRA adapter: a mapping from module name (`model.layers.3.self_attn.q_proj`)
    to (A float32 [r, in], B float32 [out, r], scale float), A and B holding exactly the decoded values the
    H-Unit stores (FP8 E4M3 / FP16 / BF16); y = base(x) + scale * B(A x) as docs/numerics.md defines.
    """

    def __init__(
        self,
        model: QuantizedModel,
        *,
        activation: str | None = None,
        kv: str | None = None,
        float_mode: bool = False,
        chip: ChipSpec | None = None,
        threads: int | None = 1,
        kv_shares: int | Sequence[int] | None = None,
        placement: Placement | None = None,
        exact: bool | None = None,
        kernel: str | None = None,
        bank: AdapterBank | None = None,
        keep_weights: bool = True,
    ) -> None:
        if exact is not None:  # the older keyword: exact=False meant the float mode
            float_mode = not exact
        if threads is not None and threads < 1:
            raise GenerationError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self.chip = chip if chip is not None else load_chip("roma")
        if kv is None:
            kv = self.chip.precision.kv if self.chip.precision.kv in HARDWARE_KV_MODES else DEFAULT_KV
        if activation is None:
            chip_act = self.chip.precision.activation
            activation = chip_act if chip_act in HARDWARE_ACTIVATION_MODES else DEFAULT_ACTIVATION
        if activation not in HARDWARE_ACTIVATION_MODES:
            raise GenerationError(f"activation precision must be 'bf16' or 'int8', got {activation!r}")
        if kv not in HARDWARE_KV_MODES:
            raise GenerationError(f"KV precision must be 'int8' or 'fp16', got {kv!r}")
        self.model = model
        self.float_mode = float_mode
        self.activation = "fp32" if float_mode else activation
        self.kv = "fp32" if float_mode else kv
        self._tokenizer = None
        self._bank: AdapterBank | None = None
        if bank is not None:
            self.bank = bank
        self.kv_shares = self._layer_kv_shares(kv_shares, placement)
        self.net = EngineModel(model, float_mode=float_mode, kernel=kernel, kv_shares=self.kv_shares)
        if not keep_weights:
            self.model = replace(model, weights={})

    @property
    def tokenizer(self):  # noqa: ANN201
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model)
        return self._tokenizer

    def _layer_kv_shares(self, kv_shares: int | Sequence[int] | None, placement: Placement | None) -> tuple[int, ...]:
        layers = self.model.spec.num_layers
        if self.float_mode:
            return (1,) * layers  # the float mode keeps one float32 softmax (it is not the chip's arithmetic)
        if kv_shares is None:  # the KV rings of the placement the bank (the one placement) holds
            kv_shares = layer_kv_ring_sizes(placement if placement is not None else self.bank.placement)
        shares = (kv_shares,) * layers if isinstance(kv_shares, int) else tuple(int(n) for n in kv_shares)
        if len(shares) != layers or min(shares) < 1:
            raise GenerationError(f"kv_shares must be one count >= 1 per layer ({layers} layers), got {kv_shares}")
        return shares

    @property
    def exact(self) -> bool:
        """Whether the engine runs the bit-exact contract (not the float mode)."""
        return not self.float_mode

    @contextmanager
    def compute_threads(self) -> Iterator[None]:
        """A block of engine computation: the engine's thread count (torch's and the native kernel's),
        serialized with every other engine computation in the process, the caller's count restored
        afterwards (session.scoped_threads)."""
        with scoped_threads(self.threads), kernel_threads(self.threads or torch.get_num_threads()):
            yield

    def options(self) -> dict[str, object]:
        return {
            "activation": self.activation,
            "kv": self.kv,
            "float_mode": self.float_mode,
            "chip": self.chip.name,
            "threads": self.threads,
            "kernel": self.net.kernel,
            "kv_shares": sorted(set(self.kv_shares)),
        }

    @property
    def bank(self) -> AdapterBank:
        """The adapter bank whose H-Unit SRAM budget decides this engine's KV context: the bank decides, the
        engine computes (it never plans capacity itself). Default: an empty bank of `chip` for this model
        (the default placement); give the image's bank (`AdapterBank.for_image`) to run on its placement."""
        if self._bank is None:
            kv = KvConfig(dtype=self._cache_dtype, context_tokens=0)  # scale bytes: the contract's (workload.py)
            self._bank = AdapterBank(self.chip, self.model.spec, fmt=self.model.fmt, kv=kv)
        return self._bank

    @bank.setter
    def bank(self, bank: AdapterBank) -> None:
        if bank.spec != self.model.spec or bank.kv.dtype != self._cache_dtype:
            raise GenerationError(
                f"the adapter bank is for {bank.spec.name!r} with a {bank.kv.dtype} KV cache; this engine runs "
                f"{self.model.spec.name!r} with a {self._cache_dtype} cache"
            )
        self._bank = bank

    @property
    def _cache_dtype(self) -> str:
        """The KV dtype the bank sizes the cache as (the float mode's float32 cache: as the FP16 one)."""
        return self.kv if self.kv in KV_SCALE_BYTES_PER_VECTOR else "fp16"

    def max_context(self, adapter: Adapter | None = None) -> int:
        """Tokens of KV context the chip holds while a request runs `adapter`, as the bank decides it (next to
        every resident adapter, and this one's exact per-module ranks when it is not resident), at most 2^15."""
        return min(self.bank.context_for(adapter), MAX_CONTEXT_TOKENS)

    def new_cache(self, tokens: int, adapter: Adapter | None = None) -> KVCache:
        """A KV cache for `tokens` positions; GenerationError if the chip cannot hold that many."""
        limit = self.max_context(adapter)
        if tokens > limit:
            raise GenerationError(
                f"{tokens} tokens of context do not fit: chip {self.bank.chip.name!r} holds {limit} tokens of "
                f"{self.kv} KV cache for {self.model.spec.name!r}; shorten the prompt or --max-tokens"
            )
        s = self.model.spec
        return KVCache(s.num_layers, s.num_kv_heads, s.head_dim, max(tokens, 1), self.kv)

    def check_adapter(self, adapter: Adapter | None) -> None:
        if not adapter:
            return
        shapes = self.model.spec.linear_shapes()
        for name, (a, b, _scale) in adapter.items():
            proj = name.rsplit(".", 1)[-1]
            if proj not in shapes or not name.startswith("model.layers."):
                raise AdapterError(f"adapter module {name!r} is not a projection of this model")
            out, inp = shapes[proj]
            if a.ndim != 2 or b.ndim != 2 or a.shape[1] != inp or b.shape[0] != out or a.shape[0] != b.shape[1]:
                raise AdapterError(
                    f"adapter module {name!r}: A {a.shape} / B {b.shape} do not fit a [{out}, {inp}] projection"
                )

    def logits(
        self, token_ids: list[int] | np.ndarray, adapter: Adapter | None = None, observer: Observer | None = None
    ) -> np.ndarray:
        """float32 logits [tokens, vocab] of every position of one sequence (one prefill); `observer`
        (romachip.engine.tap) sees every step."""
        self.check_adapter(adapter)
        ids = np.asarray(token_ids, dtype=np.int64)
        cache = self.new_cache(ids.size, adapter)
        with self.compute_threads():
            return prefill(
                self.net, ids, cache, mode=self.activation, adapter=adapter, all_logits=True, observer=observer
            )

    def start(
        self,
        prompt_ids: list[int],
        adapter: Adapter | None = None,
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        observer: Observer | None = None,
    ) -> Session:
        """A Session for one request: its KV cache sized for the prompt plus max_tokens (checked against the
        chip's capacity now), its own sampler; nothing is computed until its first step()."""
        if not prompt_ids:
            raise GenerationError("the prompt is empty: give at least one token")
        if max_tokens < 0:
            raise GenerationError(f"max_tokens must be >= 0, got {max_tokens}")
        self.check_adapter(adapter)
        sampler = Sampler(temperature=temperature, top_p=top_p, seed=seed)
        cache = self.new_cache(len(prompt_ids) + max_tokens, adapter)
        return Session(self, prompt_ids, cache, sampler, adapter, max_tokens, observer)

    def generate(
        self,
        prompt_ids: list[int],
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        adapter: Adapter | None = None,
        on_token: Callable[[int], None] | None = None,
    ) -> Generation:
        """Prefill the prompt, then decode up to max_tokens, stopping at an EOS token (one Session)."""
        session = self.start(prompt_ids, adapter, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                             seed=seed)  # fmt: skip
        out = session.generate(max_tokens, on_token)
        text = self.tokenizer.decode(out, skip_special_tokens=True) if self.model.tokenizer_json else ""
        return Generation(
            text=text,
            token_ids=out,
            prompt_tokens=len(prompt_ids),
            generated_tokens=len(out),
            decode_tokens_per_s=session.decode_tokens_per_s,
            prefill_s=session.prefill_s,
            decode_s=session.decode_s,
            stopped_on_eos=session.stopped_on_eos,
            options=self.options(),
        )


def layer_kv_ring_sizes(placement: Placement) -> tuple[int, ...]:
    """Per layer, the H-Units of the KV ring that caches it (placement.py's token_round_robin rule)."""
    sizes = placement.kv_ring_units
    out = []
    for layer, ring in enumerate(placement.kv_layer_ring.tolist()):
        members = np.flatnonzero(placement.kv_ring == ring)
        if ring < 0 or not members.size:
            raise GenerationError(f"layer {layer} has no KV ring in the placement: it holds none of its weights")
        out.append(int(sizes[members[0]]))
    return tuple(out)


def generate(
    model: QuantizedModel | Engine,
    prompt_ids: list[int],
    *,
    max_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    adapter: Adapter | None = None,
    on_token: Callable[[int], None] | None = None,
) -> Generation:
    """Generate from a QuantizedModel (default engine options) or a configured Engine."""
    engine = model if isinstance(model, Engine) else Engine(model)
    return engine.generate(
        prompt_ids, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
        adapter=adapter, on_token=on_token,
    )  # fmt: skip
