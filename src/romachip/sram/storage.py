"""LoRA A/B matrices as the H-Units store them: FP8 E4M3 with power-of-two scales, or FP16 / BF16.

Every stored matrix is its elements plus one FP32 scale word (docs/numerics.md, "LoRA storage";
`workload.LoraConfig.matrix_bytes` counts exactly this). A module y = W x + s * B (A x), with s = alpha/r
(or alpha/sqrt(r) with rsLoRA), is stored as:

FP8 E4M3 (default). For each of A and B, e = the smallest integer with amax <= 448 * 2**e (e = 0 for an
all-zero matrix), so the largest magnitude lands in (224, 448], the top binade of E4M3:

    a_codes = fp8_e4m3_encode(A * 2**-eA)      a_word = 2**eA
    b_codes = fp8_e4m3_encode(B * 2**-eB)      b_word = float32(s) * 2**eB
    engine view:  A = fp8_e4m3_decode(a_codes) * a_word,  B = fp8_e4m3_decode(b_codes),  scale = b_word

Scaling by powers of two is exact, so the view is exactly what the codes stand for, and
scale * B (A x) equals s * (2**eB * B_fp8) (A x): B's exponent rides on the module scale, one FP32
multiply per output element, which the H-Unit does anyway.

FP16 / BF16: elements rounded to nearest even (a value that overflows is refused), a_word = 1.0,
b_word = float32(s); view A, B = the stored values, scale = b_word.

Bytes of a module of rank r, [out, in]: bytes_per_element * r * (in + out) + 2 * 4.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from romachip.errors import AdapterError
from romachip.names import PROJECTIONS
from romachip.quant.fp8 import FP8_E4M3_MAX, fp8_e4m3_decode, fp8_e4m3_encode
from romachip.sram.peft_import import PeftAdapter
from romachip.workload import LORA_DTYPE_BYTES, LoraConfig

LORA_PRECISIONS = tuple(LORA_DTYPE_BYTES)


def check_precision(precision: str) -> str:
    if precision not in LORA_PRECISIONS:
        raise AdapterError(f"LoRA precision {precision!r} is not supported; choose one of {', '.join(LORA_PRECISIONS)}")
    return precision


def module_bytes(rank: int, out_features: int, in_features: int, precision: str) -> int:
    """Exact SRAM bytes of one adapted projection: A [r, in] and B [out, r] with their scale words."""
    lora = LoraConfig(rank=rank, dtype=check_precision(precision))
    return lora.matrix_bytes(rank, in_features) + lora.matrix_bytes(out_features, rank)


def pow2_exponent(amax: float) -> int:
    """Smallest integer e with amax <= 448 * 2**e (0 for amax == 0)."""
    if amax <= 0:
        return 0
    e = int(np.ceil(np.log2(amax / FP8_E4M3_MAX)))
    # log2 may be off by one next to exact powers of two; settle it with exact ldexp comparisons.
    while np.ldexp(FP8_E4M3_MAX, e) < amax:
        e += 1
    while np.ldexp(FP8_E4M3_MAX, e - 1) >= amax:
        e -= 1
    return e


@dataclass(frozen=True)
class StoredModule:
    """One projection's LoRA in SRAM: codes (uint8 FP8, or uint16 FP16/BF16 bit patterns) + two FP32 words."""

    name: str
    precision: str
    rank: int
    out_features: int
    in_features: int
    a_codes: np.ndarray  # [rank, in]
    b_codes: np.ndarray  # [out, rank]
    a_word: np.float32  # FP8: 2**eA; FP16/BF16: 1.0
    b_word: np.float32  # FP8: float32(s) * 2**eB; FP16/BF16: float32(s)

    @property
    def nbytes(self) -> int:
        return module_bytes(self.rank, self.out_features, self.in_features, self.precision)

    def decode(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(A float32 [r, in], B float32 [out, r], scale): exactly the values the H-Units compute with."""
        if self.precision == "fp8_e4m3":
            a = fp8_e4m3_decode(self.a_codes) * self.a_word  # a power of two: exact
            b = fp8_e4m3_decode(self.b_codes)
        else:
            a, b = _decode_half(self.a_codes, self.precision), _decode_half(self.b_codes, self.precision)
        return a.astype(np.float32), b.astype(np.float32), float(self.b_word)


def _decode_half(bits: np.ndarray, precision: str) -> np.ndarray:
    """uint16 FP16/BF16 bit patterns -> float32, exactly (BF16 is the top half of an FP32)."""
    if precision == "fp16":
        return bits.view(np.float16).astype(np.float32)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _encode_fp8(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Power-of-two scaled FP8: (codes uint8, e) with x ~ decode(codes) * 2**e."""
    e = pow2_exponent(float(np.max(np.abs(x))) if x.size else 0.0)
    return fp8_e4m3_encode(np.ldexp(x.astype(np.float32), -e).astype(np.float32)), e


def _encode_half(x: np.ndarray, precision: str, where: str) -> np.ndarray:
    import torch  # here, not at the top: the bank is planned (`romachip adapters check`) without torch

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dtype)
    if not torch.isfinite(t).all():
        raise AdapterError(f"{where}: a LoRA weight overflows {precision}; store this adapter in another precision")
    return t.view(torch.int16).numpy().view(np.uint16)


