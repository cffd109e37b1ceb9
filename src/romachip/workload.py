"""What the chip holds besides the base model: the LoRA adapters and the KV cache, as plain configs.

Both are frozen dataclasses whose defaults are the ROMA evaluation setup (rank-16 FP8 adapters on all
seven projections; an INT8 KV cache of 4K tokens). The CLI reads its defaults from here, so they are
defined once. The graph (op shapes), the capacity planner (bytes) and the engine (numerics) share them.
"""

from __future__ import annotations

from dataclasses import dataclass

from romachip.errors import AdapterError, CapacityError
from romachip.names import PROJECTIONS
from romachip.spec.chip import PRECISION_BYTES

#: The modules an adapter may target: a block's seven projections (names.py), in execution order.
ALL_TARGETS = PROJECTIONS

#: Bytes per element of each LoRA weight dtype the H-Units can hold (the chip's PRECISION_BYTES).
LORA_DTYPE_BYTES = {d: int(PRECISION_BYTES[d]) for d in ("fp8_e4m3", "fp16", "bf16")}

#: Every stored LoRA matrix carries one FP32 scale word (docs/numerics.md, "LoRA storage"): for FP8, A's
#: word is its power-of-two scale and B's is its power-of-two scale times the module's LoRA scale
#: (alpha/r); for FP16/BF16, A's word is 1.0 and B's holds alpha/r (src/romachip/sram/storage.py).
LORA_SCALE_BYTES_PER_MATRIX = {"fp8_e4m3": 4, "fp16": 4, "bf16": 4}

#: Bytes per element of each KV-cache dtype.
KV_DTYPE_BYTES = {d: int(PRECISION_BYTES[d]) for d in ("int8", "fp16")}

#: Bytes each cached (token, KV head) vector of K or V carries besides its elements, by KV dtype: the
#: engine's INT8 cache stores one float32 scale per vector (per-token, per-head absmax), its FP16 cache
#: none (docs/numerics.md, "KV cache"). The single definition the engine, the capacity planner, the
#: Placement, the adapter bank and perf all size the cache with.
KV_SCALE_BYTES_PER_VECTOR = {"int8": 4, "fp16": 0}


def kv_vector_bytes(head_dim: int, element_bytes: int, scale_bytes: int) -> int:
    """Bytes of one cached K or V head vector of one token: its elements and its scale (the one formula the
    capacity planner, the Placement's KV rule and the op graph size the KV cache with)."""
    return head_dim * element_bytes + scale_bytes


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters on `targets` of every layer: A is [rank, in], B is [out, rank]; rank 0 = no adapter."""

    rank: int = 16
    targets: tuple[str, ...] = ALL_TARGETS
    dtype: str = "fp8_e4m3"

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0:
            raise AdapterError(f"LoRA rank must be a whole number >= 0, got {self.rank!r}")
        if self.dtype not in LORA_DTYPE_BYTES:
            raise AdapterError(f"LoRA dtype must be one of {sorted(LORA_DTYPE_BYTES)}, got {self.dtype!r}")
        object.__setattr__(self, "targets", tuple(self.targets))
        unknown = [t for t in self.targets if t not in ALL_TARGETS]
        if unknown:
            raise AdapterError(f"unknown LoRA target module(s) {unknown}; choose from {', '.join(ALL_TARGETS)}")
        if len(set(self.targets)) != len(self.targets):
            raise AdapterError(f"LoRA targets list a module twice: {list(self.targets)}")

    @property
    def enabled(self) -> bool:
        return self.rank > 0 and len(self.targets) > 0

    @property
    def bytes_per_element(self) -> int:
        return LORA_DTYPE_BYTES[self.dtype]

    @property
    def scale_bytes_per_matrix(self) -> int:
        return LORA_SCALE_BYTES_PER_MATRIX[self.dtype]

    def adapts(self, module: str) -> bool:
        return self.enabled and module in self.targets

    def matrix_bytes(self, rows: int, cols: int) -> int:
        """Bytes of one stored LoRA matrix (elements plus its scale)."""
        return rows * cols * self.bytes_per_element + self.scale_bytes_per_matrix

    def module_bytes(self, out_features: int, in_features: int) -> int:
        """SRAM bytes of the adapter of one projection [out, in]: A [rank, in] + B [out, rank] (0 if rank 0)."""
        if not self.rank:
            return 0
        return self.matrix_bytes(self.rank, in_features) + self.matrix_bytes(out_features, self.rank)


@dataclass(frozen=True)
class KvConfig:
    """The KV cache: `dtype` per element and the context length the user asks for.

    `scale_bytes_per_vector` is what each cached K or V head vector of one token carries besides its
    elements. None (the default) takes the engine's contract for `dtype` (KV_SCALE_BYTES_PER_VECTOR: a
    float32 scale per INT8 vector, none for FP16); an explicit value models another cache, e.g. 0 for
    static per-layer scales calibrated offline or 2 for a per-token FP16 scale.
    """

    dtype: str = "int8"
    context_tokens: int = 4096
    scale_bytes_per_vector: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in KV_DTYPE_BYTES:
            raise CapacityError(f"KV dtype must be one of {sorted(KV_DTYPE_BYTES)}, got {self.dtype!r}")
        if self.scale_bytes_per_vector is None:
            object.__setattr__(self, "scale_bytes_per_vector", KV_SCALE_BYTES_PER_VECTOR[self.dtype])
        if isinstance(self.context_tokens, bool) or not isinstance(self.context_tokens, int) or self.context_tokens < 0:
            raise CapacityError(f"KV context must be a whole number of tokens >= 0, got {self.context_tokens!r}")
        if self.scale_bytes_per_vector < 0:
            raise CapacityError(f"KV scale bytes per vector must be >= 0, got {self.scale_bytes_per_vector}")

    @property
    def bytes_per_element(self) -> int:
        return KV_DTYPE_BYTES[self.dtype]

    def vector_bytes(self, head_dim: int) -> int:
        """Bytes of one cached K or V head vector of one token: its elements and its scale."""
        return kv_vector_bytes(head_dim, self.bytes_per_element, self.scale_bytes_per_vector)

    def token_bytes(self, *, layers: int, kv_heads: int, head_dim: int) -> int:
        """KV bytes one token adds over `layers` layers: K and V of every KV head (the single definition)."""
        return 2 * layers * kv_heads * self.vector_bytes(head_dim)
