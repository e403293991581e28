"""Hugging Face integration: sparse-attention policies on a loaded causal LM, without model code.

Mechanism (kvpress style: small objects, the attention interface, no forward monkeypatching):

* :func:`apply_policy` registers one attention function with ``transformers.AttentionInterface``
  (name ``h2eal_<original>``, with the original implementation's mask function) and selects it
  with ``model.set_attn_implementation``; on exit the original implementation is restored.
  transformers calls the function once per layer with the layer's attention module, whose
  ``layer_idx`` says which heads are streaming, retrieval or dense.
* :class:`PolicyCache` (``handle.new_cache()``) is a ``transformers.Cache`` whose layers really
  store only sink + local tokens for streaming heads, the whole context for dense and retrieval
  heads, and Quest page metadata (min/max key per page) for retrieval heads. Everything is
  preallocated and written in place (no copy of the cache per token): growing full-context
  buffers, the page metadata in the contiguous ``[pages, 2, D]`` layout, and a sink + window ring
  for streaming heads, which a decode step reads as one contiguous view.
* Decode kernels: dense heads run the fused dense kernel on views of the buffer; streaming heads
  attend their store; retrieval heads score the metadata with one matmul, take the top pages and
  gather only their rows (:func:`~h2eal_core.attention.retrieval.attend_selection`, reusing the
  handle's :class:`~h2eal_core.attention.retrieval.GatherWorkspace`). All of it runs on any torch
  device (CPU, CUDA).
* Hand-off: a layer's ``update`` (called by the model right before attention) leaves a
  :class:`LayerStep` (the per-head parts: full-context K/V, the streaming heads' sink + window K/V
  with their token positions, the page metadata) in the handle under the layer index, and returns
  a key tensor that the attention function recognises by identity. Without that hand-off (a plain
  ``DynamicCache`` or no cache) the same policy is simulated with masks on the full K/V: outputs
  are the same, nothing is saved, and the stats say so (``cache="dense (simulated)"``).

Policies: ``full`` (dense everywhere; calls the model's original attention function, so logits are
unchanged), ``streaming_llm`` (all heads sink + local, prefill and decode), ``quest`` (all heads
Quest at decode, dense prefill, ``dense_layers`` dense), ``duo`` (retrieval heads dense, others
streaming), ``h2eal`` (retrieval heads Quest, others streaming). Quest is decode-only: a call
with more than one query token (prefill) reads retrieval heads densely. Sparse policies assume
unpadded batches (equal-length prompts); a padding mask is refused with a clear error.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import sys
import weakref

import numpy as np
import torch

from ..validation import ParameterError, check_choice, check_nonnegative_int, check_positive_int
from ._checks import describe
from .accounting import head_kinds
from .config import SparseAttentionConfig
from .dense import attend
from .hybrid import heads_index
from .masks import causal_mask, streaming_mask
from .prefill import sdpa, streaming_prefill
from .quest import PageMetadata, n_pages, quest_page_metadata
from .selectors import QuestBoundSelector, get_selector
from .retrieval import GatherWorkspace, attend_selection

logger = logging.getLogger(__name__)

POLICIES = ("full", "streaming_llm", "quest", "duo", "h2eal")
#: What an all-dense decode step runs (see :func:`apply_policy`).
DENSE_DECODE_KERNEL_CHOICES = ("model", "fused")
#: Policies that need a ``retrieval_heads`` mask.
POLICIES_WITH_HEADS = ("duo", "h2eal")
#: Queries per chunk when streaming heads attend a multi-token input (bounds prefill memory).
STREAMING_QUERY_CHUNK = 512

_ACTIVE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # attention module -> PolicyHandle


# ---- policy -> head kinds ---------------------------------------------------------------------


def check_retrieval_heads(retrieval_heads, n_layers: int, n_kv_heads: int) -> np.ndarray:
    """A bool ``[n_layers, n_kv_heads]`` array from numpy/torch/lists of bools (or 0/1 integers)."""
    if isinstance(retrieval_heads, torch.Tensor):
        retrieval_heads = retrieval_heads.detach().cpu().numpy()
    arr = np.asarray(retrieval_heads)
    allowed = f"a bool array of shape ({n_layers}, {n_kv_heads}) = (layers, kv_heads)"
    if arr.dtype != bool:
        if arr.dtype.kind in "iu" and np.isin(arr, (0, 1)).all():
            arr = arr.astype(bool)
        else:
            raise ParameterError("retrieval_heads", f"array of dtype {arr.dtype}", allowed, "binarise gate values first")
    if arr.shape != (n_layers, n_kv_heads):
        raise ParameterError("retrieval_heads", f"array of shape {arr.shape}", allowed)
    return arr


def policy_head_kinds(
    policy: str, n_layers: int, n_kv_heads: int, config: SparseAttentionConfig, retrieval_heads=None
) -> np.ndarray:
    """``[n_layers, n_kv_heads]`` kinds (``dense``, ``streaming``, ``retrieval``) of a policy."""
    check_choice("policy", policy, POLICIES)
    check_positive_int("n_layers", n_layers)
    check_positive_int("n_kv_heads", n_kv_heads)
    shape = (n_layers, n_kv_heads)
    if policy in POLICIES_WITH_HEADS:
        if retrieval_heads is None:
            raise ParameterError("retrieval_heads", None, f"a bool array of shape {shape} (policy {policy!r} needs it)")
        mask = check_retrieval_heads(retrieval_heads, n_layers, n_kv_heads)
    elif retrieval_heads is not None:
        check_retrieval_heads(retrieval_heads, n_layers, n_kv_heads)
    if policy == "full":
        return np.full(shape, "dense", dtype=object)
    if policy == "streaming_llm":
        return np.full(shape, "streaming", dtype=object)
    if policy == "quest":
        return head_kinds(np.ones(shape, dtype=bool), config)
    if policy == "duo":
        return np.where(mask, "dense", "streaming").astype(object)
    return head_kinds(mask, config)


@dataclasses.dataclass(frozen=True)
class ModelDims:
    """The attention sizes of a decoder-only model (from its config)."""

    n_layers: int
    n_q_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def group_size(self) -> int:
        return self.n_q_heads // self.n_kv_heads

    @classmethod
    def of(cls, model) -> ModelDims:
        cfg = getattr(model, "config", None)
        if cfg is None:
            raise ParameterError("model", type(model).__name__, "a transformers causal LM (with a .config)")
        cfg = cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
        n_q = getattr(cfg, "num_attention_heads", None)
        hidden = getattr(cfg, "hidden_size", None)
        n_layers = getattr(cfg, "num_hidden_layers", None)
        if not (n_q and hidden and n_layers):
            raise ParameterError("model", type(model).__name__, "a decoder-only LM whose config has num_attention_heads, hidden_size, num_hidden_layers")
        n_kv = getattr(cfg, "num_key_value_heads", None) or n_q
        head_dim = getattr(cfg, "head_dim", None) or hidden // n_q
        return cls(int(n_layers), int(n_q), int(n_kv), int(head_dim))


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


# ---- the policy handle and the attention function ----------------------------------------------


class PolicyHandle:
    """An applied policy (a context manager): make caches, read stats; restores the model on exit."""

    def __init__(self, model, policy: str, config: SparseAttentionConfig, kinds: np.ndarray, dims: ModelDims):
        self.model = model
        self.policy = policy
        self.config = config
        self.kinds = kinds
        self.dims = dims
        self.plans = [LayerPlan(tuple(row)) for row in kinds]
        self.active = False
        self._handoff: dict[int, LayerStep] = {}
        self._original: str | None = None
        self._modules: list = []
        self._observers: list = []
        self._selection_observers: list = []
        self._workspace = GatherWorkspace()  # reused gather buffers of the retrieval heads
        self.selector = QuestBoundSelector(gqa=config.gqa)  # page selector of the retrieval heads
        self.dense_decode_kernel = "model"
        self._kv_rows_cache: dict = {}
        self.reset_stats()

    def _kv_rows(self, rows: tuple[int, ...], repeat: int, device) -> torch.Tensor:
        """The full-buffer rows of a layer's retrieval heads as a (cached) index tensor."""
        key = (rows, repeat, str(device))
        t = self._kv_rows_cache.get(key)
        if t is None:
            t = torch.tensor(rows, device=device).repeat_interleave(repeat)
            self._kv_rows_cache[key] = t
        return t

    # -- context manager --
    def __enter__(self) -> PolicyHandle:
        if self.active:
            raise RuntimeError("this policy handle is already active")
        modules = _attention_modules(self.model, self.dims.n_layers)
        if any(m in _ACTIVE for m in modules):
            raise RuntimeError("a policy is already applied to this model; exit it first (policies do not nest)")
        self._original = self.model.config._attn_implementation or "sdpa"
        name = _register(self._original)
        self.model.set_attn_implementation(name)
        if self.model.config._attn_implementation != name:
            self.model.set_attn_implementation(self._original)
            raise ParameterError("model", type(self.model).__name__, "a model whose attention implementation can be set (AttentionInterface)")
        self._modules = modules
        for m in modules:
            _ACTIVE[m] = self
        self.active = True
        logger.info("policy %s applied (%s)", self.policy, self.config)
        return self

    def __exit__(self, *exc) -> None:
        for m in self._modules:
            _ACTIVE.pop(m, None)
        self._modules = []
        self._handoff.clear()
        if self._original is not None:
            self.model.set_attn_implementation(self._original)
        self.active = False

    def new_cache(self) -> PolicyCache:
        """A fresh cache for this policy, to pass to ``model(...)`` or ``model.generate(...)``."""
        return PolicyCache(self)

    def add_observer(self, fn) -> None:
        """Call ``fn(layer_idx, query [B, Hq, n, D], key [B, Hkv, T, D], scale)`` at every attention
        call whose keys cover the whole context (dense or retrieval heads of a full-storage layer,
        or any layer on a plain cache): for measurements such as :func:`long_range_attention_mass`."""
        self._observers.append(fn)

    def add_selection_observer(self, fn) -> None:
        """Call ``fn(layer_idx, kv_heads, selection)`` at every retrieval decode step, after page
        selection: ``kv_heads`` lists the layer's retrieval KV heads (the rows of
        ``selection.pages``, repeated ``group_size`` times under ``per_query_head``) and
        ``selection`` is the :class:`~h2eal_core.attention.quest.PageSelection` the heads read.
        For recording page-selection traces (:mod:`h2eal_core.traces`); observers must not modify
        the selection."""
        self._selection_observers.append(fn)

    # -- stats --
    def reset_stats(self) -> None:
        """Zero every counter; storage is recorded again by the next forward of each layer."""
        L, H = self.dims.n_layers, self.dims.n_kv_heads
        self._tokens_read = np.zeros((L, H), dtype=np.int64)
        self._tokens_read_dense = np.zeros((L, H), dtype=np.int64)
        self._meta_read = np.zeros((L, H), dtype=np.int64)
        self._stored_tokens = np.zeros((L, H), dtype=np.int64)
        self._stored_meta = np.zeros(L, dtype=np.int64)
        self._context = np.zeros(L, dtype=np.int64)
        self._batch = 1
        self._bytes_per_element = 0
        self._simulated = np.zeros(L, dtype=bool)  # last call of each layer used a plain cache
        self._pending: dict[tuple[str, int, tuple[int, ...]], int] = {}  # counter increments not yet added
        self.decode_steps = 0
        self.prefill_tokens = 0

    def _flush_counts(self) -> None:
        """Add the pending scalar increments of :meth:`_count` (kept as Python ints: cheap per step)."""
        arrays = {"read": self._tokens_read, "dense": self._tokens_read_dense, "meta": self._meta_read}
        for (name, layer, heads), value in self._pending.items():
            arrays[name][layer, list(heads)] += value
        self._pending.clear()

    def _add(self, name: str, layer: int, heads: tuple[int, ...], value: int) -> None:
        key = (name, layer, heads)
        self._pending[key] = self._pending.get(key, 0) + value

    def _record_storage(
        self, layer: int, stored_tokens: list[int], meta_elements: int, key: torch.Tensor, simulated: bool = False
    ) -> None:
        self._simulated[layer] = simulated
        self._stored_tokens[layer] = stored_tokens
        self._stored_meta[layer] = meta_elements
        self._batch = key.shape[0]
        self._bytes_per_element = key.element_size()

    def head_stats(self) -> dict[str, np.ndarray]:
        """Per ``[layer, kv_head]`` arrays: decode tokens read (and dense), metadata elements read,
        tokens stored now (summed over the batch)."""
        self._flush_counts()
        return {
            "kinds": self.kinds.copy(),
            "tokens_read": self._tokens_read.copy(),
            "tokens_read_dense": self._tokens_read_dense.copy(),
            "metadata_elements_read": self._meta_read.copy(),
            "tokens_stored": self._stored_tokens * self._batch,
            "context_len": self._context.copy(),
        }

    def stats(self) -> dict:
        """Totals over layers, heads, batch and decode steps (bytes use the cache's element size)."""
        self._flush_counts()
        D, bpe, B = self.dims.head_dim, self._bytes_per_element, self._batch
        stored = int(self._stored_tokens.sum()) * B
        stored_dense = int(self._context.sum()) * self.dims.n_kv_heads * B
        read, read_dense = int(self._tokens_read.sum()), int(self._tokens_read_dense.sum())
        return {
            "policy": self.policy,
            "cache": "dense (simulated)" if self._simulated.any() else "policy",
            "decode_steps": self.decode_steps,
            "prefill_tokens": self.prefill_tokens,
            "retrieval_ratio": float((self.kinds != "streaming").mean()),
            "bytes_per_element": bpe,
            "kv_tokens_stored": stored,
            "kv_bytes_stored": 2 * stored * D * bpe,
            "kv_bytes_stored_dense": 2 * stored_dense * D * bpe,
            "metadata_bytes_stored": int(self._stored_meta.sum()) * B * bpe,
            "stored_fraction": stored / stored_dense if stored_dense else float("nan"),
            "kv_tokens_read": read,
            "kv_tokens_read_dense": read_dense,
            "kv_bytes_read": 2 * read * D * bpe,
            "kv_bytes_read_dense": 2 * read_dense * D * bpe,
            "metadata_bytes_read": int(self._meta_read.sum()) * bpe,
            "read_fraction": read / read_dense if read_dense else float("nan"),
        }

    # -- attention --
    def _simulated_step(self, layer: int, key: torch.Tensor, value: torch.Tensor, n: int) -> LayerStep:
        """The hand-off equivalent for a cache that holds every token (masks do the policy)."""
        plan = self.plans[layer]
        T = key.shape[-2]
        streaming = plan.heads("streaming")
        self._record_storage(layer, [T] * len(plan.kinds), 0, key, simulated=True)
        return LayerStep(
            key=key, start=T - n, context_len=T, full_k=key, full_v=value,
            full_rows={h: h for h in range(len(plan.kinds))},
            stream_k=_take(key, streaming) if streaming else None,
            stream_v=_take(value, streaming) if streaming else None,
            stream_rows={h: i for i, h in enumerate(streaming)},
            stream_pos=torch.arange(T, device=key.device) if streaming else None,
            meta=None, simulated=True,
        )

    def attention(self, module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        """The attention function body for one layer (``query [B, Hq, n, D]`` -> ``[B, n, Hq, D]``)."""
        layer = module.layer_idx
        plan = self.plans[layer]
        n = query.shape[2]
        step = self._handoff.pop(layer, None)
        if step is None or step.key is not key:
            step = self._simulated_step(layer, key, value, n)
        T = step.context_len
        self._context[layer] = T
        if self._observers and step.full_k is not None and len(step.full_rows) == len(plan.kinds):
            for fn in self._observers:
                fn(layer, query, step.full_k, scaling if scaling is not None else query.shape[-1] ** -0.5)
        decode = n == 1
        if layer == 0:
            if decode:
                self.decode_steps += 1
            else:
                self.prefill_tokens += n * query.shape[0]
        dense, streaming, retrieval = plan.step_heads(decode and T > self.config.budget)  # cached: do not modify
        if not retrieval and not streaming and not (decode and self.dense_decode_kernel == "fused"):
            # every head dense: the model's own attention function
            if decode:
                self._count(layer, dense, T * query.shape[0], query.shape[0])
            return _original_function(module, self._original)(
                module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
            )
        _refuse_padding(attention_mask, step.start, T)
        return self._sparse_attention(layer, plan, step, query, scaling, dense, streaming, retrieval)

    def _count(self, layer: int, heads: list[int], tokens, batch: int) -> None:
        """Add a decode step's reads: ``tokens`` per head (scalar or per head), summed over the batch."""
        if heads:
            key = tuple(heads)
            if isinstance(tokens, int):
                self._add("read", layer, key, tokens)
            else:
                self._tokens_read[layer, heads] += np.asarray(tokens, dtype=np.int64)
            self._add("dense", layer, key, int(self._context[layer]) * batch)

    def _sparse_attention(self, layer, plan, step, query, scaling, dense, streaming, retrieval):
        B, Hq, n, D = query.shape
        Hkv, g = self.dims.n_kv_heads, self.dims.group_size
        scale = scaling if scaling is not None else D**-0.5
        T, cfg = step.context_len, self.config
        qg = query.unflatten(1, (Hkv, g))  # [B, Hkv, g, n, D]
        out = torch.empty_like(qg)
        decode = n == 1
        if dense:
            rows = [step.full_rows[h] for h in dense]
            if decode:  # views of the full-context buffer, one fused kernel call per run of heads
                for hs, rs in _paired_slices(tuple(dense), tuple(rows)):
                    out[:, hs] = attend(qg[:, hs, :, 0], step.full_k[:, rs], step.full_v[:, rs], scale).unsqueeze(3).to(out.dtype)
                self._count(layer, dense, T * B, B)
            else:
                k, v = _take(step.full_k, rows), _take(step.full_v, rows)
                qpos, kpos = torch.arange(step.start, T, device=query.device), torch.arange(T, device=query.device)
                mask = None if step.start == 0 else causal_mask(qpos, kpos)
                o = sdpa(_take(qg, dense).flatten(1, 2), k, v, scale, mask=mask, is_causal=step.start == 0)
                out[:, dense] = o.unflatten(1, (len(dense), g)).to(out.dtype)
        if streaming:
            rows = [step.stream_rows[h] for h in streaming]
            k, v = _take(step.stream_k, rows), _take(step.stream_v, rows)
            if decode and step.stream_exact:  # the store is the attended set: one contiguous view
                o = attend(qg[:, _head_index(tuple(streaming)), :, 0], k, v, scale).unsqueeze(3)
                attended = k.shape[-2]
            else:
                o = streaming_prefill(
                    _take(qg, streaming).flatten(1, 2), k, v, cfg.sink, cfg.local, chunk_size=STREAMING_QUERY_CHUNK,
                    key_positions=step.stream_pos, scale=scale,
                ).unflatten(1, (len(streaming), g))
                if decode:
                    attended = int(streaming_mask(step.stream_pos[-1:], step.stream_pos, cfg.sink, cfg.local).sum())
            out[:, _head_index(tuple(streaming))] = o.to(out.dtype)
            if decode:
                self._count(layer, streaming, attended * B, B)
        if retrieval:
            hidx = _head_index(tuple(retrieval))
            q = qg[:, hidx, :, 0]  # [B, Hr, g, D]
            rows = [step.full_rows[h] for h in retrieval]
            meta = step.meta
            if meta is None:  # simulated: compute the metadata the cache would keep
                meta = quest_page_metadata(_take(step.full_k, rows), cfg.page_size)
            selector = self.selector
            keys = _take(step.full_k, rows) if selector.needs_keys else None
            sel = selector.select(q, keys, meta, T, cfg.page_size, cfg.budget)
            for fn in self._selection_observers:
                fn(layer, list(retrieval), sel)
            kv_rows = self._kv_rows(tuple(rows), g if sel.per_query_head else 1, query.device)
            o = attend_selection(q, step.full_k, step.full_v, sel, scale, kv_heads=kv_rows, workspace=self._workspace)
            out[:, hidx] = o.unsqueeze(3).to(out.dtype)
            if sel.per_query_head:  # query heads may share pages: count the union
                tokens = sel.tokens_read().sum(0).cpu().numpy()
            else:  # distinct top-k pages + the current page
                tokens = (sel.pages.shape[-1] * cfg.page_size + T - sel.current_page_start) * B
            self._count(layer, retrieval, tokens, B)
            self._add("meta", layer, tuple(retrieval), 2 * D * n_pages(T, cfg.page_size) * B)
        return out.flatten(1, 2).transpose(1, 2).contiguous(), None


@functools.lru_cache(maxsize=1024)
def _head_index(heads: tuple[int, ...]) -> slice | list[int]:
    """A (strided) slice when ``heads`` are evenly spaced, so that indexing is a view; else the list."""
    idx = heads_index(list(heads), "cpu")
    return idx if isinstance(idx, slice) else list(heads)


@functools.lru_cache(maxsize=1024)
def _paired_slices(heads: tuple[int, ...] | list[int], rows: tuple[int, ...] | list[int]) -> list[tuple[slice, slice]]:
    """(KV-head slice, buffer-row slice) pairs covering ascending ``heads`` and ``rows`` with as few
    views as possible: one pair when both are evenly spaced, else runs consecutive in both."""
    hs, rs = heads_index(list(heads), "cpu"), heads_index(list(rows), "cpu")
    if isinstance(hs, slice) and isinstance(rs, slice):
        return [(hs, rs)]
    pairs, i = [], 0
    while i < len(heads):
        j = i
        while j + 1 < len(heads) and heads[j + 1] == heads[j] + 1 and rows[j + 1] == rows[j] + 1:
            j += 1
        pairs.append((slice(heads[i], heads[j] + 1), slice(rows[i], rows[j] + 1)))
        i = j + 1
    return pairs


def _refuse_padding(attention_mask, start: int, T: int) -> None:
    """Sparse policies assume unpadded inputs: refuse a mask that hides a causal key."""
    if attention_mask is None:
        return
    m = attention_mask
    if m.dtype != torch.bool:
        m = m > torch.finfo(m.dtype).min / 2
    if m.ndim == 4 and m.shape[-1] >= T:
        pos = torch.arange(T, device=m.device)
        hidden = causal_mask(pos[start:], pos) & ~m[..., -(T - start) :, :T]
    elif m.ndim == 2:
        hidden = ~m
    else:
        return
    if bool(hidden.any()):
        raise ParameterError(
            "attention_mask", describe(attention_mask), "no padding under a sparse policy (batch equal-length prompts)"
        )


def _attention_modules(model, n_layers: int) -> list:
    """The model's self-attention modules (those with ``layer_idx`` and ``q_proj``), one per layer."""
    mods = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "q_proj")]
    if len(mods) != n_layers or sorted(m.layer_idx for m in mods) != list(range(n_layers)):
        raise ParameterError(
            "model", type(model).__name__,
            f"a Llama/Qwen2/Mistral-style causal LM with {n_layers} attention modules having layer_idx and q_proj",
        )
    return mods


