"""The work of one decode step: per-head attention access (from the accounting) and the FC ops.

Attention quantities come from :func:`h2eal_core.attention.accounting.model_access`, the closed-form
interface shared with the attention kernels; nothing here re-derives the sparsity rules. Batch
``B`` repeats every KV head once per request (each request has its own KV cache), so arrays are
``[layers, B * n_kv_heads]`` with column ``j`` = request ``j // n_kv_heads``, KV head
``j % n_kv_heads``.

Units: one *token-equivalent* is the K and V of one token of one KV head (``2 * head_dim``
elements); one page of Quest metadata (element-wise min and max key, ``2 * head_dim`` elements)
is also one token-equivalent.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from ..attention.accounting import model_access, spread_retrieval_mask
from ..attention.config import SparseAttentionConfig
from ..models.shape import ModelShape
from ..validation import ParameterError, check_positive_int


@dataclasses.dataclass(frozen=True)
class FCOp:
    """One matrix-vector product of the decode step (weights partitioned over all banks)."""

    name: str
    in_dim: int
    out_dim: int
    params: int  # weights read (= MACs per batch element)


@dataclasses.dataclass(frozen=True)
class AttentionWork:
    """Per-(layer, head-of-request) access of one decode step."""

    kinds: np.ndarray  # [L, N] str
    read_tokens: np.ndarray  # [L, N] int: KV tokens read
    stored_tokens: np.ndarray  # [L, N]
    read_pages: np.ndarray  # [L, N]: pages touched by the read (page layout units)
    stored_pages: np.ndarray  # [L, N]
    meta_read_pages: np.ndarray  # [L, N]: pages whose metadata is read and scored
    meta_stored_pages: np.ndarray  # [L, N]
    score_macs: np.ndarray  # [L, N]
    attention_macs: np.ndarray  # [L, N]
    scores: np.ndarray  # [L, N]: page scores sent to the top-k unit
    head_dim: int
    group_size: int
    n_kv_heads: int
    batch: int
    page_size: int
    context_len: int

    @property
    def n_layers(self) -> int:
        return self.kinds.shape[0]

    @property
    def n_heads(self) -> int:
        """Columns: batch x KV heads."""
        return self.kinds.shape[1]

    @property
    def kv_head_index(self) -> np.ndarray:
        return np.arange(self.n_heads) % self.n_kv_heads

    @property
    def macs_per_unit(self) -> int:
        """MACs per token-equivalent: ``2 * head_dim * group_size`` (QK and PV, or page scoring)."""
        return 2 * self.head_dim * self.group_size

    @property
    def partial_elements(self) -> int:
        """Numbers in one head's tiled-attention partial: ``group_size * (head_dim + 2)`` (SPEC 1.4)."""
        return self.group_size * (self.head_dim + 2)

    @property
    def retrieval(self) -> np.ndarray:
        return self.kinds == "retrieval"


@dataclasses.dataclass(frozen=True)
class DecodeWorkload:
    """Everything one decode step does, independent of the hardware mapping."""

    model: ModelShape
    attention: AttentionWork
    layer_ops: tuple[FCOp, ...]  # per layer, identical for every layer
    head_ops: tuple[FCOp, ...]  # once per step after the layers (LM head)
    embedding_row_params: int
    norm_params_per_layer: int
    final_norm_params: int
    batch: int
    sparse: bool
    sparsity: SparseAttentionConfig
    retrieval_ratio: float

    @property
    def weights_read_params(self) -> int:
        """Parameters read per step: every layer, the final norm, the LM head and one embedding row."""
        per_layer = sum(op.params for op in self.layer_ops) + self.norm_params_per_layer
        return (
            self.model.n_layers * per_layer
            + self.final_norm_params
            + sum(op.params for op in self.head_ops)
            + self.embedding_row_params
        )

    @property
    def fc_macs(self) -> int:
        """FC MACs per step (all batch elements)."""
        per_layer = sum(op.params for op in self.layer_ops)
        return self.batch * (self.model.n_layers * per_layer + sum(op.params for op in self.head_ops))


def fc_ops(model: ModelShape) -> tuple[tuple[FCOp, ...], tuple[FCOp, ...]]:
    """The FC ops of one layer and of the head (LM head), with parameter counts from the shape."""
    d, hq, hkv, hidden, ffn = model.head_dim, model.n_q_heads, model.n_kv_heads, model.hidden_size, model.ffn_size
    qkv_out = (hq + 2 * hkv) * d
    bias = qkv_out if model.attention_bias else 0
    layer = (
        FCOp("qkv", hidden, qkv_out, hidden * qkv_out + bias),
        FCOp("o", hq * d, hidden, hq * d * hidden),
        FCOp("gate_up", hidden, 2 * ffn, 2 * hidden * ffn),
        FCOp("down", ffn, hidden, ffn * hidden),
    )
    head = (FCOp("lm_head", hidden, model.vocab_size, model.vocab_size * hidden),)
    assert sum(op.params for op in layer) + 2 * hidden == model.parameters_per_layer
    return layer, head


