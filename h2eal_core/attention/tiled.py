"""Parallel tiled attention (SPEC 1.4): per-tile partials merged exactly by log-sum-exp.

A tile of a head's attended tokens yields partials ``(m, l, o)``: the running max of the scores,
the sum of ``exp(score - m)`` and the unnormalised output ``sum exp(score - m) v`` (``d + 2``
numbers per query head, all that crosses the network-on-chip). Partials merge associatively:
``m = max m_i; l = sum e^(m_i - m) l_i; o = sum e^(m_i - m) o_i``, and the output is ``o / l``.
A tile whose tokens are all masked has ``m = -inf, l = 0, o = 0`` and drops out of the merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from ..validation import ParameterError, check_positive_int
from ._checks import check_qkv, check_scale, check_token_mask
from .dense import expand_token_mask, group_queries


class AttentionPartials(NamedTuple):
    """Float32 partials of one or more tiles: ``m, l [B, Hq]`` and ``o [B, Hq, D]``."""

    m: torch.Tensor
    l: torch.Tensor  # noqa: E741 (the name of the SPEC)
    o: torch.Tensor

    def output(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Normalised attention output ``o / l`` (zero where no token was attended)."""
        out = torch.where(self.l[..., None] > 0, self.o / self.l[..., None].clamp_min(1e-38), torch.zeros_like(self.o))
        return out if dtype is None else out.to(dtype)


def attention_partials(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
) -> AttentionPartials:
    """Partials of ``q [B, Hq, D]`` over one tile ``k, v [B, Hkv, t, D]`` (``mask [B|1, Hkv|Hq|1, t]``)."""
    shape = check_qkv(q, k, v)
    s = check_scale(scale, shape.head_dim)
    qg = group_queries(q.float() * s, shape.n_kv_heads)
    scores = torch.matmul(qg, k.float().transpose(-1, -2))  # [B, Hkv, g, t]
    if mask is not None:
        m4 = expand_token_mask(check_token_mask(mask, shape), shape.n_kv_heads, shape.group_size)
        scores = scores.masked_fill(~m4, float("-inf"))
    m = scores.amax(dim=-1)
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(scores - shift[..., None])
    l = p.sum(dim=-1)  # noqa: E741
    o = torch.matmul(p, v.float())
    return AttentionPartials(m.flatten(1, 2), l.flatten(1, 2), o.flatten(1, 2))


def merge_partials(partials: Sequence[AttentionPartials]) -> AttentionPartials:
    """Merge the partials of disjoint tiles by log-sum-exp (exact; the result merges again)."""
    parts = list(partials)
    if not parts or not all(isinstance(p, AttentionPartials) for p in parts):
        raise ParameterError("partials", f"{len(parts)} item(s)", "a non-empty sequence of AttentionPartials")
    if len(parts) == 1:
        return parts[0]
    ms = torch.stack([p.m for p in parts])
    m = ms.amax(dim=0)
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w = torch.where(torch.isfinite(ms), torch.exp(ms - shift), torch.zeros_like(ms))
    l = (w * torch.stack([p.l for p in parts])).sum(dim=0)  # noqa: E741
    o = (w[..., None] * torch.stack([p.o for p in parts])).sum(dim=0)
    return AttentionPartials(m, l, o)


def tiled_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tile_size: int,
    mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
) -> torch.Tensor:
    """Decode attention computed tile by tile (``tile_size`` tokens) and merged: ``[B, Hq, D]``.

    Equal to :func:`dense_decode` (or :func:`masked_decode` with ``mask``) to float tolerance.
    """
    shape = check_qkv(q, k, v)
    check_positive_int("tile_size", tile_size)
    if mask is not None:
        mask = check_token_mask(mask, shape)
    parts = [
        attention_partials(
            q, k[..., t : t + tile_size, :], v[..., t : t + tile_size, :],
            None if mask is None else mask[..., t : t + tile_size], scale=scale,
        )
        for t in range(0, shape.context_len, tile_size)
    ]
    return merge_partials(parts).output(q.dtype)
