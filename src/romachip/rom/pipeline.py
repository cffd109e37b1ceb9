"""`burn_checkpoint`: a checkpoint to a verified ROM image in one call (load, check the fit, quantize,
write, read back), on one placement compiled once and shared by the capacity check and the writer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from romachip.capacity import (
    AUTO_GROUP,
    AUTO_POLICY,
    DEFAULT_FORMAT,
    DEFAULT_STRATEGY,
    CapacityReport,
    choose_storage,
    plan,
)
from romachip.compile import compile_placement
from romachip.errors import CapacityError, FormatError
from romachip.quant.checkpoint import load_checkpoint
from romachip.quant.formats import WeightFormat
from romachip.quant.quantize import (
    CALIBRATION_SEQUENCES,
    CALIBRATION_TOKENS,
    DEFAULT_QUANTIZER,
    check_quantizer,
    quantize_checkpoint,
)
from romachip.quant.sampled import SAMPLED_SEQUENCES
from romachip.rom.layout import FORMAT_VERSION
from romachip.rom.reader import RomImage
from romachip.rom.writer import write_image
from romachip.spec.chip import ChipSpec
from romachip.tensor_bits import StoragePolicy
from romachip.workload import KvConfig, LoraConfig

#: (stage, done, total) for the stages "load", "quantize", "burn"; total 0 while unknown.
StageProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BurnReport:
    """What `burn_checkpoint` wrote and measured: sizes in bytes, wall times in seconds on this host."""

    path: str
    format_version: int
    model: str
    source: str
    chip: str
    weight_format: str
    quantizer: str
    strategy: str
    storage_policy: str
    fits: bool
    file_bytes: int
    header_bytes: int
    payload_bytes: int
    bytes_by_kind: dict[str, int]  # code, scale, zero, norm, host, padding
    rom_bytes_needed: int
    rom_bytes_allocated: int
    rom_bytes_available: int
    rom_unit_bytes_used_max: int
    rom_unit_bytes: int
    host_bytes: int
    units: int
    tiles: int
    wall_s: dict[str, float]  # load_s, quantize_s, write_s, verify_s, total_s
    warnings: tuple[str, ...]  # known ways a burn succeeds yet gives an unusable model
    notes: tuple[str, ...] = ()  # choices the default made that the user should know (the auto policy's)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        d["notes"] = list(self.notes)
        return d


def quality_warnings(fmt: WeightFormat, policy: StoragePolicy) -> list[str]:
    """Known ways a burn succeeds yet gives an unusable model (measured: README, docs/quantization.md)."""
    table_bits = policy.table_format(fmt).bits
    if table_bits > 2:
        return []
    return [
        f"the embedding table (and LM head) is stored at {table_bits} bits: on SmolLM2 that leaves perplexity "
        "above 1e7 whatever the quantizer; --storage-policy rom_int8 keeps the tables at 8 bits"
    ]


def refusal(report: CapacityReport) -> CapacityError:
    """The error a model that does not fit the ROM gets, with the capacity planner's breakdown."""
    rom = report.rom
    rows = [f"{b.kind} {b.bytes:,} B ({b.memory})" for b in rom.breakdown if b.bytes]
    return CapacityError(
        f"{report.model} in {report.weight_format} does not fit chip {report.chip!r}: "
        f"{rom.reason}. ROM needed {rom.rom_bytes_needed:,} B of {rom.rom_bytes_available:,} B; "
        f"fullest L-Unit {rom.rom_unit_bytes_used_max:,} B of {rom.rom_unit_bytes:,} B. "
        f"Breakdown: {', '.join(rows)}. Try `romachip fit` with other --bits/--group-size/--storage-policy"
    )


