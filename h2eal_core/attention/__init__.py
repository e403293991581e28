"""Hybrid sparse attention: streaming heads + Quest retrieval heads, tiled merge, HF policies.

The Hugging Face names (``apply_policy``, ``generate_with_policy``, ``POLICIES``, ...) are loaded
on first use so that importing the accounting for the hardware model does not import transformers.
They come from :mod:`~h2eal_core.attention.hf`, a facade over the integration's three modules:
``hf_cache`` (the policy's KV cache), ``hf_policy`` (applying a policy: head kinds, the handle, the
attention function) and ``hf_generation`` (forward helpers, generation, the native-context guard).
"""

from .accounting import HeadAccess, ModelAccess, head_access, head_kinds, model_access, spread_retrieval_mask
from .config import GQA_MODES, SparseAttentionConfig
from .dense import DENSE_DECODE_KERNELS, dense_decode, masked_decode
from .hybrid import hybrid_decode, hybrid_token_mask, layer_head_kinds
from .masks import causal_mask, streaming_mask
from .measure import DecodeAccess, access_from_masks, measure_hybrid_decode
from .prefill import causal_prefill, hybrid_prefill, streaming_prefill
from .quest import (
    PageMetadata,
    PageSelection,
    quest_page_metadata,
    quest_page_scores,
    quest_select,
    quest_select_pages,
)
from .retrieval import GatherWorkspace, gather_pages, retrieval_decode
from .streaming import streaming_attend, streaming_decode, streaming_kv, streaming_token_mask
from .tiled import AttentionPartials, attention_partials, merge_partials, tiled_decode

_HF_NAMES = (
    "POLICIES",
    "GenerationResult",
    "PolicyCache",
    "PolicyHandle",
    "apply_policy",
    "check_context_length",
    "chunked_prefill",
    "generate_with_policy",
    "long_range_attention_mass",
    "policy_head_kinds",
)


def __getattr__(name):
    if name in _HF_NAMES:
        from . import hf

        return getattr(hf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AttentionPartials",
    "DENSE_DECODE_KERNELS",
    "DecodeAccess",
    "GQA_MODES",
    "GatherWorkspace",
    "HeadAccess",
    "ModelAccess",
    "PageMetadata",
    "PageSelection",
    "SparseAttentionConfig",
    "access_from_masks",
    "attention_partials",
    "causal_mask",
    "causal_prefill",
    "dense_decode",
    "gather_pages",
    "head_access",
    "head_kinds",
    "hybrid_decode",
    "hybrid_prefill",
    "hybrid_token_mask",
    "layer_head_kinds",
    "masked_decode",
    "measure_hybrid_decode",
    "merge_partials",
    "model_access",
    "quest_page_metadata",
    "quest_page_scores",
    "quest_select",
    "quest_select_pages",
    "retrieval_decode",
    "spread_retrieval_mask",
    "streaming_attend",
    "streaming_decode",
    "streaming_kv",
    "streaming_mask",
    "streaming_prefill",
    "streaming_token_mask",
    "tiled_decode",
    *_HF_NAMES,
]
