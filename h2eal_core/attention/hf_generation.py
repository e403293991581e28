"""Running a model under a policy: forward helpers, chunked prefill, greedy generation, a measurement.

Part of the Hugging Face integration (:mod:`h2eal_core.attention.hf` re-exports every name here).
This module holds what drives the model's forward passes once a policy is applied
(:func:`~h2eal_core.attention.hf_policy.apply_policy`):

* :func:`cache_kwarg`, :func:`forward_last_logits`, :func:`chunked_prefill`,
  :func:`eos_token_ids`: small helpers that work across transformers versions.
* :func:`generate_with_policy`: greedy generation under a policy with the decode-simulation
  protocol (prefill, then the prompt tail fed as decode steps, then new tokens), returning a
  :class:`GenerationResult` with the policy's read/stored statistics.
* :func:`check_context_length` (and :func:`native_context_length`): a context longer than the
  model's native maximum (``max_position_embeddings``) is refused before any forward pass, unless
  the caller allows it explicitly (``allow_beyond_native=True``).
* :func:`long_range_attention_mass`: a measurement that runs the ``full`` policy with an observer
  (the attention mass decode queries put outside sink + local).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging

import numpy as np
import torch

from ..validation import ParameterError, check_nonnegative_int, check_positive_int
from ._checks import describe
from .config import SparseAttentionConfig
from .hf_policy import ModelDims, apply_policy
from .masks import streaming_mask

logger = logging.getLogger(__name__)


# ---- forward helpers --------------------------------------------------------------------------


def cache_kwarg(model) -> str:
    """The forward keyword for the cache (``cache`` in transformers >= 5.x, else ``past_key_values``)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def forward_last_logits(model, input_ids: torch.Tensor, cache) -> torch.Tensor:
    """Run ``input_ids`` through the model with ``cache``; float32 logits of the last position ``[B, V]``."""
    kwargs = {cache_kwarg(model): cache, "use_cache": True}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        kwargs["logits_to_keep"] = 1
    return model(input_ids=input_ids, **kwargs).logits[:, -1].float()


def chunked_prefill(model, input_ids: torch.Tensor, cache, chunk_size: int | None = None) -> torch.Tensor:
    """Prefill ``input_ids [B, T]`` into ``cache`` in chunks; logits of the last token ``[B, V]``."""
    T = input_ids.shape[1]
    chunk = T if chunk_size is None else check_positive_int("prefill_chunk_size", chunk_size)
    logits = None
    for s in range(0, T, chunk):
        logits = forward_last_logits(model, input_ids[:, s : s + chunk], cache)
    return logits