def _mask_key(mask: np.ndarray | None):
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    return (mask.shape, mask.tobytes())


@functools.lru_cache(maxsize=4096)
def _access_cached(model: ModelShape, context_len: int, config: SparseAttentionConfig, mask_key):
    mask = None if mask_key is None else np.frombuffer(mask_key[1], dtype=bool).reshape(mask_key[0])
    return model_access(
        model.n_layers, model.n_kv_heads, model.head_dim, model.group_size, context_len, config, mask
    )


def default_retrieval_mask(model: ModelShape, config: SparseAttentionConfig) -> np.ndarray:
    """The deterministic spread mask at the configured (or attention-type default) ratio.

    An assumption used when no identified gates are given (labelled as such by every caller).
    """
    ratio = config.retrieval_ratio_for(model.attention_type)
    return spread_retrieval_mask(model.n_layers, model.n_kv_heads, ratio)


@functools.lru_cache(maxsize=4096)
def _workload_cached(model: ModelShape, context_len: int, sparse: bool, config: SparseAttentionConfig, batch: int, mask_key):
    mask = None if mask_key is None else np.frombuffer(mask_key[1], dtype=bool).reshape(mask_key[0])
    access = _access_cached(model, context_len, config, mask_key if sparse else None)
    P = config.page_size
    tile = (lambda a: np.tile(a, (1, batch))) if batch > 1 else (lambda a: a)
    kinds = tile(access.kinds)
    read = tile(access.tokens_read)
    stored = tile(access.tokens_stored)
    meta_read_pages = tile(access.metadata_elements_read) // (2 * model.head_dim)
    meta_stored_pages = tile(access.metadata_elements_stored) // (2 * model.head_dim)
    score_macs = tile(access.score_macs)
    per_query = config.gqa == "per_query_head" and model.group_size > 1
    scores = meta_read_pages * (model.group_size if per_query else 1)
    attention = AttentionWork(
        kinds=kinds,
        read_tokens=read,
        stored_tokens=stored,
        read_pages=-(-read // P),
        stored_pages=-(-stored // P),
        meta_read_pages=meta_read_pages,
        meta_stored_pages=meta_stored_pages,
        score_macs=score_macs,
        attention_macs=tile(access.attention_macs),
        scores=scores,
        head_dim=model.head_dim,
        group_size=model.group_size,
        n_kv_heads=model.n_kv_heads,
        batch=batch,
        page_size=P,
        context_len=context_len,
    )
    for field in dataclasses.fields(AttentionWork):
        value = getattr(attention, field.name)
        if isinstance(value, np.ndarray):
            value.setflags(write=False)  # cached: callers must not modify
    layer_ops, head_ops = fc_ops(model)
    ratio = float(mask.mean()) if sparse else 0.0
    return DecodeWorkload(
        model=model,
        attention=attention,
        layer_ops=layer_ops,
        head_ops=head_ops,
        embedding_row_params=model.hidden_size,
        norm_params_per_layer=2 * model.hidden_size,
        final_norm_params=model.hidden_size,
        batch=batch,
        sparse=sparse,
        sparsity=config,
        retrieval_ratio=ratio,
    )


def decode_workload(
    model: ModelShape,
    context_len: int,
    *,
    sparse: bool,
    sparsity: SparseAttentionConfig | None = None,
    retrieval_mask: np.ndarray | None = None,
    batch: int = 1,
) -> DecodeWorkload:
    """The workload of one decode step at ``context_len`` (the current token included)."""
    check_positive_int("context_len", context_len)
    check_positive_int("batch", batch)
    config = sparsity if sparsity is not None else SparseAttentionConfig()
    if not isinstance(config, SparseAttentionConfig):
        raise ParameterError("sparsity", type(config).__name__, "a SparseAttentionConfig or None")
    if sparse:
        mask = default_retrieval_mask(model, config) if retrieval_mask is None else np.asarray(retrieval_mask, dtype=bool)
        if mask.shape != (model.n_layers, model.n_kv_heads):
            raise ParameterError(
                "retrieval_mask", f"array of shape {mask.shape}", f"shape ({model.n_layers}, {model.n_kv_heads}) = (layers, kv_heads)"
            )
        key = _mask_key(mask)
    else:
        key = None
    return _workload_cached(model, int(context_len), bool(sparse), config, int(batch), key)


def ceil_log2(x: np.ndarray) -> np.ndarray:
    """``ceil(log2(x))`` for integers ``x >= 1`` (0 for 1)."""
    x = np.maximum(np.asarray(x, dtype=np.int64), 1)
    out = np.zeros(x.shape, dtype=np.int64)
    v = x - 1
    while np.any(v > 0):
        out += v > 0
        v = v >> 1
    return out


__all__ = ["AttentionWork", "DecodeWorkload", "FCOp", "ceil_log2", "decode_workload", "default_retrieval_mask", "fc_ops"]
