"""Retrieval-head masks for the HB model: identified gates where this artifact has them.

A hardware figure needs a ``[layers, kv_heads]`` retrieval mask per model. Sources, by name:

* ``identified``: gates identified by this artifact (``data/head_patterns/<model>/``, DuoAttention's
  TSV format, read with :func:`h2eal_core.identify.gates.read_gates`), binarised at the
  configured ratio. Committed for SmolLM2-135M only.
* ``smollm2_profile`` (labelled fallback for every other model): SmolLM2-135M's *identified*
  per-layer share of retrieval heads (its binarised gates at the configured ratio), resampled
  linearly over relative depth to the model's layers; layer ``l`` gets ``k_l`` retrieval heads,
  the total ``round(ratio * layers * kv_heads)`` split in proportion to the resampled profile
  (largest remainders, at most ``kv_heads`` a layer), and within a layer the heads are spread
  evenly. An assumption: another model's per-layer profile is not SmolLM2's; it keeps the real
  profile's shape (which layers carry more retrieval heads, and how unequal they are) instead of a
  uniform spread. Everything it needs is in the repository.
* ``spread``: the first generation's deterministic spread at a fixed ratio
  (:func:`h2eal_core.attention.accounting.spread_retrieval_mask`), kept as a named option.
* ``duo_attention``: DuoAttention's published gates for the 7-8B shapes, read from
  ``../shared/third_party/duo_attention_patterns`` (``$H2EAL_DUO_PATTERNS`` overrides) when that
  folder is present; never copied into the repository. Results from them go to separately named
  outputs, so that a clone without the folder reproduces every committed file.

``auto`` = ``identified`` where committed, else ``smollm2_profile``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from ..attention.accounting import spread_retrieval_mask
from ..attention.config import SparseAttentionConfig
from ..io import data_dir, repo_root
from ..models.shape import ModelShape, load_model_shape
from ..validation import ParameterError, check_choice

HEAD_PATTERNS = ("auto", "identified", "smollm2_profile", "spread", "duo_attention")
PROFILE_SOURCE_MODEL = "smollm2-135m"

#: Model shapes with DuoAttention published gates (folder names under duo_attention_patterns/).
DUO_ATTENTION_FOLDERS = {
    "llama-2-7b-32k": "Llama-2-7B-32K-Instruct",
    "llama-3.1-8b": "Meta-Llama-3.1-8B-Instruct",
    "mistral-7b-v0.2": "Mistral-7B-Instruct-v0.2",
}

LABELS = {
    "identified": "identified gates (this artifact)",
    "smollm2_profile": "SmolLM2-135M identified per-layer profile, resampled (fallback)",
    "spread": "deterministic spread (assumption)",
    "duo_attention": "DuoAttention published gates",
}


def duo_patterns_dir() -> Path:
    """Where DuoAttention's published patterns are read from (may not exist)."""
    override = os.environ.get("H2EAL_DUO_PATTERNS")
    return Path(override) if override else repo_root().parent / "shared" / "third_party" / "duo_attention_patterns"


def duo_attention_available(model: str | ModelShape | None = None) -> bool:
    """Whether DuoAttention's gates can be read (for ``model``, when given)."""
    root = duo_patterns_dir()
    if not root.is_dir():
        return False
    if model is None:
        return True
    folder = _duo_folder(model)
    return folder is not None and (root / folder / "full_attention_heads.tsv").is_file()


def _duo_folder(model) -> str | None:
    shape = model if isinstance(model, ModelShape) else load_model_shape(model)
    return getattr(shape, "duo_pattern_folder", None) or DUO_ATTENTION_FOLDERS.get(shape.name)


def _identified_dir(name: str) -> Path:
    return data_dir() / "head_patterns" / name


@functools.lru_cache(maxsize=64)
def _gates(path: str, shape: tuple[int, int]) -> np.ndarray:
    from ..identify.gates import read_gates

    return read_gates(path, shape=shape)


def _binarize(alpha: np.ndarray, ratio: float) -> np.ndarray:
    from ..identify.gates import binarize

    return binarize(alpha, ratio)