def eos_token_ids(model) -> list[int]:
    """End-of-sequence token ids of the model's generation config (or its config); ``[]`` if none."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


# ---- the native context ----------------------------------------------------------------------


def native_context_length(model) -> int | None:
    """The model's native maximum context: its (text) config's ``max_position_embeddings``, or ``None``
    when the config declares none."""
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config(decoder=True)
    limit = getattr(cfg, "max_position_embeddings", None)
    return None if limit is None else int(limit)


def check_context_length(
    model, n_tokens: int, allow_beyond_native: bool = False, *, name: str = "context length", detail: str | None = None
) -> int:
    """Refuse a context of ``n_tokens`` positions beyond the model's native maximum; return ``n_tokens``.

    The native maximum is :func:`native_context_length` (``config.max_position_embeddings``): the
    positions the model declares it supports. Beyond it the rotary positions are extrapolated, so
    every method, full attention included, runs outside what the model was built for, and a study
    there measures the extrapolation rather than the policy. Such a context is refused with a
    one-line :class:`~h2eal_core.validation.ParameterError` unless ``allow_beyond_native=True``
    (then it is logged). A model whose config declares no maximum is not checked.

    Args:
        n_tokens: the positions the forward passes will reach (prompt and fed-back tokens).
        name: the parameter the error names (e.g. ``"lengths"`` for a study's sample lengths).
        detail: how ``n_tokens`` was counted, appended to the error.
    """
    n_tokens = check_positive_int(name, n_tokens)
    if not isinstance(allow_beyond_native, (bool, np.bool_)):
        raise ParameterError("allow_beyond_native", allow_beyond_native, "True or False")
    limit = native_context_length(model)
    if limit is None or n_tokens <= limit:
        return n_tokens
    if not allow_beyond_native:
        raise ParameterError(
            name, n_tokens,
            f"at most {limit} tokens, the model's native maximum (config.max_position_embeddings), "
            "or pass allow_beyond_native=True",
            detail,
        )
    logger.info("context of %d tokens beyond the model's native maximum %d (allow_beyond_native=True)", n_tokens, limit)
    return n_tokens


# ---- generation -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """Output of :func:`generate_with_policy`: ``sequences [B, T + new]``, ``new_tokens [B, new]``, stats."""

    sequences: torch.Tensor
    new_tokens: torch.Tensor
    stats: dict


def generate_with_policy(
    model,
    input_ids,
    policy: str,
    config: SparseAttentionConfig | None = None,
    retrieval_heads=None,
    max_new_tokens: int = 16,
    prefill_chunk_size: int | None = None,
    decode_prompt_tail: int = 0,
    selector=None,
    *,
    allow_beyond_native: bool = False,
) -> GenerationResult:
    """Greedy generation under a policy, with the decode-simulation protocol.

    The prompt minus its last ``decode_prompt_tail`` tokens is prefilled (in chunks of
    ``prefill_chunk_size``); the tail is then fed one token at a time as decode steps with the
    policy active (DuoAttention/Quest protocol), and ``max_new_tokens`` tokens are generated
    greedily (stopping when every sequence has produced an end-of-sequence token).
    ``selector`` chooses the retrieval heads' pages (see :func:`~h2eal_core.attention.hf_policy.apply_policy`).

    The forward passes reach ``T + max(max_new_tokens - 1, 0)`` positions (the last new token is
    not fed back); beyond the model's native maximum that is refused before any forward pass unless
    ``allow_beyond_native=True`` (see :func:`check_context_length`).
    """
    if not isinstance(input_ids, torch.Tensor):
        input_ids = torch.as_tensor(input_ids)
    if input_ids.ndim == 1:
        input_ids = input_ids[None]
    if input_ids.ndim != 2 or input_ids.shape[1] < 1 or input_ids.dtype not in (torch.int32, torch.int64):
        raise ParameterError("input_ids", describe(input_ids), "integer token ids of shape [T] or [B, T], T >= 1")
    check_nonnegative_int("max_new_tokens", max_new_tokens)
    T = input_ids.shape[1]
    tail = check_nonnegative_int("decode_prompt_tail", decode_prompt_tail)
    if tail > T:
        raise ParameterError("decode_prompt_tail", tail, f"at most the prompt length {T}")
    fed_back = max(max_new_tokens - 1, 0)
    check_context_length(
        model, T + fed_back, allow_beyond_native,
        detail=f"{T} prompt tokens + {fed_back} generated tokens fed back, max_new_tokens={max_new_tokens}",
    )
    device = next(model.parameters()).device
    ids = input_ids.to(device=device, dtype=torch.long)
    eos = torch.tensor(eos_token_ids(model), dtype=torch.long, device=device)
    new = []
    with apply_policy(model, policy, config, retrieval_heads, selector=selector) as handle, torch.inference_mode():
        cache = handle.new_cache()
        logits = chunked_prefill(model, ids[:, : T - tail], cache, prefill_chunk_size) if T > tail else None
        for i in range(T - tail, T):
            logits = forward_last_logits(model, ids[:, i : i + 1], cache)
        finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=device)
        for step in range(max_new_tokens):
            nxt = logits.argmax(dim=-1)
            if eos.numel():
                nxt = torch.where(finished, eos[0], nxt)
                finished |= torch.isin(nxt, eos)
            new.append(nxt)
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            logits = forward_last_logits(model, nxt[:, None], cache)
        stats = handle.stats()
    new_tokens = torch.stack(new, dim=1) if new else ids.new_zeros(ids.shape[0], 0)
    return GenerationResult(torch.cat((ids, new_tokens), dim=1), new_tokens, stats)


# ---- a measurement under the full policy ------------------------------------------------------


def long_range_attention_mass(
    model, input_ids: torch.Tensor, config: SparseAttentionConfig | None = None, n_queries: int = 1
) -> np.ndarray:
    """Per ``[layer, kv_head]``: attention mass that decode queries put outside sink + local.

    The prompt minus its last ``n_queries`` tokens is prefilled densely; each of those tokens is
    then fed as a decode step and its softmax attention (mean over the KV head's query heads and
    over the steps) is summed over the tokens a streaming head would drop. A high value marks a
    head that a streaming window would hurt: a measured, heuristic stand-in for identified gates.
    """
    config = SparseAttentionConfig() if config is None else config
    ids = torch.as_tensor(input_ids)
    ids = ids[None] if ids.ndim == 1 else ids
    T = ids.shape[1]
    check_positive_int("n_queries", n_queries)
    if n_queries >= T:
        raise ParameterError("n_queries", n_queries, f"less than the prompt length {T}")
    dims = ModelDims.of(model)
    mass = np.zeros((dims.n_layers, dims.n_kv_heads))

    def observe(layer, query, key, scale):
        if query.shape[2] != 1:
            return
        q = query[:, :, 0].float().unflatten(1, (dims.n_kv_heads, dims.group_size))  # [B, Hkv, g, D]
        probs = torch.softmax(scale * torch.einsum("bhgd,bhtd->bhgt", q, key.float()), dim=-1)
        n_keys = key.shape[-2]
        pos = torch.arange(n_keys, device=key.device)
        dropped = ~streaming_mask(pos[-1:], pos, config.sink, config.local)[0]
        mass[layer] += (probs * dropped).sum(-1).mean(dim=(0, 2)).cpu().numpy() / n_queries

    device = next(model.parameters()).device
    ids = ids.to(device=device, dtype=torch.long)
    with apply_policy(model, "full", config) as handle, torch.inference_mode():
        handle.add_observer(observe)
        cache = handle.new_cache()
        forward_last_logits(model, ids[:, : T - n_queries], cache)
        for i in range(T - n_queries, T):
            forward_last_logits(model, ids[:, i : i + 1], cache)
    return mass


__all__ = [
    "GenerationResult",
    "cache_kwarg",
    "check_context_length",
    "chunked_prefill",
    "eos_token_ids",
    "forward_last_logits",
    "generate_with_policy",
    "long_range_attention_mass",
    "native_context_length",
]
