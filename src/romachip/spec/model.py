"""ModelSpec: the shape of a LLaMA-family model, read from a Hugging Face config.json.

Both key layouts are accepted: transformers 4.x (`rope_theta`, `rope_scaling`, `torch_dtype`) and 5.x
(`rope_parameters`, `dtype`). Anything romachip cannot run is refused with the offending field named.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from romachip.errors import ModelConfigError, PathError
from romachip.files import read_text

SUPPORTED_MODEL_TYPES = ("llama",)
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)
SUPPORTED_ROPE_TYPES = ("default", "llama3")
#: A config.json is a page of fields; anything larger is not one (and is not read whole).
MAX_CONFIG_BYTES = 2**20


class RopeScaling(BaseModel):
    """RoPE frequency scaling (Llama 3.1/3.2 `llama3` type); absent means plain RoPE."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    rope_type: Literal["llama3"] = Field(description="Scaling kind; only Llama 3's is supported.")
    factor: float = Field(gt=0, description="Wavelength stretch for low frequencies.")
    low_freq_factor: float = Field(gt=0, description="Wavelengths above original/low_freq_factor are stretched.")
    high_freq_factor: float = Field(gt=0, description="Wavelengths below original/high_freq_factor are kept.")
    original_max_position_embeddings: int = Field(gt=0, description="Context length of pre-training.")