def encode_module(name: str, a: np.ndarray, b: np.ndarray, scale: float, precision: str) -> StoredModule:
    """Store one module's float32 A [r, in], B [out, r] and LoRA scale in `precision`."""
    check_precision(precision)
    rank, in_f = a.shape
    out_f = b.shape[0]
    if precision == "fp8_e4m3":
        a_codes, ea = _encode_fp8(a)
        b_codes, eb = _encode_fp8(b)
        a_word, b_word = np.float32(np.ldexp(1.0, ea)), np.float32(np.ldexp(np.float32(scale), eb))
    else:
        a_codes, b_codes = _encode_half(a, precision, name), _encode_half(b, precision, name)
        a_word, b_word = np.float32(1.0), np.float32(scale)
    if not (np.isfinite(a_word) and np.isfinite(b_word) and a_word > 0):
        raise AdapterError(f"{name}: the LoRA scale words overflow FP32; the adapter's values are out of range")
    a_codes.setflags(write=False)
    b_codes.setflags(write=False)
    return StoredModule(name, precision, rank, out_f, in_f, a_codes, b_codes, a_word, b_word)


class AdapterView(Mapping):
    """An immutable per-request adapter: module name -> (A, B, scale), read-only float32 arrays.

    It is what the engine receives; it holds its own decoded copies, so nothing a bank does later (unload,
    swap, reload) can change a request that already holds a view.
    """

    def __init__(self, name: str, precision: str, modules: Mapping[str, tuple[np.ndarray, np.ndarray, float]]):
        frozen = {}
        for key, (a, b, s) in modules.items():
            a, b = np.array(a, dtype=np.float32), np.array(b, dtype=np.float32)
            a.setflags(write=False)
            b.setflags(write=False)
            frozen[key] = (a, b, float(s))
        self.name = name
        self.precision = precision
        self._modules = MappingProxyType(frozen)

    def __getitem__(self, key: str) -> tuple[np.ndarray, np.ndarray, float]:
        return self._modules[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __repr__(self) -> str:
        return f"AdapterView({self.name!r}, {self.precision}, {len(self)} modules)"

    def workload(self) -> LoraConfig:
        """The perf model's LoRA workload of this adapter: its largest rank on the projections it adapts
        (the timing model takes one rank for every layer)."""
        rank = max((a.shape[0] for a, _, _ in self._modules.values()), default=0)
        targets = tuple(p for p in PROJECTIONS if any(name.endswith(f".{p}") for name in self._modules))
        return LoraConfig(rank=rank, targets=targets, dtype=self.precision)


@dataclass(frozen=True)
class StoredAdapter:
    """A whole adapter in SRAM form."""

    name: str
    precision: str
    modules: tuple[StoredModule, ...]
    source: str

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self.modules)

    @property
    def ranks(self) -> dict[str, int]:
        return {m.name: m.rank for m in self.modules}

    def view(self) -> AdapterView:
        """Decode every module into an immutable per-request adapter for the engine."""
        return AdapterView(self.name, self.precision, {m.name: m.decode() for m in self.modules})


def store_adapter(adapter: PeftAdapter, precision: str, *, name: str = "adapter") -> StoredAdapter:
    """Encode a PEFT adapter in the chip's LoRA precision."""
    check_precision(precision)
    modules = tuple(encode_module(m.name, m.a, m.b, m.scale, precision) for m in adapter.modules.values())
    return StoredAdapter(name=name, precision=precision, modules=modules, source=adapter.path)


def storage_error(adapter: PeftAdapter, stored: StoredAdapter) -> dict[str, float]:
    """Relative Frobenius error of the stored delta-W = scale * B A against the file's, worst and overall."""
    worst, num, den = 0.0, 0.0, 0.0
    for m, s in zip(adapter.modules.values(), stored.modules, strict=True):
        a, b, scale = s.decode()
        ref = m.scale * (m.b.astype(np.float64) @ m.a.astype(np.float64))
        got = scale * (b.astype(np.float64) @ a.astype(np.float64))
        e, r = float(np.sum((got - ref) ** 2)), float(np.sum(ref**2))
        num, den = num + e, den + r
        worst = max(worst, (e / r) ** 0.5 if r > 0 else 0.0)
    return {"delta_w_rel_error": (num / den) ** 0.5 if den > 0 else 0.0, "worst_module_rel_error": worst}
