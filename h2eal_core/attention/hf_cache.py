"""The policy's KV cache: a ``transformers.Cache`` that stores only what a sparse-attention policy reads.

Part of the Hugging Face integration (:mod:`h2eal_core.attention.hf` re-exports every name here).
This module holds the storage side:

* :class:`LayerPlan`: the KV heads of each kind (dense, streaming, retrieval) in one layer.
* :class:`PolicyCache` (``handle.new_cache()``) and its :class:`PolicyCacheLayer`: layers that
  really store only sink + local tokens for streaming heads, the whole context for dense and
  retrieval heads, and Quest page metadata (min/max key per page) for retrieval heads. Everything
  is preallocated and written in place (no copy of the cache per token): growing full-context
  buffers (:func:`_reserve`, :data:`CAPACITY_GROWTH`, :data:`CAPACITY_QUANTUM`), the page metadata
  in the contiguous ``[pages, 2, D]`` layout, and a sink + window ring for streaming heads, which a
  decode step reads as one contiguous view.
* Hand-off: a layer's ``update`` (called by the model right before attention) leaves a
  :class:`LayerStep` (the per-head parts: full-context K/V, the streaming heads' sink + window K/V
  with their token positions, the page metadata) in the policy handle under the layer index, and
  returns a key tensor that the attention function
  (:meth:`~h2eal_core.attention.hf_policy.PolicyHandle.attention`) recognises by identity.

The cache knows its handle only through the attributes it reads (``active``, ``kinds``,
``config``, ``dims``, ``_handoff``, ``_record_storage``), so this module does not import the
policy module at run time.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

import torch

from ..validation import ParameterError
from ._checks import describe
from .config import SparseAttentionConfig
from .quest import PageMetadata, n_pages, quest_page_metadata

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from .hf_policy import PolicyHandle


# ---- the heads of each kind in a layer ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """The KV heads of each kind in one layer (head indices, ascending)."""

    kinds: tuple[str, ...]

    def heads(self, kind: str) -> list[int]:
        return list(_plan_heads(self.kinds, kind))

    @property
    def full_heads(self) -> list[int]:
        """Heads that store the whole context (dense and retrieval)."""
        return [h for h, k in enumerate(self.kinds) if k != "streaming"]

    def step_heads(self, decode_sparse: bool) -> tuple[list[int], list[int], list[int]]:
        """(dense, streaming, retrieval) heads of one attention call; retrieval heads read densely
        unless ``decode_sparse`` (a decode step whose context exceeds the budget)."""
        return _step_heads(self.kinds, decode_sparse)


@functools.lru_cache(maxsize=4096)
def _plan_heads(kinds: tuple[str, ...], kind: str) -> tuple[int, ...]:
    return tuple(h for h, k in enumerate(kinds) if k == kind)


@functools.lru_cache(maxsize=4096)
def _step_heads(kinds: tuple[str, ...], decode_sparse: bool) -> tuple[list[int], list[int], list[int]]:
    retrieval = list(_plan_heads(kinds, "retrieval")) if decode_sparse else []
    streaming = list(_plan_heads(kinds, "streaming"))
    dense = [h for h in range(len(kinds)) if h not in retrieval and h not in streaming]
    return dense, streaming, retrieval


# ---- the cache --------------------------------------------------------------------------------


@dataclasses.dataclass
class LayerStep:
    """What one layer's attention call needs, handed from the cache ``update`` to the attention function.

    ``full_k/full_v [B, F, T, D]`` hold the heads ``full_rows`` (KV head -> row) over the whole
    context (views of the layer's buffers); ``stream_k/stream_v [B, S, s, D]`` the streaming heads
    ``stream_rows`` over the tokens at ``stream_pos`` (sink, window and the new tokens; at a decode
    step of a policy cache exactly the attended tokens, ``stream_exact``, in ring order); ``meta``
    the page min/max of the retrieval heads (rows in ``plan.heads("retrieval")`` order, ``None``
    when simulated).
    """

    key: torch.Tensor
    start: int
    context_len: int
    full_k: torch.Tensor | None
    full_v: torch.Tensor | None
    full_rows: dict[int, int]
    stream_k: torch.Tensor | None
    stream_v: torch.Tensor | None
    stream_rows: dict[int, int]
    stream_pos: torch.Tensor | None
    meta: PageMetadata | None
    simulated: bool
    stream_exact: bool = False  # the streaming K/V are exactly the tokens a decode step attends


def _cat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return b if a.shape[-2] == 0 else torch.cat((a, b), dim=-2)


def _take(x: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """Rows of dim 1 (a view when they are consecutive)."""
    if rows == list(range(rows[0], rows[-1] + 1)):
        return x[:, rows[0] : rows[-1] + 1]
    return x[:, torch.tensor(rows, device=x.device)]


try:  # transformers >= 4.56
    from transformers.cache_utils import Cache, CacheLayerMixin
except ImportError:  # pragma: no cover - transformers is a declared dependency
    Cache = CacheLayerMixin = object


#: Growth of the preallocated full-context buffers: at least this share of the current capacity,
#: rounded up to CAPACITY_QUANTUM slots (amortised O(1) appends instead of a copy per token).
CAPACITY_GROWTH = 0.25
CAPACITY_QUANTUM = 256


def _reserve(buf: torch.Tensor | None, shape: tuple, used: int, need: int, like: torch.Tensor) -> torch.Tensor:
    """A buffer of ``shape`` with at least ``need`` slots along dim 2, keeping ``buf``'s first ``used``."""
    if buf is not None and buf.shape[2] >= need:
        return buf
    cap = need if buf is None else max(need, int(buf.shape[2] * (1 + CAPACITY_GROWTH)))
    cap = -(-cap // CAPACITY_QUANTUM) * CAPACITY_QUANTUM
    new = like.new_empty(*shape[:2], cap, *shape[3:])
    if buf is not None and used:
        new[:, :, :used] = buf[:, :, :used]
    return new


class PolicyCacheLayer(CacheLayerMixin):
    """One layer of :class:`PolicyCache`: dense/retrieval heads keep all tokens, streaming heads
    sink + local, retrieval heads also page metadata (updated incrementally).

    Storage (all preallocated, written in place):

    * dense and retrieval heads: ``[B, F, capacity, D]`` buffers; ``full_k/full_v`` are views of
      the first ``T`` tokens (rows of ``D`` contiguous elements, so page gathers read the buffer
      directly); the capacity grows by :data:`CAPACITY_GROWTH`.
    * page metadata of the retrieval heads: ``[B, R, pages, 2, D]`` (max, min per page; the
      contiguous layout of :class:`~h2eal_core.attention.quest.PageMetadata`).
    * streaming heads: ``[B, S, sink + local, D]``: the sink tokens, then the local window used as a
      ring once full (a decode step overwrites the oldest window token), so a decode step attends
      the whole store as one contiguous view, with no copy and no mask.
    """

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, layer_idx: int, kinds: tuple[str, ...], config: SparseAttentionConfig, handle: PolicyHandle):
        super().__init__()
        self.layer_idx = layer_idx
        self.plan = LayerPlan(tuple(kinds))
        self.config = config
        self._handle = handle
        self.full_heads = self.plan.full_heads
        self.stream_heads = self.plan.heads("streaming")
        retrieval = self.plan.heads("retrieval")
        self.retrieval_rows = [self.full_heads.index(h) for h in retrieval]
        self._full_rows = {h: i for i, h in enumerate(self.full_heads)}  # KV head -> buffer row (read-only)
        self._stream_rows = {h: i for i, h in enumerate(self.stream_heads)}
        self.seen = 0

    # -- transformers API --
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        B, H, _, D = key_states.shape
        if H != len(self.plan.kinds):
            raise ParameterError("key_states", describe(key_states), f"{len(self.plan.kinds)} KV heads (the policy's layer {self.layer_idx})")
        self.device, self.dtype = key_states.device, key_states.dtype
        self._shape = (B, D)
        self._fk = self._fv = self._bounds = None
        S, cap = len(self.stream_heads), self.config.sink + self.config.local
        self._sk, self._sv = key_states.new_empty(B, S, cap, D), key_states.new_empty(B, S, cap, D)
        self._spos = torch.empty(cap, dtype=torch.long, device=self.device)
        self._s_len = 0  # streaming tokens stored
        self._ring = 0  # once full: slot of the oldest window token
        self._refresh_views()
        self.is_initialized = True

    def _refresh_views(self) -> None:
        B, D = self._shape
        F, R, T = len(self.full_heads), len(self.retrieval_rows), self.seen
        empty = lambda h: torch.empty(B, h, 0, D, dtype=self.dtype, device=self.device)  # noqa: E731
        self.full_k = self._fk[:, :, :T] if self._fk is not None else empty(F)
        self.full_v = self._fv[:, :, :T] if self._fv is not None else empty(F)
        if self._bounds is not None:
            self.meta = PageMetadata.from_bounds(self._bounds[:, :, : n_pages(T, self.config.page_size)], self.config.page_size, T)
            self.meta_min, self.meta_max = self.meta.min, self.meta.max
        else:
            self.meta = None
            self.meta_min = self.meta_max = empty(R)
        self.stream_k, self.stream_v = self._sk[:, :, : self._s_len], self._sv[:, :, : self._s_len]
        self.stream_pos = self._spos[: self._s_len]
        self.keys, self.values = self.full_k, self.full_v

    def _ordered_stream(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The streaming store in position order (a view, or a copy when the ring has turned)."""
        k, v, pos = self._sk[:, :, : self._s_len], self._sv[:, :, : self._s_len], self._spos[: self._s_len]
        sink = min(self.config.sink, self._s_len)
        if self._s_len < self._sk.shape[2] or self._ring == sink:
            return k, v, pos
        order = lambda x, d: torch.cat((x.narrow(d, 0, sink), x.narrow(d, self._ring, x.shape[d] - self._ring), x.narrow(d, sink, self._ring - sink)), dim=d)  # noqa: E731
        return order(k, 2), order(v, 2), order(pos, 0)

    def _update_streaming(self, key_states, value_states, start: int, T: int):
        """Store the streaming heads' new tokens; return what their attention reads now.

        Decode (one token): the store after the update is exactly the attended set, returned as a
        contiguous view (``exact=True``). Several tokens: the ordered store + the new tokens with
        their positions (attended with masks), then trimmed to sink + window.
        """
        n = key_states.shape[-2]
        cap, sink = self._sk.shape[2], self.config.sink
        nk, nv = _take(key_states, self.stream_heads), _take(value_states, self.stream_heads)
        if n == 1:
            if self._s_len < cap:
                slot = self._s_len
                self._s_len += 1
                if self._s_len == cap:
                    self._ring = min(sink, cap)
            else:  # full: overwrite the oldest window token
                slot = self._ring
                self._ring = self._ring + 1 if self._ring + 1 < cap else min(sink, cap)
            self._sk[:, :, slot : slot + 1] = nk
            self._sv[:, :, slot : slot + 1] = nv
            self._spos[slot] = start
            k, v = self._sk[:, :, : self._s_len], self._sv[:, :, : self._s_len]
            return k, v, self._spos[: self._s_len], True
        ok, ov, opos = self._ordered_stream()
        att_k, att_v = _cat(ok, nk), _cat(ov, nv)
        att_pos = torch.cat((opos, torch.arange(start, T, device=self.device)))
        keep_sink = min(sink, T)
        keep_window = min(self.config.local, T - keep_sink)
        m = keep_sink + keep_window
        for buf, x, d in ((self._sk, att_k, 2), (self._sv, att_v, 2)):
            buf[:, :, :keep_sink] = x[:, :, :keep_sink]
            buf[:, :, keep_sink:m] = x[:, :, x.shape[d] - keep_window :]
        self._spos[:keep_sink] = att_pos[:keep_sink]
        self._spos[keep_sink:m] = att_pos[att_pos.shape[0] - keep_window :]
        self._s_len = m
        self._ring = keep_sink
        return att_k, att_v, att_pos, False

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Store the new tokens, trim the streaming heads, refresh page metadata; hand the step over."""
        if not self._handle.active:
            raise RuntimeError(
                "this PolicyCache belongs to a policy that is not active: use it inside `with apply_policy(...)`"
            )
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        start, T = self.seen, self.seen + n
        every_head_full = len(self.full_heads) == len(self.plan.kinds)
        if self.full_heads:
            fk = key_states if every_head_full else _take(key_states, self.full_heads)
            fv = value_states if every_head_full else _take(value_states, self.full_heads)
            self._fk = _reserve(self._fk, fk.shape, start, T, fk)
            self._fv = _reserve(self._fv, fv.shape, start, T, fv)
            self._fk[:, :, start:T] = fk
            self._fv[:, :, start:T] = fv
        att_k = att_v = att_pos = None
        exact = False
        if self.stream_heads:
            att_k, att_v, att_pos, exact = self._update_streaming(key_states, value_states, start, T)
        self.seen = T
        if self.retrieval_rows:
            self._update_metadata(start)
        self._refresh_views()
        returned = (self.full_k, self.full_v) if every_head_full else (key_states, value_states)
        self._handle._handoff[self.layer_idx] = LayerStep(
            key=returned[0], start=start, context_len=T,
            full_k=self.full_k if self.full_heads else None, full_v=self.full_v if self.full_heads else None,
            full_rows=self._full_rows, stream_k=att_k, stream_v=att_v, stream_rows=self._stream_rows,
            stream_pos=att_pos, meta=self.meta, simulated=False, stream_exact=exact,
        )
        self._handle._record_storage(self.layer_idx, self.stored_tokens(), self.meta_min.numel() * 2, key_states)
        return returned

    def _update_metadata(self, start: int) -> None:
        """Recompute the page that was partial before this update and the new pages, in place."""
        ps, T = self.config.page_size, self.seen
        first = start // ps
        P = n_pages(T, ps)
        fresh = quest_page_metadata(_take(self._fk[:, :, first * ps : T], self.retrieval_rows), ps)  # new tokens only
        self._bounds = _reserve(self._bounds, fresh.bounds.shape, first, P, fresh.bounds)
        self._bounds[:, :, first:P] = fresh.bounds

    def stored_tokens(self) -> list[int]:
        """Tokens each KV head stores now."""
        return [self._s_len if k == "streaming" else self.seen for k in self.plan.kinds]

    def get_mask_sizes(self, query_length) -> tuple[int, int]:
        # transformers < 5 passes cache_position (a tensor of the new positions) instead of a length
        n = query_length.shape[0] if isinstance(query_length, torch.Tensor) else int(query_length)
        return self.seen + n, 0

    def get_seq_length(self) -> int:
        return self.seen

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.seen = 0
        self.keys = self.values = None
        self.is_initialized = False

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove != 0:
            raise ParameterError("tokens_to_remove", tokens_to_remove, "0 (a PolicyCache cannot roll back: streaming heads drop tokens)")

    def offload(self):  # offloading is not supported; the data stays where it is
        return None

    def prefetch(self):
        return None

    def _map_batch(self, fn) -> None:
        if not self.is_initialized:
            return
        for name in ("_fk", "_fv", "_bounds", "_sk", "_sv"):
            if getattr(self, name) is not None:
                setattr(self, name, fn(getattr(self, name)))
        self._shape = (self._sk.shape[0], self._shape[1])
        self._refresh_views()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map_batch(lambda x: x.index_select(0, beam_idx.to(x.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map_batch(lambda x: x.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map_batch(lambda x: x[indices, ...])


class PolicyCache(Cache):
    """A ``transformers.Cache`` that stores what the policy needs (see :class:`PolicyCacheLayer`)."""

    def __init__(self, handle: PolicyHandle):
        layers = [PolicyCacheLayer(i, tuple(handle.kinds[i]), handle.config, handle) for i in range(handle.dims.n_layers)]
        super().__init__(layers=layers)
        self.handle = handle

    def kv_bytes(self) -> dict[str, int]:
        """Bytes stored now: K+V of the stored tokens (``kv``), page metadata, what a dense cache would
        hold (``dense``), and the bytes of the preallocated buffers (``kv_allocated``, ``metadata_allocated``)."""
        kv = meta = dense = kv_alloc = meta_alloc = 0
        for layer in self.layers:
            if not layer.is_initialized:
                continue
            size = layer.full_k.element_size()
            kv += sum(t.numel() for t in (layer.full_k, layer.full_v, layer.stream_k, layer.stream_v)) * size
            meta += (layer.meta_min.numel() + layer.meta_max.numel()) * size
            kv_alloc += sum(t.numel() for t in (layer._fk, layer._fv, layer._sk, layer._sv) if t is not None) * size
            meta_alloc += 0 if layer._bounds is None else layer._bounds.numel() * size
            B, D = layer._shape
            dense += 2 * B * len(layer.plan.kinds) * layer.seen * D * size
        return {"kv": kv, "metadata": meta, "dense": dense, "kv_allocated": kv_alloc, "metadata_allocated": meta_alloc}


__all__ = ["CAPACITY_GROWTH", "CAPACITY_QUANTUM", "LayerPlan", "LayerStep", "PolicyCache", "PolicyCacheLayer"]
