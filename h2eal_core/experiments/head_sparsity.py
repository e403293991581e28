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

The first two come only from what a clone of this repository has (the committed gates, the model
from PyPI); they make the notebook's default outputs. The published gates are an optional input:
the notebook draws them into separately named outputs (``fig04_head_sparsity_duo_attention.*``)
and says so in its visible output when the folder is absent, so the default outputs are the same
with or without it.

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
from ..validation import ParameterError, check_choice, check_list, check_nonnegative_int, check_positive_int

logger = logging.getLogger(__name__)

#: ``source`` labels of the maps. Per-head values of the published gates are third-party data:
#: figures may draw them, but only :func:`own_head_rows` (maps made here) go into result files.
IDENTIFIED_SOURCE = "identified here"
MEASURED_SOURCE = "measured"
PUBLISHED_SOURCE = "DuoAttention (published)"


def own_head_rows(heads: pd.DataFrame) -> pd.DataFrame:
    """The rows of the long ``heads`` table that this artifact produced (not the published gates)."""
    return heads[heads["source"] != PUBLISHED_SOURCE].reset_index(drop=True)


def own_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of a ``heads`` or ``summary`` table made here from what a clone has (no published gates)."""
    return table[table["source"] != PUBLISHED_SOURCE].reset_index(drop=True)


def published_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of a ``heads`` or ``summary`` table that come from DuoAttention's published gates."""
    return table[table["source"] == PUBLISHED_SOURCE].reset_index(drop=True)

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
    ``duo_patterns_dir``: folder of DuoAttention's ``attn_patterns`` (optional: its rows are
    added to ``heads`` and ``summary`` with source :data:`PUBLISHED_SOURCE` when present;
    ``"published"`` says what was found or why nothing was, see :func:`published_gates`).
    """
    from scipy.stats import spearmanr

    # every knob is checked before the model is loaded
    check_list("tasks", tasks, lambda n, v: check_choice(n, v, TASKS))
    for name, value in (("length", length), ("n_samples", n_samples), ("n_queries", n_queries), ("budget", budget), ("local", local)):
        check_positive_int(name, value)
    check_nonnegative_int("sink", sink)
    check_nonnegative_int("seed", seed)
    check_list("pattern_contexts", pattern_contexts, check_positive_int)
    SparseAttentionConfig(sink=sink, local=local, budget=budget)
    if not resolve_repo_path(gates_dir).is_dir():
        raise ParameterError("gates_dir", str(gates_dir), "an existing folder of identified gates (full_attention_heads.tsv)")
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
    published = published_gates(duo_patterns_dir)
    heads += published["heads"]
    summary += published["summary"]
    return {
        "heads": pd.concat(heads, ignore_index=True),
        "summary": pd.DataFrame(summary),
        "agreement": agreement,
        "pattern": pd.DataFrame(pattern),
        "published": {k: v for k, v in published.items() if k not in ("heads", "summary")},
    }


def published_gates(duo_patterns_dir: str | None) -> dict:
    """DuoAttention's published gates under ``duo_patterns_dir`` (an optional input).

    Returns ``{"heads": [long tables], "summary": [rows], "found": [model folders read],
    "folder": the resolved folder or None, "missing": why nothing was read, or ""}``.
    """
    out: dict = {"heads": [], "summary": [], "found": [], "folder": None, "missing": ""}
    if not duo_patterns_dir:
        out["missing"] = "duo_patterns_dir is empty (skipped)"
        return out
    root = resolve_repo_path(duo_patterns_dir)
    out["folder"] = str(root)
    if not root.is_dir():
        out["missing"] = f"folder {duo_patterns_dir} not found"
        logger.info("DuoAttention patterns folder %s not found: its maps are skipped", root)
        return out
    for folder, (layers, kv_heads, q_heads) in DUO_MODELS.items():
        path = root / folder
        if not (path / GATES_FILE).is_file():
            continue
        alpha = read_gates(path, shape=(layers, kv_heads))
        r = SparseAttentionConfig().retrieval_ratio_for(attention_type_for(q_heads, kv_heads))
        out["heads"].append(_long(alpha, PUBLISHED_SOURCE, folder, "gate"))
        out["summary"].append(_summary(alpha, PUBLISHED_SOURCE, folder, "gate", r))
        out["found"].append(folder)
    if not out["found"]:
        out["missing"] = f"no model folder of {', '.join(DUO_MODELS)} with {GATES_FILE} under {duo_patterns_dir}"
    return out


#: Colour scale per metric of the heatmaps, and the panel titles.
MAP_STYLE = {"gate": ("magma", "gate alpha (1 = retrieval)"), "window_share": ("viridis", "attention on sink + local")}


def draw_maps(heads: pd.DataFrame, summary: pd.DataFrame, *, ncols: int = 4, titles: dict[str, str] | None = None):
    """One heatmap (KV head x layer, values in [0, 1]) per row of ``summary``; returns the figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    maps = list(summary[["source", "model", "metric"]].itertuples(index=False, name=None))
    ncols = max(1, min(ncols, len(maps)))
    nrows = max(1, int(np.ceil(len(maps) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.6 * nrows), squeeze=False)
    for ax, (src, mdl, metric) in zip(axes.ravel(), maps):
        d = heads[(heads.source == src) & (heads.model == mdl) & (heads.metric == metric)]
        grid = d.pivot(index="kv_head", columns="layer", values="value")
        cmap, title = MAP_STYLE[metric]
        title = (titles or {}).get(metric, title)
        sns.heatmap(grid, cmap=cmap, vmin=0, vmax=1, ax=ax, cbar=True,
                    xticklabels=max(1, grid.shape[1] // 8), yticklabels=max(1, grid.shape[0] // 8))
        ax.set_title(f"{mdl}\n{src}: {title}", fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel("KV head")
    for ax in axes.ravel()[len(maps):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def identified_gates(gate_dirs, *, ratio: float = 0.5) -> pd.DataFrame:
    """The identified gates of every real model measured here, one row per (model, layer, KV head).

    ``gate_dirs``: folders holding ``full_attention_heads.tsv`` and ``config.json`` (written by
    :mod:`h2eal_core.identify`); the model name and training preset come from ``config.json``.
    ``retrieval`` is the head's class after binarising at ``ratio`` (a global quantile, as the
    policies deploy it).
    """
    import json
    from pathlib import Path

    from ..identify.gates import binarize, read_gates
    from ..io import resolve_repo_path

    rows = []
    for d in gate_dirs:
        folder = resolve_repo_path(d)
        if not (folder / "full_attention_heads.tsv").is_file():
            raise ParameterError("gate_dirs", str(d), "folders with full_attention_heads.tsv (python -m h2eal_core.identify)")
        meta = json.loads((folder / "config.json").read_text(encoding="utf-8")) if (folder / "config.json").is_file() else {}
        alpha = read_gates(folder)
        mask = binarize(alpha, ratio)
        model = meta.get("model", Path(str(d)).name)
        for layer in range(alpha.shape[0]):
            for head in range(alpha.shape[1]):
                rows.append({"model": model, "preset": meta.get("preset", "-"), "steps": meta.get("steps_completed", -1),
                             "layer": layer, "kv_head": head, "alpha": float(alpha[layer, head]),
                             "retrieval": bool(mask[layer, head])})
    return pd.DataFrame(rows)


def draw_identified_gates(gates: pd.DataFrame):
    """One heat map of identified gates per model (layers x KV heads; retrieval heads outlined)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    models = list(dict.fromkeys(gates["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models) + 1, 6), squeeze=False)
    for ax, model in zip(axes[0], models):
        g = gates[gates.model == model]
        a = g.pivot(index="layer", columns="kv_head", values="alpha").to_numpy()
        r = g.pivot(index="layer", columns="kv_head", values="retrieval").to_numpy()
        im = ax.imshow(a, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        for (layer, head), is_retrieval in np.ndenumerate(r):
            if is_retrieval:
                ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=0.8))
        ax.set_xticks(range(a.shape[1]))
        ax.set_xlabel("KV head")
        ax.set_ylabel("layer")
        ax.set_title(f"{model}\n{int(r.sum())} of {r.size} retrieval heads (outlined)", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), label="identified gate alpha (1: needs full context)")
    return fig

