"""Page selectors: small dataclasses that map (queries, keys or page metadata, budget) to pages.

kvpress-style: each selector is a frozen dataclass with one method, :meth:`select`, returning the
:class:`~h2eal_core.attention.quest.PageSelection` of one retrieval decode step. A new scorer is a
new dataclass; the cache and the attention kernels do not change.

* :class:`QuestBoundSelector` (deployable): Quest's upper bound ``sum_c max(q_c m_c, q_c M_c)``
  from the per-page min/max keys (Tang et al., ICML 2024; SPEC 1.2). ``gqa="per_query_head"`` is
  what Quest's reference code does (it repeats the KV heads, so every query head selects its own
  pages); ``group_sum`` / ``group_max`` share one page set per KV head.
* :class:`OraclePageSelector` (analysis only, not deployable: it reads every key): the exact page
  ranking at the same budget, by the largest ``q . k`` inside each page (``rank="max_qk"``) or by
  the softmax attention mass of each page (``rank="attention_mass"``). It is an upper bound on what
  any page scorer can reach at that budget, so the gap between Quest's bound and the oracle shows
  where the bound loses accuracy.

Both keep the current (last) page and read a context of at most ``budget`` tokens densely, like
:func:`~h2eal_core.attention.quest.select_pages`.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..validation import ParameterError, check_choice
from .config import GQA_MODES
from .quest import PageMetadata, PageSelection, dense_selection, n_pages, quest_page_metadata, select_from_scores, select_pages

ORACLE_RANKS = ("max_qk", "attention_mass")


def _combine(scores: torch.Tensor, gqa: str) -> torch.Tensor:
    """``[B, H, g, P]`` per-query-head page scores -> ``[B, H, P]`` (group modes) or ``[B, H*g, P]``."""
    if gqa == "group_sum":
        return scores.sum(2)
    if gqa == "group_max":
        return scores.amax(2)
    return scores.flatten(1, 2)


@dataclasses.dataclass(frozen=True)
class QuestBoundSelector:
    """Quest's min/max upper-bound page scores, top ``ceil(budget / page_size) - 1`` pages + current."""

    gqa: str = "per_query_head"
    name: str = "quest_bound"
    needs_keys: bool = False  # scores from the page metadata only

    def __post_init__(self):
        check_choice("gqa", self.gqa, GQA_MODES)

    def select(self, qg: torch.Tensor, keys: torch.Tensor | None, metadata: PageMetadata | None,
               context_len: int, page_size: int, budget: int) -> PageSelection:
        """Pages of grouped queries ``qg [B, Hkv, g, D]`` (``keys [B, Hkv, T, D]`` only if no metadata)."""
        if metadata is None and context_len > budget:
            if keys is None:
                raise ParameterError("metadata", None, "page metadata or the keys to compute it from")
            metadata = quest_page_metadata(keys, page_size)
        return select_pages(qg, metadata, context_len, page_size, budget, self.gqa)  # the kernels' own path


@dataclasses.dataclass(frozen=True)
class OraclePageSelector:
    """Exact page ranking at the same budget (analysis only: it reads every key of the context)."""

    gqa: str = "per_query_head"
    rank: str = "max_qk"
    name: str = "oracle"
    needs_keys: bool = True

    def __post_init__(self):
        check_choice("gqa", self.gqa, GQA_MODES)
        check_choice("rank", self.rank, ORACLE_RANKS)

    def page_scores(self, qg: torch.Tensor, keys: torch.Tensor, page_size: int) -> torch.Tensor:
        """Exact per-query-head page scores ``[B, Hkv, g, P]`` (float32)."""
        B, H, g, D = qg.shape
        T = keys.shape[-2]
        P = n_pages(T, page_size)
        logits = torch.matmul(qg.float(), keys.float().transpose(-1, -2))  # [B, H, g, T]
        if self.rank == "attention_mass":
            probs = torch.softmax(logits / math.sqrt(D), dim=-1)
            padded = torch.nn.functional.pad(probs, (0, P * page_size - T), value=0.0)
            return padded.unflatten(-1, (P, page_size)).sum(-1)
        padded = torch.nn.functional.pad(logits, (0, P * page_size - T), value=float("-inf"))
        return padded.unflatten(-1, (P, page_size)).amax(-1)

    def select(self, qg: torch.Tensor, keys: torch.Tensor | None, metadata: PageMetadata | None,
               context_len: int, page_size: int, budget: int) -> PageSelection:
        B, H, g, _ = qg.shape
        per_q = self.gqa == "per_query_head"
        if context_len <= budget:
            return dense_selection(B, H * g if per_q else H, context_len, page_size, g, per_q, qg.device)
        if keys is None:
            raise ParameterError("keys", None, "the full keys [B, Hkv, T, D] (the oracle ranks pages exactly)")
        scores = _combine(self.page_scores(qg, keys[..., :context_len, :], page_size), self.gqa)
        return PageSelection(select_from_scores(scores, context_len, page_size, budget), context_len, page_size, g, per_q, dense=False)


SELECTORS = {"quest_bound": QuestBoundSelector, "oracle": OraclePageSelector}


def get_selector(selector, gqa: str = "per_query_head"):
    """A selector from its name (``quest_bound``, ``oracle``) or pass an instance through."""
    if hasattr(selector, "select") and not isinstance(selector, str):
        return selector
    cls = SELECTORS[check_choice("selector", selector, tuple(SELECTORS))]
    return cls(gqa=gqa)


def selection_recall(selection: PageSelection, reference: PageSelection) -> torch.Tensor:
    """``[B, S]``: share of ``reference``'s selected pages that ``selection`` also selected."""
    a, b = selection.page_mask(), reference.page_mask()
    if a.shape != b.shape:
        raise ParameterError("selection", tuple(a.shape), f"a page mask of the reference's shape {tuple(b.shape)}")
    return (a & b).sum(-1).float() / b.sum(-1).clamp(min=1).float()


__all__ = ["ORACLE_RANKS", "OraclePageSelector", "QuestBoundSelector", "SELECTORS", "get_selector", "selection_recall"]
