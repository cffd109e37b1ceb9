"""Exact storage of a model's tensors in a weight format, and where the embedding table and LM head go.

Every tensor of a LLaMA model is listed with its shape, its format and its exact bits (codes, scales,
zeros from `WeightFormat.storage_bits`) and the memory it lives in:

- the seven projections of every block: ROM, in the weight format (groups along the input dimension);
- the embedding table and LM head [vocab, hidden] (groups along hidden): placed by a `StoragePolicy`;
- the RMSNorm weights (2 per block + the final norm): FP16 (`NORM_WEIGHT_BITS`) in ROM. A chip with no
  DRAM has no other non-volatile store, so these few KiB are burned with the model and the vector units
  read them from there (NoC traffic the timing model charges).

Storage policies for the embedding table and the LM head:

=============  ==========================================  ==========================================
policy         embedding table                             LM head
=============  ==========================================  ==========================================
rom_weight     ROM, weight format                          ROM, weight format (tied: the same copy)
rom_int8       ROM, 8-bit codes (same group/scale/sym)     ROM, 8-bit codes (tied: the same copy)
off_chip       host memory, weight format; the host sends  ROM, weight format
               one row per token
off_chip_all   host memory, weight format                  host: the chip returns the final normed
                                                           hidden state and the host computes logits
=============  ==========================================  ==========================================

Off-chip tables keep the weight format's codes, so the engine's numbers do not depend on the policy
(except rom_int8, which really stores 8-bit codes). For a tied model `off_chip` saves no ROM: the LM head
needs the full matrix on chip, and the lookup could read the same copy; it is listed for symmetry.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from enum import StrEnum

from romachip import names
from romachip.errors import FormatError
from romachip.quant.formats import TensorBits, WeightFormat
from romachip.spec.model import ModelSpec

#: RMSNorm weights are stored as FP16 (the vector units compute norms in FP16/FP32). [assumption]
NORM_WEIGHT_BITS = 16


class StoragePolicy(StrEnum):
    """Where the embedding table and the LM head are stored (see the module docstring)."""

    ROM_WEIGHT = "rom_weight"
    ROM_INT8 = "rom_int8"
    OFF_CHIP = "off_chip"
    OFF_CHIP_ALL = "off_chip_all"

    @classmethod
    def parse(cls, policy: StoragePolicy | str) -> StoragePolicy:
        """The policy a name stands for; FormatError listing the choices for any other name."""
        try:
            return cls(policy)
        except ValueError:
            choices = ", ".join(p.value for p in cls)
            raise FormatError(f"unknown storage policy {policy!r}; choose one of {choices}") from None

    def table_format(self, fmt: WeightFormat) -> WeightFormat:
        """Format of the embedding table / LM head under this policy."""
        return replace(fmt, bits=8) if self is StoragePolicy.ROM_INT8 else fmt

    @property
    def embedding_on_chip(self) -> bool:
        return self in (StoragePolicy.ROM_WEIGHT, StoragePolicy.ROM_INT8)

    @property
    def lm_head_on_chip(self) -> bool:
        return self is not StoragePolicy.OFF_CHIP_ALL


DEFAULT_POLICY = StoragePolicy.ROM_WEIGHT


class TensorKind(StrEnum):
    """Kinds of stored tensors, as the capacity breakdown groups them."""

    ATTENTION = "attention"  # q, k, v, o projections
    MLP = "mlp"  # gate, up, down projections
    EMBEDDING = "embedding"
    LM_HEAD = "lm_head"  # also the shared table of a tied model when it is stored on chip
    NORM = "norm"


@dataclass(frozen=True)
class StoredTensor:
    """One tensor as stored: `rows` x `cols` in `fmt` (None for FP16 norm vectors)."""

    name: str
    kind: TensorKind
    rows: int
    cols: int
    fmt: WeightFormat | None
    on_chip: bool
    bits: TensorBits

    @property
    def params(self) -> int:
        return self.rows * self.cols


def _quantized(name: str, kind: TensorKind, rows: int, cols: int, fmt: WeightFormat, on_chip: bool) -> StoredTensor:
    return StoredTensor(name, kind, rows, cols, fmt, on_chip, fmt.storage_bits(rows, cols))


def _norm(name: str, hidden: int) -> StoredTensor:
    return StoredTensor(name, TensorKind.NORM, 1, hidden, None, True, TensorBits(hidden * NORM_WEIGHT_BITS, 0, 0))


def _tables(spec: ModelSpec, fmt: WeightFormat, policy: StoragePolicy) -> list[StoredTensor]:
    """The embedding table and LM head under `policy` (a tied model stores one shared matrix per place)."""
    v, d = spec.vocab_size, spec.hidden_size
    tfmt = policy.table_format(fmt)
    if spec.tie_word_embeddings and policy.embedding_on_chip:
        # One copy serves both the lookup and the LM head.
        return [_quantized(names.EMBED_NAME, TensorKind.LM_HEAD, v, d, tfmt, True)]
    return [
        _quantized(names.EMBED_NAME, TensorKind.EMBEDDING, v, d, tfmt, policy.embedding_on_chip),
        _quantized(names.head_name(spec.tie_word_embeddings), TensorKind.LM_HEAD, v, d, tfmt, policy.lm_head_on_chip),
    ]


def model_tensors(spec: ModelSpec, fmt: WeightFormat, policy: StoragePolicy = DEFAULT_POLICY) -> list[StoredTensor]:
    """Every stored tensor of the model with its exact bits and whether it is on chip.

    A tied model under an off-chip policy lists the shared matrix twice (a host copy and, for
    `off_chip`, a ROM copy), because it is then really stored in two places.
    """
    return list(_model_tensors(spec, fmt, StoragePolicy.parse(policy)))


@functools.lru_cache(maxsize=64)
def _model_tensors(spec: ModelSpec, fmt: WeightFormat, policy: StoragePolicy) -> tuple[StoredTensor, ...]:
    """`model_tensors`, once per (model, format, policy) and process: the specs are frozen and a sweep over
    chips asks for the same model's list at every design point (the capacity plan and the compiler both)."""
    out: list[StoredTensor] = []
    tables = _tables(spec, fmt, policy)
    out.extend(t for t in tables if t.kind is TensorKind.EMBEDDING)
    attn_norm, mlp_norm = names.BLOCK_NORMS
    for i in range(spec.num_layers):
        out.append(_norm(names.norm_name(i, attn_norm), spec.hidden_size))
        for module, (rows, cols) in spec.linear_shapes().items():
            kind = TensorKind.ATTENTION if module in names.ATTENTION_PROJECTIONS else TensorKind.MLP
            out.append(_quantized(names.projection_name(i, module), kind, rows, cols, fmt, True))
        out.append(_norm(names.norm_name(i, mlp_norm), spec.hidden_size))
    out.append(_norm(names.FINAL_NORM_NAME, spec.hidden_size))
    out.extend(t for t in tables if t.kind is TensorKind.LM_HEAD)
    return tuple(out)
