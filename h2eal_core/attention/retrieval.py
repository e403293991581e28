"""Retrieval heads at decode: attend only the Quest-selected pages (plus the current page).

The selected pages are gathered from a page-major view of the cache (``[B, H, P, page_size, D]``,
a view of ``[B, H, T, D]``, no copy) with one advanced-indexing call that copies whole pages, so a
step reads the page metadata, the selected pages and nothing else: no mask over the whole cache.
"""

from __future__ import annotations

import torch

from ..validation import check_positive_int
from ._checks import check_qkv, check_scale
from .dense import attend, dense_decode, group_queries
from .quest import PageMetadata, PageSelection, quest_select_pages


def selected_token_index(selection: PageSelection, device=None) -> torch.Tensor:
    """``[B, S, n * page_size + last]`` token positions a selection reads (selected pages, then the current page)."""
    ps, start = selection.page_size, selection.current_page_start
    B, S, n = selection.pages.shape
    offsets = torch.arange(ps, device=device)
    picked = (selection.pages.to(device).unsqueeze(-1) * ps + offsets).flatten(-2)  # [B, S, n*ps]
    current = torch.arange(start, selection.context_len, device=device).expand(B, S, -1)
    return torch.cat((picked, current), dim=-1)


def gather_pages(
    k: torch.Tensor, v: torch.Tensor, selection: PageSelection, kv_heads: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V of the selected pages then the current page: ``[B, S, n * page_size + last, D]``.

    Row ``s`` of the selection reads KV head ``kv_heads[s]`` of ``k, v [B, Hkv, T, D]`` (default:
    row ``s`` is KV head ``s``, or ``s // group_size`` for a per-query-head selection). On a
    contiguous cache this is one ``index_select`` of whole rows per tensor (only the selected
    tokens are touched); otherwise it falls back to advanced indexing.
    """
    B, Hkv, T, D = k.shape
    S = selection.pages.shape[1]
    if kv_heads is None:
        kv_heads = torch.arange(Hkv, device=k.device)
        if selection.per_query_head:
            kv_heads = kv_heads.repeat_interleave(selection.group_size)
    kv_heads = kv_heads.to(k.device)
    tokens = selected_token_index(selection, k.device)  # [B, S, n_tok]
    n_tok = tokens.shape[-1]
    out = []
    for x in (k, v):
        if x.is_contiguous():
            base = (torch.arange(B, device=k.device).view(B, 1, 1) * Hkv + kv_heads.view(1, S, 1)) * T
            rows = (base + tokens).flatten()
            out.append(x.view(B * Hkv * T, D).index_select(0, rows).view(B, S, n_tok, D))
        else:
            b = torch.arange(B, device=k.device).view(B, 1, 1)
            out.append(x[b, kv_heads.view(1, S, 1), tokens])
    return out[0], out[1]


def attend_selection(
    qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, selection: PageSelection, scale: float, kv_heads=None
) -> torch.Tensor:
    """Attention of grouped queries ``[B, H, g, D]`` over their selected pages (float32, same shape)."""
    ks, vs = gather_pages(k, v, selection, kv_heads)
    if selection.per_query_head:
        B, H, g, D = qg.shape
        return attend(qg.reshape(B, H * g, 1, D), ks, vs, scale).view(B, H, g, D)
    return attend(qg, ks, vs, scale)


def retrieval_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    page_size: int,
    budget: int,
    gqa: str = "group_sum",
    *,
    metadata: PageMetadata | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Quest decode attention: ``q [B, Hq, D]``, ``k, v [B, Hkv, T, D]`` -> ``[B, Hq, D]``.

    Equal to :func:`dense_decode` when ``T <= budget``. ``metadata`` is the cache's page min/max
    (computed from ``k`` when omitted, which reads all keys: pass it when timing).
    """
    shape = check_qkv(q, k, v)
    check_positive_int("budget", budget)
    s = check_scale(scale, shape.head_dim)
    if shape.context_len <= budget:
        return dense_decode(q, k, v, scale=s)
    selection = quest_select_pages(q, k, page_size, budget, gqa, metadata=metadata)
    out = attend_selection(group_queries(q, shape.n_kv_heads), k, v, selection, s)
    return out.flatten(1, 2).to(q.dtype)
