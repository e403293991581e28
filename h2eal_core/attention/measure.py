"""Accounting measured from the masks a decode step really used (the check on accounting.py).

:func:`~h2eal_core.attention.accounting.head_access` gives closed forms; this module counts the
same quantities on real token masks (tokens read: distinct tokens of a KV head's query group;
pages read: distinct pages touched), so tests can check that both agree: exactly for dense,
streaming and group-mode retrieval heads, and as ``measured <= closed form`` for
``per_query_head`` (whose closed form assumes the query heads' pages never overlap).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..validation import ParameterError, check_choice, check_positive_int
from .accounting import HEAD_KINDS, HeadAccess
from .config import SparseAttentionConfig
from .hybrid import hybrid_token_mask, layer_head_kinds
from .quest import PageMetadata, n_pages


@dataclasses.dataclass(frozen=True)
class DecodeAccess:
    """Measured access of one decode step of one layer; arrays are ``[B, Hkv]``."""

    kinds: tuple[str, ...]
    context_len: int
    head_dim: int
    group_size: int
    tokens_read: np.ndarray
    tokens_stored: np.ndarray
    pages_selected: np.ndarray
    pages_total: np.ndarray
    metadata_elements_read: np.ndarray
    metadata_elements_stored: np.ndarray
    score_macs: np.ndarray
    attention_macs: np.ndarray

    def head(self, batch: int, kv_head: int) -> HeadAccess:
        """The measured :class:`HeadAccess` of one KV head (comparable with ``head_access``)."""
        b, h = batch, kv_head
        return HeadAccess(
            kind=self.kinds[h],
            context_len=self.context_len,
            tokens_read=int(self.tokens_read[b, h]),
            tokens_stored=int(self.tokens_stored[b, h]),
            metadata_elements_read=int(self.metadata_elements_read[b, h]),
            metadata_elements_stored=int(self.metadata_elements_stored[b, h]),
            score_macs=int(self.score_macs[b, h]),
            attention_macs=int(self.attention_macs[b, h]),
            pages_total=int(self.pages_total[b, h]),
            pages_selected=int(self.pages_selected[b, h]),
        )

    def kv_bytes_read(self, bytes_per_element: float = 2.0) -> float:
        return float(2.0 * self.tokens_read.sum() * self.head_dim * bytes_per_element)

    def kv_bytes_stored(self, bytes_per_element: float = 2.0) -> float:
        return float(2.0 * self.tokens_stored.sum() * self.head_dim * bytes_per_element)

    def metadata_bytes_read(self, bytes_per_element: float = 2.0) -> float:
        return float(self.metadata_elements_read.sum() * bytes_per_element)

    @property
    def read_fraction(self) -> float:
        """Tokens read relative to dense attention."""
        return float(self.tokens_read.sum() / (self.tokens_read.size * self.context_len))


def access_from_masks(
    kinds, read_mask: torch.Tensor, config: SparseAttentionConfig, head_dim: int, group_size: int = 1
) -> DecodeAccess:
    """Count a decode step's access from its token mask ``[B, Hkv, T]`` or ``[B, Hq, T]``.

    Tokens read are those of the mask (union over a KV head's query heads); a streaming head
    stores what it can attend; dense and retrieval heads store the whole context, and retrieval
    heads also store page metadata, read and scored only when the context exceeds the budget.
    """
    kinds = tuple(check_choice(f"kinds[{i}]", kd, HEAD_KINDS) for i, kd in enumerate(kinds))
    check_positive_int("head_dim", head_dim)
    g = check_positive_int("group_size", group_size)
    H = len(kinds)
    if not isinstance(read_mask, torch.Tensor) or read_mask.dtype != torch.bool or read_mask.ndim != 3 or read_mask.shape[1] not in (H, H * g):
        raise ParameterError("read_mask", getattr(read_mask, "shape", read_mask), f"a bool tensor [B, {H} or {H * g}, T]")
    B, rows, T = read_mask.shape
    per_row = read_mask.sum(-1).to(torch.int64)  # tokens each row reads
    if rows == H * g and g > 1:
        kv_mask = read_mask.unflatten(1, (H, g)).any(dim=2)
        q_tokens = per_row.unflatten(1, (H, g)).sum(-1)
    else:
        kv_mask = read_mask
        q_tokens = per_row * g
    P = n_pages(T, config.page_size)
    padded = torch.zeros(B, H, P * config.page_size, dtype=torch.bool, device=kv_mask.device)
    padded[..., :T] = kv_mask
    pages_read = padded.unflatten(-1, (P, config.page_size)).any(-1).sum(-1)

    is_r = np.array([kd == "retrieval" for kd in kinds])
    is_s = np.array([kd == "streaming" for kd in kinds])
    tokens_read = kv_mask.sum(-1).cpu().numpy().astype(np.int64)
    stored = np.where(is_s[None, :], tokens_read, T).astype(np.int64)
    stored = np.broadcast_to(stored, (B, H)).copy()
    scored = is_r & (T > config.budget)
    meta_stored = np.where(is_r, 2 * head_dim * P, 0)
    zeros = np.zeros((B, H), dtype=np.int64)
    return DecodeAccess(
        kinds=kinds,
        context_len=T,
        head_dim=head_dim,
        group_size=g,
        tokens_read=tokens_read,
        tokens_stored=stored,
        pages_selected=np.where(is_r[None, :], pages_read.cpu().numpy(), 0).astype(np.int64),
        pages_total=zeros + np.where(is_r, P, 0),
        metadata_elements_read=zeros + np.where(scored, meta_stored, 0),
        metadata_elements_stored=zeros + meta_stored,
        score_macs=zeros + np.where(scored, 2 * head_dim * P * g, 0),
        attention_macs=(2 * head_dim * q_tokens).cpu().numpy().astype(np.int64),
    )


def measure_hybrid_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    retrieval_heads,
    config: SparseAttentionConfig,
    *,
    layer_idx: int | None = None,
    metadata: PageMetadata | None = None,
) -> DecodeAccess:
    """Measured access of :func:`~h2eal_core.attention.hybrid.hybrid_decode` on these inputs.

    All-False ``retrieval_heads`` measures a streaming layer, all-True a Quest layer.
    """
    mask = hybrid_token_mask(q, k, retrieval_heads, config, layer_idx=layer_idx, metadata=metadata)
    kinds = layer_head_kinds(retrieval_heads, config, layer_idx)
    return access_from_masks(kinds, mask, config, k.shape[-1], q.shape[1] // k.shape[1])