def burn_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    chip: ChipSpec,
    *,
    chip_preset: str | None = None,
    bits: int = DEFAULT_FORMAT.bits,
    group_size: int | None | str = AUTO_GROUP,
    symmetric: bool = DEFAULT_FORMAT.symmetric,
    quantizer: str = DEFAULT_QUANTIZER,
    calibration_text: str | None = None,
    calibration_tokens: int | None = None,
    strategy: str = DEFAULT_STRATEGY,
    policy: StoragePolicy | str = AUTO_POLICY,
    progress: StageProgress | None = None,
) -> BurnReport:
    """Quantize a checkpoint (HF folder, .gguf, or a shipped name) into `bits`-bit codes and burn it for `chip`.

    The defaults are the measured default burn (docs/quantization.md): GPTQ calibrated on text the model
    samples itself (none given: SAMPLED_SEQUENCES windows of CALIBRATION_TOKENS, seed 0), group size 32
    when the model fits the ROM at it, else 128 (`group_size="auto"`; None = one group per row), and the
    embedding/LM head at 8 bits when that fits (`policy="auto"`), each said in the report's notes
    (`choose_storage`). The model is placed once; a model whose placement overflows an L-Unit is refused
    (CapacityError with the breakdown) before it is quantized, and nothing is written. GPTQ calibrates
    on `calibration_tokens` tokens (default: 16 windows sampled, 32 of a given text), in windows of
    CALIBRATION_TOKENS.
    """
    report = progress or (lambda stage, done, total: None)
    if calibration_tokens is not None and calibration_tokens < CALIBRATION_TOKENS:
        raise FormatError(
            f"--calibration-tokens must be at least one window of {CALIBRATION_TOKENS} tokens, got {calibration_tokens}"
        )
    check_quantizer(quantizer, calibration_text)
    if policy != AUTO_POLICY:
        StoragePolicy.parse(policy)
    t0 = time.perf_counter()
    walls: dict[str, float] = {}
    report("load", 0, 0)
    ckpt = load_checkpoint(str(checkpoint))
    report("load", 1, 1)
    walls["load_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    choice = choose_storage(chip, ckpt.spec, bits=bits, symmetric=symmetric, group_size=group_size, policy=policy,
                            strategy=strategy)  # fmt: skip
    fmt, pol, notes = choice.fmt, choice.policy, list(choice.notes)
    kv = KvConfig(dtype=chip.precision.kv, context_tokens=0)
    placement = choice.placement
    if placement is None:
        placement = compile_placement(chip, ckpt.spec, fmt, strategy=strategy, policy=pol, kv=kv)
    fit = plan(chip, ckpt.spec, fmt=fmt, lora=LoraConfig(rank=0, dtype=chip.precision.lora), kv=kv, placement=placement)
    if not fit.rom.rom_fits:
        raise refusal(fit)
    sampled = quantizer == "gptq" and calibration_text is None
    default_windows = SAMPLED_SEQUENCES if sampled else CALIBRATION_SEQUENCES
    windows = default_windows if calibration_tokens is None else calibration_tokens // CALIBRATION_TOKENS
    if sampled:
        notes.append(f"GPTQ calibrates on {windows} x {CALIBRATION_TOKENS} tokens the model samples itself "
                     "(seed 0); --quantizer rtn burns in seconds, at some quality (docs/quantization.md)")  # fmt: skip
    qmodel = quantize_checkpoint(
        ckpt,
        fmt,
        quantizer=quantizer,  # type: ignore[arg-type]
        calibration_text=calibration_text,
        calibration_sequences=windows,
        embedding_fmt=pol.table_format(fmt),
        progress=lambda d, n: report("quantize", d, n),
        calibration_progress=lambda d, n: report("calibrate", d, n),
    )
    walls["quantize_s"] = time.perf_counter() - t
    t = time.perf_counter()
    written = write_image(
        output, qmodel, chip, chip_preset=chip_preset, placement=placement,
        progress=lambda d, n: report("burn", d, n),
    )  # fmt: skip
    walls["write_s"] = time.perf_counter() - t
    t = time.perf_counter()
    RomImage.open(output)  # read back: header, sizes, every checksum
    walls["verify_s"] = time.perf_counter() - t
    walls["total_s"] = time.perf_counter() - t0
    return BurnReport(
        path=str(output),
        format_version=FORMAT_VERSION,
        model=ckpt.spec.name,
        source=ckpt.source,
        chip=chip.name,
        weight_format=fmt.describe(),
        quantizer=quantizer,
        strategy=placement.strategy,
        storage_policy=fit.policy,
        fits=fit.rom.rom_fits,
        file_bytes=written.file_bytes,
        header_bytes=written.header_bytes,
        payload_bytes=written.payload_bytes,
        bytes_by_kind=written.bytes_by_kind,
        rom_bytes_needed=fit.rom.rom_bytes_needed,
        rom_bytes_allocated=fit.rom.rom_bytes_allocated,
        rom_bytes_available=fit.rom.rom_bytes_available,
        rom_unit_bytes_used_max=fit.rom.rom_unit_bytes_used_max,
        rom_unit_bytes=fit.rom.rom_unit_bytes,
        host_bytes=fit.rom.host_bytes,
        units=written.units,
        tiles=written.tiles,
        wall_s={k: round(v, 3) for k, v in walls.items()},
        warnings=tuple(quality_warnings(fmt, pol)),
        notes=tuple(notes),
    )
