"""Read a PEFT LoRA adapter folder into float32 A/B matrices with their scales, checked against the base.

A PEFT folder holds `adapter_config.json` and `adapter_model.safetensors` with tensors named
`base_model.model.<module>.lora_A[.<adapter>].weight` ([r, in]) and `...lora_B[.<adapter>].weight`
([out, r]), where <module> is the Hugging Face module name (`model.layers.3.self_attn.q_proj`).

Which modules carry LoRA, and with which rank and alpha, is decided from the config exactly as PEFT
0.21 decides it (`tuners_utils.check_target_module_exists`, `other.get_pattern_key`), mirrored here so
that import needs no model instance; the tensors in the file must then be exactly that set. The chip
runs LoRA only on the seven projections of each block; everything else is refused with an error that
names the config field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from romachip.errors import AdapterError, PathError
from romachip.files import input_dir, read_text
from romachip.names import (
    ATTENTION_PROJECTIONS,
    BLOCK_NORMS,
    EMBED_MODULE,
    FINAL_NORM_MODULE,
    HEAD_MODULE,
    MLP_PROJECTIONS,
    PROJECTIONS,
)
from romachip.names import projection_module as lora_module_name  # the module name an adapter uses
from romachip.spec.model import ModelSpec

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
LEGACY_WEIGHTS_NAME = "adapter_model.bin"
_KEY_RE = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<ab>lora_[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_MODULE_RE = re.compile(r"^model\.layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\.(?P<proj>\w+)$")

# Config fields that ask for something other than plain LoRA on linear layers: field -> value meaning "off".
_MUST_BE_OFF: dict[str, tuple[Any, ...]] = {
    "use_dora": (False, None),
    "modules_to_save": (None, []),
    "lora_bias": (False, None),
    "layer_replication": (None, []),
    "trainable_token_indices": (None, [], {}),
    "target_parameters": (None, []),
    "use_qalora": (False, None),
    "use_bdlora": (False, None),
    "alora_invocation_tokens": (None, []),
}
_WHY_OFF = {
    "use_dora": "DoRA rescales the base weight by a learned magnitude; the H-Units only add scale*B(A(x))",
    "modules_to_save": "it replaces whole modules, but base weights live in ROM and cannot change",
    "lora_bias": "a LoRA bias needs a bias path the L-Units and H-Units do not have",
    "layer_replication": "it duplicates ROM layers, which the image does not hold",
    "trainable_token_indices": "it changes embedding rows, which live in ROM",
    "target_parameters": "LoRA on raw parameters (MoE experts) has no place on the chip",
    "use_qalora": "QA-LoRA pools the input groups, which the H-Units do not do",
    "use_bdlora": "block-diagonal LoRA is not a layout the H-Units store",
    "alora_invocation_tokens": "activated LoRA switches on mid-sequence, which the engine does not do",
}


def uniform_ranks(spec: ModelSpec, rank: int, targets: tuple[str, ...] = PROJECTIONS) -> dict[str, int]:
    """Module name -> rank for an adapter of one rank on `targets` of every layer (for what-if accounting)."""
    return {lora_module_name(i, p): rank for i in range(spec.num_layers) for p in targets}


@dataclass(frozen=True)
class LoraModule:
    """One adapted projection: y = W x + scale * B (A x)."""

    name: str  # Hugging Face module name, e.g. model.layers.3.self_attn.q_proj
    a: np.ndarray  # float32 [rank, in_features]
    b: np.ndarray  # float32 [out_features, rank]
    scale: float  # alpha / rank, or alpha / sqrt(rank) with rsLoRA
    rank: int
    alpha: float

    @property
    def layer(self) -> int:
        return int(self.name.split(".")[2])

    @property
    def projection(self) -> str:
        return self.name.rsplit(".", 1)[1]


@dataclass(frozen=True)
class PeftAdapter:
    """A PEFT adapter as the chip will run it: float32 matrices, one scale per module."""

    path: str
    modules: dict[str, LoraModule]
    use_rslora: bool
    base_model: str | None
    source_dtype: str
    notes: tuple[str, ...] = field(default=())

    @property
    def ranks(self) -> dict[str, int]:
        return {n: m.rank for n, m in self.modules.items()}

    @property
    def max_rank(self) -> int:
        return max(m.rank for m in self.modules.values())

    @property
    def targets(self) -> list[str]:
        """Projection names adapted in at least one layer, in block order."""
        present = {m.projection for m in self.modules.values()}
        return [p for p in PROJECTIONS if p in present]

    @property
    def layers(self) -> list[int]:
        return sorted({m.layer for m in self.modules.values()})

    @property
    def params(self) -> int:
        return sum(m.a.size + m.b.size for m in self.modules.values())

    def as_engine_adapter(self) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
        """The engine's per-request adapter mapping, unquantized (float32 as read from the file)."""
        return {n: (m.a, m.b, m.scale) for n, m in self.modules.items()}


