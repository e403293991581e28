"""Hybrid decode of one layer: streaming heads (sink + local) beside Quest retrieval heads.

``retrieval_heads [Hkv]`` marks the retrieval KV heads; the others are streaming heads. With
``layer_idx < config.dense_layers`` the retrieval heads read densely (Quest keeps early layers
dense). Each group of heads touches only its own tokens: streaming heads read their two ranges as
views, retrieval heads read the page metadata and gather their selected pages, so a step costs what
:func:`~h2eal_core.attention.accounting.head_access` counts.
"""

from __future__ import annotations

import functools

import torch

from ..validation import ParameterError, check_nonnegative_int
from ._checks import DecodeShape, check_head_flags, check_qkv, check_scale, describe
from .config import SparseAttentionConfig
from .dense import attend, group_queries
from .quest import PageMetadata, check_metadata, quest_page_metadata, select_pages
from .retrieval import GatherWorkspace, attend_selection
from .streaming import streaming_attend, streaming_token_mask


def layer_head_kinds(retrieval_heads, config: SparseAttentionConfig, layer_idx: int | None = None) -> tuple[str, ...]:
    """Kind of every KV head of a layer: ``retrieval``, ``streaming``, or ``dense`` (retrieval heads
    of the first ``config.dense_layers`` layers, when ``layer_idx`` is given)."""
    flags = retrieval_heads if isinstance(retrieval_heads, list) else torch.as_tensor(retrieval_heads).tolist()
    dense = layer_idx is not None and check_nonnegative_int("layer_idx", layer_idx) < config.dense_layers
    return tuple(("dense" if dense else "retrieval") if f else "streaming" for f in flags)


def heads_index(heads: list[int], device) -> slice | torch.Tensor:
    """A slice when ``heads`` are evenly spaced (indexing is then a view), else an index tensor."""
    if len(heads) == 1:
        return slice(heads[0], heads[0] + 1)
    if heads:
        step = heads[1] - heads[0]
        if step > 0 and heads == list(range(heads[0], heads[-1] + 1, step)):
            return slice(heads[0], heads[-1] + 1, step)
    return torch.tensor(heads, dtype=torch.long, device=device)


def head_runs(heads: list[int]) -> list[slice]:
    """``heads`` as few slices as possible: one (strided) slice when evenly spaced, else consecutive runs."""
    idx = heads_index(heads, "cpu")
    if isinstance(idx, slice):
        return [idx]
    runs, first = [], heads[0]
    for a, b in zip(heads, heads[1:] + [None]):
        if b != a + 1:
            runs.append(slice(first, a + 1))
            first = b
    return runs


def _check_hybrid(q, k, v, retrieval_heads, config, metadata) -> tuple[DecodeShape, torch.Tensor]:
    shape = check_qkv(q, k, v)
    if not isinstance(config, SparseAttentionConfig):
        raise ParameterError("config", describe(config), "a SparseAttentionConfig")
    flags = check_head_flags("retrieval_heads", retrieval_heads, shape.n_kv_heads)
    if metadata is not None:
        n_r = sum(flags.tolist())
        heads = metadata.min.shape[1] if isinstance(metadata, PageMetadata) else None
        check_metadata(
            metadata, shape.batch, shape.n_kv_heads if heads == shape.n_kv_heads else n_r,
            shape.context_len, config.page_size, shape.head_dim,
        )
    return shape, flags


def _retrieval_metadata(k, metadata, r_idx, n_kv_heads, page_size) -> PageMetadata:
    """Metadata of the retrieval heads: given for all KV heads, for the retrieval heads only, or computed."""
    if metadata is None:
        return quest_page_metadata(k[:, r_idx], page_size)
    if metadata.min.shape[1] == n_kv_heads:
        return metadata.select_heads(r_idx)
    return metadata


def head_groups(kinds: tuple[str, ...], device) -> dict[str, slice | torch.Tensor]:
    """KV heads of each kind present, as a slice or an index tensor (see :func:`heads_index`)."""
    out = {}
    for kind in ("dense", "streaming", "retrieval"):
        heads = [h for h, kd in enumerate(kinds) if kd == kind]
        if heads:
            out[kind] = heads_index(heads, device)
    return out


def _check_streaming_kv(streaming_kv, shape: DecodeShape, n_streaming: int, config: SparseAttentionConfig):
    want = (shape.batch, n_streaming, min(shape.context_len, config.streaming_window), shape.head_dim)
    if (
        not isinstance(streaming_kv, (tuple, list)) or len(streaming_kv) != 2
        or not all(isinstance(t, torch.Tensor) and tuple(t.shape) == want for t in streaming_kv)
    ):
        got = tuple(getattr(t, "shape", t) for t in streaming_kv) if isinstance(streaming_kv, (tuple, list)) else streaming_kv
        raise ParameterError("streaming_kv", got, f"(K, V) of the streaming heads' attended tokens, each of shape {want}")
    return streaming_kv


