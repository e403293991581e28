"""Table II: model configurations, with computed parameter counts and KV-cache sizes."""

from __future__ import annotations

import pandas as pd

from ..models.shape import list_model_shapes, load_model_shape
from ..validation import check_choice, check_list, check_positive, check_positive_int

GIB = 2.0**30


def model_table(models=None, *, context_len: int = 32768, bytes_per_element: float = 2.0, edge_only: bool = False) -> pd.DataFrame:
    """One row per model shape: config values, attention type, parameters, weight and KV bytes.

    Args:
        models: names from ``data/models/`` (``None`` or empty: all).
        context_len: context for the ``kv_cache_gib`` column (tokens).
        bytes_per_element: bytes per weight and per KV element (2 for FP16/BF16).
        edge_only: keep only the edge models (up to ~4B parameters).
    """
    known = list_model_shapes()
    names = known if not models else check_list("models", models, lambda n, v: check_choice(n, v, known))
    check_positive_int("context_len", context_len)
    check_positive("bytes_per_element", bytes_per_element)
    rows = []
    for name in names:
        s = load_model_shape(name)
        if edge_only and not s.edge:
            continue
        rows.append(
            {
                "model": s.display_name,
                "name": s.name,
                "layers": s.n_layers,
                "hidden": s.hidden_size,
                "q_heads": s.n_q_heads,
                "kv_heads": s.n_kv_heads,
                "head_dim": s.head_dim,
                "ffn": s.ffn_size,
                "vocab": s.vocab_size,
                "max_context": s.max_context,
                "attention": s.attention_type,
                "group_size": s.group_size,
                "params_b": s.n_parameters / 1e9,
                "published_params_b": (s.published_parameters or float("nan")) / 1e9,
                "weights_gib": s.weight_bytes(bytes_per_element) / GIB,
                "kv_kib_per_token": s.kv_bytes_per_token(bytes_per_element) / 1024,
                "context_len": context_len,
                "kv_cache_gib": s.kv_bytes(context_len, bytes_per_element) / GIB,
                "kv_over_weights": s.kv_bytes(context_len, bytes_per_element) / s.weight_bytes(bytes_per_element),
                "edge": s.edge,
                "source": s.source,
            }
        )
    return pd.DataFrame(rows).sort_values(["edge", "params_b"], ascending=[False, True]).reset_index(drop=True)
