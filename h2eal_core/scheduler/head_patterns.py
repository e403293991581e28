"""Which KV heads are retrieval heads, for the scheduler's instances: real gates first.

Sources (each result says which):

1. ``identified`` (``source="auto"``, first choice): ``data/head_patterns/<model>/full_attention_heads.tsv``,
   gates identified by this artifact (DuoAttention's recipe, :mod:`h2eal_core.identify`), e.g.
   SmolLM2-135M.
2. ``fallback`` (``source="auto"`` for every other model), **an assumption**, labelled so that a
   figure never passes it off as identified gates: the HB model's ``smollm2_profile`` mask
   (:func:`h2eal_core.hardware.head_patterns.retrieval_mask_for`: SmolLM2-135M's identified
   per-layer share of retrieval heads resampled to the model's depth), so that Fig. 8 and the HB
   figures use the same heads; the deterministic spread mask
   (:func:`h2eal_core.attention.accounting.spread_retrieval_mask`) when that is not available.
3. ``duo_attention`` (``source="duo_attention"``, only on request): DuoAttention's published gates
   (MIT, MIT HAN Lab) for the 7-8B shapes, read from ``../shared/third_party/duo_attention_patterns`` beside the repository
   (``$H2EAL_DUO_PATTERNS`` overrides) when that folder is present, never copied into the
   repository. Results from them go to separately named outputs, so that a clone without the
   folder reproduces every committed file (the HB model's convention).

Gates are binarised by :func:`h2eal_core.identify.gates.binarize` (a global quantile with a
deterministic tie-break) at the ratio of :meth:`SparseAttentionConfig.retrieval_ratio_for`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..attention.accounting import spread_retrieval_mask
from ..hardware.head_patterns import DUO_ATTENTION_FOLDERS, duo_patterns_dir
from ..attention.config import SparseAttentionConfig
from ..identify.gates import GATES_FILE, binarize, read_gates
from ..io import data_dir
from ..models.shape import ModelShape, load_model_shape
from ..validation import ParameterError, check_choice

#: DuoAttention's published pattern folders for the SPEC model shapes they cover (the HB model's table).
DUO_FOLDERS = DUO_ATTENTION_FOLDERS
SOURCES = ("identified", "duo_attention", "fallback")
REQUESTS = ("auto", "duo_attention")


@dataclasses.dataclass(frozen=True)
class HeadPattern:
    """A retrieval-head mask ``[layers, kv_heads]`` with where it came from."""

    model: str
    mask: np.ndarray
    source: str  # one of SOURCES
    path: str  # the gate file ('' for the fallback)
    ratio: float

    @property
    def real(self) -> bool:
        """True for identified or published gates, False for the fallback assumption."""
        return self.source != "fallback"

    @property
    def label(self) -> str:
        if self.source == "identified":
            return f"identified gates ({self.path})"
        if self.source == "duo_attention":
            return f"DuoAttention published gates ({Path(self.path).parent.name})"
        return f"fallback: {self.path} (assumption, no gates for this model)"


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (tables stay byte-identical across checkouts)."""
    try:
        return str(Path(path).resolve().relative_to(data_dir().resolve().parent))
    except ValueError:
        return str(path)


def gate_file_for(model: str | ModelShape, source: str = "auto") -> tuple[str, Path] | None:
    """``(source, path)`` of the gate file for ``model`` (identified, or DuoAttention's on request), or None."""
    check_choice("source", source, REQUESTS)
    shape = model if isinstance(model, ModelShape) else load_model_shape(model)
    if source == "auto":
        own = data_dir() / "head_patterns" / shape.name / GATES_FILE
        return ("identified", own) if own.is_file() else None
    folder = DUO_FOLDERS.get(shape.name)
    if folder is not None:
        duo = duo_patterns_dir() / folder / GATES_FILE
        if duo.is_file():
            return "duo_attention", duo
    return None


def duo_attention_models() -> list[str]:
    """The SPEC model shapes whose DuoAttention gates can be read here (empty without the folder)."""
    return [m for m in DUO_FOLDERS if gate_file_for(m, "duo_attention") is not None]


def _fallback_mask(shape: ModelShape, config: SparseAttentionConfig, ratio: float) -> tuple[np.ndarray, str]:
    try:
        from ..hardware.head_patterns import retrieval_mask_for

        mask, _ = retrieval_mask_for(shape, config, "smollm2_profile")
        return np.asarray(mask, dtype=bool), "SmolLM2-135M's identified per-layer retrieval profile resampled to this model"
    except (ImportError, ParameterError, TypeError, ValueError):
        return spread_retrieval_mask(shape.n_layers, shape.n_kv_heads, ratio), "deterministic spread mask"


def head_pattern(model: str | ModelShape, sparsity: SparseAttentionConfig | None = None, *, source: str = "auto",
                 allow_fallback: bool = True) -> HeadPattern:
    """The retrieval-head mask of ``model``: real gates binarised at the configured ratio, else the fallback.

    ``source="duo_attention"`` asks for DuoAttention's published gates (no fallback: a model without
    them, or a checkout without the folder, raises)."""
    shape = model if isinstance(model, ModelShape) else load_model_shape(model)
    config = sparsity or SparseAttentionConfig()
    ratio = config.retrieval_ratio_for(shape.attention_type)
    found = gate_file_for(shape, source)
    if found is not None:
        kind, path = found
        alpha = read_gates(path, shape=(shape.n_layers, shape.n_kv_heads))
        return HeadPattern(shape.name, binarize(alpha, ratio), kind, _shown(path), ratio)
    if source == "duo_attention":
        raise ParameterError("gates", shape.name, f"a model of {sorted(DUO_FOLDERS)} with {duo_patterns_dir()} present")
    if not allow_fallback:
        raise ParameterError("gates", shape.name, f"a model with a gate file ({GATES_FILE} under data/head_patterns/)")
    mask, what = _fallback_mask(shape, config, ratio)
    return HeadPattern(shape.name, mask, "fallback", what, ratio)
