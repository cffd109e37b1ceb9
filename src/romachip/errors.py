"""One error family. Every error a user can cause is a RomachipError subclass whose message says what
was wrong, where, and what to do. The CLI prints the message (no traceback) and exits 2."""


class RomachipError(Exception):
    """Base of every error caused by bad input or a request the chip cannot serve."""


class SpecError(RomachipError):
    """A chip/tech preset is unknown, malformed, or fails validation."""


class ModelConfigError(RomachipError):
    """A model config is unknown, malformed, or describes an architecture romachip cannot run."""


class FormatError(RomachipError):
    """A number format is invalid (bits, group size, dtype) or does not fit the tensor."""


class CapacityError(RomachipError):
    """A model, adapter or context does not fit the chip's ROM or SRAM."""


class CheckpointError(RomachipError):
    """A checkpoint file (safetensors, GGUF) is missing, malformed, or holds an unsupported tensor."""


class RomImageError(RomachipError):
    """A ROM image is truncated, corrupted, or of an unknown version."""


class AdapterError(RomachipError):
    """A LoRA adapter is malformed or asks for something the chip cannot run."""


class GenerationError(RomachipError):
    """A generation request is invalid (e.g. the prompt exceeds the KV capacity)."""


class VectorsError(RomachipError):
    """A golden-vector folder is malformed, or an RTL dump does not match the golden vectors."""


class SweepError(RomachipError):
    """A sweep spec, its results folder or its executor is invalid (unknown path, mixed results, no scheduler)."""


class PathError(RomachipError):
    """An input path is missing, unreadable or not a regular file, or an output path cannot be written."""