def _original_function(module, name: str):
    """The attention function the model used before the policy (``eager`` lives in its modeling file)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if name in ALL_ATTENTION_FUNCTIONS:
        return ALL_ATTENTION_FUNCTIONS[name]
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise ParameterError("model", type(module).__name__, "a modeling file with eager_attention_forward")
    return fn


def _policy_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The function registered with ``AttentionInterface``: dispatch to the module's policy."""
    handle = _ACTIVE.get(module)
    if handle is None:
        raise RuntimeError("h2eal attention called on a module with no active policy (use apply_policy)")
    return handle.attention(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


def _register(original: str) -> str:
    """Register ``h2eal_<original>`` (our function, the original's mask function); return the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    name = f"h2eal_{original}"
    AttentionInterface.register(name, _policy_attention)
    mask_fn = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(original, sdpa_mask)
    AttentionMaskInterface.register(name, mask_fn)
    return name


# ---- public entry points ----------------------------------------------------------------------


def apply_policy(
    model,
    policy: str,
    config: SparseAttentionConfig | None = None,
    retrieval_heads=None,
    *,
    dense_decode_kernel: str = "model",
    selector=None,
) -> PolicyHandle:
    """Apply a sparse-attention policy to ``model`` (use as a context manager).

    Args:
        policy: one of :data:`POLICIES`.
        config: the sparse-attention knobs (default :class:`SparseAttentionConfig()`).
        retrieval_heads: bool ``[n_layers, n_kv_heads]`` (numpy or torch), required for ``duo``
            and ``h2eal``.
        dense_decode_kernel: what a decode step of a layer whose heads are all dense runs:
            ``"model"`` (default) the model's own attention function (logits unchanged), or
            ``"fused"`` this package's fused dense kernel
            (:func:`~h2eal_core.attention.dense.sdpa_grouped`, equal to float tolerance; on CPU
            faster than transformers' ``enable_gqa`` SDPA call, see benchmarks/README.md).
        selector: how retrieval heads choose pages: ``None`` (Quest's bound with ``config.gqa``),
            a name (``"quest_bound"``, ``"oracle"``) or a selector dataclass of
            :mod:`h2eal_core.attention.selectors` (its ``gqa`` must equal ``config.gqa``, which the
            accounting uses). A new scorer is a new selector; the cache does not change.

    Inside the ``with`` block ``model(...)`` and ``model.generate(...)`` use the policy; pass
    ``handle.new_cache()`` as the cache to store only what the policy needs.
    """
    check_choice("policy", policy, POLICIES)
    if config is None:
        config = SparseAttentionConfig()
    if not isinstance(config, SparseAttentionConfig):
        raise ParameterError("config", describe(config), "a SparseAttentionConfig or None")
    check_choice("dense_decode_kernel", dense_decode_kernel, DENSE_DECODE_KERNEL_CHOICES)
    dims = ModelDims.of(model)
    kinds = policy_head_kinds(policy, dims.n_layers, dims.n_kv_heads, config, retrieval_heads)
    chosen = get_selector(selector if selector is not None else "quest_bound", config.gqa)
    if getattr(chosen, "gqa", None) != config.gqa:
        raise ParameterError("selector.gqa", getattr(chosen, "gqa", None), f"{config.gqa!r} (config.gqa)")
    handle = PolicyHandle(model, policy, config, kinds, dims)
    handle.dense_decode_kernel = dense_decode_kernel
    handle.selector = chosen
    return handle


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


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """Output of :func:`generate_with_policy`: ``sequences [B, T + new]``, ``new_tokens [B, new]``, stats."""

    sequences: torch.Tensor
    new_tokens: torch.Tensor
    stats: dict


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
) -> GenerationResult:
    """Greedy generation under a policy, with the decode-simulation protocol.

    The prompt minus its last ``decode_prompt_tail`` tokens is prefilled (in chunks of
    ``prefill_chunk_size``); the tail is then fed one token at a time as decode steps with the
    policy active (DuoAttention/Quest protocol), and ``max_new_tokens`` tokens are generated
    greedily (stopping when every sequence has produced an end-of-sequence token).
    ``selector`` chooses the retrieval heads' pages (see :func:`apply_policy`).
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


__all__ = [
    "POLICIES",
    "GenerationResult",
    "LayerStep",
    "PolicyCache",
    "PolicyCacheLayer",
    "PolicyHandle",
    "apply_policy",
    "chunked_prefill",
    "generate_with_policy",
    "long_range_attention_mass",
    "policy_head_kinds",
]
