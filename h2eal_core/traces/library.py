"""The committed traces and fits (``data/traces/``), and the one call the HB model makes.

:func:`selection_trace` returns the page selections of a model shape at a context and budget, from
one of three sources (``kind``), each labelled in ``trace.source["kind"]``:

- ``"recorded"``: a trace recorded on a real model (:mod:`.record`), at the requested budget (a
  score-rank prefix of a larger recorded budget when that budget was not recorded itself); the
  model shape must match the recording (:meth:`PageTrace.check_shape`);
- ``"fitted"``: the fitted generator (:mod:`.fit`), parameters fitted to a committed trace with the
  same GQA mode and the nearest budget (the longest context among those);
- ``"uniform"``: uniformly random pages (the first-generation assumption).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..io import data_dir
from ..validation import ParameterError, check_choice, check_positive_int
from .fit import SelectionModel, fitted_trace, load_selection_model, uniform_random_trace
from .format import PageTrace, load_trace

KINDS = ("recorded", "fitted", "uniform")
#: GQA modes a fit is looked up for (``group_max`` uses the ``group_sum`` fits: one page set per KV head).
FIT_GQA = {"group_sum": "group_sum", "group_max": "group_sum", "per_query_head": "per_query_head"}


def traces_dir() -> Path:
    """``data/traces`` of the repository."""
    return data_dir() / "traces"


def _index(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("*.npz")):
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                lens = data["context_lens"]
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            continue
        rows.append({
            "path": path, "model": meta.get("model"), "budget": meta.get("budget"), "gqa": meta.get("gqa"),
            "page_order": meta.get("page_order", "sorted"), "context": int(lens[-1]),
            "task": meta.get("source", {}).get("task"),
        })
    return rows


def list_traces(folder: str | os.PathLike | None = None) -> list[dict]:
    """One row per trace file: path, model, task, context (last step), budget, gqa, page_order."""
    return _index(Path(folder) if folder is not None else traces_dir())


def find_trace(model: str, context: int, budget: int, gqa: str, *, task: str | None = None, folder=None) -> PageTrace:
    """The committed trace of ``model`` at ``context`` (last-step tokens) for ``budget`` and ``gqa``.

    An exactly recorded budget is preferred; otherwise the smallest larger ``score_rank`` budget
    is cut to ``budget`` (:meth:`PageTrace.at_budget`). Raises a :class:`ParameterError` listing
    what exists when nothing fits.
    """
    rows = [r for r in list_traces(folder) if r["model"] == model and r["context"] == context and r["gqa"] == gqa and (task is None or r["task"] == task)]
    exact = [r for r in rows if r["budget"] == budget]
    larger = sorted((r for r in rows if r["budget"] > budget and r["page_order"] == "score_rank"), key=lambda r: r["budget"])
    pick = (exact or larger or [None])[0]
    if pick is None:
        have = sorted({(r["model"], r["task"], r["context"], r["budget"], r["gqa"]) for r in list_traces(folder)})
        raise ParameterError(
            "trace", f"{model} context {context} budget {budget} {gqa}" + (f" task {task}" if task else ""),
            "a recorded (model, task, context, budget, gqa) in data/traces: " + "; ".join(map(str, have)),
            "use kind='fitted' for other shapes or contexts",
        )
    trace = load_trace(pick["path"])
    return trace if trace.budget == budget else trace.at_budget(budget)


def fitted_models_dir() -> Path:
    return traces_dir() / "fitted"


def default_selection_model(budget: int, gqa: str, *, folder=None) -> SelectionModel:
    """The committed fit for ``gqa`` (``group_max`` uses ``group_sum``) nearest to ``budget`` in log
    scale, the longest fitted context among equals."""
    check_positive_int("budget", budget)
    check_choice("gqa", gqa, tuple(FIT_GQA))
    folder = Path(folder) if folder is not None else fitted_models_dir()
    best = None
    for path in sorted(folder.glob("*.json")):
        model = load_selection_model(path)
        f = model.fitted_from
        if f.get("gqa") != FIT_GQA[gqa]:
            continue
        key = (abs(math.log(f["budget"] / budget)), -f["context_lens"][-1], path.name)
        if best is None or key < best[0]:
            best = (key, model)
    if best is None:
        raise ParameterError("gqa", gqa, f"a GQA mode with a committed fit in {folder}")
    return best[1]


def selection_trace(
    kind: str,
    *,
    n_layers: int,
    n_kv_heads: int,
    group_size: int,
    retrieval_mask,
    context_len: int,
    budget: int,
    page_size: int = 16,
    steps: int = 48,
    seed: int = 0,
    gqa: str = "per_query_head",
    model_name: str = "synthetic",
    selection_model: SelectionModel | None = None,
) -> PageTrace:
    """Page selections for the HB model (see the module docstring).

    ``kind="recorded"`` looks up ``model_name`` (e.g. ``"smollm2-135m"``) at ``context_len`` and
    checks the shape (``n_layers``, ``n_kv_heads``, ``group_size``) and the retrieval mask against
    the recording (``steps``, ``seed`` and ``page_size`` are the recording's). ``kind="fitted"``
    uses ``selection_model`` or :func:`default_selection_model`.
    """
    check_choice("kind", kind, KINDS)
    if kind == "recorded":
        trace = find_trace(model_name, context_len, budget, gqa)
        trace.check_shape(n_layers, n_kv_heads, group_size)
        mask = np.asarray(retrieval_mask)
        if mask.shape != trace.retrieval_mask.shape or not np.array_equal(mask.astype(bool), trace.retrieval_mask):
            raise ParameterError(
                "retrieval_mask", f"{int(mask.sum())} retrieval heads", f"the recording's {int(trace.retrieval_mask.sum())} retrieval heads (identified gates)",
                "a recorded trace holds pages only for the heads that were retrieval heads when it was recorded",
            )
        if trace.page_size != page_size:
            raise ParameterError("page_size", page_size, f"{trace.page_size} (the recording's)")
        trace.source.setdefault("kind", "recorded")
        return trace
    shape = dict(
        n_layers=n_layers, n_kv_heads=n_kv_heads, group_size=group_size, retrieval_mask=retrieval_mask,
        context_len=context_len, budget=budget, page_size=page_size, steps=steps, seed=seed, gqa=gqa, model_name=model_name,
    )
    if kind == "uniform":
        return uniform_random_trace(**shape)
    model = selection_model if selection_model is not None else default_selection_model(budget, gqa)
    return fitted_trace(model, **shape)


__all__ = [
    "KINDS",
    "default_selection_model",
    "find_trace",
    "fitted_models_dir",
    "list_traces",
    "selection_trace",
    "traces_dir",
]
