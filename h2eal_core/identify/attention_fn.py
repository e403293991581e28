"""The gated attention used to train head gates, plugged in through ``transformers.AttentionInterface``.

One function is registered under :data:`ATTN_NAME`; ``model.set_attn_implementation(ATTN_NAME)``
makes every attention layer call it with the layer's post-RoPE ``query [B, Hq, T, d]``, ``key`` and
``value [B, Hkv, S, d]``. What it computes depends on the active :class:`GateContext` (a context
manager; no model code is copied or patched):

* ``mode="teacher"``: causal full attention; with ``record=True`` the per-layer outputs are kept
  (detached) for the student's full branch.
* ``mode="student"``: per KV head ``alpha * full + (1 - alpha) * streaming``, the gate shared by
  the head's query group. ``full`` is either the recorded teacher output of that layer
  (``full_branch="teacher"``, DuoAttention's code) or causal attention on the student's own
  activations (``full_branch="student"``, the formula as the paper writes it). ``streaming``
  attends the first ``sink`` and the last ``recent`` tokens (token-exact mask,
  :func:`h2eal_core.attention.masks.streaming_mask`; DuoAttention's default trains with 128-token
  block granularity, its SDPA option with this exact mask).
* ``mode="measure"``: causal full attention, and the share of attention mass that the last
  ``n_queries`` queries put on the sink + local window is accumulated per layer and query head.

Without an active context the function is plain causal attention. Training runs without a KV cache
(``T == S``), batch 1, no padding.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.nn.functional as F

from ..attention.masks import streaming_mask

ATTN_NAME = "h2eal_gate_training"
FULL_BRANCHES = ("teacher", "student")


@dataclasses.dataclass
class GateContext:
    """State read by the registered attention function while a forward pass runs."""

    mode: str = "teacher"  # teacher | student | measure
    alpha: torch.Tensor | None = None  # [layers, kv_heads] (student)
    sink: int = 128
    recent: int = 256
    full_branch: str = "teacher"
    record: bool = False
    teacher_outputs: dict = dataclasses.field(default_factory=dict)
    # measure mode
    n_queries: int = 64
    mass_sum: dict = dataclasses.field(default_factory=dict)  # layer -> [Hq] float64 sums
    mass_count: dict = dataclasses.field(default_factory=dict)


_ACTIVE: list[GateContext] = []


@contextlib.contextmanager
def gate_context(ctx: GateContext):
    """Activate ``ctx`` for the forward passes run inside the block."""
    _ACTIVE.append(ctx)
    try:
        yield ctx
    finally:
        _ACTIVE.pop()


def _causal(query, key, value, scaling):
    T, S = query.shape[2], key.shape[2]
    if T == S:
        return F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling, enable_gqa=True)
    # queries are the last T of S positions (not used in training; kept for completeness)
    q_pos = torch.arange(S - T, S, device=query.device)
    mask = q_pos[:, None] >= torch.arange(S, device=query.device)[None, :]
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling, enable_gqa=True)


def _streaming(query, key, value, scaling, sink, recent):
    T, S = query.shape[2], key.shape[2]
    q_pos = torch.arange(S - T, S, device=query.device)
    mask = streaming_mask(q_pos, torch.arange(S, device=query.device), sink, recent)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling, enable_gqa=True)


def _measure(ctx: GateContext, layer: int, query, key, scaling):
    """Accumulate, per query head, the attention mass of the last queries on sink + local."""
    T, S = query.shape[2], key.shape[2]
    n = min(ctx.n_queries, T)
    q = query[:, :, T - n :].float()
    g = query.shape[1] // key.shape[1]
    k = key.float().repeat_interleave(g, dim=1)
    q_pos = torch.arange(S - n, S, device=query.device)
    k_pos = torch.arange(S, device=query.device)
    scores = (q @ k.transpose(-1, -2)) * scaling
    causal = k_pos[None, :] <= q_pos[:, None]
    probs = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
    window = streaming_mask(q_pos, k_pos, ctx.sink, ctx.recent)
    mass = (probs * window).sum(-1)  # [B, Hq, n]
    total = mass.sum(dim=(0, 2)).double().cpu()
    ctx.mass_sum[layer] = ctx.mass_sum.get(layer, 0) + total
    ctx.mass_count[layer] = ctx.mass_count.get(layer, 0) + mass.shape[0] * mass.shape[2]


def gated_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """AttentionInterface function (see the module docstring). Returns ``(out [B, T, Hq, d], None)``."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    ctx = _ACTIVE[-1] if _ACTIVE else None
    layer = int(module.layer_idx)
    if ctx is None or ctx.mode in ("teacher", "measure"):
        out = _causal(query, key, value, scaling)
        if ctx is not None and ctx.mode == "teacher" and ctx.record:
            ctx.teacher_outputs[layer] = out.detach()
        if ctx is not None and ctx.mode == "measure":
            with torch.no_grad():
                _measure(ctx, layer, query, key, scaling)
        return out.transpose(1, 2).contiguous(), None
    if ctx.mode != "student":
        raise ValueError(f"unknown gate-context mode {ctx.mode!r}")
    if ctx.full_branch == "teacher":
        full = ctx.teacher_outputs[layer]
    else:
        full = _causal(query, key, value, scaling)
    stream = _streaming(query, key, value, scaling, ctx.sink, ctx.recent)
    g = query.shape[1] // key.shape[1]
    a = ctx.alpha[layer].clamp(0.0, 1.0).repeat_interleave(g).to(stream.dtype).view(1, -1, 1, 1)
    out = a * full + (1.0 - a) * stream
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register the gated attention with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_NAME, gated_attention_forward)
    return ATTN_NAME


@contextlib.contextmanager
def gated_attention(model):
    """Switch ``model`` to the gated attention inside the block, restoring its implementation after."""
    name = register()
    previous = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        yield model
    finally:
        model.set_attn_implementation(previous)