@functools.lru_cache(maxsize=256)
def _decode_plan(kinds: tuple[str, ...], device: str) -> dict[str, tuple]:
    """Per kind: ``(index, runs, kv_heads)``: the heads as a slice or index tensor, as slices, as a tensor."""
    plan = {}
    for kind, idx in head_groups(kinds, device).items():
        heads = [h for h, kd in enumerate(kinds) if kd == kind]
        plan[kind] = (idx, head_runs(heads), torch.tensor(heads, dtype=torch.long, device=device))
    return plan


def hybrid_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    retrieval_heads,
    config: SparseAttentionConfig,
    *,
    layer_idx: int | None = None,
    metadata: PageMetadata | None = None,
    scale: float | None = None,
    streaming_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    workspace: GatherWorkspace | None = None,
) -> torch.Tensor:
    """One hybrid decode step: ``q [B, Hq, D]``, ``k, v [B, Hkv, T, D]`` -> ``[B, Hq, D]``.

    Args:
        retrieval_heads: bool ``[Hkv]`` (torch, numpy or list); True marks a retrieval head.
        config: sink, local, page_size, budget, gqa and dense_layers.
        layer_idx: the layer, so that ``config.dense_layers`` applies (default: not applied).
        metadata: page min/max of the retrieval heads (for all ``Hkv`` heads or only the retrieval
            ones), as a cache keeps it; computed from ``k`` when omitted.
        streaming_kv: K and V of the streaming heads over exactly the tokens they attend (sink +
            local window, ``[B, Hs, min(T, sink + local), D]``, heads ascending), as a cache that
            stores only those keeps them; read as one contiguous view. Default: two views of ``k, v``.
        workspace: reusable gather buffers (:class:`~h2eal_core.attention.retrieval.GatherWorkspace`).

    Dense heads run the fused dense kernel on views of their heads; streaming heads read their
    sink and window as two views (:func:`~h2eal_core.attention.streaming.streaming_attend`);
    retrieval heads score the contiguous page metadata with one matmul, take the top pages and
    gather only those rows (:func:`~h2eal_core.attention.retrieval.gather_pages`).
    """
    shape, flags = _check_hybrid(q, k, v, retrieval_heads, config, metadata)
    s = check_scale(scale, shape.head_dim)
    kinds = layer_head_kinds(flags.tolist(), config, layer_idx)
    qg = group_queries(q, shape.n_kv_heads)
    out = torch.empty(qg.shape, dtype=torch.float32, device=q.device)
    T = shape.context_len
    for kind, (idx, runs, heads) in _decode_plan(kinds, str(q.device)).items():
        if kind == "dense" or (kind == "retrieval" and T <= config.budget):
            for r in runs:
                out[:, r] = attend(qg[:, r], k[:, r], v[:, r], s)
        elif kind == "streaming" and streaming_kv is not None:
            out[:, idx] = attend(qg[:, idx], *_check_streaming_kv(streaming_kv, shape, len(heads), config), s)
        elif kind == "streaming":
            for r in runs:
                out[:, r] = streaming_attend(qg[:, r], k[:, r], v[:, r], config.sink, config.local, s)
        else:
            meta = _retrieval_metadata(k, metadata, idx, shape.n_kv_heads, config.page_size)
            qr = qg[:, idx]
            sel = select_pages(qr, meta, T, config.page_size, config.budget, config.gqa)
            if sel.per_query_head:
                heads = heads.repeat_interleave(shape.group_size)
            out[:, idx] = attend_selection(qr, k, v, sel, s, kv_heads=heads, workspace=workspace)
    return out.flatten(1, 2).to(q.dtype)


def hybrid_token_mask(
    q: torch.Tensor,
    k: torch.Tensor,
    retrieval_heads,
    config: SparseAttentionConfig,
    *,
    layer_idx: int | None = None,
    metadata: PageMetadata | None = None,
) -> torch.Tensor:
    """The tokens :func:`hybrid_decode` attends: bool ``[B, Hkv, T]`` (``[B, Hq, T]`` for ``per_query_head``)."""
    shape, flags = _check_hybrid(q, k, k, retrieval_heads, config, metadata)
    kinds = layer_head_kinds(flags, config, layer_idx)
    B, Hkv, T, g = shape.batch, shape.n_kv_heads, shape.context_len, shape.group_size
    per_q = config.gqa == "per_query_head"
    mask = torch.ones(B, Hkv, g if per_q else 1, T, dtype=torch.bool, device=k.device)
    qg = group_queries(q, Hkv)
    for kind, idx in head_groups(kinds, q.device).items():
        if kind == "streaming":
            mask[:, idx] = streaming_token_mask(T, config.sink, config.local, device=k.device)
        elif kind == "retrieval" and T > config.budget:
            meta = _retrieval_metadata(k, metadata, idx, Hkv, config.page_size)
            sel = select_pages(qg[:, idx], meta, T, config.page_size, config.budget, config.gqa)
            tm = sel.token_mask()
            mask[:, idx] = tm.unflatten(1, (-1, g)) if per_q else tm.unsqueeze(2)
    return mask.flatten(1, 2) if per_q else mask.squeeze(2)
