"""Streaming heads at decode: attend only the first ``sink`` and the last ``local`` tokens.

The decode query sits at position ``T - 1``; by :func:`~h2eal_core.attention.masks.streaming_mask`
it may attend keys ``k < sink`` or ``T - 1 - k < local``: two contiguous ranges of the cache.
:func:`streaming_attend` reads them as two views (no copy, no mask over the whole context): the
scores of both ranges are concatenated (``[g, sink + local]``, a few KB), one softmax normalises
them, and the output is the sum of the two ranges' ``P V``. A streaming head therefore reads
``min(T, sink + local)`` tokens, matching :func:`~h2eal_core.attention.accounting.head_access`.
A cache that stores only those tokens (``PolicyCache``) passes them as one contiguous view.
"""

from __future__ import annotations

import torch

from ..validation import check_nonnegative_int, check_positive_int
from ._checks import check_qkv, check_scale
from .dense import attend, dense_decode, group_queries
from .masks import streaming_mask


def streaming_ranges(context_len: int, sink: int, local: int) -> tuple[int, int]:
    """``(sink_end, window_start)``: a streaming head at decode keeps ``[0, sink_end)`` and ``[window_start, T)``."""
    sink_end = min(sink, context_len)
    window_start = max(sink_end, context_len - local)
    return sink_end, window_start


def streaming_token_mask(context_len: int, sink: int, local: int, device=None) -> torch.Tensor:
    """``[T]`` bool: the tokens a streaming head attends at the decode step of a ``T``-token context."""
    check_positive_int("context_len", context_len)
    pos = torch.arange(context_len, device=device)
    return streaming_mask(pos[-1:], pos, sink, local)[0]


def streaming_kv(k: torch.Tensor, v: torch.Tensor, sink: int, local: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sink and local-window tokens of ``k, v [B, H, T, D]`` (what a streaming head stores)."""
    T = k.shape[-2]
    sink_end, window_start = streaming_ranges(T, sink, local)
    if sink_end == window_start:  # the two ranges touch: one contiguous view
        return k, v
    ks = torch.cat((k[..., :sink_end, :], k[..., window_start:, :]), dim=-2)
    vs = torch.cat((v[..., :sink_end, :], v[..., window_start:, :]), dim=-2)
    return ks, vs


def streaming_attend(qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sink: int, local: int, scale: float) -> torch.Tensor:
    """Attention of grouped queries ``[B, H, g, D]`` over the sink + local tokens of ``k, v [B, H, T, D]``.

    Reads ``[0, sink_end)`` and ``[window_start, T)`` as views; float32 out. Inputs already checked.
    """
    T = k.shape[-2]
    sink_end, window_start = streaming_ranges(T, sink, local)
    if sink_end == window_start:  # the two ranges touch: the whole context
        return attend(qg, k, v, scale)
    if sink_end == 0:
        return attend(qg, k[..., window_start:, :], v[..., window_start:, :], scale)
    qf = qg.float() * scale
    ks, kw = k[..., :sink_end, :], k[..., window_start:, :]
    s_sink = torch.matmul(qf, ks.float().transpose(-1, -2))
    s_win = torch.matmul(qf, kw.float().transpose(-1, -2))
    probs = torch.softmax(torch.cat((s_sink, s_win), dim=-1), dim=-1)
    out = torch.matmul(probs[..., :sink_end], v[..., :sink_end, :].float())
    return out.add_(torch.matmul(probs[..., sink_end:], v[..., window_start:, :].float()))


def streaming_decode(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sink: int, local: int, *, scale: float | None = None
) -> torch.Tensor:
    """Decode attention over the sink + local tokens: ``q [B, Hq, D]``, ``k, v [B, Hkv, T, D]`` -> ``[B, Hq, D]``.

    Equal to :func:`dense_decode` when ``sink + local >= T``.
    """
    shape = check_qkv(q, k, v)
    check_nonnegative_int("sink", sink)
    check_positive_int("local", local)
    s = check_scale(scale, shape.head_dim)
    if sink + local >= shape.context_len:
        return dense_decode(q, k, v, scale=s)
    return streaming_attend(group_queries(q, shape.n_kv_heads), k, v, sink, local, s).flatten(1, 2).to(q.dtype)
