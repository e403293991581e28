"""Page selections of one decode step: which pages each retrieval head reads, and for which query head.

The HB model reads the selected pages *where they lie* (write-time placement, :mod:`.layout`), so
it needs the selection itself, not only its size. Two sources:

* ``"uniform"`` (default when no trace is given): every retrieval head above the budget reads its
  current page plus pages drawn uniformly at random without replacement from the others (a
  labelled assumption: real selections are not uniform). With ``gqa="per_query_head"`` the
  ``g`` query heads of a KV head draw disjoint page sets (the no-overlap bound that
  :func:`h2eal_core.attention.accounting.head_access` uses), so the byte counts equal the
  accounting's exactly. The draw is seeded from ``(seed, layers, kv heads, context)``:
  byte-identical reruns, and every design of a grid point sees the same pages.
* a :class:`~h2eal_core.traces.PageTrace` (recorded on a real model, or synthetic): the pages of one
  recorded step, per query head when the trace has per-query-head rows.

A selection is a flat table of *entries* ``(row, page, owner)``: ``row = layer * N + column``
(``N`` = batch x KV heads), ``owner`` the query head of the group that attends to the page
(``-1`` = all ``g`` of them: the current page, and group-mode selections). Bank reads use the
distinct ``(row, page)`` pairs; compute and NoC delivery use the entries.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from ..validation import ParameterError, check_choice

SELECTION_SOURCES = ("uniform", "trace")


@dataclasses.dataclass(frozen=True)
class PageSelection:
    """Selected pages of every retrieval row of one decode step (see the module docstring)."""

    n_layers: int
    n_columns: int
    group_size: int
    n_pages: int  # pages of the context (the current page is n_pages - 1)
    last_page_tokens: int
    page_size: int
    rows: np.ndarray  # [E] int64 row = layer * N + column
    pages: np.ndarray  # [E] int64 page index
    owners: np.ndarray  # [E] int64 query head within the group, -1 = every query head
    selecting: np.ndarray  # [L, N] bool: rows that read a selection (others read contiguously)
    source: str = "uniform"
    _cache: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def _memo(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def page_tokens(self, pages: np.ndarray) -> np.ndarray:
        """Tokens of each page (the current page may be partial)."""
        return np.where(pages == self.n_pages - 1, self.last_page_tokens, self.page_size)

    def unique(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct ``(row, page)`` pairs (what the banks read), sorted."""

        def compute():
            key = np.unique(self.rows * self.n_pages + self.pages)
            return key // self.n_pages, key % self.n_pages

        return self._memo("unique", compute)

    def multiplicity(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct ``(row, page)`` pairs and how many query heads attend to each."""

        def compute():
            r, p, _ = self.expanded()
            key, count = np.unique(r * self.n_pages + p, return_counts=True)
            return key // self.n_pages, key % self.n_pages, count

        return self._memo("multiplicity", compute)

    def expanded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Entries with ``owner = -1`` expanded to one entry per query head: ``(rows, pages, owners)``."""
        return self._memo("expanded", self._expanded)

    def _expanded(self):
        g = self.group_size
        shared = self.owners < 0
        rows = np.concatenate([self.rows[~shared], np.repeat(self.rows[shared], g)])
        pages = np.concatenate([self.pages[~shared], np.repeat(self.pages[shared], g)])
        owners = np.concatenate([self.owners[~shared], np.tile(np.arange(g), int(shared.sum()))])
        return rows, pages, owners

    def tokens_read(self) -> np.ndarray:
        """``[L, N]`` distinct tokens each selecting row reads (0 elsewhere)."""
        def compute():
            r, p = self.unique()
            out = np.bincount(r, weights=self.page_tokens(p), minlength=self.n_layers * self.n_columns)
            return out.reshape(self.n_layers, self.n_columns).astype(np.int64)

        return self._memo("tokens_read", compute)

    def attended_tokens(self) -> np.ndarray:
        """``[L, N]`` tokens summed over query heads (each query head attends to its own pages)."""
        def compute():
            r, p, _ = self.expanded()
            out = np.bincount(r, weights=self.page_tokens(p), minlength=self.n_layers * self.n_columns)
            return out.reshape(self.n_layers, self.n_columns).astype(np.int64)

        return self._memo("attended", compute)


def _first_distinct(rng: np.random.Generator, counts: np.ndarray, population: int) -> tuple[np.ndarray, np.ndarray]:
    """For row ``i`` draw ``counts[i]`` distinct integers of ``[0, population)`` uniformly.

    Sequential sampling without replacement equals taking the first ``counts[i]`` distinct values
    of an i.i.d. uniform stream; the stream is drawn in one batch (``2 * count + 8`` values per
    row), and the rare row that gets too few distinct values is redrawn with ``rng.choice``.
    Returns ``(row_index, value)`` grouped by row.
    """
    idx = np.flatnonzero(counts > 0)
    if idx.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    m = counts[idx].astype(np.int64)
    rr = np.repeat(idx, 2 * m + 8)
    vv = rng.integers(0, population, size=rr.size)
    _, first = np.unique(rr * population + vv, return_index=True)
    first.sort()
    rr, vv = rr[first], vv[first]  # first occurrences, in draw order, still grouped by row
    starts = np.searchsorted(rr, idx, side="left")
    ends = np.searchsorted(rr, idx, side="right")
    rank = np.arange(rr.size) - np.repeat(starts, ends - starts)
    take = rank < np.repeat(m, ends - starts)
    out_r, out_v = [rr[take]], [vv[take]]
    short = np.flatnonzero(ends - starts < m)
    if short.size:
        bad = np.isin(out_r[0], idx[short])
        out_r, out_v = [out_r[0][~bad]], [out_v[0][~bad]]
        for i in short:
            out_r.append(np.full(int(m[i]), idx[i]))
            out_v.append(rng.choice(population, int(m[i]), replace=False))
    r, v = np.concatenate(out_r).astype(np.int64), np.concatenate(out_v).astype(np.int64)
    order = np.argsort(r, kind="stable")
    return r[order], v[order]


def uniform_selection(
    selecting: np.ndarray,
    read_tokens: np.ndarray,
    context_len: int,
    page_size: int,
    group_size: int,
    per_query_head: bool,
    seed: int = 0,
) -> PageSelection:
    """Uniformly random selections with the accounting's page counts (see the module docstring).

    ``selecting``: ``[L, N]`` rows above the budget; ``read_tokens``: the accounting's tokens read.
    """
    L, N = selecting.shape
    S = -(-int(context_len) // page_size)
    last = int(context_len) - (S - 1) * page_size
    non_current = np.where(selecting, (read_tokens - last) // page_size, 0).astype(np.int64)  # pages drawn
    if (non_current > S - 1).any() or (non_current < 0).any():
        raise ParameterError("read_tokens", int(non_current.max()), f"at most {S - 1} non-current pages")
    key = zlib.crc32(np.array([seed, L, N, context_len, page_size, group_size], dtype=np.int64).tobytes())
    rng = np.random.default_rng(key)
    flat = non_current.ravel()
    rows_sel = np.flatnonzero(flat > 0)
    counts = flat[rows_sel]
    # draw the complement when a row takes more than half of the pages (fewer draws)
    big = counts > (S - 1) // 2
    r_small, v_small = _first_distinct(rng, np.where(big, 0, counts), S - 1)
    r_big, v_big = _first_distinct(rng, np.where(big, S - 1 - counts, 0), S - 1)
    rows_list = [rows_sel[r_small]]
    pages_list = [v_small]
    if big.any():
        excluded = np.zeros((int(big.sum()), S - 1), dtype=bool)
        big_index = -np.ones(rows_sel.size, dtype=np.int64)
        big_index[big] = np.arange(int(big.sum()))
        excluded[big_index[r_big], v_big] = True
        bi, bp = np.nonzero(~excluded)
        rows_list.append(rows_sel[np.flatnonzero(big)][bi])
        pages_list.append(bp)
    rows = np.concatenate(rows_list)
    pages = np.concatenate(pages_list)
    order = np.lexsort((pages, rows)) if not per_query_head else np.arange(rows.size)
    rows, pages = rows[order], pages[order]
    if per_query_head and group_size > 1:
        # deal each row's pages to its query heads in draw order: disjoint sets (no-overlap bound)
        srt = np.argsort(rows, kind="stable")
        rows, pages = rows[srt], pages[srt]
        starts = np.searchsorted(rows, rows, side="left")
        owners = (np.arange(rows.size) - starts) % group_size
    else:
        owners = -np.ones(rows.size, dtype=np.int64)
    cur_rows = np.flatnonzero(selecting.ravel())
    rows = np.concatenate([rows, cur_rows])
    pages = np.concatenate([pages, np.full(cur_rows.size, S - 1)])
    owners = np.concatenate([owners, -np.ones(cur_rows.size, dtype=np.int64)])
    return PageSelection(L, N, group_size, S, last, page_size, rows, pages, owners, selecting.copy(), "uniform")


def trace_selection(trace, step: int, n_layers: int, n_kv_heads: int, group_size: int, batch: int, page_size: int) -> PageSelection:
    """The selection of one recorded step of a :class:`~h2eal_core.traces.PageTrace` (every request
    of a batch replays the same recorded selection)."""
    trace.check_shape(n_layers, n_kv_heads, group_size, name="page_trace")
    if trace.page_size != page_size:
        raise ParameterError("page_trace.page_size", trace.page_size, f"{page_size} (the sparsity config's page size)")
    if not 0 <= step < trace.n_steps:
        raise ParameterError("trace_step", step, f"a step index in [0, {trace.n_steps})")
    T = int(trace.context_lens[step])
    S = -(-T // page_size)
    last = T - (S - 1) * page_size
    pages = np.asarray(trace.pages[step], dtype=np.int64)  # [L, rows, k]
    L, R, k = pages.shape
    r_per = trace.rows_per_kv_head
    li, ri, ki = np.nonzero(pages >= 0)
    kv = ri // r_per
    owner = (ri % r_per) if (trace.per_query_head and group_size > 1) else -np.ones(li.size, dtype=np.int64)
    sel_pages = pages[li, ri, ki]
    selecting_kv = np.asarray(trace.retrieval_mask, dtype=bool) & (S > -(-trace.budget // page_size))
    rows_all, pages_all, owners_all = [], [], []
    for b in range(batch):
        col = b * n_kv_heads + kv
        rows_all.append(li * (batch * n_kv_heads) + col)
        pages_all.append(sel_pages)
        owners_all.append(owner)
    selecting = np.tile(selecting_kv, (1, batch))
    keep = selecting.ravel()[np.concatenate(rows_all)] if rows_all else np.zeros(0, dtype=bool)
    rows = np.concatenate(rows_all)[keep]
    pg = np.concatenate(pages_all)[keep]
    ow = np.concatenate(owners_all)[keep]
    cur = np.flatnonzero(selecting.ravel())
    rows = np.concatenate([rows, cur])
    pg = np.concatenate([pg, np.full(cur.size, S - 1)])
    ow = np.concatenate([ow, -np.ones(cur.size, dtype=np.int64)])
    return PageSelection(L, batch * n_kv_heads, group_size, S, last, page_size, rows, pg, ow, selecting, "trace")


__all__ = ["PageSelection", "SELECTION_SOURCES", "trace_selection", "uniform_selection"]