def base_module_names(spec: ModelSpec) -> list[str]:
    """Every module name of a transformers LlamaForCausalLM of this shape, as PEFT iterates them."""
    names = ["", "model", EMBED_MODULE, "model.layers"]
    for i in range(spec.num_layers):
        block = f"model.layers.{i}"
        names += [block, f"{block}.self_attn"] + [lora_module_name(i, p) for p in ATTENTION_PROJECTIONS]
        names += [f"{block}.mlp"] + [lora_module_name(i, p) for p in MLP_PROJECTIONS] + [f"{block}.mlp.act_fn"]
        names += [f"{block}.{n}" for n in BLOCK_NORMS]
    return names + [FINAL_NORM_MODULE, "model.rotary_emb", HEAD_MODULE]


def module_is_targeted(config: Mapping[str, Any], key: str) -> bool:
    """PEFT 0.21's check_target_module_exists for a LoRA config, as a pure function of the JSON config."""
    exclude = config.get("exclude_modules")
    if exclude:
        if isinstance(exclude, str):
            if re.fullmatch(exclude, key):
                return False
        elif key in exclude or any(key.endswith(f".{e}") for e in exclude):
            return False
    targets = config.get("target_modules")
    if isinstance(targets, str):
        if targets.lower() == "all-linear":  # PEFT expands it to every linear layer but the output layer
            return key.rsplit(".", 1)[-1] in PROJECTIONS and key.startswith("model.layers.")
        return re.fullmatch(targets, key) is not None
    targets = list(targets or [])
    if key in targets:
        return True
    if not any(key.endswith(f".{t}") for t in targets):
        return False
    return _layer_selected(config, key)


