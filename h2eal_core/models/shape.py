"""Model shapes: the public ``config.json`` numbers of a decoder-only LLM, no weights.

The hardware study needs only shapes (layers, heads, dims) to count bytes and MACs, so each model
is one YAML file under ``data/models/``. Derived quantities (attention type, group size, parameter
count, KV bytes per token) are computed here, never stored, so they cannot drift from the shape.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

from ..config import load_yaml, resolve_named_file
from ..io import data_dir
from ..validation import ParameterError, check_choice, check_positive_int

ATTENTION_TYPES = ("MHA", "GQA", "MQA")


def attention_type_for(n_q_heads: int, n_kv_heads: int) -> str:
    """``MHA`` (one KV head per query head), ``MQA`` (one KV head in all) or ``GQA`` (in between)."""
    if n_kv_heads == n_q_heads:
        return "MHA"
    if n_kv_heads == 1:
        return "MQA"
    return "GQA"


def models_dir() -> Path:
    """Folder of the model shape YAML files."""
    return data_dir() / "models"


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """Shape of a Llama-style decoder (gated MLP, RMSNorm, rotary positions).

    Sizes are in elements; byte counts take the element size as an argument.
    """

    name: str
    display_name: str
    n_layers: int
    hidden_size: int
    n_q_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_size: int
    vocab_size: int
    max_context: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    family: str = "llama"
    hf_id: str = ""
    source: str = ""
    max_context_note: str = ""
    published_parameters: int | None = None
    published_parameters_source: str = ""
    duo_pattern_folder: str | None = None
    edge: bool = True

    def __post_init__(self):
        for field in ("n_layers", "hidden_size", "n_q_heads", "n_kv_heads", "head_dim", "ffn_size", "vocab_size", "max_context"):
            check_positive_int(f"{self.name}.{field}", getattr(self, field))
        if self.n_q_heads % self.n_kv_heads:
            raise ParameterError(
                f"{self.name}.n_kv_heads", self.n_kv_heads, f"a divisor of n_q_heads={self.n_q_heads}"
            )

    # ---- derived structure -------------------------------------------------------------------
    @property
    def group_size(self) -> int:
        """Query heads per KV head (1 for MHA, ``n_q_heads`` for MQA)."""
        return self.n_q_heads // self.n_kv_heads

    @property
    def attention_type(self) -> str:
        """``MHA``, ``GQA`` or ``MQA``, derived from the head counts."""
        return attention_type_for(self.n_q_heads, self.n_kv_heads)

    # ---- parameter counts --------------------------------------------------------------------
    @property
    def attention_parameters_per_layer(self) -> int:
        q = self.hidden_size * self.n_q_heads * self.head_dim
        kv = 2 * self.hidden_size * self.n_kv_heads * self.head_dim
        o = self.n_q_heads * self.head_dim * self.hidden_size
        bias = (self.n_q_heads + 2 * self.n_kv_heads) * self.head_dim if self.attention_bias else 0
        return q + kv + o + bias

    @property
    def mlp_parameters_per_layer(self) -> int:
        return 3 * self.hidden_size * self.ffn_size  # gate, up, down

    @property
    def parameters_per_layer(self) -> int:
        return self.attention_parameters_per_layer + self.mlp_parameters_per_layer + 2 * self.hidden_size

    @property
    def embedding_parameters(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_parameters(self) -> int:
        """Parameters of the output projection (0 extra when tied to the embedding)."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def n_parameters(self) -> int:
        """Total parameter count (closed form from the shape)."""
        return (
            self.embedding_parameters
            + self.n_layers * self.parameters_per_layer
            + self.hidden_size  # final norm
            + self.lm_head_parameters
        )

    # ---- bytes -------------------------------------------------------------------------------
    def weight_bytes(self, bytes_per_param: float = 2.0) -> float:
        """Bytes to store all weights."""
        return self.n_parameters * bytes_per_param

    def kv_bytes_per_token(self, bytes_per_element: float = 2.0) -> float:
        """KV-cache bytes one token adds over all layers (K and V)."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * bytes_per_element

    def kv_bytes(self, context_len: int, bytes_per_element: float = 2.0) -> float:
        """KV-cache bytes for ``context_len`` tokens (dense attention)."""
        return self.kv_bytes_per_token(bytes_per_element) * context_len

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(
            attention_type=self.attention_type,
            group_size=self.group_size,
            n_parameters=self.n_parameters,
            kv_bytes_per_token_fp16=self.kv_bytes_per_token(2.0),
        )
        return out


_FIELDS = {f.name for f in dataclasses.fields(ModelShape)}


def model_shape_from_dict(data: dict[str, Any], *, where: str = "model") -> ModelShape:
    """Build a ModelShape from a YAML mapping; ``attention_type``, if given, must match the heads."""
    data = dict(data)
    declared_type = data.pop("attention_type", None)
    unknown = set(data) - _FIELDS
    if unknown:
        key = sorted(unknown)[0]
        raise ParameterError(f"{where}.{key}", data[key], "known fields: " + ", ".join(sorted(_FIELDS)))
    required = [f.name for f in dataclasses.fields(ModelShape) if f.default is dataclasses.MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise ParameterError(f"{where}.{missing[0]}", None, "a value (required field)")
    shape = ModelShape(**data)
    if declared_type is not None:
        check_choice(f"{where}.attention_type", declared_type, ATTENTION_TYPES)
        if declared_type != shape.attention_type:
            raise ParameterError(
                f"{where}.attention_type",
                declared_type,
                f"{shape.attention_type!r} (n_q_heads={shape.n_q_heads}, n_kv_heads={shape.n_kv_heads})",
            )
    return shape


def list_model_shapes() -> list[str]:
    """Names of every model shape under ``data/models/``, sorted."""
    return sorted(p.stem for p in models_dir().glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def _load_cached(path: str, mtime: float) -> ModelShape:
    data = load_yaml(path)
    return model_shape_from_dict(data, where=Path(path).stem)


def load_model_shape(name_or_path: str | os.PathLike) -> ModelShape:
    """Load a model shape by name (``data/models/<name>.yaml``) or from a YAML path.

    An unknown name raises :class:`ParameterError` listing the known names.
    """
    if isinstance(name_or_path, ModelShape):
        return name_or_path
    path = resolve_named_file(name_or_path, models_dir(), "model")
    shape = _load_cached(str(path), path.stat().st_mtime)
    if path.parent == models_dir() and shape.name != path.stem:
        raise ParameterError(f"{path.stem}.name", shape.name, f"{path.stem!r} (the file name)")
    return shape


def model_shape_from_hf_config(config: Any, name: str = "custom") -> ModelShape:
    """A ModelShape from a Hugging Face ``PretrainedConfig`` (or its dict), e.g. a local model."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    hidden = get("hidden_size")
    n_q = get("num_attention_heads")
    return ModelShape(
        name=name,
        display_name=name,
        n_layers=get("num_hidden_layers"),
        hidden_size=hidden,
        n_q_heads=n_q,
        n_kv_heads=get("num_key_value_heads") or n_q,
        head_dim=get("head_dim") or hidden // n_q,
        ffn_size=get("intermediate_size"),
        vocab_size=get("vocab_size"),
        max_context=get("max_position_embeddings"),
        tie_word_embeddings=bool(get("tie_word_embeddings", False)),
        attention_bias=bool(get("attention_bias", False)) or get("model_type") == "qwen2",
        family=get("model_type", "llama") or "llama",
    )
