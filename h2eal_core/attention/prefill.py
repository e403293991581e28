"""Prefill (many query tokens at once) under each head kind, chunked for long prompts.

Queries are the last ``n`` of the ``T`` keys (self-attention over a prompt, possibly after a
cached prefix). Dense and retrieval heads attend causally (Quest is decode-only). Streaming heads
attend causally within sink + local (:func:`~h2eal_core.attention.masks.streaming_mask`); their
queries are processed in chunks of ``chunk_size`` and each chunk only sees the sink tokens and the
``local + chunk_size`` keys before it, so a streaming head's prefill costs
``O(n * (sink + local + chunk_size))`` instead of ``O(n * T)`` (DuoAttention's chunked prefill).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..validation import ParameterError, check_nonnegative_int, check_positive_int
from ._checks import check_head_flags, check_qkv, check_scale, describe
from .config import SparseAttentionConfig
from .hybrid import head_groups, layer_head_kinds
from .masks import causal_mask, streaming_mask


def sdpa(q, k, v, scale: float, mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
    """``scaled_dot_product_attention`` with GQA (query head ``h`` uses KV head ``h // g``)."""
    if q.shape[1] != k.shape[1]:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)


def _check_prefill(q, k, v, scale):
    shape = check_qkv(q, k, v, q_layout="[B, Hq, n, D]")
    n = q.shape[2]
    if n < 1 or n > shape.context_len:
        raise ParameterError("q", describe(q), f"1 to T={shape.context_len} query tokens (the last n of the keys)")
    return shape, n, check_scale(scale, shape.head_dim)


def _key_positions(key_positions, T: int, device) -> torch.Tensor:
    if key_positions is None:
        return torch.arange(T, device=device)
    kp = torch.as_tensor(key_positions, device=device)
    if kp.shape != (T,) or kp.dtype not in (torch.int32, torch.int64) or (T > 1 and bool((kp[1:] <= kp[:-1]).any())):
        raise ParameterError("key_positions", describe(key_positions), f"{T} strictly increasing integer positions (one per key)")
    return kp.long()


def causal_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None) -> torch.Tensor:
    """Causal attention of the last ``n`` tokens: ``q [B, Hq, n, D]``, ``k, v [B, Hkv, T, D]`` -> ``[B, Hq, n, D]``."""
    shape, n, s = _check_prefill(q, k, v, scale)
    T = shape.context_len
    if n == T:
        return sdpa(q, k, v, s, is_causal=True)
    pos = torch.arange(T, device=q.device)
    return sdpa(q, k, v, s, mask=causal_mask(pos[T - n :], pos))


def streaming_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sink: int,
    local: int,
    *,
    chunk_size: int | None = None,
    key_positions: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Streaming-head prefill: ``q [B, Hq, n, D]``, ``k, v [B, Hkv, T, D]`` -> ``[B, Hq, n, D]``.

    Args:
        chunk_size: queries per chunk (default: all at once).
        key_positions: token positions of the keys, strictly increasing (default ``0..T-1``); lets a
            cache that keeps only sink + window tokens pass them with their original positions.
    """
    shape, n, s = _check_prefill(q, k, v, scale)
    check_nonnegative_int("sink", sink)
    check_positive_int("local", local)
    chunk = n if chunk_size is None else check_positive_int("chunk_size", chunk_size)
    T = shape.context_len
    kpos = _key_positions(key_positions, T, q.device)
    qpos_all = kpos[T - n :]
    n_sink = int(torch.searchsorted(kpos, torch.tensor(sink, device=kpos.device)))
    outs = []
    for c in range(0, n, chunk):
        qpos = qpos_all[c : c + chunk]
        lo = int(torch.searchsorted(kpos, torch.tensor(int(qpos[0]) - local + 1, device=kpos.device)))
        hi = T - n + c + qpos.shape[0]  # keys up to the chunk's last query
        if lo <= n_sink:
            ks, vs, kp = k[..., :hi, :], v[..., :hi, :], kpos[:hi]
        else:
            ks = torch.cat((k[..., :n_sink, :], k[..., lo:hi, :]), dim=-2)
            vs = torch.cat((v[..., :n_sink, :], v[..., lo:hi, :]), dim=-2)
            kp = torch.cat((kpos[:n_sink], kpos[lo:hi]))
        outs.append(sdpa(q[:, :, c : c + chunk], ks, vs, s, mask=streaming_mask(qpos, kp, sink, local)))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


def hybrid_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    retrieval_heads,
    config: SparseAttentionConfig,
    *,
    chunk_size: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Prefill of a hybrid layer: retrieval heads causal (dense), streaming heads sink + local."""
    shape, n, s = _check_prefill(q, k, v, scale)
    if not isinstance(config, SparseAttentionConfig):
        raise ParameterError("config", describe(config), "a SparseAttentionConfig")
    flags = check_head_flags("retrieval_heads", retrieval_heads, shape.n_kv_heads)
    g = shape.group_size
    qg = q.unflatten(1, (shape.n_kv_heads, g))
    out = torch.empty_like(qg)
    for kind, idx in head_groups(layer_head_kinds(flags, config), q.device).items():
        qi = qg[:, idx].flatten(1, 2)
        if kind == "streaming":
            o = streaming_prefill(qi, k[:, idx], v[:, idx], config.sink, config.local, chunk_size=chunk_size, scale=s)
        else:
            o = causal_prefill(qi, k[:, idx], v[:, idx], scale=s)
        out[:, idx] = o.unflatten(1, (-1, g))
    return out.flatten(1, 2)
