"""Sparse-attention policies on a loaded Hugging Face causal LM: head kinds, the handle, the attention function.

Part of the Hugging Face integration (:mod:`h2eal_core.attention.hf` re-exports every name here).
Mechanism (kvpress style: small objects, the attention interface, no forward monkeypatching):

* :func:`apply_policy` returns a :class:`PolicyHandle` (a context manager) that registers one
  attention function with ``transformers.AttentionInterface`` (name ``h2eal_<original>``, with the
  original implementation's mask function, :func:`_register`) and selects it with
  ``model.set_attn_implementation``; on exit the original implementation is restored.
  transformers calls the function once per layer with the layer's attention module, whose
  ``layer_idx`` says which heads are streaming, retrieval or dense (:func:`policy_head_kinds`).
* Decode kernels (:meth:`PolicyHandle.attention`): dense heads run the fused dense kernel on views
  of the buffer; streaming heads attend their store; retrieval heads score the metadata with the
  handle's page selector (:mod:`h2eal_core.attention.selectors`), take the top pages and gather
  only their rows (:func:`~h2eal_core.attention.retrieval.attend_selection`, reusing the handle's
  :class:`~h2eal_core.attention.retrieval.GatherWorkspace`). All of it runs on any torch device.
* The attention function reads the :class:`~h2eal_core.attention.hf_cache.LayerStep` that a
  :class:`~h2eal_core.attention.hf_cache.PolicyCache` layer left in the handle. Without that
  hand-off (a plain ``DynamicCache`` or no cache) the same policy is simulated with masks on the
  full K/V: outputs are the same, nothing is saved, and the stats say so
  (``cache="dense (simulated)"``).
* The handle counts, per layer and KV head, the tokens and metadata each decode step reads and
  the tokens stored (:meth:`PolicyHandle.stats`, :meth:`PolicyHandle.head_stats`).

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
import logging
import sys
import weakref

import numpy as np
import torch

from ..validation import ParameterError, check_choice, check_positive_int
from ._checks import describe
from .accounting import head_kinds
from .config import SparseAttentionConfig
from .dense import attend
from .hf_cache import LayerPlan, LayerStep, PolicyCache, _take
from .hybrid import heads_index
from .masks import causal_mask, streaming_mask
from .prefill import sdpa, streaming_prefill
from .quest import n_pages, quest_page_metadata
from .retrieval import GatherWorkspace, attend_selection
from .selectors import QuestBoundSelector, get_selector

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
        or any layer on a plain cache): for measurements such as
        :func:`~h2eal_core.attention.hf_generation.long_range_attention_mass`."""
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


# ---- the entry point --------------------------------------------------------------------------


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


__all__ = [
    "DENSE_DECODE_KERNEL_CHOICES",
    "POLICIES",
    "POLICIES_WITH_HEADS",
    "STREAMING_QUERY_CHUNK",
    "ModelDims",
    "PolicyHandle",
    "apply_policy",
    "check_retrieval_heads",
    "policy_head_kinds",
]
