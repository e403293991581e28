"""Recorded page-selection traces: which pages each retrieval head read at each decode step.

A :class:`PageTrace` is recorded by running a real model under the H2EAL policy
(:mod:`h2eal_core.traces.record`) and consumed by the HB model, which reads the selected pages
where they lie (write-time placement). The file format is a compressed ``.npz`` with

- ``pages``: int16/int32 ``[steps, n_layers, rows, k]``, the sorted indices of the selected
  non-current pages of each selection row, ``-1`` padded (rows of streaming or dense heads are all
  ``-1``); ``rows`` is ``n_kv_heads`` (group modes) or ``n_kv_heads * group_size``
  (``per_query_head``, row ``h * group_size + j`` = query head ``j`` of KV head ``h``). The
  current (last, possibly partial) page is always read and is not stored.
- ``context_lens``: int32 ``[steps]``, tokens in the context at each recorded step.
- ``retrieval_mask``: bool ``[n_layers, n_kv_heads]``, the retrieval heads of the recording.
- ``meta``: a JSON string: model, page_size, budget, gqa, group_size, source (how it was
  recorded: task, seed, policy, library versions), and optionally ``page_order``.

``page_order`` (optional in the file, ``"sorted"`` when absent, so older files and writers stay
valid): ``"sorted"`` rows hold the selected pages in ascending order; ``"score_rank"`` rows hold
them best Quest score first, ``-1`` padding only at the end. In a ``score_rank`` trace the pages a
smaller budget ``b`` would select on the same queries are a prefix of each row:
:meth:`PageTrace.at_budget` cuts them (the queries themselves come from the run at the recorded
budget; see :mod:`h2eal_core.traces.record`).

Loading validates every field and names the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from ..io import atomic_path
from ..validation import ParameterError

GQA_MODES = ("group_sum", "group_max", "per_query_head")
PAGE_ORDERS = ("sorted", "score_rank")
FORMAT_VERSION = 1


def selected_page_count(context_len, page_size: int, budget: int):
    """Non-current pages a retrieval head selects at ``context_len`` tokens (Quest, SPEC 1.2):
    ``min(ceil(budget / page_size) - 1, n_pages - 1)``; every page when the context fits the budget.
    Works elementwise on arrays of context lengths."""
    lens = np.asarray(context_len, dtype=np.int64)
    n_pages = -(-lens // page_size)
    return np.minimum(-(-budget // page_size) - 1, n_pages - 1)


@dataclasses.dataclass(frozen=True)
class PageTrace:
    """Page selections of every retrieval head over ``steps`` decode steps of one real run."""

    model: str
    page_size: int
    budget: int
    gqa: str
    group_size: int
    retrieval_mask: np.ndarray  # [L, Hkv] bool
    context_lens: np.ndarray  # [steps] int
    pages: np.ndarray  # [steps, L, rows, k] int, -1 padded
    source: dict = dataclasses.field(default_factory=dict)
    page_order: str = "sorted"  # or "score_rank" (best first; smaller budgets are prefixes)

    def __post_init__(self):
        validate_trace(self)

    # -- shape --
    @property
    def n_steps(self) -> int:
        return int(self.pages.shape[0])

    @property
    def n_layers(self) -> int:
        return int(self.retrieval_mask.shape[0])

    @property
    def n_kv_heads(self) -> int:
        return int(self.retrieval_mask.shape[1])

    @property
    def per_query_head(self) -> bool:
        return self.gqa == "per_query_head"

    @property
    def rows_per_kv_head(self) -> int:
        return self.group_size if self.per_query_head else 1

    def n_pages(self, step: int) -> int:
        """Pages of the context at ``step`` (the current page included)."""
        return -(-int(self.context_lens[step]) // self.page_size)

    # -- reading --
    def kv_head_page_mask(self, step: int) -> np.ndarray:
        """``[L, Hkv, n_pages(step)]`` bool: pages each KV head reads at ``step`` (union over its
        query heads, the current page included for retrieval heads; all False for other heads)."""
        P = self.n_pages(step)
        L, H, r = self.n_layers, self.n_kv_heads, self.rows_per_kv_head
        rows = self.pages[step].reshape(L, H, r * self.pages.shape[-1])
        mask = np.zeros((L, H, P + 1), dtype=bool)
        li, hi, ki = np.nonzero(rows >= 0)
        mask[li, hi, rows[li, hi, ki]] = True
        mask = mask[..., :P]
        mask[..., P - 1] |= self.retrieval_mask
        return mask

    def tokens_read(self, step: int) -> np.ndarray:
        """``[L, Hkv]`` distinct tokens each KV head reads at ``step`` (0 for non-retrieval heads)."""
        mask = self.kv_head_page_mask(step)
        T = int(self.context_lens[step])
        last = T - (self.n_pages(step) - 1) * self.page_size
        return mask[..., :-1].sum(-1) * self.page_size + mask[..., -1] * last

    def check_shape(self, n_layers: int, n_kv_heads: int, group_size: int, *, name: str = "trace") -> None:
        """Refuse a trace recorded on another model shape (names the field, the value, the allowed)."""
        for field, value, want in (
            ("n_layers", self.n_layers, n_layers),
            ("n_kv_heads", self.n_kv_heads, n_kv_heads),
            ("group_size", self.group_size, group_size),
        ):
            if value != want:
                raise ParameterError(f"{name}.{field}", value, f"{want} (the model shape the trace is used for)")

    def at_budget(self, budget: int) -> PageTrace:
        """The trace a budget of ``budget`` tokens gives on the same queries, pages sorted.

        A ``score_rank`` trace answers any ``budget`` up to its own: each row keeps its first
        ``min(ceil(budget / page_size) - 1, n_pages - 1)`` pages. A ``sorted`` trace only answers its
        own budget (returned as is).
        """
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
            raise ParameterError("budget", budget, "a positive integer number of tokens")
        if self.page_order == "sorted":
            if budget != self.budget:
                raise ParameterError(
                    "budget", budget, f"{self.budget} (a 'sorted' trace answers only its own budget; a 'score_rank' trace answers any budget up to its own)"
                )
            return self
        if budget > self.budget:
            raise ParameterError("budget", budget, f"at most the recorded budget {self.budget}")
        n_sel = selected_page_count(self.context_lens, self.page_size, budget)
        k = int(n_sel.max()) if n_sel.size else 0
        pages = self.pages[..., :k].copy()
        cut = np.arange(k)[None, :] >= n_sel[:, None]  # [steps, k]
        pages[np.broadcast_to(cut[:, None, None, :], pages.shape)] = -1
        pages = np.where(pages < 0, np.iinfo(np.int64).max, pages)
        pages = np.sort(pages, axis=-1)
        pages = np.where(pages == np.iinfo(np.int64).max, -1, pages)
        source = {**self.source, "derived": f"score-rank prefix of the budget-{self.budget} trace (queries of that run)"}
        return dataclasses.replace(self, budget=int(budget), pages=pages, source=source, page_order="sorted")

    # -- files --
    def save(self, path: str | os.PathLike) -> Path:
        """Write the trace atomically as a compressed ``.npz``."""
        path = Path(path)
        meta = {
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "page_size": self.page_size,
            "budget": self.budget,
            "gqa": self.gqa,
            "group_size": self.group_size,
            "source": self.source,
            "page_order": self.page_order,
        }
        dtype = np.int16 if self.pages.size == 0 or int(self.pages.max()) < np.iinfo(np.int16).max else np.int32
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh,
                    pages=self.pages.astype(dtype),
                    context_lens=self.context_lens.astype(np.int32),
                    retrieval_mask=self.retrieval_mask.astype(bool),
                    meta=np.array(json.dumps(meta, sort_keys=True)),
                )
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # a normal file mode (the temporary file is private)
        return path


def _fail(field: str, value, allowed: str):
    raise ParameterError(f"trace.{field}", value, allowed)


def validate_trace(trace: PageTrace) -> None:
    """Check every field of a trace; raise :class:`ParameterError` naming the first bad one."""
    if not isinstance(trace.model, str) or not trace.model:
        _fail("model", trace.model, "a non-empty model name")
    for field in ("page_size", "budget", "group_size"):
        value = getattr(trace, field)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            _fail(field, value, "a positive integer")
    if trace.gqa not in GQA_MODES:
        _fail("gqa", trace.gqa, "one of " + ", ".join(repr(m) for m in GQA_MODES))
    if trace.page_order not in PAGE_ORDERS:
        _fail("page_order", trace.page_order, "one of " + ", ".join(repr(m) for m in PAGE_ORDERS))
    if not isinstance(trace.source, dict):
        _fail("source", type(trace.source).__name__, "a dict (JSON-serialisable provenance)")
    mask = np.asarray(trace.retrieval_mask)
    if mask.ndim != 2 or mask.dtype != bool:
        _fail("retrieval_mask", f"{mask.dtype} array of shape {mask.shape}", "a bool array [n_layers, n_kv_heads]")
    lens = np.asarray(trace.context_lens)
    if lens.ndim != 1 or lens.size == 0 or not np.issubdtype(lens.dtype, np.integer) or (lens < 1).any():
        _fail("context_lens", f"array of shape {lens.shape}", "a non-empty 1-D array of positive integers")
    pages = np.asarray(trace.pages)
    rows = mask.shape[1] * (trace.group_size if trace.gqa == "per_query_head" else 1)
    if pages.ndim != 4 or pages.shape[:3] != (lens.size, mask.shape[0], rows) or not np.issubdtype(pages.dtype, np.integer):
        _fail("pages", f"{pages.dtype} array of shape {pages.shape}", f"an integer array [steps={lens.size}, n_layers={mask.shape[0]}, rows={rows}, k]")
    if pages.size:
        n_pages = -(-lens // trace.page_size)
        limit = (n_pages - 1)[:, None, None, None]  # the current page is not stored
        bad = (pages < -1) | (pages >= limit)
        if bad.any():
            step = int(np.nonzero(bad)[0][0])
            _fail("pages", int(pages[bad][0]), f"-1 (padding) or a non-current page index in [0, {int(limit[step, 0, 0, 0]) - 1}] at step {step}")
        if trace.page_order == "score_rank":
            valid = pages >= 0
            if (valid[..., 1:] & ~valid[..., :-1]).any():
                _fail("pages", "a -1 before a selected page", "score-rank rows with -1 padding only at the end")
            ordered = np.sort(np.where(valid, pages, -1 - np.arange(pages.shape[-1])), axis=-1)
            if (ordered[..., 1:] == ordered[..., :-1]).any():
                _fail("pages", "a page repeated in a row", "distinct pages in every score-rank row")


def load_trace(path: str | os.PathLike) -> PageTrace:
    """Read and validate a trace written by :meth:`PageTrace.save`."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError("trace", str(path), "an existing .npz page-selection trace (see data/traces/)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("pages", "context_lens", "retrieval_mask", "meta")}
    except (OSError, ValueError, KeyError) as exc:
        raise ParameterError("trace", str(path), f"an .npz with arrays pages, context_lens, retrieval_mask, meta ({type(exc).__name__}: {exc})") from None
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as exc:
        raise ParameterError("trace.meta", str(path), f"a JSON string ({exc})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ParameterError("trace.format_version", meta.get("format_version"), str(FORMAT_VERSION))
    return PageTrace(
        model=meta.get("model"),
        page_size=meta.get("page_size"),
        budget=meta.get("budget"),
        gqa=meta.get("gqa"),
        group_size=meta.get("group_size"),
        retrieval_mask=arrays["retrieval_mask"].astype(bool),
        context_lens=arrays["context_lens"].astype(np.int64),
        pages=arrays["pages"].astype(np.int64),
        source=meta.get("source", {}),
        page_order=meta.get("page_order", "sorted"),
    )
