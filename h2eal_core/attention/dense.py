"""Dense and masked decode attention: the reference every sparse path is checked against.

One decode step: ``q [B, Hq, D]`` against ``k, v [B, Hkv, T, D]``; query head ``h`` uses KV head
``h // (Hq // Hkv)`` (GQA). The query heads of a group are batched against their KV head
(``[B, Hkv, g, D] @ [B, Hkv, D, T]``), so K and V are read once, never repeated per query head.
Arithmetic runs in float32 and the result comes back in the input dtype.
"""

from __future__ import annotations

import torch

from ._checks import check_qkv, check_scale, check_token_mask


def group_queries(q: torch.Tensor, n_kv_heads: int) -> torch.Tensor:
    """``[B, Hq, ...] -> [B, Hkv, g, ...]``: the query heads of each KV head side by side (a view)."""
    return q.unflatten(1, (n_kv_heads, q.shape[1] // n_kv_heads))


def attend(qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention of grouped queries ``[B, H, g, D]`` over ``k, v [B, H, S, D]`` (float32 out).

    ``mask`` (bool, broadcastable to ``[B, H, g, S]``) marks the keys each query may attend; a query
    with no allowed key gets a zero output (the convention of :func:`merge_partials`).
    """
    qf = qg.float() * scale
    # (K q^T)^T: a tall-skinny product streams K faster on CPU BLAS than q K^T
    scores = torch.matmul(k.float(), qf.transpose(-1, -2)).transpose(-1, -2)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if mask is not None:
        probs = torch.nan_to_num(probs, nan=0.0)  # rows without any allowed key
    return torch.matmul(probs, v.float())


def dense_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None) -> torch.Tensor:
    """Dense attention of one decode step: ``q [B, Hq, D]``, ``k, v [B, Hkv, T, D]`` -> ``[B, Hq, D]``."""
    shape = check_qkv(q, k, v)
    s = check_scale(scale, shape.head_dim)
    out = attend(group_queries(q, shape.n_kv_heads), k, v, s)
    return out.flatten(1, 2).to(q.dtype)


def expand_token_mask(mask: torch.Tensor, n_kv_heads: int, group_size: int) -> torch.Tensor:
    """A ``[B, H', T]`` token mask (H' in 1, Hkv, Hq) as ``[B, Hkv|1, g|1, T]`` for :func:`attend`."""
    if mask.shape[1] == n_kv_heads * group_size and group_size > 1:
        return mask.unflatten(1, (n_kv_heads, group_size))
    return mask.unsqueeze(2)


def masked_decode(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, *, scale: float | None = None
) -> torch.Tensor:
    """Decode attention restricted to the tokens where ``mask`` is True.

    ``mask``: bool ``[B|1, Hkv|Hq|1, T]`` (one token set per KV head, per query head, or shared).
    This reads the whole cache and is the mask-level reference for the sparse paths, which gather
    only the selected tokens instead.
    """
    shape = check_qkv(q, k, v)
    s = check_scale(scale, shape.head_dim)
    m = check_token_mask(mask, shape)
    out = attend(group_queries(q, shape.n_kv_heads), k, v, s, expand_token_mask(m, shape.n_kv_heads, shape.group_size))
    return out.flatten(1, 2).to(q.dtype)
