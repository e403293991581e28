"""simulate_decode: one decode step of a model on an HB design; simulate_grid for sweeps."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from ..attention.config import SparseAttentionConfig
from ..models.shape import ModelShape, load_model_shape
from ..validation import ParameterError, check_list, check_positive_int
from .config import HBConfig, load_hardware
from .cost import evaluate
from .designs import DESIGN_NAMES, get_design
from .mapping import place
from .result import DecodeResult
from .workload import decode_workload

logger = logging.getLogger(__name__)

#: Context lengths of the default grid (SPEC section 4 / issue 4).
DEFAULT_CONTEXTS = (4096, 8192, 16384, 32768, 65536, 131072)


def _check_tile_size(tile_size):
    if tile_size is None or tile_size == "auto":
        return tile_size
    return check_positive_int("tile_size", tile_size)


def simulate_decode(
    model: str | ModelShape,
    hw: str | HBConfig = "h2eal_hb",
    context_len: int = 32768,
    design: str = "h2eal",
    sparsity: SparseAttentionConfig | None = None,
    batch: int = 1,
    *,
    retrieval_mask: np.ndarray | None = None,
    tile_size: int | str | None = None,
) -> DecodeResult:
    """Latency and energy of one decode step.

    Args:
        model: a model shape name (``data/models/<name>.yaml``) or a :class:`ModelShape`.
        hw: a hardware name (``data/hardware/<name>.yaml``), path or :class:`HBConfig`.
        context_len: tokens in the context, the current one included.
        design: ``baseline``, ``sparse``, ``coplace`` or ``h2eal`` (SPEC 2.3).
        sparsity: the hybrid sparse-attention configuration (default: SPEC defaults). Ignored by
            ``baseline`` (dense attention).
        batch: requests decoded together (each with its own KV cache).
        retrieval_mask: ``[layers, kv_heads]`` booleans (True = retrieval head), e.g. from
            identified gates; default: the deterministic spread mask at the ratio for the model's
            attention type (an assumption when no gates are given).
        tile_size: overrides the hardware's tile-size policy (``"auto"`` or tokens per tile).
    """
    shape = load_model_shape(model) if not isinstance(model, ModelShape) else model
    config = load_hardware(hw)
    d = get_design(design)
    check_positive_int("context_len", context_len)
    check_positive_int("batch", batch)
    tile_size = _check_tile_size(tile_size)
    workload = decode_workload(
        shape, int(context_len), sparse=d.sparse, sparsity=sparsity, retrieval_mask=retrieval_mask, batch=int(batch)
    )
    placement = place(workload, config, d, tile_size=tile_size)
    return evaluate(workload, placement, config)


def simulate_grid(
    models: Iterable[str | ModelShape],
    contexts: Sequence[int] = DEFAULT_CONTEXTS,
    designs: Sequence[str] = DESIGN_NAMES,
    hw: str | HBConfig = "h2eal_hb",
    sparsity: SparseAttentionConfig | None = None,
    batch: int = 1,
    *,
    tile_size: int | str | None = None,
    results: bool = False,
) -> pd.DataFrame | list[DecodeResult]:
    """Every (model, context, design) point: a DataFrame of :meth:`DecodeResult.to_dict` rows.

    With ``results=True`` the :class:`DecodeResult` objects are returned instead.
    """
    shapes = [load_model_shape(m) if not isinstance(m, ModelShape) else m for m in models]
    if not shapes:
        raise ParameterError("models", [], "at least one model shape name")
    contexts = check_list("contexts", contexts, check_positive_int)
    designs = check_list("designs", designs, lambda name, v: get_design(v).name)
    config = load_hardware(hw)
    out = []
    for shape, T, design in itertools.product(shapes, contexts, designs):
        out.append(simulate_decode(shape, config, T, design, sparsity, batch, tile_size=tile_size))
    if results:
        return out
    return pd.DataFrame([r.to_dict() for r in out])
