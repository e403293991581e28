"""Closed-form KV accounting of one decode step: what each KV head reads, stores and computes.

This is the interface between the attention algorithm and the hardware model. The hardware model
consumes :class:`HeadAccess` records (tokens read and stored, page metadata, MACs); the attention
code produces the same quantities from real masks, and tests check that both agree.

Conventions (decode at one query token per query head, context of ``T`` tokens, the current
token included):

* ``dense``: reads and stores all ``T`` tokens.
* ``streaming``: stores and reads ``min(T, sink + local)`` tokens (first ``sink``, last ``local``).
* ``retrieval``: stores all ``T`` tokens plus page metadata (element-wise min and max key of each
  page: ``2 * head_dim`` elements per page). When ``T <= budget`` the head is dense and reads no
  metadata. Otherwise it reads the metadata of every page, scores them (``2 * head_dim`` MACs per
  page per query head), and reads the selected pages: ``budget_pages - 1`` full pages plus the
  current (last, possibly partial) page. With ``gqa="per_query_head"`` every query head of a group
  may select different pages; the closed form then gives the no-overlap upper bound.

MACs: ``attention_macs`` counts QK and PV products (``2 * head_dim`` per token read per query
head); ``score_macs`` counts Quest's page scoring. Element counts are per KV head; multiply by the
element size for bytes.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..validation import ParameterError, check_choice, check_fraction, check_positive_int
from .config import SparseAttentionConfig

HEAD_KINDS = ("dense", "streaming", "retrieval")


@dataclasses.dataclass(frozen=True)
class HeadAccess:
    """Per-KV-head work of one decode step (one layer, one KV head, its whole query group)."""

    kind: str
    context_len: int
    tokens_read: int
    tokens_stored: int
    metadata_elements_read: int
    metadata_elements_stored: int
    score_macs: int
    attention_macs: int
    pages_total: int  # pages of a retrieval head's context (0 for other kinds)
    pages_selected: int  # pages it reads this step

    def kv_bytes_read(self, head_dim: int, bytes_per_element: float = 2.0) -> float:
        """K and V bytes read: ``2 * tokens_read * head_dim * bytes``."""
        return 2.0 * self.tokens_read * head_dim * bytes_per_element

    def kv_bytes_stored(self, head_dim: int, bytes_per_element: float = 2.0) -> float:
        return 2.0 * self.tokens_stored * head_dim * bytes_per_element

    def metadata_bytes_read(self, bytes_per_element: float = 2.0) -> float:
        return self.metadata_elements_read * bytes_per_element

    def metadata_bytes_stored(self, bytes_per_element: float = 2.0) -> float:
        return self.metadata_elements_stored * bytes_per_element


def retrieval_tokens_read(context_len: int, config: SparseAttentionConfig, group_size: int = 1) -> int:
    """Tokens a retrieval head reads: dense below the budget, else the selected pages."""
    T = context_len
    if T <= config.budget:
        return T
    pages_total = math.ceil(T / config.page_size)
    last_page_len = T - (pages_total - 1) * config.page_size
    per_set = min(T, (config.budget_pages - 1) * config.page_size + last_page_len)
    if config.gqa == "per_query_head" and group_size > 1:
        # every query head may pick different pages; all share the current page (upper bound)
        return min(T, group_size * (per_set - last_page_len) + last_page_len)
    return per_set


def head_access(
    kind: str,
    context_len: int,
    config: SparseAttentionConfig,
    head_dim: int,
    group_size: int = 1,
) -> HeadAccess:
    """Closed-form access of one KV head of kind ``dense``, ``streaming`` or ``retrieval``."""
    check_choice("kind", kind, HEAD_KINDS)
    T = check_positive_int("context_len", context_len)
    check_positive_int("head_dim", head_dim)
    check_positive_int("group_size", group_size)
    pages_total = pages_selected = 0  # only retrieval heads are paged
    meta_read = meta_stored = score_macs = 0
    if kind == "dense":
        read = stored = T
    elif kind == "streaming":
        read = stored = min(T, config.sink + config.local)
    else:
        stored = T
        pages_total = pages_selected = math.ceil(T / config.page_size)
        meta_stored = 2 * head_dim * pages_total
        read = retrieval_tokens_read(T, config, group_size)
        if T > config.budget:
            meta_read = meta_stored
            score_macs = 2 * head_dim * pages_total * group_size
            pages_selected = min(pages_total, config.budget_pages)
            if config.gqa == "per_query_head" and group_size > 1:
                # no-overlap upper bound, consistent with retrieval_tokens_read: the current page is shared
                pages_selected = min(pages_total, group_size * (config.budget_pages - 1) + 1)
    return HeadAccess(
        kind=kind,
        context_len=T,
        tokens_read=read,
        tokens_stored=stored,
        metadata_elements_read=meta_read,
        metadata_elements_stored=meta_stored,
        score_macs=score_macs,
        attention_macs=2 * head_dim * read * group_size,
        pages_total=pages_total,
        pages_selected=pages_selected,
    )


def spread_retrieval_mask(n_layers: int, n_kv_heads: int, ratio: float) -> np.ndarray:
    """A deterministic ``[n_layers, n_kv_heads]`` retrieval-head mask with ``ratio`` of heads set.

    Used when no identified gates are available (an assumption, labelled as such by callers):
    ``round(ratio * n_layers * n_kv_heads)`` heads, spread evenly over the flattened
    (layer, head) order (Bresenham-style), so every layer gets its share even for MQA; row ``l``
    is rotated by ``l`` so that no KV-head index is always retrieval (balanced storage).
    """
    check_positive_int("n_layers", n_layers)
    check_positive_int("n_kv_heads", n_kv_heads)
    check_fraction("ratio", ratio)
    total = n_layers * n_kv_heads
    n_retrieval = int(round(ratio * total))
    idx = np.arange(total)
    mask = (np.floor((idx + 1) * n_retrieval / total) > np.floor(idx * n_retrieval / total)).reshape(n_layers, n_kv_heads)
    return np.stack([np.roll(row, layer) for layer, row in enumerate(mask)])


def head_kinds(retrieval_mask: np.ndarray, config: SparseAttentionConfig) -> np.ndarray:
    """Per (layer, KV head) kind strings: retrieval heads in the first ``dense_layers`` are dense."""
    mask = np.asarray(retrieval_mask, dtype=bool)
    if mask.ndim != 2:
        raise ParameterError("retrieval_mask", f"array of shape {mask.shape}", "a 2-D [layers, kv_heads] boolean array")
    kinds = np.where(mask, "retrieval", "streaming").astype(object)
    kinds[: config.dense_layers][mask[: config.dense_layers]] = "dense"
    return kinds


@dataclasses.dataclass(frozen=True)
class ModelAccess:
    """Per-(layer, KV head) access arrays for a whole model at one context length."""

    kinds: np.ndarray  # [L, Hkv] of str
    tokens_read: np.ndarray  # [L, Hkv] int
    tokens_stored: np.ndarray
    metadata_elements_read: np.ndarray
    metadata_elements_stored: np.ndarray
    score_macs: np.ndarray
    attention_macs: np.ndarray
    head_dim: int
    context_len: int

    def kv_bytes_read(self, bytes_per_element: float = 2.0) -> float:
        return float(2.0 * self.tokens_read.sum() * self.head_dim * bytes_per_element)

    def kv_bytes_stored(self, bytes_per_element: float = 2.0) -> float:
        return float(2.0 * self.tokens_stored.sum() * self.head_dim * bytes_per_element)

    @property
    def read_fraction(self) -> float:
        """KV tokens read relative to dense attention (the effective KV read fraction)."""
        return float(self.tokens_read.sum() / (self.tokens_read.size * self.context_len))

    @property
    def stored_fraction(self) -> float:
        """KV tokens stored relative to dense attention."""
        return float(self.tokens_stored.sum() / (self.tokens_stored.size * self.context_len))

    @property
    def retrieval_ratio(self) -> float:
        """Share of KV heads that are not streaming heads."""
        return float((self.kinds != "streaming").mean())


def model_access(
    n_layers: int,
    n_kv_heads: int,
    head_dim: int,
    group_size: int,
    context_len: int,
    config: SparseAttentionConfig,
    retrieval_mask: np.ndarray | None,
) -> ModelAccess:
    """Access of every (layer, KV head); ``retrieval_mask=None`` means dense attention everywhere."""
    check_positive_int("context_len", context_len)
    if retrieval_mask is None:
        kinds = np.full((n_layers, n_kv_heads), "dense", dtype=object)
    else:
        mask = np.asarray(retrieval_mask, dtype=bool)
        if mask.shape != (n_layers, n_kv_heads):
            raise ParameterError(
                "retrieval_mask", f"array of shape {mask.shape}", f"shape ({n_layers}, {n_kv_heads}) = (layers, kv_heads)"
            )
        kinds = head_kinds(mask, config)
    records = {k: head_access(k, context_len, config, head_dim, group_size) for k in set(kinds.ravel())}
    fields = ("tokens_read", "tokens_stored", "metadata_elements_read", "metadata_elements_stored", "score_macs", "attention_macs")
    arrays = {
        f: np.vectorize(lambda k, f=f: getattr(records[k], f), otypes=[np.int64])(kinds) for f in fields
    }
    return ModelAccess(kinds=kinds, head_dim=head_dim, context_len=context_len, **arrays)
