"""Statistics of page selections that matter to the HB model, and the comparison of two traces.

All statistics use the retrieval rows of the steps whose context exceeds the budget (steps read
densely say nothing about selection). For a trace ``t``:

- :func:`position_histogram`: where the selected (non-current) pages lie, as relative positions
  ``page / (n_pages - 1)`` in ``bins`` bins (sums to 1), plus :func:`position_shares`, the share in
  the sink pages, the recent pages (the ``recent_pages`` before the current one) and the body.
- :func:`step_overlap`: ``|S_t & S_{t+lag}| / |S_t|`` per selection row, averaged (how many pages a
  row keeps from one step to the next: what a cache or a prefetcher would reuse).
- :func:`adjacency`: the share of selected pages whose next page is selected too (spatial
  clustering: contiguous runs spread evenly over round-robin banks, scattered pages do not).
- :func:`union_ratio`: pages a KV head reads (union over its query heads, the current page
  excluded) over the per-row selection size: 1 for group modes, up to ``group_size`` for
  ``per_query_head``; the KV bytes a head reads scale with it.
- :func:`busiest_bank_load`: the pages a KV head reads at one step (the current page included),
  placed page-granular round-robin over ``n_banks`` banks (page ``p`` in bank ``p mod n_banks``):
  the busiest bank's pages over ``ceil(pages / n_banks)``, the best any placement could do
  (``imbalance >= 1``; 1 is "balanced for free", what a schedule that re-tiles the selected tokens
  at every step assumes), averaged over (step, layer, head), with the mean busiest-bank page count.
"""

from __future__ import annotations

import numpy as np

from ..validation import ParameterError, check_positive_int
from .format import PageTrace, selected_page_count

#: Defaults: SPEC 1.1 sink 64 and local 256 tokens over 16-token pages.
SINK_PAGES = 4
RECENT_PAGES = 16


def selective_steps(trace: PageTrace) -> np.ndarray:
    """Indices of the steps whose context exceeds the budget (where pages are really selected)."""
    steps = np.nonzero(trace.context_lens > trace.budget)[0]
    if steps.size == 0:
        raise ParameterError(
            "trace", f"{trace.model} budget {trace.budget}, contexts {int(trace.context_lens.min())}-{int(trace.context_lens.max())}",
            "a trace with at least one step whose context exceeds the budget",
        )
    return steps


def retrieval_rows(trace: PageTrace) -> np.ndarray:
    """``[L, rows]`` bool: selection rows that belong to retrieval heads."""
    return np.repeat(trace.retrieval_mask, trace.rows_per_kv_head, axis=1)


def _row_sets(trace: PageTrace, s: int):
    """``[L, rows, P-1]`` bool: the pages each row selected at step ``s`` (the current page excluded)."""
    P1 = trace.n_pages(s) - 1
    L, R, _ = trace.pages.shape[1:]
    mask = np.zeros((L, R, P1 + 1), dtype=bool)
    li, ri, ki = np.nonzero(trace.pages[s] >= 0)
    mask[li, ri, trace.pages[s][li, ri, ki]] = True
    return mask[..., :P1]


def position_histogram(trace: PageTrace, bins: int = 20) -> np.ndarray:
    """``[bins]`` share of selected pages at each relative position (see the module docstring)."""
    check_positive_int("bins", bins)
    rows = retrieval_rows(trace)
    hist = np.zeros(bins)
    for s in selective_steps(trace):
        P = trace.n_pages(s)
        p = trace.pages[s][rows]
        p = p[p >= 0]
        hist += np.bincount(np.minimum((p / max(P - 1, 1) * bins).astype(int), bins - 1), minlength=bins)
    return hist / hist.sum() if hist.sum() else hist


def position_shares(trace: PageTrace, sink_pages: int = SINK_PAGES, recent_pages: int = RECENT_PAGES) -> dict:
    """Share of selected pages in the sink pages, the recent pages before the current one, the body."""
    rows = retrieval_rows(trace)
    counts = np.zeros(3)
    for s in selective_steps(trace):
        P = trace.n_pages(s)
        p = trace.pages[s][rows]
        p = p[p >= 0]
        sink = p < sink_pages
        recent = ~sink & (p >= P - 1 - recent_pages)
        counts += (sink.sum(), recent.sum(), (~sink & ~recent).sum())
    total = counts.sum()
    shares = counts / total if total else counts
    return {"sink": float(shares[0]), "recent": float(shares[1]), "body": float(shares[2])}


def step_overlap(trace: PageTrace, lag: int = 1, *, per_layer: bool = False):
    """Mean ``|S_t & S_{t+lag}| / |S_t|`` over retrieval rows and step pairs (both selective)."""
    check_positive_int("lag", lag)
    steps = selective_steps(trace)
    pairs = [(s, s + lag) for s in steps if s + lag in set(steps.tolist())]
    if not pairs:
        raise ParameterError("lag", lag, f"less than the {steps.size} selective steps of the trace")
    rows = retrieval_rows(trace)
    num = np.zeros(trace.n_layers)
    den = np.zeros(trace.n_layers)
    for a, b in pairs:
        sa, sb = _row_sets(trace, a), _row_sets(trace, b)
        inter = (sa & sb[..., : sa.shape[-1]]).sum(-1)
        size = sa.sum(-1)
        num += np.where(rows, inter, 0).sum(-1)
        den += np.where(rows, size, 0).sum(-1)
    if per_layer:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.maximum(den, 1), np.nan)
    return float(num.sum() / den.sum()) if den.sum() else float("nan")


