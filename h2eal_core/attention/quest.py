"""Quest page selection for retrieval heads: page metadata, page scores, top-k pages.

The KV cache of a retrieval head is cut into pages of ``page_size`` tokens (page ``p`` holds
tokens ``[p * page_size, (p + 1) * page_size)``; the last, current page may be partial). Per page
the element-wise min ``m`` and max ``M`` of its keys are kept (:class:`PageMetadata`). The page
score ``sum_c max(q_c m_c, q_c M_c)`` bounds ``q . k`` from above for every key of the page
(SPEC 1.2). A decode step keeps the current page and the ``ceil(budget / page_size) - 1``
best-scoring other pages; a context of at most ``budget`` tokens is read densely.

GQA (``gqa``): ``group_sum`` / ``group_max`` combine the scores of the query heads of a group into
one page set per KV head; ``per_query_head`` lets every query head choose its own pages.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..validation import ParameterError, check_choice, check_positive_int
from ._checks import check_qkv, check_tensor, describe
from .config import GQA_MODES
from .dense import group_queries


@dataclasses.dataclass(frozen=True)
class PageMetadata:
    """Element-wise min and max key of every page: ``min, max [B, H, P, D]``.

    ``bounds [B, H, P, 2, D]`` (optional) is the contiguous layout the cache keeps and
    :func:`quest_page_metadata` returns: per page the max key then the min key, side by side, so
    that scoring reads one contiguous ``[P, 2D]`` matrix per head with a single matmul. ``min`` and
    ``max`` are then views of it (:meth:`from_bounds`).
    """

    min: torch.Tensor
    max: torch.Tensor
    page_size: int
    context_len: int
    bounds: torch.Tensor | None = None

    @classmethod
    def from_bounds(cls, bounds: torch.Tensor, page_size: int, context_len: int) -> PageMetadata:
        """Metadata whose ``max``/``min`` are views of ``bounds [B, H, P, 2, D]`` (max at 0, min at 1)."""
        return cls(bounds[..., 1, :], bounds[..., 0, :], page_size, context_len, bounds)

    @property
    def n_pages(self) -> int:
        return self.min.shape[-2]

    def select_heads(self, heads) -> PageMetadata:
        """The metadata of some KV heads (a slice, a view; or an index tensor, a copy)."""
        if self.bounds is not None:
            return PageMetadata.from_bounds(self.bounds[:, heads], self.page_size, self.context_len)
        return PageMetadata(self.min[:, heads], self.max[:, heads], self.page_size, self.context_len)

    def packed_bounds(self) -> torch.Tensor | None:
        """``[B, H, P, 2D]`` view of :attr:`bounds` (max then min per page), or ``None`` without it."""
        b = self.bounds
        if b is None or b.stride(-1) != 1 or b.stride(-2) != b.shape[-1]:
            return None
        return b.flatten(-2)

    @property
    def nbytes(self) -> int:
        return self.min.numel() * self.min.element_size() + self.max.numel() * self.max.element_size()


def n_pages(context_len: int, page_size: int) -> int:
    """Pages of a ``context_len``-token context (the last one possibly partial)."""
    return math.ceil(context_len / page_size)


def quest_page_metadata(k: torch.Tensor, page_size: int) -> PageMetadata:
    """Min/max key per page of ``k [B, H, T, D]`` (what a retrieval head's cache keeps).

    The result is laid out contiguously (:attr:`PageMetadata.bounds` ``[B, H, P, 2, D]``).
    """
    check_tensor("k", k, 4, "[B, H, T, D]")
    check_positive_int("page_size", page_size)
    B, H, T, D = k.shape
    P = n_pages(T, page_size)
    full = T // page_size
    bounds = k.new_empty(B, H, P, 2, D)
    if full:
        pages = k[..., : full * page_size, :].unflatten(-2, (full, page_size))
        bounds[:, :, :full, 0] = pages.amax(dim=-2)
        bounds[:, :, :full, 1] = pages.amin(dim=-2)
    if P > full:
        tail = k[..., full * page_size :, :]
        bounds[:, :, full, 0] = tail.amax(dim=-2)
        bounds[:, :, full, 1] = tail.amin(dim=-2)
    return PageMetadata.from_bounds(bounds, page_size, T)


def check_metadata(metadata, batch: int, n_heads: int, context_len: int, page_size: int, head_dim: int) -> PageMetadata:
    """Check that ``metadata`` describes ``n_heads`` heads of a ``context_len``-token context."""
    if not isinstance(metadata, PageMetadata):
        raise ParameterError("metadata", describe(metadata), "a PageMetadata (see quest_page_metadata)")
    want = (batch, n_heads, n_pages(context_len, page_size), head_dim)
    if metadata.page_size != page_size or metadata.context_len != context_len or tuple(metadata.min.shape) != want:
        raise ParameterError(
            "metadata",
            f"PageMetadata(page_size={metadata.page_size}, context_len={metadata.context_len}, shape={tuple(metadata.min.shape)})",
            f"page_size={page_size}, context_len={context_len}, shape {want}",
        )
    return metadata


def scores_from_metadata(qg: torch.Tensor, metadata: PageMetadata, gqa: str) -> torch.Tensor:
    """Page scores of grouped queries ``[B, H, g, D]``: ``[B, H, P]`` (group modes) or ``[B, H*g, P]``.

    ``max(q_c m_c, q_c M_c)`` is ``q_c M_c`` for ``q_c >= 0`` and ``q_c m_c`` otherwise, so the score
    is ``[q^+ ; q^-] . [M | m]``: with the contiguous layout (:attr:`PageMetadata.bounds`) one matmul
    reads the metadata once (``[g, 2D] @ [2D, P]``); separate min/max tensors take two.
    """
    qf = qg.float()
    qpn = torch.cat((qf.clamp(min=0), qf.clamp(max=0)), dim=-1)  # [q^+ ; q^-]: [B, H, g, 2D]
    if gqa == "group_sum":
        # sum_j sum_c max(q_jc m_c, q_jc M_c) = M . sum_j q_j^+ + m . sum_j q_j^-: one vector per KV head
        qpn = qpn.sum(2, keepdim=True)
    packed = metadata.packed_bounds()
    if packed is not None:
        # [g', 2D] @ [2D, P]: a short-wide product streams the metadata faster than [P, 2D] @ [2D, g']
        s = torch.matmul(qpn, packed.float().transpose(-1, -2))  # [B, H, g', P]
    else:
        D = qg.shape[-1]
        s = torch.matmul(qpn[..., :D], metadata.max.float().transpose(-1, -2))
        s = s + torch.matmul(qpn[..., D:], metadata.min.float().transpose(-1, -2))
    if gqa == "group_sum":
        return s[..., 0, :]
    if gqa == "group_max":
        return s.amax(dim=2)
    return s.flatten(1, 2)


def _check_common(q, k, page_size, gqa, metadata):
    shape = check_qkv(q, k, k)
    check_positive_int("page_size", page_size)
    check_choice("gqa", gqa, GQA_MODES)
    if metadata is not None:
        check_metadata(metadata, shape.batch, shape.n_kv_heads, shape.context_len, page_size, shape.head_dim)
    return shape


def quest_page_scores(
    q: torch.Tensor, k: torch.Tensor, page_size: int, gqa: str = "group_sum", *, metadata: PageMetadata | None = None
) -> torch.Tensor:
    """Quest page scores (float32): ``[B, Hkv, P]``, or ``[B, Hq, P]`` for ``gqa="per_query_head"``.

    ``metadata`` (from :func:`quest_page_metadata`) avoids recomputing the page min/max from ``k``.
    """
    shape = _check_common(q, k, page_size, gqa, metadata)
    meta = metadata if metadata is not None else quest_page_metadata(k, page_size)
    return scores_from_metadata(group_queries(q, shape.n_kv_heads), meta, gqa)


@dataclasses.dataclass(frozen=True)
class PageSelection:
    """Pages a retrieval decode step reads, besides the current page (always read).

    ``pages [B, S, n]``: sorted indices of the selected non-current pages, one row per KV head
    (group modes, ``S = Hkv``) or per query head (``per_query_head``, ``S = Hq``). ``dense``: the
    context fits the budget and every token is read without scoring.
    """

    pages: torch.Tensor
    context_len: int
    page_size: int
    group_size: int
    per_query_head: bool
    dense: bool

    @property
    def n_pages(self) -> int:
        return n_pages(self.context_len, self.page_size)

    @property
    def current_page_start(self) -> int:
        return (self.n_pages - 1) * self.page_size

    def page_mask(self) -> torch.Tensor:
        """``[B, S, P]`` bool: pages read (the current page included)."""
        B, S, _ = self.pages.shape
        mask = torch.zeros(B, S, self.n_pages, dtype=torch.bool, device=self.pages.device)
        mask.scatter_(-1, self.pages, True)
        mask[..., -1] = True
        return mask

    def token_mask(self) -> torch.Tensor:
        """``[B, S, T]`` bool: tokens read."""
        return self.page_mask().repeat_interleave(self.page_size, dim=-1)[..., : self.context_len]

    def kv_head_page_mask(self) -> torch.Tensor:
        """``[B, Hkv, P]``: pages each KV head reads (union over its query heads)."""
        m = self.page_mask()
        if self.per_query_head and self.group_size > 1:
            m = m.unflatten(1, (-1, self.group_size)).any(dim=2)
        return m

    def tokens_read(self) -> torch.Tensor:
        """``[B, Hkv]`` int64: distinct tokens each KV head reads."""
        pm = self.kv_head_page_mask()
        last_len = self.context_len - self.current_page_start
        return pm[..., :-1].sum(-1) * self.page_size + last_len


def select_from_scores(scores: torch.Tensor, context_len: int, page_size: int, budget: int) -> torch.Tensor:
    """Sorted top ``ceil(budget/page_size) - 1`` pages among the non-current ones: ``[B, S, n]``."""
    P = scores.shape[-1]
    n_select = min(math.ceil(budget / page_size) - 1, P - 1)
    if n_select <= 0:
        return torch.zeros(*scores.shape[:-1], 0, dtype=torch.long, device=scores.device)
    if n_select == P - 1:
        idx = torch.arange(P - 1, device=scores.device)
        return idx.expand(*scores.shape[:-1], P - 1)
    idx = torch.topk(scores[..., : P - 1], n_select, dim=-1, sorted=False).indices
    return idx.sort(dim=-1).values


def dense_selection(batch: int, rows: int, context_len: int, page_size: int, group_size: int, per_query_head: bool, device) -> PageSelection:
    """The selection of a context that fits the budget: every page."""
    P = n_pages(context_len, page_size)
    pages = torch.arange(P - 1, device=device).expand(batch, rows, P - 1)
    return PageSelection(pages, context_len, page_size, group_size, per_query_head, dense=True)


def select_pages(
    qg: torch.Tensor, metadata: PageMetadata | None, context_len: int, page_size: int, budget: int, gqa: str
) -> PageSelection:
    """Page selection of grouped queries ``[B, H, g, D]`` (internal; inputs already checked)."""
    B, H, g, _ = qg.shape
    per_q = gqa == "per_query_head"
    rows = H * g if per_q else H
    if context_len <= budget:
        return dense_selection(B, rows, context_len, page_size, g, per_q, qg.device)
    scores = scores_from_metadata(qg, metadata, gqa)
    pages = select_from_scores(scores, context_len, page_size, budget)
    return PageSelection(pages, context_len, page_size, g, per_q, dense=False)


def quest_select_pages(
    q: torch.Tensor,
    k: torch.Tensor,
    page_size: int,
    budget: int,
    gqa: str = "group_sum",
    *,
    metadata: PageMetadata | None = None,
) -> PageSelection:
    """The :class:`PageSelection` of one decode step of ``q [B, Hq, D]`` over ``k [B, Hkv, T, D]``."""
    shape = _check_common(q, k, page_size, gqa, metadata)
    check_positive_int("budget", budget)
    meta = metadata
    if meta is None and shape.context_len > budget:
        meta = quest_page_metadata(k, page_size)
    return select_pages(group_queries(q, shape.n_kv_heads), meta, shape.context_len, page_size, budget, gqa)


def quest_select(
    q: torch.Tensor,
    k: torch.Tensor,
    page_size: int,
    budget: int,
    gqa: str = "group_sum",
    *,
    metadata: PageMetadata | None = None,
) -> torch.Tensor:
    """Bool token mask of a retrieval decode step: ``[B, Hkv, T]`` (``[B, Hq, T]`` for ``per_query_head``).

    The current (last) page is always kept; all tokens are kept when ``T <= budget``.
    """
    return quest_select_pages(q, k, page_size, budget, gqa, metadata=metadata).token_mask()
