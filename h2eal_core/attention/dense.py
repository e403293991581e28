"""Dense and masked decode attention: the reference every sparse path is checked against.

One decode step: ``q [B, Hq, D]`` against ``k, v [B, Hkv, T, D]``; query head ``h`` uses KV head
``h // (Hq // Hkv)`` (GQA). The query heads of a group are batched against their KV head, so K and
V are read once, never repeated per query head.

:func:`dense_decode` runs one of :data:`DENSE_DECODE_KERNELS` (all compute the same attention; the
benchmark ``benchmarks/bench_attention.py`` times every one in the same run). The default,
``sdpa_grouped``, hands the ``g`` query heads of a KV head to ``scaled_dot_product_attention`` as
``g`` query *rows* of that head (``[B, Hkv, g, D]`` against ``[B, Hkv, T, D]``, no mask): the fused
kernel (flash attention on CPU and CUDA) streams K and V once per KV head, without materialising
the ``[Hq, T]`` scores. This is what transformers does for a single decode token (``pack_gqa``).
Arithmetic accumulates in float32 and the result comes back in the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..validation import check_choice
from ._checks import check_qkv, check_scale, check_token_mask


def group_queries(q: torch.Tensor, n_kv_heads: int) -> torch.Tensor:
    """``[B, Hq, ...] -> [B, Hkv, g, ...]``: the query heads of each KV head side by side (a view)."""
    return q.unflatten(1, (n_kv_heads, q.shape[1] // n_kv_heads))


def sdpa_grouped(qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Fused attention of grouped queries ``[B, H, g, D]`` over ``k, v [B, H, S, D]`` (input dtype out).

    The ``g`` query heads of a KV head are the ``g`` query rows of one SDPA head; with no mask and
    ``is_causal=False`` every row attends every key, which is exactly decode attention.
    """
    if qg.dtype != k.dtype:
        qg = qg.to(k.dtype)
    return F.scaled_dot_product_attention(qg, k, v, scale=scale)


def attend(qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention of grouped queries ``[B, H, g, D]`` over ``k, v [B, H, S, D]`` (float32 out).

    Without ``mask`` this is the fused kernel :func:`sdpa_grouped`. ``mask`` (bool, broadcastable to
    ``[B, H, g, S]``) marks the keys each query may attend; a query with no allowed key gets a zero
    output (the convention of :func:`merge_partials`).
    """
    if mask is None:
        return sdpa_grouped(qg, k, v, scale).float()
    qf = qg.float() * scale
    scores = torch.matmul(qf, k.float().transpose(-1, -2))
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)  # rows without any allowed key
    return torch.matmul(probs, v.float())


# ---- dense decode kernels ------------------------------------------------------------------------
# Each maps (q [B, Hq, D], k, v [B, Hkv, T, D], scale) -> [B, Hq, D] in the input dtype. They are the
# dense baselines of the benchmark: every implementation of the same attention that torch offers,
# so that a sparse speedup is reported against the fastest of them, measured in the same run.


def _kernel_sdpa_grouped(q, k, v, scale):
    """Fused SDPA, the query heads of a group as query rows (transformers' ``pack_gqa`` decode path)."""
    return sdpa_grouped(group_queries(q, k.shape[1]), k, v, scale).flatten(1, 2)


def _kernel_sdpa_gqa(q, k, v, scale):
    """Fused SDPA with ``enable_gqa=True`` on ``[B, Hq, 1, D]`` queries (torch's documented GQA path,
    what transformers' ``sdpa`` attention uses when there is no mask)."""
    return F.scaled_dot_product_attention(q.unsqueeze(2), k, v, scale=scale, enable_gqa=q.shape[1] != k.shape[1]).squeeze(2)


def _kernel_grouped_matmul(q, k, v, scale):
    """Plain grouped matmul + softmax: ``softmax(q_g K^T) V`` per KV head, float32 (eager attention
    without ``repeat_kv``)."""
    qg = group_queries(q, k.shape[1]).float() * scale
    probs = torch.softmax(torch.matmul(qg, k.float().transpose(-1, -2)), dim=-1)
    return torch.matmul(probs, v.float()).flatten(1, 2).to(q.dtype)


def _kernel_grouped_matmul_kq(q, k, v, scale):
    """Grouped matmul with the scores as ``(K q_g^T)^T`` (a tall-skinny product; this repository's
    dense decode before issue 12)."""
    qg = group_queries(q, k.shape[1]).float() * scale
    scores = torch.matmul(k.float(), qg.transpose(-1, -2)).transpose(-1, -2)
    return torch.matmul(torch.softmax(scores, dim=-1), v.float()).flatten(1, 2).to(q.dtype)


def _kernel_einsum(q, k, v, scale):
    """``torch.einsum`` formulation (what a reader would write from the formula), float32."""
    qg = group_queries(q, k.shape[1]).float() * scale
    probs = torch.softmax(torch.einsum("bhgd,bhtd->bhgt", qg, k.float()), dim=-1)
    return torch.einsum("bhgt,bhtd->bhgd", probs, v.float()).flatten(1, 2).to(q.dtype)


#: Dense decode implementations by name; :func:`dense_decode` uses :data:`DEFAULT_DENSE_KERNEL`.
DENSE_DECODE_KERNELS = {
    "sdpa_grouped": _kernel_sdpa_grouped,
    "sdpa_gqa": _kernel_sdpa_gqa,
    "grouped_matmul": _kernel_grouped_matmul,
    "grouped_matmul_kq": _kernel_grouped_matmul_kq,
    "einsum": _kernel_einsum,
}
#: The fused kernel: the fastest on the development CPU at 8K-128K (benchmarks/README.md) and the
#: flash-attention path on CUDA.
DEFAULT_DENSE_KERNEL = "sdpa_grouped"


def dense_decode(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None, kernel: str = DEFAULT_DENSE_KERNEL
) -> torch.Tensor:
    """Dense attention of one decode step: ``q [B, Hq, D]``, ``k, v [B, Hkv, T, D]`` -> ``[B, Hq, D]``.

    ``kernel`` names one of :data:`DENSE_DECODE_KERNELS` (same result to float tolerance).
    """
    shape = check_qkv(q, k, v)
    s = check_scale(scale, shape.head_dim)
    fn = DENSE_DECODE_KERNELS[check_choice("kernel", kernel, tuple(DENSE_DECODE_KERNELS))]
    return fn(q, k, v, s).to(q.dtype)


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
