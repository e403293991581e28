"""Scheduling instances of a whole decode step from a model shape, its head pattern and its page selection.

:func:`step_instances` is the one entry point: model shape + hardware (``h2eal_core.hardware
.load_hardware`` constants) + context + sparse-attention configuration + retrieval-head mask (real
gates by default, :mod:`.head_patterns`) + page selection (uniform random, or a recorded
:class:`~h2eal_core.traces.PageTrace` step) + write-time layout -> one
:class:`~h2eal_core.scheduler.bank_bound.BankBoundInstance` per layer. :class:`StepInstances`
says which gates and which selection it used, so every table and figure can print it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..attention.config import SparseAttentionConfig
from ..models.shape import ModelShape, load_model_shape
from ..validation import ParameterError, check_choice, check_nonnegative_int, check_positive_int
from .bank_bound import BankBoundInstance, MeshCosts, layer_instance
from .head_patterns import HeadPattern, head_pattern
from .layout import KVLayout
from .selection import StepSelection, selection_from_trace, trace_config, uniform_selection


PAGE_SOURCES = ("uniform", "fitted")


def fitted_selection(shape: ModelShape, context_len: int, mask: np.ndarray, config: SparseAttentionConfig, seed: int = 0) -> StepSelection:
    """One decode step of the fitted selection generator (:mod:`h2eal_core.traces.fit`) for ``shape``."""
    from ..traces.library import selection_trace

    trace = selection_trace(
        "fitted", n_layers=shape.n_layers, n_kv_heads=shape.n_kv_heads, group_size=shape.group_size,
        retrieval_mask=np.asarray(mask, dtype=bool), context_len=int(context_len), budget=config.budget,
        page_size=config.page_size, steps=1, seed=seed, gqa=config.gqa, model_name=shape.name,
    )
    selection = selection_from_trace(shape, trace, 0, config)
    origin = trace.source.get("fitted_from", {})
    label = (f"fitted generator (seed {seed}; fitted to {origin.get('model', '?')} {origin.get('task', '')} "
             f"budget {origin.get('budget', '?')} {origin.get('gqa', '')})")
    return dataclasses.replace(selection, source=label)


@dataclasses.dataclass(frozen=True)
class StepInstances:
    """One instance per layer, with the provenance of the heads and pages it was built from."""

    model: str
    context_len: int
    layers: tuple[BankBoundInstance, ...]
    gates: str  # label of the retrieval-head mask
    gates_real: bool
    selection: str  # label of the page selection
    layout: KVLayout
    sparsity: SparseAttentionConfig


def step_instances(
    model: str | ModelShape,
    hw,
    context_len: int | None = None,
    *,
    sparsity: SparseAttentionConfig | None = None,
    pattern: HeadPattern | np.ndarray | None = None,
    gates: str = "auto",
    trace=None,
    trace_step: int = 0,
    seed: int = 0,
    pages: str = "uniform",
    layout: KVLayout | None = None,
    tile_tokens: int | None = None,
    layers=None,
) -> StepInstances:
    """Bank-bound scheduling instances of one decode step.

    Args:
        model: a model shape name or :class:`ModelShape`.
        hw: an :class:`~h2eal_core.hardware.HBConfig` (banks, mesh, bandwidths, PE rate).
        context_len: tokens in the context (ignored, and may be None, with ``trace``: the trace's).
        sparsity: sink, local, page size, budget, GQA mode, dense layers (with ``trace``: the trace's
            page size, budget and GQA mode).
        pattern: retrieval-head mask (a :class:`HeadPattern` or a bool array); default: the
            :func:`~h2eal_core.scheduler.head_patterns.head_pattern` of ``gates``. Ignored with
            ``trace`` (its recorded mask).
        gates: ``"auto"`` (identified gates, else the labelled fallback) or ``"duo_attention"``
            (DuoAttention's published gates; raises where they are absent).
        trace: a :class:`~h2eal_core.traces.PageTrace` of this model shape, or None for uniform pages.
        trace_step: which recorded step.
        seed: seed of the uniform or fitted selection.
        pages: without ``trace``: ``"uniform"`` (uniformly random pages, an assumption) or
            ``"fitted"`` (one step of the generator fitted to the recorded SmolLM2 traces,
            :func:`h2eal_core.traces.library.selection_trace`, labelled as such; a reconstruction
            for models and contexts without a recording).
        layout: the write-time KV layout (default: token-interleaved over all banks, co-placement).
        tile_tokens: tokens per tile (default: the page size).
        layers: layer indices to build (default: all).
    """
    shape = model if isinstance(model, ModelShape) else load_model_shape(model)
    config = sparsity or SparseAttentionConfig()
    layout = layout or KVLayout()
    costs = MeshCosts.from_hw(hw)
    layout.width_for(costs.n_pe)  # validate the width against the bank count early
    if trace is not None:
        config = trace_config(trace, config)
        selection: StepSelection = selection_from_trace(shape, trace, trace_step, config)
        gates, real = "the recording's retrieval mask (identified gates)", True
    else:
        T = check_positive_int("context_len", context_len)
        if isinstance(pattern, HeadPattern):
            mask, gates, real = pattern.mask, pattern.label, pattern.real
        elif pattern is None:
            hp = head_pattern(shape, config, source=gates)
            mask, gates, real = hp.mask, hp.label, hp.real
        else:
            mask, gates, real = np.asarray(pattern, dtype=bool), "a mask given by the caller", False
        check_choice("pages", pages, PAGE_SOURCES)
        if pages == "uniform":
            selection = uniform_selection(shape, T, mask, config, seed)
        else:
            selection = fitted_selection(shape, T, mask, config, seed)
    if layers is None:
        layers = range(shape.n_layers)
    out = []
    for layer in layers:
        check_nonnegative_int("layer", layer)
        if layer >= shape.n_layers:
            raise ParameterError("layers", layer, f"layer indices below {shape.n_layers}")
        out.append(layer_instance(
            selection.reads[layer], layer, head_dim=shape.head_dim, group_size=shape.group_size, costs=costs, layout=layout,
            page_size=config.page_size, tile_tokens=tile_tokens, label=f"{shape.name} @ {selection.context_len}, layer {layer}",
        ))
    return StepInstances(shape.name, selection.context_len, tuple(out), gates, real, selection.source, layout, config)
