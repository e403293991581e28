"""Pages each KV head reads at one decode step, with how many of its query heads attend each page.

Two sources:

* ``uniform``: every selection row (one per query head with ``gqa="per_query_head"``, one per KV
  head otherwise) draws ``budget_pages - 1`` non-current pages uniformly at random without
  replacement (seeded); the current page is always read. An assumption: real selections are not
  uniform (issue 9).
* a recorded :class:`~h2eal_core.traces.PageTrace` step: the pages the real model selected
  (:func:`selection_from_trace`); the trace's shape is checked against the model.

Streaming heads read their ``min(T, sink + local)`` ring slots; dense heads (retrieval heads in the
first ``dense_layers`` layers, or any retrieval head when ``T <= budget``) read every page. The
query multiplicity of a page is the number of query heads that attend it: ``group_size`` for
streaming, dense and group-mode pages, the count of selecting rows for ``per_query_head``. It sets
the MACs of the page (``2 * head_dim`` per token and attending query head).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..attention.config import SparseAttentionConfig
from ..models.shape import ModelShape
from ..validation import ParameterError, check_nonnegative_int, check_positive_int

KINDS = ("streaming", "retrieval", "dense")


@dataclasses.dataclass(frozen=True)
class HeadRead:
    """What one KV head of one layer reads: token ranges by page, and query multiplicity per page."""

    kind: str
    pages: np.ndarray  # [k] sorted page (or ring-slot page) indices read
    tokens: np.ndarray  # [k] tokens of each page read (the last page may be partial)
    queries: np.ndarray  # [k] query heads attending each page

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.sum())


@dataclasses.dataclass(frozen=True)
class StepSelection:
    """The reads of every (layer, KV head) at one decode step, and where the selection came from."""

    context_len: int
    reads: tuple[tuple[HeadRead, ...], ...]  # [layer][kv_head]
    source: str

    @property
    def n_layers(self) -> int:
        return len(self.reads)

    def tokens_read(self) -> np.ndarray:
        """``[L, Hkv]`` tokens each KV head reads."""
        return np.array([[r.n_tokens for r in layer] for layer in self.reads], dtype=np.int64)


def _dense(T: int, P: int, g: int, kind: str) -> HeadRead:
    n = -(-T // P)
    tokens = np.full(n, P, dtype=np.int64)
    tokens[-1] = T - (n - 1) * P
    return HeadRead(kind, np.arange(n, dtype=np.int64), tokens, np.full(n, g, dtype=np.int64))


def _selected(T: int, P: int, rows: list[np.ndarray], g: int, per_query: bool) -> HeadRead:
    n = -(-T // P)
    count = np.zeros(n, dtype=np.int64)
    for r in rows:
        r = np.asarray(r, dtype=np.int64)
        count[np.unique(r[(r >= 0) & (r < n - 1)])] += 1
    count[n - 1] = len(rows)  # the current page: every row reads it
    pages = np.flatnonzero(count)
    tokens = np.where(pages == n - 1, T - (n - 1) * P, P).astype(np.int64)
    queries = count[pages] * (1 if per_query else g)
    if per_query:
        queries = np.minimum(queries, g)
    return HeadRead("retrieval", pages, tokens, queries)


def head_kind(retrieval: bool, layer: int, T: int, config: SparseAttentionConfig) -> str:
    if not retrieval:
        return "streaming"
    if layer < config.dense_layers or T <= config.budget:
        return "dense"
    return "retrieval"


def _streaming(T: int, P: int, g: int, config: SparseAttentionConfig) -> HeadRead:
    slots = min(T, config.sink + config.local)
    return _dense(slots, P, g, "streaming")


def uniform_selection(shape: ModelShape, context_len: int, mask: np.ndarray, config: SparseAttentionConfig, seed: int = 0) -> StepSelection:
    """Uniformly random page selections (seeded) for every retrieval head of ``mask``."""
    T = check_positive_int("context_len", context_len)
    check_nonnegative_int("seed", seed)
    mask = _check_mask(mask, shape)
    P, g = config.page_size, shape.group_size
    per_query = config.gqa == "per_query_head" and g > 1
    n_rows = g if per_query else 1
    rng = np.random.default_rng(seed)
    n = -(-T // P)
    k = min(config.budget_pages - 1, n - 1)
    reads = []
    for layer in range(shape.n_layers):
        row = []
        for h in range(shape.n_kv_heads):
            kind = head_kind(bool(mask[layer, h]), layer, T, config)
            if kind == "streaming":
                row.append(_streaming(T, P, g, config))
            elif kind == "dense":
                row.append(_dense(T, P, g, "dense"))
            else:
                rows = [rng.choice(n - 1, size=k, replace=False) for _ in range(n_rows)]
                row.append(_selected(T, P, rows, g, per_query))
        reads.append(tuple(row))
    return StepSelection(T, tuple(reads), f"uniform random pages (seed {seed})")


def selection_from_trace(shape: ModelShape, trace, step: int, config: SparseAttentionConfig) -> StepSelection:
    """The pages a recorded :class:`~h2eal_core.traces.PageTrace` selected at ``step``.

    ``config`` must carry the trace's page size, budget and GQA mode (see :func:`trace_config`).
    """
    trace.check_shape(shape.n_layers, shape.n_kv_heads, shape.group_size)
    check_nonnegative_int("step", step)
    if step >= trace.n_steps:
        raise ParameterError("step", step, f"a step of the trace, below {trace.n_steps}")
    T = int(trace.context_lens[step])
    P, g = trace.page_size, shape.group_size
    per_query = trace.per_query_head and g > 1
    r = trace.rows_per_kv_head
    pages = np.asarray(trace.pages[step])
    reads = []
    for layer in range(shape.n_layers):
        row = []
        for h in range(shape.n_kv_heads):
            kind = head_kind(bool(trace.retrieval_mask[layer, h]), layer, T, config)
            if kind == "streaming":
                row.append(_streaming(T, P, g, config))
            elif kind == "dense":
                row.append(_dense(T, P, g, "dense"))
            else:
                rows = [pages[layer, h * r + j] for j in range(r)]
                row.append(_selected(T, P, rows, g, per_query))
        reads.append(tuple(row))
    source = f"recorded trace {trace.model} step {step} (T={T}; {trace.source.get('task', 'task n/a')})"
    return StepSelection(T, tuple(reads), source)


def trace_config(trace, config: SparseAttentionConfig | None = None) -> SparseAttentionConfig:
    """``config`` with the trace's page size, budget and GQA mode."""
    base = config or SparseAttentionConfig()
    return base.replace(page_size=int(trace.page_size), budget=int(trace.budget), gqa=str(trace.gqa))


def _check_mask(mask, shape: ModelShape) -> np.ndarray:
    m = np.asarray(mask, dtype=bool)
    if m.shape != (shape.n_layers, shape.n_kv_heads):
        raise ParameterError("retrieval_mask", f"array of shape {m.shape}", f"shape ({shape.n_layers}, {shape.n_kv_heads}) = (layers, kv_heads)")
    return m
