"""Fig. 4: sparsity varies across heads, on SmolLM2-135M and DuoAttention's published 7-8B gates.

Three per-(layer, KV head) maps:

* **identified gates** (``gate``): the gate alpha trained here on SmolLM2-135M
  (:mod:`h2eal_core.identify`); 1 = the head needs full attention (retrieval), 0 = a streaming
  window suffices;
* **measured attention mass** (``window_share``): the share of softmax attention that decode
  queries (the question tokens of real long-context task samples, fed as decode steps after a dense
  prefill) put on the sink + local window, averaged over the KV head's query group, the queries and
  the samples (:func:`h2eal_core.attention.hf.long_range_attention_mass`). 1 = all attention stays in
  the window (a static, "sparse" head);
* **DuoAttention's published gates** for six 7-8B models, read from a folder the user names (MIT,
  MIT HAN Lab; never copied into this repository), when present.

The paper's Fig. 4 is a heatmap of "attention sparsity across heads of multiple LLMs"; its models
and metric are not published, so these maps are reconstructions with the metrics named above.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..attention.config import SparseAttentionConfig
from ..io import resolve_repo_path
from ..models.shape import attention_type_for
from ..identify.gates import GATES_FILE, binarize, pattern_summary, read_gate_config, read_gates
from ..tasks import TASKS, generate_sample
from ..validation import check_choice, check_list, check_positive_int

logger = logging.getLogger(__name__)

#: ``source`` labels of the maps. Per-head values of the published gates are third-party data:
#: figures may draw them, but only :func:`own_head_rows` (maps made here) go into result files.
IDENTIFIED_SOURCE = "identified here"
MEASURED_SOURCE = "measured"
PUBLISHED_SOURCE = "DuoAttention (published)"


def own_head_rows(heads: pd.DataFrame) -> pd.DataFrame:
    """The rows of the long ``heads`` table that this artifact produced (not the published gates)."""
    return heads[heads["source"] != PUBLISHED_SOURCE].reset_index(drop=True)

#: DuoAttention's published pattern folders: (layers, KV heads, query heads) of each model
#: (public config.json values).
DUO_MODELS = {
    "Llama-2-7B-32K-Instruct": (32, 32, 32),
    "Llama-3-8B-Instruct-Gradient-1048k": (32, 8, 32),
    "Llama-3-8B-Instruct-Gradient-4194k": (32, 8, 32),
    "Meta-Llama-3.1-8B-Instruct": (32, 8, 32),
    "Mistral-7B-Instruct-v0.2": (32, 8, 32),
    "Mistral-7B-Instruct-v0.3": (32, 8, 32),
}


def measured_window_share(
    model,
    tokenizer,
    *,
    tasks=("passkey", "qa"),
    length: int = 2048,
    n_samples: int = 4,
    seed: int = 0,
    sink: int = 64,
    local: int = 256,
    n_queries: int = 16,
) -> np.ndarray:
    """Mean share of decode attention on sink + local per ``[layer, kv_head]`` over task samples."""
    from ..attention.hf import long_range_attention_mass

    check_list("tasks", tasks, lambda n, v: check_choice(n, v, TASKS))
    check_positive_int("length", length)
    check_positive_int("n_samples", n_samples)
    cfg = SparseAttentionConfig(sink=sink, local=local)
    maps = []
    for task in tasks:
        for i in range(n_samples):
            sample = generate_sample(task, tokenizer, length, seed, i)
            n = min(n_queries, sample.tail_length)
            maps.append(1.0 - long_range_attention_mass(model, np.asarray(sample.input_ids), cfg, n_queries=n))
    return np.mean(maps, axis=0)


def _long(values: np.ndarray, source: str, model: str, metric: str) -> pd.DataFrame:
    L, H = values.shape
    return pd.DataFrame(
        {
            "source": source,
            "model": model,
            "metric": metric,
            "layer": np.repeat(np.arange(L), H),
            "kv_head": np.tile(np.arange(H), L),
            "value": values.ravel(),
        }
    )


def _summary(values: np.ndarray, source: str, model: str, metric: str, ratio: float) -> dict:
    flat = values.ravel()
    per_layer = values.mean(axis=1)
    return {
        "source": source,
        "model": model,
        "metric": metric,
        "layers": values.shape[0],
        "kv_heads": values.shape[1],
        "mean": flat.mean(),
        "std_across_heads": flat.std(),
        "min": flat.min(),
        "max": flat.max(),
        "frac_above_half": (flat > 0.5).mean(),
        "median": np.median(flat),
        "retrieval_ratio": ratio,
        "first_quarter_layers_mean": per_layer[: max(1, len(per_layer) // 4)].mean(),
        "last_quarter_layers_mean": per_layer[-max(1, len(per_layer) // 4) :].mean(),
    }


def head_sparsity(
    model: str = "smollm2-135m",
    gates_dir: str = "data/head_patterns/smollm2-135m",
    duo_patterns_dir: str | None = None,
    *,
    tasks=("passkey", "qa"),
    length: int = 2048,
    n_samples: int = 4,
    seed: int = 0,
    sink: int = 64,
    local: int = 256,
    n_queries: int = 16,
    budget: int = 512,
    pattern_contexts=(1024, 2048, 4096, 8192),
    model_obj=None,
    tokenizer=None,
) -> dict[str, pd.DataFrame]:
    """The maps of Fig. 4 as tables.

    Returns ``{"heads": long table (source, model, metric, layer, kv_head, value), "summary": one
    row per map, "agreement": gates vs measured mass on the same model, "pattern": retrieval-head
    ratio and effective KV read/stored fractions of the binarised gates at ``pattern_contexts``
    (closed form, :func:`h2eal_core.identify.gates.pattern_summary`; streaming heads sink + local,
    retrieval heads Quest with ``budget`` for H2EAL, dense for DuoAttention)}``.
    ``duo_patterns_dir``: folder of DuoAttention's ``attn_patterns`` (skipped with a log message
    when absent).
    """
    from scipy.stats import spearmanr

    if model_obj is None:
        from ..models.loading import load_model

        model_obj, tokenizer = load_model(model)
    name = Path(str(model)).name
    cfg = model_obj.config
    n_q = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_q
    ratio = SparseAttentionConfig().retrieval_ratio_for(attention_type_for(n_q, n_kv))
    gates = read_gates(resolve_repo_path(gates_dir), model=model_obj)
    window = measured_window_share(
        model_obj, tokenizer, tasks=tasks, length=length, n_samples=n_samples, seed=seed, sink=sink, local=local,
        n_queries=n_queries,
    )
    heads = [_long(gates, IDENTIFIED_SOURCE, name, "gate"), _long(window, MEASURED_SOURCE, name, "window_share")]
    summary = [_summary(gates, IDENTIFIED_SOURCE, name, "gate", ratio), _summary(window, MEASURED_SOURCE, name, "window_share", ratio)]
    retrieval = binarize(gates, ratio)
    rho = spearmanr(gates.ravel(), (1 - window).ravel())
    agreement = pd.DataFrame(
        [
            {
                "model": name,
                "spearman_gate_vs_long_range_mass": float(rho.statistic),
                "p_value": float(rho.pvalue),
                "window_share_retrieval_heads": float(window[retrieval].mean()),
                "window_share_streaming_heads": float(window[~retrieval].mean()),
                "n_retrieval_heads": int(retrieval.sum()),
                "gates_training_steps": read_gate_config(resolve_repo_path(gates_dir)).get("steps_completed"),
                "measured_on": f"{'+'.join(tasks)} x {n_samples} samples at {length} tokens, last {n_queries} prompt tokens",
            }
        ]
    )
    attn = SparseAttentionConfig(sink=sink, local=local, budget=budget)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_q
    pattern = []
    for T in pattern_contexts:
        for method, quest in (("h2eal", True), ("duo", False)):
            row = pattern_summary(retrieval, attn, int(T), head_dim, n_q // n_kv, quest_retrieval=quest)
            pattern.append({"model": name, "method": method, "budget": budget if quest else None, **row})
    if duo_patterns_dir:
        root = resolve_repo_path(duo_patterns_dir)
        if not root.is_dir():
            logger.warning("DuoAttention patterns folder %s not found: its maps are skipped", root)
        for folder, (layers, kv_heads, q_heads) in DUO_MODELS.items():
            path = root / folder
            if not (path / GATES_FILE).is_file():
                continue
            alpha = read_gates(path, shape=(layers, kv_heads))
            r = SparseAttentionConfig().retrieval_ratio_for(attention_type_for(q_heads, kv_heads))
            heads.append(_long(alpha, PUBLISHED_SOURCE, folder, "gate"))
            summary.append(_summary(alpha, PUBLISHED_SOURCE, folder, "gate", r))
    return {
        "heads": pd.concat(heads, ignore_index=True),
        "summary": pd.DataFrame(summary),
        "agreement": agreement,
        "pattern": pd.DataFrame(pattern),
    }