class ModelSpec(BaseModel):
    """Everything the graph, capacity planner and engine need to know about a model's shape."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    schema_version: int = Field(1, description="Version of this schema.")
    name: str = Field(description="Short name (a registry name or the config's folder).")
    vocab_size: int = Field(gt=0, description="Tokens in the vocabulary (rows of the embedding).")
    hidden_size: int = Field(gt=0, description="Model width d.")
    intermediate_size: int = Field(gt=0, description="SwiGLU inner width.")
    num_layers: int = Field(gt=0, description="Transformer blocks.")
    num_heads: int = Field(gt=0, description="Query heads.")
    num_kv_heads: int = Field(gt=0, description="Key/value heads (GQA when fewer than query heads).")
    head_dim: int = Field(gt=0, description="Width of one attention head.")
    rms_norm_eps: float = Field(gt=0, description="RMSNorm epsilon.")
    rope_theta: float = Field(gt=0, description="RoPE base.")
    rope_scaling: RopeScaling | None = Field(None, description="RoPE scaling; None for plain RoPE.")
    max_position_embeddings: int = Field(gt=0, description="Longest context the model was built for.")
    tie_word_embeddings: bool = Field(description="LM head shares the embedding matrix.")
    bos_token_id: int | None = Field(None, description="Beginning-of-sequence token.")
    eos_token_ids: tuple[int, ...] = Field((), description="Tokens that end generation.")
    dtype: str = Field("float32", description="Dtype of the released checkpoint.")

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """[out, in] of each projection in one block, keyed by its PEFT/HF module name."""
        d, f = self.hidden_size, self.intermediate_size
        return {
            "q_proj": (self.q_size, d),
            "k_proj": (self.kv_size, d),
            "v_proj": (self.kv_size, d),
            "o_proj": (d, self.q_size),
            "gate_proj": (f, d),
            "up_proj": (f, d),
            "down_proj": (d, f),
        }

    def block_params(self) -> int:
        """Parameters of one transformer block (projections and both RMSNorms)."""
        return sum(o * i for o, i in self.linear_shapes().values()) + 2 * self.hidden_size

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def total_params(self) -> int:
        """All parameters, counting a tied LM head once (as Hugging Face does)."""
        head = 0 if self.tie_word_embeddings else self.embedding_params()
        return self.num_layers * self.block_params() + self.embedding_params() + head + self.hidden_size

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], name: str) -> ModelSpec:
        """Build a spec from a parsed config.json (transformers 4.x or 5.x layout)."""
        return _parse_hf_config(config, name)


def _require(config: dict[str, Any], key: str, where: str) -> Any:
    if key not in config or config[key] is None:
        raise ModelConfigError(f"{where}: missing required field '{key}'")
    return config[key]


def _check_supported(config: dict[str, Any], where: str) -> None:
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelConfigError(
            f"{where}: model_type {model_type!r} is not supported; romachip runs LLaMA-family models "
            f"(model_type 'llama')"
        )
    archs = config.get("architectures") or []
    other = [a for a in archs if a not in SUPPORTED_ARCHITECTURES] if isinstance(archs, list) else [archs]
    if other:
        raise ModelConfigError(
            f"{where}: architectures names {other[0]!r}; romachip runs {', '.join(SUPPORTED_ARCHITECTURES)} only"
        )
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise ModelConfigError(f"{where}: hidden_act {act!r} is not supported; the vector units run SiLU")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise ModelConfigError(f"{where}: {key}=true is not supported; the L-Units hold no biases")


def _rope(config: dict[str, Any], where: str) -> tuple[float, RopeScaling | None]:
    """Return (theta, scaling) from either `rope_parameters` (5.x) or `rope_theta`/`rope_scaling` (4.x)."""
    params = config.get("rope_parameters")
    if params is not None:
        theta = _require(params, "rope_theta", f"{where}: rope_parameters")
        scaling = dict(params)
        scaling.pop("rope_theta")
    else:
        theta = config.get("rope_theta", 10000.0)
        scaling = dict(config.get("rope_scaling") or {})
    rope_type = scaling.pop("rope_type", scaling.pop("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ModelConfigError(
            f"{where}: rope type {rope_type!r} is not supported (supported: {', '.join(SUPPORTED_ROPE_TYPES)})"
        )
    if rope_type == "default":
        return float(theta), None
    try:
        return float(theta), RopeScaling(rope_type=rope_type, **scaling)
    except ValidationError as exc:
        raise ModelConfigError(f"{where}: invalid rope scaling: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"field '{loc}': {err['msg']}"


def _parse_hf_config(config: dict[str, Any], name: str) -> ModelSpec:
    where = f"model config {name!r}"
    if not isinstance(config, dict):
        raise ModelConfigError(f"{where}: expected a JSON object, got {type(config).__name__}")
    _check_supported(config, where)
    theta, scaling = _rope(config, where)
    hidden = _require(config, "hidden_size", where)
    heads = _require(config, "num_attention_heads", where)
    eos = config.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
    fields = {
        "name": name,
        "vocab_size": _require(config, "vocab_size", where),
        "hidden_size": hidden,
        "intermediate_size": _require(config, "intermediate_size", where),
        "num_layers": _require(config, "num_hidden_layers", where),
        "num_heads": heads,
        "num_kv_heads": config.get("num_key_value_heads") or heads,
        "head_dim": config.get("head_dim") or (hidden // heads if isinstance(hidden, int) else hidden),
        "rms_norm_eps": config.get("rms_norm_eps", 1e-6),
        "rope_theta": theta,
        "rope_scaling": scaling,
        "max_position_embeddings": config.get("max_position_embeddings", 2048),
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
        "bos_token_id": config.get("bos_token_id"),
        "eos_token_ids": eos_ids,
        "dtype": str(config.get("dtype") or config.get("torch_dtype") or "float32"),
    }
    try:
        spec = ModelSpec(**fields)
    except ValidationError as exc:
        raise ModelConfigError(f"{where}: {_first_error(exc)}") from None
    if spec.num_heads % spec.num_kv_heads:
        raise ModelConfigError(
            f"{where}: num_attention_heads ({spec.num_heads}) must be a multiple of "
            f"num_key_value_heads ({spec.num_kv_heads})"
        )
    return spec


def _registry() -> resources.abc.Traversable:
    return resources.files("romachip.spec") / "models"


def list_models() -> list[str]:
    """Names of the models shipped with romachip (their public Hugging Face configs)."""
    return sorted(p.name.removesuffix(".json") for p in _registry().iterdir() if p.name.endswith(".json"))


def read_config_json(path: Path) -> dict[str, Any]:
    """Parse a config.json, turning I/O and syntax problems into ModelConfigError."""
    try:
        return json.loads(read_text(path, what="model config", max_bytes=MAX_CONFIG_BYTES))
    except PathError as exc:
        raise ModelConfigError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"model config {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None


def load_model_spec(name_or_path: str | Path) -> ModelSpec:
    """A registry name (`llama-3.2-3b`), a config.json, or a folder holding one."""
    key = str(name_or_path)
    if key in list_models():
        text = (_registry() / f"{key}.json").read_text()
        return ModelSpec.from_hf_config(json.loads(text), key)
    path = Path(key)
    if path.is_dir():
        path = path / "config.json"
    if not path.exists():
        raise ModelConfigError(
            f"unknown model {key!r}: not a shipped model ({', '.join(list_models())}) and no config.json at that path"
        )
    name = path.parent.name or path.stem
    return ModelSpec.from_hf_config(read_config_json(path), name)