def _layer_selected(config: Mapping[str, Any], key: str) -> bool:
    """`layers_to_transform` / `layers_pattern` filtering, applied by PEFT to list targets only."""
    indexes = config.get("layers_to_transform")
    if indexes is None or (isinstance(indexes, list) and not indexes):
        return True
    pattern = config.get("layers_pattern")
    match = None
    if not pattern:
        match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)
    else:
        for p in [pattern] if isinstance(pattern, str) else pattern:
            match = re.match(rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\.", key)
            if match is not None:
                break
    if match is None:
        return False
    idx = int(match.group("idx"))
    return idx == indexes if isinstance(indexes, int) else idx in indexes


def pattern_value(patterns: Mapping[str, Any], key: str, default: Any) -> Any:
    """PEFT's get_pattern_key: the first pattern p (in file order) with key matching `(.*\\.)?(p)$`."""
    for p in patterns:
        if re.match(rf"(.*\.)?({p})$", key):
            return patterns[p]
    return default


#: An adapter_config.json is a page of fields; anything larger is not one (and is not read whole).
MAX_CONFIG_BYTES = 2**20


def read_adapter_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    try:  # the path helpers name the real cause: missing, a file, unreadable, a pipe, too large
        input_dir(folder, what="adapter folder")
        if not path.exists():
            raise AdapterError(f"{folder}: no {CONFIG_NAME}; pass the folder PEFT's save_pretrained wrote")
        config = json.loads(read_text(path, what="adapter config", max_bytes=MAX_CONFIG_BYTES))
    except PathError as exc:
        raise AdapterError(f"{exc}; pass the folder PEFT's save_pretrained wrote") from None
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def check_config(config: Mapping[str, Any], where: str) -> None:
    """Refuse every config field that asks for something the chip cannot run, naming the field."""
    peft_type = config.get("peft_type", "LORA")
    if str(peft_type).upper() != "LORA":
        raise AdapterError(f"{where}: field 'peft_type' is {peft_type!r}; the chip runs plain LoRA adapters only")
    for name, off in _MUST_BE_OFF.items():
        value = config.get(name)
        if value not in off:
            raise AdapterError(f"{where}: field '{name}' is {value!r}; not supported: {_WHY_OFF[name]}")
    bias = config.get("bias", "none")
    if bias != "none":
        raise AdapterError(f"{where}: field 'bias' is {bias!r}; only 'none' is supported (the L-Units hold no biases)")
    if config.get("target_modules") in (None, [], ""):
        raise AdapterError(f"{where}: field 'target_modules' is empty; nothing to adapt")
    _check_number(config.get("r"), "r", where, integer=True)
    _check_number(config.get("lora_alpha"), "lora_alpha", where)
    for key, integer in (("rank_pattern", True), ("alpha_pattern", False)):
        patterns = config.get(key) or {}
        if not isinstance(patterns, dict):
            raise AdapterError(f"{where}: field '{key}' must be a mapping of pattern -> number")
        for pattern, value in patterns.items():
            _check_regex(pattern, key, where)
            _check_number(value, f"{key}[{pattern!r}]", where, integer=integer)
    _check_names(config, where)


def _check_number(value: Any, field_name: str, where: str, *, integer: bool = False) -> None:
    kinds = int if integer else int | float
    if not isinstance(value, kinds) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        kind = "a positive whole number" if integer else "a positive number"
        raise AdapterError(f"{where}: field '{field_name}' must be {kind}, got {value!r}")


#: PEFT matches these fields with Python's `re`, which backtracks: a config is untrusted input, so its
#: patterns are bounded in length and may not nest an unbounded repeat inside another (`(a+)+`,
#: `(x*y?)*`), the shape whose matching time grows exponentially with the module name.
MAX_PATTERN_CHARS = 1024


def _check_regex(pattern: Any, field_name: str, where: str) -> None:
    if isinstance(pattern, str) and len(pattern) > MAX_PATTERN_CHARS:
        raise AdapterError(
            f"{where}: field '{field_name}' holds a {len(pattern):,}-character regular expression; at most "
            f"{MAX_PATTERN_CHARS:,} are accepted"
        )
    try:
        parsed = re._parser.parse(pattern)  # what re.compile parses; the public API exposes no tree
    except (re.error, TypeError, OverflowError, RecursionError) as exc:
        raise AdapterError(
            f"{where}: field '{field_name}' holds {pattern!r}, not a valid regular expression ({exc})"
        ) from None
    if _nested_repeat(parsed.data if hasattr(parsed, "data") else list(parsed), inside=False):
        raise AdapterError(
            f"{where}: field '{field_name}' holds {pattern!r}, which nests a repeat inside a repeat (like '(a+)+'); "
            "refused, as matching it can take exponential time (write the module names, or a flat pattern)"
        )


def _nested_repeat(items: list, *, inside: bool) -> bool:
    """Whether a parsed pattern has an unbounded repeat within another repeat."""
    for op, arg in items:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = arg
            unbounded = high == re._constants.MAXREPEAT or high > 1
            if unbounded and inside:
                return True
            if _nested_repeat(list(sub), inside=inside or unbounded):
                return True
        elif name == "SUBPATTERN":
            if _nested_repeat(list(arg[-1]), inside=inside):
                return True
        elif name == "BRANCH":
            if any(_nested_repeat(list(b), inside=inside) for b in arg[1]):
                return True
        elif name in ("ASSERT", "ASSERT_NOT") and _nested_repeat(list(arg[1]), inside=inside):
            return True
    return False


def _check_names(config: Mapping[str, Any], where: str) -> None:
    """target_modules / exclude_modules / layers_pattern: a regex string or a list of names;
    layers_to_transform: a layer index or a list of them."""
    for key in ("target_modules", "exclude_modules", "layers_pattern"):
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            _check_regex(value, key, where)
        elif not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise AdapterError(f"{where}: field '{key}' must be a string or a list of strings, got {value!r}")
    layers = config.get("layers_to_transform")
    ok = layers is None or (isinstance(layers, int) and not isinstance(layers, bool))
    ok = ok or (isinstance(layers, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in layers))
    if not ok:
        raise AdapterError(
            f"{where}: field 'layers_to_transform' must be a layer index or a list of them, got {layers!r}"
        )


def targeted_modules(config: Mapping[str, Any], spec: ModelSpec, where: str) -> list[str]:
    """The module names PEFT would wrap with LoRA on this base model; refuse non-projection targets."""
    chosen = [k for k in base_module_names(spec) if module_is_targeted(config, k)]
    for key in chosen:
        if not _MODULE_RE.match(key) or key.rsplit(".", 1)[1] not in PROJECTIONS:
            kind = "embedding LoRA" if key in (EMBED_MODULE, HEAD_MODULE) else "LoRA on this module"
            raise AdapterError(
                f"{where}: field 'target_modules' selects {key!r}; {kind} is not supported: the chip adapts only "
                f"the seven projections ({', '.join(PROJECTIONS)})"
            )
    if not chosen:
        raise AdapterError(
            f"{where}: field 'target_modules' ({config.get('target_modules')!r}) selects no module of a "
            f"{spec.num_layers}-layer LLaMA; the adapter was made for a different base model"
        )
    return chosen


def read_tensors(folder: Path) -> tuple[dict[str, np.ndarray], str]:
    """All tensors of adapter_model.safetensors as float32 (exact for fp16/bf16/fp32) and their dtype."""
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        if (folder / LEGACY_WEIGHTS_NAME).is_file():
            raise AdapterError(
                f"{folder}: only {LEGACY_WEIGHTS_NAME} (pickle) was found; romachip reads safetensors only. Re-save "
                f"it with PeftModel.from_pretrained(base, '{folder}').save_pretrained(out, safe_serialization=True)"
            )
        raise AdapterError(f"{folder}: no {WEIGHTS_NAME}; pass the folder PEFT's save_pretrained wrote")
    from safetensors import SafetensorError, safe_open

    tensors: dict[str, np.ndarray] = {}
    dtypes: set[str] = set()
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118  (safe_open has no __iter__)
                t = f.get_tensor(key)
                dtypes.add(str(t.dtype).removeprefix("torch."))
                if not t.is_floating_point():
                    raise AdapterError(f"{path}: tensor {key!r} has dtype {t.dtype}; LoRA weights must be floats")
                tensors[key] = t.float().numpy()  # fp16/bf16 -> fp32 is exact
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterError(f"{path} is not a readable safetensors file: {exc}") from None
    return tensors, ",".join(sorted(dtypes))


def _pair_tensors(tensors: dict[str, np.ndarray], where: str) -> dict[str, dict[str, np.ndarray]]:
    """Group lora_A/lora_B tensors by module; refuse DoRA, embedding LoRA, biases and foreign keys by name."""
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        if "lora_magnitude_vector" in key:
            raise AdapterError(f"{where}: tensor {key!r} is a DoRA magnitude (field 'use_dora'); DoRA is not supported")
        if "lora_embedding_" in key:
            raise AdapterError(f"{where}: tensor {key!r} is embedding LoRA (field 'target_modules'); not supported")
        m = _KEY_RE.match(key)
        if m is None:
            raise AdapterError(
                f"{where}: tensor {key!r} is not a LoRA A/B weight (bias, modules_to_save or another PEFT "
                f"method); the chip runs only lora_A/lora_B on the projections"
            )
        pairs.setdefault(m.group("module"), {})[m.group("ab")] = value
    return pairs


def _check_shapes(name: str, a: np.ndarray, b: np.ndarray, rank: int, spec: ModelSpec, where: str) -> None:
    out_f, in_f = spec.linear_shapes()[name.rsplit(".", 1)[1]]
    if a.ndim != 2 or b.ndim != 2:
        raise AdapterError(f"{where}: {name}: lora_A/lora_B must be matrices, got shapes {a.shape} and {b.shape}")
    if a.shape[1] != in_f or b.shape[0] != out_f:
        raise AdapterError(
            f"{where}: {name}: lora_A {list(a.shape)} / lora_B {list(b.shape)} do not fit the base model's "
            f"[{out_f}, {in_f}] projection ({spec.name}); the adapter was trained for a different base model"
        )
    if a.shape[0] != rank or b.shape[1] != rank:
        raise AdapterError(
            f"{where}: {name}: lora_A {list(a.shape)} / lora_B {list(b.shape)} disagree with rank {rank} from "
            f"fields 'r'/'rank_pattern'"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise AdapterError(f"{where}: {name}: lora_A/lora_B hold NaN or infinity")


def read_peft_adapter(folder: str | Path, spec: ModelSpec) -> PeftAdapter:
    """Read and validate a PEFT LoRA folder for a base model of shape `spec`."""
    folder = Path(folder)
    where = f"adapter {folder}"
    config = read_adapter_config(folder)
    check_config(config, where)
    wanted = targeted_modules(config, spec, where)
    tensors, dtype = read_tensors(folder)
    pairs = _pair_tensors(tensors, where)
    extra = sorted(set(pairs) - set(wanted))
    if extra:
        raise AdapterError(
            f"{where}: the file holds LoRA for {extra[0]!r} ({len(extra)} module(s) in all), which fields "
            f"'target_modules'/'layers_to_transform' do not select on a {spec.num_layers}-layer model"
        )
    missing = [k for k in wanted if k not in pairs or len(pairs[k]) != 2]
    if missing:
        raise AdapterError(
            f"{where}: fields 'target_modules'/'layers_to_transform' select {missing[0]!r} but the file has no "
            f"lora_A/lora_B pair for it ({len(missing)} module(s) in all)"
        )
    rslora = bool(config.get("use_rslora", False))
    rank_pattern, alpha_pattern = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    modules: dict[str, LoraModule] = {}
    for name in wanted:
        rank = int(pattern_value(rank_pattern, name, config["r"]))
        alpha = float(pattern_value(alpha_pattern, name, config["lora_alpha"]))
        a, b = pairs[name]["lora_A"], pairs[name]["lora_B"]
        _check_shapes(name, a, b, rank, spec, where)
        scale = alpha / math.sqrt(rank) if rslora else alpha / rank
        modules[name] = LoraModule(name=name, a=a, b=b, scale=scale, rank=rank, alpha=alpha)
    notes = []
    if config.get("fan_in_fan_out"):
        notes.append("fan_in_fan_out=true ignored: LLaMA projections are nn.Linear, for which PEFT sets it false")
    return PeftAdapter(
        path=str(folder),
        modules=modules,
        use_rslora=rslora,
        base_model=config.get("base_model_name_or_path"),
        source_dtype=dtype,
        notes=tuple(notes),
    )
