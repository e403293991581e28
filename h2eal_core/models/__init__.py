"""Models: shapes (``data/models/*.yaml``, no weights) and offline loading of real causal LMs.

>>> from h2eal_core.models import load_model_shape, list_model_shapes
>>> load_model_shape("llama-3.2-1b").attention_type
'GQA'

``load_model("smollm2-135m")`` or ``load_model("/path/to/hf-folder")`` returns ``(model,
tokenizer)``; torch and transformers are imported only when it is called.
"""

from .loading import BUILTIN_MODELS, load_model, smollm2_gguf_path
from .shape import (
    ATTENTION_TYPES,
    ModelShape,
    attention_type_for,
    list_model_shapes,
    load_model_shape,
    model_shape_from_dict,
    model_shape_from_hf_config,
)

__all__ = [
    "ATTENTION_TYPES",
    "BUILTIN_MODELS",
    "ModelShape",
    "attention_type_for",
    "list_model_shapes",
    "load_model",
    "load_model_shape",
    "model_shape_from_dict",
    "model_shape_from_hf_config",
    "smollm2_gguf_path",
]
