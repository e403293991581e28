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
  recorded: task, seed, policy, library versions).

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
FORMAT_VERSION = 1


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
    )
