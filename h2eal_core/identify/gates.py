"""Gate files (DuoAttention's TSV format) in and out, binarisation, and pattern summaries.

A gate file is data: ``full_attention_heads.tsv`` with one row per layer and one tab-separated
column per **KV head**, holding the trained gate alpha (1 = the head needs full attention, i.e. a
retrieval head; 0 = a streaming head suffices), plus ``config.json`` with every training argument.
This is the format of DuoAttention's published ``attn_patterns/`` (MIT, MIT HAN Lab), so the same
reader loads those files from any folder (they are never copied into this repository) and the gates
identified here.

Binarisation (:func:`binarize`) picks exactly ``round(ratio * layers * kv_heads)`` retrieval heads
by a global quantile of alpha. Unlike DuoAttention (uniform noise in [0, 1e-6) decides ties, so the
head set depends on the RNG state) ties are broken deterministically: heads are ranked by a stable
sort on ``(alpha, layer, head)`` and the highest-ranked ones become retrieval heads, so among equal
gates the later layer / later head wins.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ..attention.accounting import model_access
from ..attention.config import SparseAttentionConfig
from ..io import atomic_path, write_json_atomic
from ..validation import ParameterError, check_fraction, check_nonnegative_int, check_positive_int

logger = logging.getLogger(__name__)

GATES_FILE = "full_attention_heads.tsv"
CONFIG_FILE = "config.json"


def model_gate_shape(model_or_config) -> tuple[int, int]:
    """``(num_hidden_layers, num_key_value_heads)`` of a HF model or config (or a ModelShape)."""
    cfg = getattr(model_or_config, "config", model_or_config)
    if hasattr(cfg, "n_layers") and hasattr(cfg, "n_kv_heads"):  # h2eal_core ModelShape
        return int(cfg.n_layers), int(cfg.n_kv_heads)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    return int(cfg.num_hidden_layers), int(n_kv)


def _gates_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p / GATES_FILE if p.is_dir() else p


def read_gates(
    path: str | os.PathLike,
    *,
    shape: tuple[int, int] | None = None,
    model=None,
    clip: bool = True,
) -> np.ndarray:
    """Read a gate TSV (a folder holding ``full_attention_heads.tsv``, or the file itself).

    Args:
        path: folder or file.
        shape: expected ``(layers, kv_heads)``; or give ``model`` (a HF model/config) instead.
        clip: clip to [0, 1] (DuoAttention's files hold tiny negatives from the last unclamped step).

    Returns:
        float64 array ``[layers, kv_heads]``.
    """
    file = _gates_path(path)
    if not file.is_file():
        raise ParameterError("gates path", str(path), f"a folder containing {GATES_FILE} or the TSV file itself")
    alpha = np.loadtxt(file, delimiter="\t", dtype=np.float64, ndmin=2)
    if not np.all(np.isfinite(alpha)):
        raise ParameterError("gates", str(file), "finite numbers only")
    if model is not None:
        shape = model_gate_shape(model)
    if shape is not None and tuple(alpha.shape) != tuple(shape):
        raise ParameterError(
            "gates",
            f"{file} with shape {alpha.shape}",
            f"shape {tuple(shape)} = (layers, kv_heads) of the model",
            "the file belongs to another model",
        )
    return np.clip(alpha, 0.0, 1.0) if clip else alpha


def read_gate_config(path: str | os.PathLike) -> dict:
    """The ``config.json`` beside a gate file ({} when absent)."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    cfg = folder / CONFIG_FILE
    return json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() else {}


def format_gates(alpha: np.ndarray) -> str:
    """TSV text of ``alpha`` in DuoAttention's format (``%.18e``, tab-separated, one row per layer)."""
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim != 2:
        raise ParameterError("alpha", f"array of shape {a.shape}", "a 2-D [layers, kv_heads] array")
    return "".join("\t".join(f"{v:.18e}" for v in row) + "\n" for row in a)


def write_gates(alpha: np.ndarray, folder: str | os.PathLike, config: dict | None = None, name: str = GATES_FILE) -> Path:
    """Write ``alpha`` (and ``config``, when given) into ``folder`` atomically."""
    folder = Path(folder)
    path = folder / name
    with atomic_path(path) as tmp:
        tmp.write_text(format_gates(alpha), encoding="utf-8")
    if config is not None:
        write_json_atomic(folder / CONFIG_FILE, config)
    logger.info("wrote %s", path)
    return path


def retrieval_order(alpha: np.ndarray) -> np.ndarray:
    """Flat indices of the heads from most streaming-like to most retrieval-like.

    A stable sort on ``(alpha, layer, head)``: equal gates keep the (layer, head) order.
    """
    a = np.asarray(alpha, dtype=np.float64)
    return np.argsort(a.ravel(), kind="stable")


def binarize(alpha: np.ndarray, ratio: float, *, per_layer: bool = False) -> np.ndarray:
    """Boolean retrieval-head mask with exactly ``round(ratio * heads)`` retrieval heads.

    Args:
        alpha: gates ``[layers, kv_heads]``.
        ratio: share of retrieval heads (DuoAttention deploys 0.5 for GQA, 0.25 for MHA).
        per_layer: give every layer the same quota ``round(ratio * kv_heads)`` instead of a global
            quantile.
    """
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim != 2:
        raise ParameterError("alpha", f"array of shape {a.shape}", "a 2-D [layers, kv_heads] array")
    check_fraction("ratio", ratio)
    if per_layer:
        return np.stack([binarize(row[None, :], ratio)[0] for row in a])
    n_retrieval = int(round(ratio * a.size))
    mask = np.zeros(a.size, dtype=bool)
    if n_retrieval:
        mask[retrieval_order(a)[-n_retrieval:]] = True
    return mask.reshape(a.shape)


def random_retrieval_mask(n_layers: int, n_kv_heads: int, ratio: float, seed: int = 0) -> np.ndarray:
    """A uniformly random mask with exactly ``round(ratio * heads)`` retrieval heads (control)."""
    check_positive_int("n_layers", n_layers)
    check_positive_int("n_kv_heads", n_kv_heads)
    check_fraction("ratio", ratio)
    check_nonnegative_int("seed", seed)
    total = n_layers * n_kv_heads
    n_retrieval = int(round(ratio * total))
    mask = np.zeros(total, dtype=bool)
    mask[np.random.default_rng(seed).permutation(total)[:n_retrieval]] = True
    return mask.reshape(n_layers, n_kv_heads)


def pattern_summary(
    mask: np.ndarray,
    config: SparseAttentionConfig,
    context_len: int,
    head_dim: int,
    group_size: int,
    *,
    quest_retrieval: bool = True,
) -> dict:
    """Retrieval-head ratio and effective KV read/stored fractions of a head pattern.

    ``quest_retrieval=True``: retrieval heads read Quest pages (H2EAL); ``False``: they read densely
    (DuoAttention). Streaming heads read and store sink + local. Closed form
    (:func:`h2eal_core.attention.accounting.model_access`).
    """
    m = np.asarray(mask, dtype=bool)
    cfg = config if quest_retrieval else config.replace(budget=max(config.budget, context_len))
    acc = model_access(m.shape[0], m.shape[1], head_dim, group_size, context_len, cfg, m)
    return {
        "retrieval_ratio": float(m.mean()),
        "n_retrieval_heads": int(m.sum()),
        "n_heads": int(m.size),
        "context_len": int(context_len),
        "kv_read_fraction": acc.read_fraction,
        "kv_stored_fraction": acc.stored_fraction,
    }
