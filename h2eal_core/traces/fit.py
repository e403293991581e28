"""Synthetic page selections: a generator fitted to a recorded trace, and uniform random pages.

**Fitted generator** (:func:`fit_selection_model`, :func:`fitted_trace`; ``source["kind"] =
"fitted"``). A reconstruction, not the paper's: a model of what Quest selects, for contexts and
models without a recorded trace. Per layer (parameters fitted from a trace, :class:`LayerProfile`):

- **sink pages** ``0 .. sink_pages-1``: page ``i`` is selected when ``v_sink < sink_pi[i]``, one
  uniform ``v_sink`` per row (so each page has its fitted probability, and a decreasing profile
  selects a prefix of the sinks);
- **recent pages** (distance ``d = 1 .. recent_pages`` before the current page): selected when
  ``v_recent < recent_pi[d - 1]`` (a decreasing profile gives a contiguous recent window);
- **body** (every other non-current page): the rest of the budget, spread by a relative-position
  profile (``body_bins`` weights over the body) times a per-page **hotness** drawn once per run
  from a Gamma distribution of mean 1 and shape ``hot_shape`` (small shape: a few persistent hot
  pages carry the selections; large: smooth), shared by blocks of ``hot_block`` consecutive pages
  (neighbouring pages hold similar keys and are selected together);
- **persistence**: each body page selected at the previous step stays selected with probability
  ``retention`` (the rest is drawn afresh), and ``v_sink``/``v_recent`` are kept with that
  probability;
- **query heads of one KV head** (``per_query_head``): hotness ``z_kv ** group_share *
  z_own ** (1 - group_share)`` and uniforms ``frac(u_kv + (1 - group_share) * u_own)`` (still
  uniform, so every marginal is kept): how much the query heads agree, which sets the union a KV
  head reads.

Body pages are drawn by systematic probability-proportional-to-size sampling from inclusion
probabilities capped at 1, which gives every page exactly its inclusion probability and every row
exactly ``min(ceil(budget / page_size) - 1, n_pages - 1)`` pages. The sink/recent probabilities and
the body profile are measured on the trace; ``hot_shape``, ``hot_block``, ``group_share`` and
``retention`` are fitted by simulation (a coordinate search over grids, two rounds, one seed) to
the trace's long-lag overlap, adjacency, union ratio and lag-1 overlap (:mod:`.stats`), per layer.
Transfer to other shapes (assumptions, labelled in ``source``): layer ``l`` of an ``L``-layer
model uses the fitted layer at the same relative depth; sink and recent probabilities are per
page, absolute; the body profile is relative to the body's length; hotness is per page; a budget
other than the fitted one keeps the sink/recent probabilities and gives the body the rest.

**Uniform random** (:func:`uniform_random_trace`, ``source["kind"] = "uniform"``): every row draws
its pages uniformly without replacement at every step, independently (the HB model's first-
generation assumption, kept as an option).

:func:`check_against_trace` compares a fitted trace (and a uniform one) with the trace it was
fitted to, on the statistics of :mod:`.stats`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np

from ..io import write_json_atomic
from ..validation import ParameterError, check_choice, check_nonnegative_int, check_positive_int
from .format import GQA_MODES, PageTrace, selected_page_count
from .stats import RECENT_PAGES, SINK_PAGES, adjacency, retrieval_rows, selective_steps, step_overlap, trace_statistics, union_ratio

logger = logging.getLogger(__name__)

FIT_VERSION = 1
#: Relative-position bins of the body profile.
BODY_BINS = 10
#: Grids searched by the fit (common random numbers: one seed for every candidate).
HOT_BLOCK_GRID = (1, 2, 3, 4, 6, 8, 12, 16)
HOT_SHAPE_GRID = (0.02, 0.05, 0.1, 0.2, 0.35, 0.6, 1.0, 2.0, 5.0, 1000.0)
RETENTION_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.97)
GROUP_SHARE_GRID = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclasses.dataclass(frozen=True)
class LayerProfile:
    """Fitted page-selection parameters of one layer (see the module docstring)."""

    sink_pi: tuple[float, ...]
    recent_pi: tuple[float, ...]
    body_bins: tuple[float, ...]
    hot_shape: float = 1.0
    hot_block: int = 1
    retention: float = 0.0
    group_share: float = 0.0

    def __post_init__(self):
        for name in ("sink_pi", "recent_pi"):
            v = np.asarray(getattr(self, name), dtype=float)
            if v.ndim != 1 or ((v < 0) | (v > 1)).any():
                raise ParameterError(name, list(v), "probabilities in [0, 1]")
        b = np.asarray(self.body_bins, dtype=float)
        if b.ndim != 1 or b.size == 0 or (b < 0).any() or not np.isfinite(b).all():
            raise ParameterError("body_bins", list(b), "non-negative finite weights (at least one bin)")
        if not (np.isfinite(self.hot_shape) and self.hot_shape > 0):
            raise ParameterError("hot_shape", self.hot_shape, "a positive Gamma shape")
        if isinstance(self.hot_block, bool) or not isinstance(self.hot_block, (int, np.integer)) or self.hot_block < 1:
            raise ParameterError("hot_block", self.hot_block, "a positive integer number of pages")
        for name in ("retention", "group_share"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise ParameterError(name, v, "a probability in [0, 1]")

    def replace(self, **changes) -> LayerProfile:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class SelectionModel:
    """Per-layer profiles fitted from one trace (``None`` for layers without retrieval heads)."""

    layers: tuple[LayerProfile | None, ...]
    sink_pages: int
    recent_pages: int
    fitted_from: dict

    def __post_init__(self):
        if not any(p is not None for p in self.layers):
            raise ParameterError("layers", "no fitted layer", "at least one layer with retrieval heads")
        check_nonnegative_int("sink_pages", self.sink_pages)
        check_nonnegative_int("recent_pages", self.recent_pages)

    def profile_for(self, layer: int, n_layers: int) -> LayerProfile:
        """The fitted profile at the same relative depth (nearest fitted layer)."""
        fitted = [i for i, p in enumerate(self.layers) if p is not None]
        L = len(self.layers)
        depth = layer / max(n_layers - 1, 1) * (L - 1)
        return self.layers[min(fitted, key=lambda i: (abs(i - depth), i))]

    def to_dict(self) -> dict:
        return {
            "fit_version": FIT_VERSION,
            "sink_pages": self.sink_pages,
            "recent_pages": self.recent_pages,
            "fitted_from": self.fitted_from,
            "layers": [None if p is None else {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(p).items()} for p in self.layers],
        }

    @classmethod
    def from_dict(cls, data: dict) -> SelectionModel:
        if data.get("fit_version") != FIT_VERSION:
            raise ParameterError("fit_version", data.get("fit_version"), str(FIT_VERSION))
        layers = tuple(
            None if p is None else LayerProfile(**{k: tuple(v) if isinstance(v, list) else (int(v) if k == "hot_block" else float(v)) for k, v in p.items()})
            for p in data["layers"]
        )
        return cls(layers, int(data["sink_pages"]), int(data["recent_pages"]), dict(data.get("fitted_from", {})))

    def save(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_dict())


def load_selection_model(path: str | os.PathLike) -> SelectionModel:
    """Read a :class:`SelectionModel` written by :meth:`SelectionModel.save`."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError("selection_model", str(path), "an existing fitted-model JSON (see data/traces/fitted/)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ParameterError("selection_model", str(path), f"a JSON file ({exc})") from None
    return SelectionModel.from_dict(data)


