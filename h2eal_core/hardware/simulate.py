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


def check_nonnegative(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ParameterError(name, value, "an integer >= 0")
    return int(value)
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
    selection=None,
    page_trace=None,
    trace_step: int = 0,
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
        selection: the retrieval heads' page selection: ``None``/``"uniform"`` (uniformly random
            pages, seed 0), an integer seed, or a :class:`~h2eal_core.hardware.pages.PageSelection`.
        page_trace: a :class:`~h2eal_core.traces.PageTrace` (recorded or synthetic): the pages of
            its step ``trace_step`` are read, its retrieval mask is used, and ``context_len`` must
            be that step's context (checked, with the model shape).
    """
    shape = load_model_shape(model) if not isinstance(model, ModelShape) else model
    config = load_hardware(hw)
    d = get_design(design)
    check_positive_int("context_len", context_len)
    check_positive_int("batch", batch)
    tile_size = _check_tile_size(tile_size)
    if page_trace is not None:
        from .pages import trace_selection

        page_trace.check_shape(shape.n_layers, shape.n_kv_heads, shape.group_size, name="page_trace")
        check_nonnegative("trace_step", trace_step)
        if not trace_step < page_trace.n_steps:
            raise ParameterError("trace_step", trace_step, f"a step index below {page_trace.n_steps}")
        recorded = int(page_trace.context_lens[trace_step])
        if int(context_len) != recorded:
            raise ParameterError("context_len", context_len, f"{recorded}, the context of page_trace step {trace_step}")
        retrieval_mask = np.asarray(page_trace.retrieval_mask, dtype=bool)
        if sparsity is None:
            sparsity = SparseAttentionConfig(page_size=page_trace.page_size, budget=page_trace.budget, gqa=page_trace.gqa)
        if d.sparse:
            selection = trace_selection(page_trace, int(trace_step), shape.n_layers, shape.n_kv_heads, shape.group_size, int(batch), sparsity.page_size)
    workload = decode_workload(
        shape, int(context_len), sparse=d.sparse, sparsity=sparsity, retrieval_mask=retrieval_mask, batch=int(batch)
    )
    placement = place(workload, config, d, tile_size=tile_size, selection=selection)
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
    selection=None,
    retrieval_masks: dict | None = None,
) -> pd.DataFrame | list[DecodeResult]:
    """Every (model, context, design) point: a DataFrame of :meth:`DecodeResult.to_dict` rows.

    With ``results=True`` the :class:`DecodeResult` objects are returned instead.
    ``retrieval_masks`` maps a model name to its ``[layers, kv_heads]`` retrieval mask (models
    not in it use the default spread mask).
    """
    shapes = [load_model_shape(m) if not isinstance(m, ModelShape) else m for m in models]
    if not shapes:
        raise ParameterError("models", [], "at least one model shape name")
    contexts = check_list("contexts", contexts, check_positive_int)
    designs = check_list("designs", designs, lambda name, v: get_design(v).name)
    config = load_hardware(hw)
    out = []
    for shape, T, design in itertools.product(shapes, contexts, designs):
        mask = (retrieval_masks or {}).get(shape.name)
        out.append(simulate_decode(shape, config, T, design, sparsity, batch, tile_size=tile_size, selection=selection, retrieval_mask=mask))
    if results:
        return out
    return pd.DataFrame([r.to_dict() for r in out])
