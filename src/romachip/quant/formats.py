"""The weight formats the L-Units read, each defined once.

A weight tensor W of shape [out_features, in_features] is split along the input dimension into groups
of `group_size` columns (the last group may be shorter when in_features is not a multiple). Each group
of each output row stores

    codes q  : unsigned integers in [0, 2**bits - 1], one per weight
    scale s  : one float (FP16 by default), per group
    zero  z  : one unsigned integer of `zero_bits` bits, per group (asymmetric only)

and is reconstructed as  w = s * (q - z)  evaluated in float32.  Symmetric formats store no zero: z is
fixed at 2**(bits-1), so codes are offset-binary signed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

from romachip.errors import FormatError

SUPPORTED_BITS = (2, 3, 4, 8)
SCALE_DTYPE_BITS = {"fp16": 16, "bf16": 16, "fp32": 32}


class FormatId(IntEnum):
    """Stable ids written into ROM images; a retired id is never reused."""

    UINT_ASYM = 1
    UINT_SYM = 2


@dataclass(frozen=True)
class WeightFormat:
    """Group-wise unsigned weight codes: w = scale * (q - zero)."""

    bits: int = 4
    group_size: int | None = 128  # None: one group per output row (per-channel)
    symmetric: bool = False
    scale_dtype: str = "fp16"

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise FormatError(
                f"the image format has {'/'.join(map(str, SUPPORTED_BITS))}-bit weight codes, got {self.bits} "
                "(a chip runs the subset its precision.weight_bits lists)"
            )
        if self.group_size is not None and self.group_size <= 0:
            raise FormatError(f"group size must be a positive number of weights, got {self.group_size}")
        if self.scale_dtype not in SCALE_DTYPE_BITS:
            raise FormatError(f"scale dtype must be one of {sorted(SCALE_DTYPE_BITS)}, got {self.scale_dtype!r}")

    @property
    def format_id(self) -> FormatId:
        return FormatId.UINT_SYM if self.symmetric else FormatId.UINT_ASYM

    @property
    def zero_bits(self) -> int:
        """Bits of the stored zero-point: as wide as a code (asymmetric), none (symmetric)."""
        return 0 if self.symmetric else self.bits

    @property
    def scale_bits(self) -> int:
        return SCALE_DTYPE_BITS[self.scale_dtype]

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    @property
    def symmetric_zero(self) -> int:
        return 1 << (self.bits - 1)

    def group_len(self, in_features: int) -> int:
        return in_features if self.group_size is None else self.group_size

    def groups_per_row(self, in_features: int) -> int:
        return math.ceil(in_features / self.group_len(in_features))

    def storage_bits(self, out_features: int, in_features: int) -> TensorBits:
        """Exact bits of a [out, in] tensor in this format, split into codes, scales and zeros."""
        if out_features <= 0 or in_features <= 0:
            raise FormatError(f"tensor shape must be positive, got [{out_features}, {in_features}]")
        groups = out_features * self.groups_per_row(in_features)
        return TensorBits(
            code_bits=out_features * in_features * self.bits,
            scale_bits=groups * self.scale_bits,
            zero_bits=groups * self.zero_bits,
        )

    def bits_per_weight(self, in_features: int) -> float:
        """Average stored bits per weight, overhead included (ROMA's uint4 g128: 4 + 20/128)."""
        tb = self.storage_bits(1, in_features)
        return tb.total_bits / in_features

    def describe(self) -> str:
        group = "per-channel" if self.group_size is None else f"g{self.group_size}"
        kind = "sym" if self.symmetric else "asym"
        return f"uint{self.bits} {group} {kind} {self.scale_dtype} scale"


@dataclass(frozen=True)
class TensorBits:
    """Stored size of one tensor, in bits."""

    code_bits: int
    scale_bits: int
    zero_bits: int

    @property
    def total_bits(self) -> int:
        return self.code_bits + self.scale_bits + self.zero_bits

    @property
    def total_bytes(self) -> int:
        return math.ceil(self.total_bits / 8)

    def __add__(self, other: TensorBits) -> TensorBits:
        return TensorBits(
            self.code_bits + other.code_bits,
            self.scale_bits + other.scale_bits,
            self.zero_bits + other.zero_bits,
        )