# ---- sampling ---------------------------------------------------------------------------------


def _cap(weights: np.ndarray, total: np.ndarray, fixed: np.ndarray | None = None) -> np.ndarray:
    """Inclusion probabilities ``[R, N]``: ``fixed`` entries (NaN = free) kept (scaled down if they
    alone exceed ``total``), free entries proportional to ``weights`` and capped at 1, each row
    summing to ``total [R]`` (when the free entries can hold the rest: at most one each)."""
    R, N = weights.shape
    pi = np.zeros((R, N))
    free = np.ones((R, N), dtype=bool) if fixed is None else np.isnan(fixed)
    if fixed is not None:
        f = np.where(free, 0.0, fixed)
        fsum = f.sum(1)
        scale = np.where(fsum > total, total / np.maximum(fsum, 1e-300), 1.0)
        pi = f * scale[:, None]
    remaining = total - pi.sum(1)
    w = np.where(free, np.maximum(weights, 0.0) + 1e-12, 0.0)  # a floor so that every free page is reachable
    capped = np.zeros((R, N), dtype=bool)
    for _ in range(N + 1):
        ws = np.where(capped, 0.0, w)
        denom = ws.sum(1)
        share = np.where(denom > 0, np.maximum(remaining, 0) / np.maximum(denom, 1e-300), 0.0)
        prop = ws * share[:, None]
        over = (prop > 1.0) & ~capped
        if not over.any():
            break
        capped |= over
        remaining = total - pi.sum(1) - capped.sum(1)
    return np.where(capped, 1.0, pi + prop)