def smollm2_profile(n_layers: int, ratio: float = 0.5) -> np.ndarray:
    """SmolLM2-135M's identified share of retrieval heads per layer (gates binarised at
    ``ratio``), resampled to ``n_layers`` over relative depth."""
    src = load_model_shape(PROFILE_SOURCE_MODEL)
    alpha = _gates(str(_identified_dir(PROFILE_SOURCE_MODEL)), (src.n_layers, src.n_kv_heads))
    profile = _binarize(alpha, ratio).mean(axis=1)
    x_src = (np.arange(src.n_layers) + 0.5) / src.n_layers
    x_dst = (np.arange(n_layers) + 0.5) / n_layers
    return np.interp(x_dst, x_src, profile)


def _profile_mask(profile: np.ndarray, n_heads: int, total: int) -> np.ndarray:
    """``[L, n_heads]`` mask with ``total`` retrieval heads split over layers in proportion to
    ``profile`` (largest remainders, capped at ``n_heads``), spread evenly within each layer."""
    L = profile.size
    weights = np.maximum(profile, 0) + 1e-12
    counts = np.zeros(L, dtype=np.int64)
    left = total
    while left > 0:
        open_ = counts < n_heads
        share = np.where(open_, weights, 0.0)
        ideal = share / share.sum() * left
        add = np.minimum(np.floor(ideal).astype(np.int64), n_heads - counts)
        if add.sum() == 0:  # hand out one by one by the largest remainder (ties: later layer)
            order = np.lexsort((-np.arange(L), -(ideal - np.floor(ideal)), ~open_))
            add = np.zeros(L, dtype=np.int64)
            add[order[: min(left, int(open_.sum()))]] = 1
        counts += add
        left -= int(add.sum())
    mask = np.zeros((L, n_heads), dtype=bool)
    for layer, k in enumerate(counts):
        if k:
            mask[layer, (np.arange(k) * n_heads) // k] = True
    return mask


def retrieval_mask_for(
    model: str | ModelShape, sparsity: SparseAttentionConfig | None = None, pattern: str = "auto"
) -> tuple[np.ndarray, str]:
    """``(mask [layers, kv_heads], label)`` of the named pattern (see the module docstring)."""
    check_choice("head_pattern", pattern, HEAD_PATTERNS)
    shape = load_model_shape(model) if not isinstance(model, ModelShape) else model
    sparsity = sparsity or SparseAttentionConfig()
    ratio = sparsity.retrieval_ratio_for(shape.attention_type)
    L, H = shape.n_layers, shape.n_kv_heads
    if pattern == "auto":
        pattern = "identified" if (_identified_dir(shape.name) / "full_attention_heads.tsv").is_file() else "smollm2_profile"
    if pattern == "identified":
        folder = _identified_dir(shape.name)
        if not (folder / "full_attention_heads.tsv").is_file():
            raise ParameterError("head_pattern", "identified", f"a model with committed gates under data/head_patterns/ ({shape.name} has none)")
        return _binarize(_gates(str(folder), (L, H)), ratio), LABELS["identified"]
    if pattern == "smollm2_profile":
        return _profile_mask(smollm2_profile(L, ratio), H, int(round(ratio * L * H))), LABELS["smollm2_profile"]
    if pattern == "spread":
        return spread_retrieval_mask(L, H, ratio), LABELS["spread"]
    if not duo_attention_available(shape):
        raise ParameterError(
            "head_pattern", "duo_attention", f"a model of {sorted(DUO_ATTENTION_FOLDERS)} with {duo_patterns_dir()} present"
        )
    folder = duo_patterns_dir() / _duo_folder(shape)
    return _binarize(_gates(str(folder), (L, H)), ratio), LABELS["duo_attention"]


__all__ = [
    "DUO_ATTENTION_FOLDERS",
    "HEAD_PATTERNS",
    "LABELS",
    "duo_attention_available",
    "duo_patterns_dir",
    "retrieval_mask_for",
    "smollm2_profile",
]
