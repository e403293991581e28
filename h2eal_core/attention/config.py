"""SparseAttentionConfig: every knob of the hybrid sparse attention, validated on construction.

Defaults follow SPEC section 1 (reconstructed; the paper's own values are not available):
streaming heads keep ``sink`` + ``local`` tokens (DuoAttention's deployment 64/256), retrieval
heads read Quest-selected pages of ``page_size`` tokens up to ``budget`` tokens (Quest's page 16,
a 2048-token budget), GQA groups share one page set (``group_sum``), and the retrieval-head ratio
defaults by attention type (DuoAttention: 25% for MHA, 50% for GQA/MQA).
"""

from __future__ import annotations

import dataclasses
import math

from ..validation import check_choice, check_fraction, check_nonnegative_int, check_positive_int

GQA_MODES = ("group_sum", "group_max", "per_query_head")

#: Default share of retrieval heads by attention type (DuoAttention's deployment ratios).
DEFAULT_RETRIEVAL_RATIO = {"MHA": 0.25, "GQA": 0.5, "MQA": 0.5}


@dataclasses.dataclass(frozen=True)
class SparseAttentionConfig:
    """Hyper-parameters of hybrid sparse attention (streaming + Quest retrieval heads).

    Attributes:
        sink: attention-sink tokens kept by streaming heads (first tokens of the context).
        local: most recent tokens kept by streaming heads (the current token included).
        page_size: tokens per Quest page.
        budget: tokens a retrieval head reads per decode step; ``ceil(budget / page_size)`` pages,
            the current page included. A context of at most ``budget`` tokens is read densely.
        gqa: how the query heads of a GQA group choose pages: ``group_sum`` (sum their page scores,
            one page set per KV head), ``group_max`` (max of their scores) or ``per_query_head``.
        dense_layers: the first ``dense_layers`` layers read retrieval heads densely (Quest keeps
            2); streaming heads stay streaming there.
        retrieval_ratio: share of KV heads that are retrieval heads; ``None`` means the default
            for the model's attention type (:data:`DEFAULT_RETRIEVAL_RATIO`).
    """

    sink: int = 64
    local: int = 256
    page_size: int = 16
    budget: int = 2048
    gqa: str = "group_sum"
    dense_layers: int = 0
    retrieval_ratio: float | None = None

    def __post_init__(self):
        check_nonnegative_int("sink", self.sink)
        check_positive_int("local", self.local)
        check_positive_int("page_size", self.page_size)
        check_positive_int("budget", self.budget)
        check_choice("gqa", self.gqa, GQA_MODES)
        check_nonnegative_int("dense_layers", self.dense_layers)
        if self.retrieval_ratio is not None:
            check_fraction("retrieval_ratio", self.retrieval_ratio)

    @property
    def budget_pages(self) -> int:
        """Pages a retrieval head selects per decode step (the current page included)."""
        return math.ceil(self.budget / self.page_size)

    @property
    def streaming_window(self) -> int:
        """Tokens a streaming head keeps: sink + local."""
        return self.sink + self.local

    def retrieval_ratio_for(self, attention_type: str) -> float:
        """The configured ratio, or the default for ``attention_type`` (MHA, GQA, MQA)."""
        if self.retrieval_ratio is not None:
            return self.retrieval_ratio
        return DEFAULT_RETRIEVAL_RATIO[check_choice("attention_type", attention_type, tuple(DEFAULT_RETRIEVAL_RATIO))]

    def replace(self, **changes) -> SparseAttentionConfig:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