def _systematic_pps(pi: np.ndarray, counts: np.ndarray, keys: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Rows of ``pi [R, N]`` (each summing to ``counts [R]``, entries <= 1) sampled by systematic
    PPS in the random order ``argsort(keys)`` from the start ``u [R]`` in [0, 1): ``[R, N]`` bool
    with exactly ``counts`` True, each entry True with probability ``pi`` (i.i.d. keys give a
    uniformly random order)."""
    R, N = pi.shape
    out = np.zeros((R, N), dtype=bool)
    if N == 0:
        return out
    order = np.argsort(keys, axis=1)  # continuous random keys: no ties, any sort kind gives the same order
    c = np.cumsum(np.take_along_axis(pi, order, axis=1), axis=1)
    c = c / np.maximum(c[:, -1:], 1e-300) * counts[:, None]  # exact totals despite rounding
    counts = np.maximum(counts.astype(np.int64), 0)
    if counts.sum() == 0:
        return out
    # all rows in one sorted search: row r's cumulative sums and points are shifted by r * span
    span = float(N + 2)
    shift = np.arange(R)[:, None] * span
    row = np.repeat(np.arange(R), counts)
    j = np.arange(row.size) - np.repeat(np.cumsum(counts) - counts, counts)
    points = row * span + u[row] + j
    idx = np.searchsorted((c + shift).ravel(), points, side="right") - row * N
    out[row, order[row, np.clip(idx, 0, N - 1)]] = True
    return out


def _gamma(rng: np.random.Generator, shape: float, size) -> np.ndarray:
    return rng.gamma(shape, 1.0 / shape, size=size) if shape < 1e3 else np.ones(size)


class _GroupUniforms:
    """Uniforms for ``n_kv`` groups of ``g`` rows, coupled inside a group: ``frac(shared + (1 - share) * own)``
    is uniform for every row (so marginals stay exact), equal across the group at ``share = 1`` and
    independent at ``share = 0``."""

    def __init__(self, rng: np.random.Generator, n_kv: int, g: int, share: float):
        self.rng, self.n_kv, self.g, self.share = rng, n_kv, g, share

    def __call__(self, *shape) -> np.ndarray:
        shared = self.rng.random((self.n_kv, 1) + shape)
        own = self.rng.random((self.n_kv, self.g) + shape)
        return np.mod(shared + (1.0 - self.share) * own, 1.0).reshape((self.n_kv * self.g,) + shape)


def _body_weights(profile: LayerProfile, body_idx: np.ndarray, hot: np.ndarray) -> np.ndarray:
    """``[R, len(body_idx)]`` body weights: the relative-position profile times each row's hotness."""
    B = len(profile.body_bins)
    rel = (np.arange(body_idx.size) + 0.5) / max(body_idx.size, 1)
    bins = np.minimum((rel * B).astype(int), B - 1)
    return np.asarray(profile.body_bins)[bins][None, :] * hot[:, body_idx]


def _generate_layer(profile, context_lens, page_size, budget, n_kv, g, per_query_head, rng, sink_pages, recent_pages):
    """Selections of one layer's retrieval KV heads: ``[steps, n_kv * rows, k]`` sorted, -1 padded.

    Per row and step: sink pages ``i`` are selected when ``v_sink < sink_pi[i]`` and recent pages
    at distance ``d`` when ``v_recent < recent_pi[d-1]`` (one uniform each, so a decreasing profile
    gives a contiguous recent window; each uniform is redrawn with probability ``1 - retention``);
    the body gets the rest of the budget: the previous step's body pages are kept with probability
    ``retention``, the others drawn by systematic PPS from the capped body weights.
    """
    steps = len(context_lens)
    rows_per = g if per_query_head else 1
    R = n_kv * rows_per
    share = profile.group_share if rows_per > 1 else 1.0
    unif = _GroupUniforms(rng, n_kv, rows_per, share)
    P_max = -(-int(context_lens.max()) // page_size)
    c = int(profile.hot_block)
    n_blocks = -(-P_max // c) + 1
    offset = int(rng.integers(c))  # blocks of c pages share a hotness, at a random phase
    z_kv = _gamma(rng, profile.hot_shape, (n_kv, 1, n_blocks))
    z_own = _gamma(rng, profile.hot_shape, (n_kv, rows_per, n_blocks))
    block_of = (np.arange(P_max) + offset) // c
    hot = (z_kv**share * z_own ** (1.0 - share))[..., block_of].reshape(R, P_max)
    sink_pi = np.asarray(profile.sink_pi[:sink_pages], dtype=float)
    recent_pi = np.asarray(profile.recent_pi[:recent_pages], dtype=float)
    n_sel = selected_page_count(context_lens, page_size, budget)
    k = int(max(n_sel.max(), 0))
    out = np.full((steps, R, k), -1, dtype=np.int64)
    v_sink, v_recent = unif(), unif()
    prev = np.zeros((R, 0), dtype=bool)
    for s in range(steps):
        N = -(-int(context_lens[s]) // page_size) - 1
        n = int(n_sel[s])
        if n <= 0:
            continue
        if n >= N:
            sel = np.ones((R, N), dtype=bool)
        else:
            if s:
                v_sink = np.where(unif() >= profile.retention, unif(), v_sink)
                v_recent = np.where(unif() >= profile.retention, unif(), v_recent)
            S = min(sink_pages, N, sink_pi.size)
            fixed = np.zeros((R, N), dtype=bool)
            is_fixed = np.zeros(N, dtype=bool)
            fixed[:, :S] = v_sink[:, None] < sink_pi[None, :S]
            is_fixed[:S] = True
            d = np.arange(1, recent_pi.size + 1)
            d = d[N - d >= S]
            fixed[:, N - d] = v_recent[:, None] < recent_pi[None, d - 1]
            is_fixed[N - d] = True
            excess = fixed.sum(1) - n
            if (excess > 0).any():  # more fixed pages than the budget: drop the farthest recent ones, then the last sinks
                drop_order = np.concatenate((np.sort(N - d), np.arange(S)[::-1]))
                for r in np.nonzero(excess > 0)[0]:
                    on = drop_order[fixed[r, drop_order]]
                    fixed[r, on[: excess[r]]] = False
            body_idx = np.nonzero(~is_fixed)[0]
            deficit = n - fixed.sum(1) - body_idx.size
            for r in np.nonzero(deficit > 0)[0]:  # a budget near the whole context: the body cannot hold the rest
                off = np.nonzero(is_fixed & ~fixed[r])[0][::-1]  # nearest recent pages first
                fixed[r, off[: deficit[r]]] = True
            left = n - fixed.sum(1)
            sel = fixed
            if body_idx.size:
                w = _body_weights(profile, body_idx, hot)
                was = np.zeros((R, N), dtype=bool)
                m = min(prev.shape[1], N)
                was[:, :m] = prev[:, :m]
                keep = was[:, body_idx] & (unif(body_idx.size) < profile.retention)
                over = keep.sum(1) - left
                for r in np.nonzero(over > 0)[0]:
                    keep[r, np.nonzero(keep[r])[0][: over[r]]] = False
                rest = left - keep.sum(1)
                pi = _cap(np.where(keep, 0.0, w), rest.astype(float), np.where(keep, 0.0, np.nan))
                sel[:, body_idx] = keep | _systematic_pps(pi, rest, unif(body_idx.size), unif())
        prev = sel
        rr, pp = np.nonzero(sel)
        counts = sel.sum(1)
        col = np.arange(rr.size) - np.repeat(np.cumsum(counts) - counts, counts)
        out[s, rr, col] = pp
    return out


def _check_shape_args(n_layers, n_kv_heads, group_size, retrieval_mask, context_len, budget, page_size, steps, seed, gqa):
    check_positive_int("n_layers", n_layers)
    check_positive_int("n_kv_heads", n_kv_heads)
    check_positive_int("group_size", group_size)
    check_positive_int("budget", budget)
    check_positive_int("page_size", page_size)
    check_positive_int("steps", steps)
    check_nonnegative_int("seed", seed)
    check_choice("gqa", gqa, GQA_MODES)
    check_positive_int("context_len", context_len)
    if context_len - steps + 1 < 1:
        raise ParameterError("context_len", context_len, f"at least steps = {steps} (the first step has context_len - steps + 1 tokens)")
    mask = np.asarray(retrieval_mask)
    if mask.dtype != bool or mask.shape != (n_layers, n_kv_heads):
        raise ParameterError("retrieval_mask", f"{mask.dtype} array of shape {mask.shape}", f"a bool array of shape ({n_layers}, {n_kv_heads})")
    return mask.copy(), np.arange(context_len - steps + 1, context_len + 1, dtype=np.int64)


def _assemble(per_layer, n_layers, n_kv_heads, group_size, mask, gqa, steps):
    rows_per = group_size if gqa == "per_query_head" else 1
    k = max((a.shape[-1] for a in per_layer.values()), default=0)
    pages = np.full((steps, n_layers, n_kv_heads * rows_per, k), -1, dtype=np.int64)
    for layer, a in per_layer.items():
        heads = np.nonzero(mask[layer])[0]
        rows = (heads[:, None] * rows_per + np.arange(rows_per)[None, :]).ravel()
        pages[:, layer, rows, : a.shape[-1]] = a
    return pages


def _layer_seed(seed: int, layer: int, tag: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(layer), int(tag)]))


def fitted_trace(
    model: SelectionModel,
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
) -> PageTrace:
    """A synthetic :class:`PageTrace` drawn from a fitted :class:`SelectionModel` (labelled ``fitted``).

    The steps have ``context_len - steps + 1 .. context_len`` tokens (like a recording whose last
    step has ``context_len`` tokens); a pure function of its arguments.
    """
    if not isinstance(model, SelectionModel):
        raise ParameterError("model", type(model).__name__, "a SelectionModel (fit_selection_model or load_selection_model)")
    mask, lens = _check_shape_args(n_layers, n_kv_heads, group_size, retrieval_mask, context_len, budget, page_size, steps, seed, gqa)
    per_layer = {}
    for layer in range(n_layers):
        n_kv = int(mask[layer].sum())
        if n_kv:
            per_layer[layer] = _generate_layer(
                model.profile_for(layer, n_layers), lens, page_size, budget, n_kv, group_size, gqa == "per_query_head",
                _layer_seed(seed, layer, 1), model.sink_pages, model.recent_pages,
            )
    pages = _assemble(per_layer, n_layers, n_kv_heads, group_size, mask, gqa, steps)
    source = {
        "kind": "fitted",
        "generator": "h2eal_core.traces.fit.fitted_trace",
        "seed": int(seed),
        "fitted_from": model.fitted_from,
        "assumptions": "reconstruction: sink/recent/body profile with Gamma hotness and step retention fitted per layer; "
        "other depths/contexts/budgets transferred by relative depth, absolute sink/recent pages, relative body",
    }
    return PageTrace(model_name, page_size, budget, gqa, group_size, mask, lens, pages, source)


def uniform_random_trace(
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
) -> PageTrace:
    """Uniformly random pages (without replacement, independent per row and step), labelled ``uniform``."""
    mask, lens = _check_shape_args(n_layers, n_kv_heads, group_size, retrieval_mask, context_len, budget, page_size, steps, seed, gqa)
    rows_per = group_size if gqa == "per_query_head" else 1
    n_sel = selected_page_count(lens, page_size, budget)
    per_layer = {}
    for layer in range(n_layers):
        R = int(mask[layer].sum()) * rows_per
        if not R:
            continue
        rng = _layer_seed(seed, layer, 2)
        a = np.full((steps, R, int(n_sel.max())), -1, dtype=np.int64)
        for s in range(steps):
            N = -(-int(lens[s]) // page_size) - 1
            n = int(n_sel[s])
            if n > 0:
                a[s, :, :n] = np.sort(np.argsort(rng.random((R, N)), axis=1)[:, :n], axis=1)
        per_layer[layer] = a
    pages = _assemble(per_layer, n_layers, n_kv_heads, group_size, mask, gqa, steps)
    source = {"kind": "uniform", "generator": "h2eal_core.traces.fit.uniform_random_trace", "seed": int(seed)}
    return PageTrace(model_name, page_size, budget, gqa, group_size, mask, lens, pages, source)


# ---- fitting ----------------------------------------------------------------------------------


def _measure_profile(trace: PageTrace, layer: int, sink_pages: int, recent_pages: int, bins: int) -> LayerProfile:
    rows = retrieval_rows(trace)[layer]
    sink_hits, sink_n = np.zeros(sink_pages), np.zeros(sink_pages)
    rec_hits, rec_n = np.zeros(recent_pages), np.zeros(recent_pages)
    body_hits, body_n = np.zeros(bins), np.zeros(bins)
    for s in selective_steps(trace):
        N = trace.n_pages(s) - 1
        sel = np.zeros((int(rows.sum()), N + 1), dtype=bool)
        p = trace.pages[s, layer][rows]
        r, c = np.nonzero(p >= 0)
        sel[r, p[r, c]] = True
        sel = sel[:, :N]
        S = min(sink_pages, N)
        sink_hits[:S] += sel[:, :S].sum(0)
        sink_n[:S] += sel.shape[0]
        body = np.ones(N, dtype=bool)
        body[:S] = False
        for d in range(1, recent_pages + 1):
            i = N - d
            if i >= S:
                rec_hits[d - 1] += sel[:, i].sum()
                rec_n[d - 1] += sel.shape[0]
                body[i] = False
        idx = np.nonzero(body)[0]
        if idx.size:
            b = np.minimum(((np.arange(idx.size) + 0.5) / idx.size * bins).astype(int), bins - 1)
            body_hits += np.bincount(b, weights=sel[:, idx].sum(0), minlength=bins)
            body_n += np.bincount(b, minlength=bins) * sel.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        sink_pi = np.where(sink_n > 0, sink_hits / np.maximum(sink_n, 1), 0.0)
        rec_pi = np.where(rec_n > 0, rec_hits / np.maximum(rec_n, 1), 0.0)
        body = np.where(body_n > 0, body_hits / np.maximum(body_n, 1), 0.0)
    body = body / body.mean() if body.sum() > 0 else np.ones(bins)
    r6 = lambda a: tuple(float(x) for x in np.round(a, 6))  # noqa: E731
    return LayerProfile(r6(sink_pi), r6(rec_pi), r6(body))


def _layer_trace(trace: PageTrace, layer: int) -> PageTrace:
    """A one-layer trace of ``layer`` (statistics of one layer)."""
    return dataclasses.replace(trace, retrieval_mask=trace.retrieval_mask[layer : layer + 1], pages=trace.pages[:, layer : layer + 1], source={})


def _simulate_layer(trace: PageTrace, layer: int, profile: LayerProfile, sink_pages, recent_pages, seed) -> PageTrace:
    mask = trace.retrieval_mask[layer : layer + 1]
    a = _generate_layer(
        profile, trace.context_lens, trace.page_size, trace.budget, int(mask.sum()), trace.group_size,
        trace.per_query_head, _layer_seed(seed, layer, 3), sink_pages, recent_pages,
    )
    pages = _assemble({0: a}, 1, trace.n_kv_heads, trace.group_size, mask, trace.gqa, trace.n_steps)
    return PageTrace(trace.model, trace.page_size, trace.budget, trace.gqa, trace.group_size, mask, trace.context_lens, pages)


def _search(grid, make, stat, target):
    """The grid value whose simulated statistic is closest to ``target`` (linear interpolation between
    the two grid points that bracket it, when the statistic is monotone there)."""
    values = [stat(make(v)) for v in grid]
    errs = [abs(x - target) for x in values]
    i = int(np.argmin(errs))
    best = grid[i]
    for j in (i - 1, i + 1):  # interpolate inside a bracketing interval
        if 0 <= j < len(grid) and (values[i] - target) * (values[j] - target) < 0:
            t = (target - values[i]) / (values[j] - values[i])
            best = float(grid[i] + t * (grid[j] - grid[i]))
            break
    return float(best)


def fit_selection_model(
    trace: PageTrace, *, sink_pages: int = SINK_PAGES, recent_pages: int = RECENT_PAGES, bins: int = BODY_BINS, seed: int = 0, long_lag: int | None = None
) -> SelectionModel:
    """Fit a :class:`SelectionModel` to a recorded trace (see the module docstring).

    ``long_lag`` (default: half the selective steps) is the lag whose overlap fits ``hot_shape``.
    """
    if not isinstance(trace, PageTrace):
        raise ParameterError("trace", type(trace).__name__, "a PageTrace (load_trace)")
    check_nonnegative_int("sink_pages", sink_pages)
    check_nonnegative_int("recent_pages", recent_pages)
    check_positive_int("bins", bins)
    steps = selective_steps(trace)
    if steps.size < 3:
        raise ParameterError("trace", f"{steps.size} selective steps", "at least 3 steps whose context exceeds the budget (to fit persistence)")
    long_lag = max(2, steps.size // 2) if long_lag is None else check_positive_int("long_lag", long_lag)
    layers: list[LayerProfile | None] = []
    for layer in range(trace.n_layers):
        if not trace.retrieval_mask[layer].any():
            layers.append(None)
            continue
        profile = _measure_profile(trace, layer, sink_pages, recent_pages, bins)
        real = _layer_trace(trace, layer)
        o_long, o_1 = step_overlap(real, long_lag), step_overlap(real, 1)
        pqh = trace.per_query_head and trace.group_size > 1
        u = union_ratio(real) if pqh else 1.0
        adj = adjacency(real)
        sim = lambda p: _simulate_layer(trace, layer, p, sink_pages, recent_pages, seed)  # noqa: E731
        profile = profile.replace(group_share=0.5 if pqh else 0.0)
        for _ in range(2):  # coordinate search (the second round sees the first round's retention)
            profile = profile.replace(hot_shape=_search(HOT_SHAPE_GRID, lambda v: sim(profile.replace(hot_shape=v)), lambda t: step_overlap(t, long_lag), o_long))
            profile = profile.replace(hot_block=int(round(_search(HOT_BLOCK_GRID, lambda v: sim(profile.replace(hot_block=int(round(v)))), adjacency, adj))))
            if pqh:
                profile = profile.replace(group_share=_search(GROUP_SHARE_GRID, lambda v: sim(profile.replace(group_share=v)), union_ratio, u))
            profile = profile.replace(retention=_search(RETENTION_GRID, lambda v: sim(profile.replace(retention=v)), lambda t: step_overlap(t, 1), o_1))
        layers.append(profile.replace(hot_shape=round(profile.hot_shape, 6), retention=round(profile.retention, 6), group_share=round(profile.group_share, 6)))
        logger.debug("layer %d: %s", layer, layers[-1])
    fitted_from = {
        "model": trace.model, "budget": trace.budget, "gqa": trace.gqa, "page_size": trace.page_size,
        "group_size": trace.group_size, "context_lens": [int(trace.context_lens[0]), int(trace.context_lens[-1])],
        "steps": trace.n_steps, "task": trace.source.get("task"), "sample_id": trace.source.get("sample_id"),
        "kind": trace.source.get("kind", "recorded"), "identity_digest": trace.source.get("identity_digest"),
        "fit_seed": int(seed), "long_lag": int(long_lag),
    }
    return SelectionModel(tuple(layers), sink_pages, recent_pages, fitted_from)


def check_against_trace(trace: PageTrace, n_banks=(16,), *, seed: int = 0, model: SelectionModel | None = None) -> dict:
    """Fit (or use ``model``), draw a fitted and a uniform trace of the same shape, compare statistics.

    Returns ``{"trace": stats, "fitted": stats, "uniform": stats, "fitted_minus_trace": diff,
    "uniform_minus_trace": diff}`` (:func:`.stats.trace_statistics`, :func:`.stats.compare_statistics`).
    """
    from .stats import compare_statistics

    model = fit_selection_model(trace, seed=seed) if model is None else model
    shape = dict(
        n_layers=trace.n_layers, n_kv_heads=trace.n_kv_heads, group_size=trace.group_size, retrieval_mask=trace.retrieval_mask,
        context_len=int(trace.context_lens[-1]), budget=trace.budget, page_size=trace.page_size, steps=trace.n_steps,
        seed=seed + 1, gqa=trace.gqa, model_name=trace.model,
    )
    consecutive = np.arange(shape["context_len"] - trace.n_steps + 1, shape["context_len"] + 1)
    if not np.array_equal(consecutive, trace.context_lens):
        raise ParameterError("trace.context_lens", f"{trace.context_lens[:3]}...", "consecutive decode steps (one token each)")
    fitted = fitted_trace(model, **shape)
    uniform = uniform_random_trace(**shape)
    long_lag = model.fitted_from["long_lag"]
    stats = {name: trace_statistics(t, n_banks, long_lag=long_lag) for name, t in (("trace", trace), ("fitted", fitted), ("uniform", uniform))}
    return {
        **stats,
        "fitted_minus_trace": compare_statistics(stats["trace"], stats["fitted"]),
        "uniform_minus_trace": compare_statistics(stats["trace"], stats["uniform"]),
        "fitted_from": model.fitted_from,
    }


__all__ = [
    "LayerProfile",
    "SelectionModel",
    "check_against_trace",
    "fit_selection_model",
    "fitted_trace",
    "load_selection_model",
    "uniform_random_trace",
]
