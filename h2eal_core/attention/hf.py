"""Hugging Face integration: sparse-attention policies on a loaded causal LM, without model code.

This module is the integration's single import point; the code lives in three modules split
along its seams:

* :mod:`~h2eal_core.attention.hf_cache`: the storage. :class:`PolicyCache` (a
  ``transformers.Cache``) and its :class:`PolicyCacheLayer`, which store only what the policy reads
  (sink + local tokens for streaming heads, the whole context and Quest page metadata for
  retrieval heads, preallocated and written in place), the per-layer head plan
  (:class:`LayerPlan`) and the :class:`LayerStep` that a layer's ``update`` hands to the attention
  function.
* :mod:`~h2eal_core.attention.hf_policy`: the policy. :func:`apply_policy` and its
  :class:`PolicyHandle` (a context manager that registers the attention function with
  ``transformers.AttentionInterface``, runs the dense/streaming/retrieval decode kernels, and
  counts reads and storage), the policy -> head-kind map (:data:`POLICIES`,
  :func:`policy_head_kinds`, :func:`check_retrieval_heads`) and :class:`ModelDims`.
* :mod:`~h2eal_core.attention.hf_generation`: running the model. :func:`generate_with_policy`
  (greedy generation with the decode-simulation protocol), the forward helpers
  (:func:`forward_last_logits`, :func:`chunked_prefill`, :func:`cache_kwarg`,
  :func:`eos_token_ids`), the native-context guard (:func:`check_context_length`) and
  :func:`long_range_attention_mass`.

Every name importable from this module before the split still is (public and private: callers and
tests use ``_original_function``, ``_take``, ``CAPACITY_QUANTUM``, the kernels ``attend``,
``sdpa``, ...). Setting one of these names on this module (as ``benchmarks/bench_generation.py``
does to time the kernels, or a test does with ``monkeypatch.setattr(hf, "CAPACITY_QUANTUM", 8)``)
also sets it in every split module that binds it, so the patch reaches the code that reads it,
as it did when everything lived here. Patch the split modules directly to leave this one alone.
"""

from __future__ import annotations

import logging
import sys
import types

from . import hf_cache, hf_generation, hf_policy
from .hf_cache import (
    CAPACITY_GROWTH,
    CAPACITY_QUANTUM,
    Cache,
    CacheLayerMixin,
    LayerPlan,
    LayerStep,
    PageMetadata,
    PolicyCache,
    PolicyCacheLayer,
    _cat,
    _plan_heads,
    _reserve,
    _step_heads,
    _take,
    quest_page_metadata,
)
from .hf_generation import (
    GenerationResult,
    cache_kwarg,
    check_context_length,
    check_nonnegative_int,
    chunked_prefill,
    eos_token_ids,
    forward_last_logits,
    generate_with_policy,
    long_range_attention_mass,
    native_context_length,
)
from .hf_policy import (
    _ACTIVE,
    DENSE_DECODE_KERNEL_CHOICES,
    POLICIES,
    POLICIES_WITH_HEADS,
    STREAMING_QUERY_CHUNK,
    GatherWorkspace,
    ModelDims,
    ParameterError,
    PolicyHandle,
    QuestBoundSelector,
    SparseAttentionConfig,
    _attention_modules,
    _head_index,
    _original_function,
    _paired_slices,
    _policy_attention,
    _refuse_padding,
    _register,
    apply_policy,
    attend,
    attend_selection,
    causal_mask,
    check_choice,
    check_positive_int,
    check_retrieval_heads,
    describe,
    get_selector,
    head_kinds,
    heads_index,
    n_pages,
    policy_head_kinds,
    sdpa,
    streaming_mask,
    streaming_prefill,
)

logger = logging.getLogger(__name__)

#: The modules this facade re-exports from.
_PARTS = (hf_cache, hf_policy, hf_generation)
#: Re-exported names (bound here to the same object as in at least one part): setting one on this
#: module sets it in every part that binds it.
_FORWARDED = frozenset(
    name
    for name, value in list(globals().items())
    if not name.startswith("__")
    and name != "annotations"  # the __future__ feature, not a name of the integration
    and not isinstance(value, types.ModuleType)
    and any(name in vars(part) and vars(part)[name] is value for part in _PARTS)
)


class _Facade(types.ModuleType):
    """This module's type: attribute writes of re-exported names reach the modules that use them."""

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if name in _FORWARDED:
            for part in _PARTS:
                if name in vars(part):
                    setattr(part, name, value)


sys.modules[__name__].__class__ = _Facade


__all__ = [
    "POLICIES",
    "GenerationResult",
    "LayerStep",
    "PolicyCache",
    "PolicyCacheLayer",
    "PolicyHandle",
    "apply_policy",
    "check_context_length",
    "chunked_prefill",
    "generate_with_policy",
    "long_range_attention_mass",
    "native_context_length",
    "policy_head_kinds",
]