def adjacency(trace: PageTrace, *, per_layer: bool = False):
    """Share of selected pages (below the last non-current one) whose next page is also selected."""
    rows = retrieval_rows(trace)
    num = np.zeros(trace.n_layers)
    den = np.zeros(trace.n_layers)
    for s in selective_steps(trace):
        sets = _row_sets(trace, s)[..., :]
        both = (sets[..., :-1] & sets[..., 1:]).sum(-1)
        first = sets[..., :-1].sum(-1)
        num += np.where(rows, both, 0).sum(-1)
        den += np.where(rows, first, 0).sum(-1)
    if per_layer:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.maximum(den, 1), np.nan)
    return float(num.sum() / den.sum()) if den.sum() else float("nan")


def union_ratio(trace: PageTrace, *, per_layer: bool = False):
    """Mean over retrieval KV heads and steps of (distinct non-current pages read) / (row selection size)."""
    steps = selective_steps(trace)
    L, H, g = trace.n_layers, trace.n_kv_heads, trace.rows_per_kv_head
    num = np.zeros(L)
    den = np.zeros(L)
    for s in steps:
        rows = _row_sets(trace, s)  # [L, H*g, P-1]
        union = rows.reshape(L, H, g, -1).any(2).sum(-1)
        n = int(selected_page_count(trace.context_lens[s], trace.page_size, trace.budget))
        num += np.where(trace.retrieval_mask, union, 0).sum(-1)
        den += trace.retrieval_mask.sum(-1) * n
    if per_layer:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.maximum(den, 1), np.nan)
    return float(num.sum() / den.sum())


def busiest_bank_load(trace: PageTrace, n_banks: int) -> dict:
    """Busiest-bank load of each KV head's pages placed round-robin over ``n_banks`` banks.

    Returns ``imbalance`` (mean of busiest / ``ceil(pages / n_banks)``, ``>= 1``),
    ``imbalance_p95``, ``max_over_mean`` (mean of busiest / (pages / n_banks)), ``busiest_pages``
    (mean busiest-bank page count) and ``balanced_pages`` (mean ``ceil(pages / n_banks)``).
    """
    check_positive_int("n_banks", n_banks)
    ratios, over_mean, busiest, balanced = [], [], [], []
    for s in selective_steps(trace):
        mask = trace.kv_head_page_mask(s)[trace.retrieval_mask]  # [heads, P]
        P = mask.shape[-1]
        pad = (-P) % n_banks
        per_bank = np.pad(mask, ((0, 0), (0, pad))).reshape(mask.shape[0], -1, n_banks).sum(1)  # [heads, G]
        n = mask.sum(-1)
        top = per_bank.max(-1)
        best = -(-n // n_banks)
        ratios.append(top / best)
        over_mean.append(top / (n / n_banks))
        busiest.append(top)
        balanced.append(best)
    r, b, c = np.concatenate(ratios), np.concatenate(busiest), np.concatenate(balanced)
    return {
        "imbalance": float(r.mean()),
        "imbalance_p95": float(np.percentile(r, 95)),
        "max_over_mean": float(np.concatenate(over_mean).mean()),
        "busiest_pages": float(b.mean()),
        "balanced_pages": float(c.mean()),
    }


def trace_statistics(trace: PageTrace, n_banks=(16,), *, bins: int = 20, long_lag: int | None = None) -> dict:
    """Every statistic of the module docstring for one trace (``long_lag``: half the selective steps)."""
    steps = selective_steps(trace)
    long_lag = max(1, steps.size // 2) if long_lag is None else long_lag
    out = {
        "position_histogram": position_histogram(trace, bins).round(6).tolist(),
        "position_shares": position_shares(trace),
        "overlap_lag1": step_overlap(trace, 1) if steps.size > 1 else float("nan"),
        f"overlap_lag{long_lag}": step_overlap(trace, long_lag) if steps.size > long_lag else float("nan"),
        "adjacency": adjacency(trace),
        "union_ratio": union_ratio(trace),
    }
    for g in n_banks:
        out[f"banks{g}"] = busiest_bank_load(trace, g)
    return out


def total_variation(p, q) -> float:
    """Total-variation distance of two histograms (each summing to 1): 0 equal, 1 disjoint."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if p.shape != q.shape:
        raise ParameterError("histograms", (p.shape, q.shape), "two histograms with the same bins")
    return float(0.5 * np.abs(p - q).sum())


def compare_statistics(reference: dict, other: dict) -> dict:
    """Differences ``other - reference`` of two :func:`trace_statistics` (TV distance for the histogram)."""
    diff = {"position_tv": total_variation(reference["position_histogram"], other["position_histogram"])}
    for key, value in reference.items():
        if key == "position_histogram":
            continue
        if isinstance(value, dict):
            diff[key] = {k: float(other[key][k] - v) for k, v in value.items()}
        else:
            diff[key] = float(other[key] - value)
    return diff


__all__ = [
    "adjacency",
    "RECENT_PAGES",
    "SINK_PAGES",
    "busiest_bank_load",
    "compare_statistics",
    "position_histogram",
    "position_shares",
    "retrieval_rows",
    "selective_steps",
    "step_overlap",
    "total_variation",
    "trace_statistics",
    "union_ratio",
]
