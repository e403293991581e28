"""Decode paths (dense, streaming, Quest, hybrid) against independent references."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from h2eal_core.attention import (
    GQA_MODES,
    SparseAttentionConfig,
    dense_decode,
    hybrid_decode,
    hybrid_token_mask,
    masked_decode,
    quest_page_metadata,
    quest_page_scores,
    quest_select,
    quest_select_pages,
    retrieval_decode,
    streaming_decode,
    streaming_mask,
)
from h2eal_core.validation import ParameterError

SETTINGS = settings(max_examples=40, deadline=None)


def qkv(seed, B, Hkv, g, T, D, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hkv * g, D, generator=gen)
    k = torch.randn(B, Hkv, T, D, generator=gen)
    v = torch.randn(B, Hkv, T, D, generator=gen)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def reference(q, k, v, mask=None):
    """float64 attention with the KV heads repeated per query head (the textbook GQA form)."""
    g = q.shape[1] // k.shape[1]
    kk = k.double().repeat_interleave(g, dim=1)
    vv = v.double().repeat_interleave(g, dim=1)
    s = torch.einsum("bhd,bhtd->bht", q.double(), kk) / math.sqrt(q.shape[-1])
    if mask is not None:
        if mask.shape[1] != q.shape[1]:
            mask = mask.repeat_interleave(g, dim=1)
        s = s.masked_fill(~mask, float("-inf"))
    return torch.einsum("bht,bhtd->bhd", torch.softmax(s, -1), vv)


shapes = st.tuples(
    st.integers(0, 10_000),  # seed
    st.integers(1, 2),  # B
    st.integers(1, 3),  # Hkv
    st.integers(1, 4),  # group size
    st.integers(1, 160),  # T
    st.sampled_from([4, 8, 16]),  # D
)


@SETTINGS
@given(shapes)
def test_dense_matches_repeated_kv_reference(shape):
    q, k, v = qkv(*shape)
    torch.testing.assert_close(dense_decode(q, k, v).double(), reference(q, k, v), atol=1e-5, rtol=1e-5)


@SETTINGS
@given(shapes, st.integers(0, 40), st.integers(1, 60))
def test_streaming_matches_streaming_mask(shape, sink, local):
    q, k, v = qkv(*shape)
    T = k.shape[2]
    pos = torch.arange(T)
    mask = streaming_mask(pos[-1:], pos, sink, local)[0].expand(q.shape[0], 1, T)
    out = streaming_decode(q, k, v, sink, local)
    torch.testing.assert_close(out.double(), reference(q, k, v, mask.expand(-1, k.shape[1], -1)), atol=1e-5, rtol=1e-5)
    if sink + local >= T:
        assert torch.equal(out, dense_decode(q, k, v))


@SETTINGS
@given(shapes, st.integers(1, 24), st.integers(1, 200), st.sampled_from(GQA_MODES))
def test_retrieval_matches_its_token_mask_and_is_dense_within_budget(shape, page_size, budget, gqa):
    q, k, v = qkv(*shape)
    T = k.shape[2]
    out = retrieval_decode(q, k, v, page_size, budget, gqa)
    mask = quest_select(q, k, page_size, budget, gqa)
    torch.testing.assert_close(out.double(), reference(q, k, v, mask), atol=1e-5, rtol=1e-5)
    if budget >= T:
        assert mask.all()
        assert torch.equal(out, dense_decode(q, k, v))


@SETTINGS
@given(shapes, st.integers(1, 24))
def test_page_score_bounds_every_key_of_the_page(shape, page_size):
    q, k, _ = qkv(*shape)
    B, Hkv, T, D = k.shape
    g = q.shape[1] // Hkv
    per_head = quest_page_scores(q, k, page_size, "per_query_head").view(B, Hkv, g, -1)  # [B, Hkv, g, P]
    qk = torch.einsum("bhgd,bhtd->bhgt", q.view(B, Hkv, g, D), k)  # every q.k
    page_of = torch.arange(T) // page_size
    bound = per_head[..., page_of]  # the score of each key's page
    tol = 1e-4 * (1 + qk.abs())
    assert (bound >= qk - tol).all()
    # combined modes bound the combined dot products
    assert (quest_page_scores(q, k, page_size, "group_sum")[..., page_of] >= qk.sum(2) - tol.sum(2)).all()
    assert (quest_page_scores(q, k, page_size, "group_max")[..., page_of] >= qk.amax(2) - tol.amax(2)).all()
    # the bound is tight for one-token pages
    if page_size == 1:
        torch.testing.assert_close(per_head, qk, atol=1e-4, rtol=1e-4)


@SETTINGS
@given(shapes, st.integers(1, 24), st.integers(1, 120), st.sampled_from(GQA_MODES))
def test_quest_select_keeps_current_page_and_the_top_pages(shape, page_size, budget, gqa):
    q, k, _ = qkv(*shape)
    T = k.shape[2]
    P = math.ceil(T / page_size)
    sel = quest_select_pages(q, k, page_size, budget, gqa)
    mask = sel.token_mask()
    assert mask.shape == (q.shape[0], q.shape[1] if gqa == "per_query_head" else k.shape[1], T)
    if T <= budget:
        assert mask.all() and sel.dense
        return
    assert mask[..., (P - 1) * page_size :].all()  # the current page
    pages = sel.page_mask()
    expect = min(P, math.ceil(budget / page_size))
    assert (pages.sum(-1) == expect).all()
    if P == 1:
        return
    scores = quest_page_scores(q, k, page_size, gqa)[..., : P - 1]
    chosen = pages[..., : P - 1]
    worst_chosen = torch.where(chosen, scores, torch.inf).amin(-1)
    best_other = torch.where(~chosen, scores, -torch.inf).amax(-1)
    assert (worst_chosen >= best_other).all()


def test_group_modes_combine_query_head_scores():
    q, k, _ = qkv(1, 1, 2, 3, 50, 8)
    per = quest_page_scores(q, k, 4, "per_query_head").view(1, 2, 3, -1)
    torch.testing.assert_close(quest_page_scores(q, k, 4, "group_sum"), per.sum(2))
    torch.testing.assert_close(quest_page_scores(q, k, 4, "group_max"), per.amax(2))


configs = st.builds(
    SparseAttentionConfig,
    sink=st.integers(0, 24),
    local=st.integers(1, 48),
    page_size=st.integers(1, 20),
    budget=st.integers(1, 120),
    gqa=st.sampled_from(GQA_MODES),
    dense_layers=st.integers(0, 2),
)


@SETTINGS
@given(shapes, configs, st.integers(0, 2**16), st.integers(0, 3))
def test_hybrid_matches_its_token_mask(shape, config, bits, layer_idx):
    q, k, v = qkv(*shape)
    Hkv = k.shape[1]
    heads = torch.tensor([(bits >> h) & 1 == 1 for h in range(Hkv)])
    out = hybrid_decode(q, k, v, heads, config, layer_idx=layer_idx)
    mask = hybrid_token_mask(q, k, heads, config, layer_idx=layer_idx)
    torch.testing.assert_close(out.double(), reference(q, k, v, mask), atol=1e-5, rtol=1e-5)


@SETTINGS
@given(shapes, st.integers(0, 2**16))
def test_hybrid_equals_dense_when_everything_fits(shape, bits):
    q, k, v = qkv(*shape)
    T, Hkv = k.shape[2], k.shape[1]
    heads = torch.tensor([(bits >> h) & 1 == 1 for h in range(Hkv)])
    for config in (SparseAttentionConfig(sink=T // 2, local=T - T // 2, budget=T), SparseAttentionConfig(sink=0, local=T, budget=T + 7)):
        torch.testing.assert_close(hybrid_decode(q, k, v, heads, config), dense_decode(q, k, v), atol=1e-6, rtol=1e-6)


def test_hybrid_with_given_metadata_equals_computed_metadata():
    q, k, v = qkv(3, 1, 4, 2, 300, 16)
    config = SparseAttentionConfig(sink=4, local=16, page_size=8, budget=64)
    heads = np.array([True, False, True, False])
    meta_all = quest_page_metadata(k, 8)
    meta_r = quest_page_metadata(k[:, [0, 2]], 8)
    ref = hybrid_decode(q, k, v, heads, config)
    assert torch.equal(hybrid_decode(q, k, v, heads, config, metadata=meta_all), ref)
    assert torch.equal(hybrid_decode(q, k, v, heads, config, metadata=meta_r), ref)
    with pytest.raises(ParameterError, match="metadata"):
        hybrid_decode(q, k, v, heads, config, metadata=quest_page_metadata(k[..., :299, :], 8))


def test_dense_layers_make_retrieval_heads_dense():
    q, k, v = qkv(4, 1, 2, 2, 200, 8)
    config = SparseAttentionConfig(sink=2, local=8, page_size=8, budget=32, dense_layers=2)
    heads = torch.tensor([True, True])
    torch.testing.assert_close(hybrid_decode(q, k, v, heads, config, layer_idx=1), dense_decode(q, k, v), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        hybrid_decode(q, k, v, heads, config, layer_idx=2), retrieval_decode(q, k, v, 8, 32), atol=1e-6, rtol=1e-6
    )


@pytest.mark.parametrize("fn", ["dense", "streaming", "retrieval", "hybrid"])
def test_bfloat16_inputs_give_bfloat16_outputs_close_to_float32(fn):
    q, k, v = qkv(5, 2, 2, 3, 130, 16, dtype=torch.bfloat16)
    config = SparseAttentionConfig(sink=4, local=32, page_size=16, budget=48)
    run = {
        "dense": lambda q, k, v: dense_decode(q, k, v),
        "streaming": lambda q, k, v: streaming_decode(q, k, v, 4, 32),
        "retrieval": lambda q, k, v: retrieval_decode(q, k, v, 16, 48),
        "hybrid": lambda q, k, v: hybrid_decode(q, k, v, [True, False], config),
    }[fn]
    out = run(q, k, v)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), run(q.float(), k.float(), v.float()), atol=2e-2, rtol=2e-2)


# ---- validation -------------------------------------------------------------------------------


def test_errors_name_the_parameter():
    q, k, v = qkv(0, 1, 2, 2, 10, 8)
    with pytest.raises(ParameterError, match="'q'.*3-D"):
        dense_decode(q[None], k, v)
    with pytest.raises(ParameterError, match="'k'.*divides"):
        dense_decode(q[:, :3], k, v)
    with pytest.raises(ParameterError, match="'q'.*head dim"):
        dense_decode(q[..., :4], k, v)
    with pytest.raises(ParameterError, match="'q'.*batch"):
        dense_decode(torch.cat((q, q)), k, v)
    with pytest.raises(ParameterError, match="'v'.*shape"):
        dense_decode(q, k, v[..., :5, :])
    with pytest.raises(ParameterError, match="'q'.*dtype"):
        dense_decode(q.long(), k, v)
    with pytest.raises(ParameterError, match="'k'.*dtype of q"):
        dense_decode(q, k.double().float().bfloat16(), v)
    with pytest.raises(ParameterError, match="'k'.*device"):
        dense_decode(q, k.to("meta"), v.to("meta"))
    with pytest.raises(ParameterError, match="'q'.*torch.Tensor"):
        dense_decode(q.numpy(), k, v)
    with pytest.raises(ParameterError, match="'mask'"):
        masked_decode(q, k, v, torch.ones(1, 2, 9, dtype=torch.bool))
    with pytest.raises(ParameterError, match="'gqa'.*did you mean"):
        quest_select(q, k, 4, 4, "group_summ")
    with pytest.raises(ParameterError, match="'page_size'"):
        quest_select(q, k, 0, 4)
    with pytest.raises(ParameterError, match="'local'"):
        streaming_decode(q, k, v, 4, 0)
    with pytest.raises(ParameterError, match="'retrieval_heads'"):
        hybrid_decode(q, k, v, [True], SparseAttentionConfig())
    with pytest.raises(ParameterError, match="'config'"):
        hybrid_decode(q, k, v, [True, False], {"budget": 4})
    with pytest.raises(ParameterError, match="'scale'"):
        dense_decode(q, k, v, scale=-1.0)
    with pytest.raises(ParameterError, match="'budget'"):
        SparseAttentionConfig(budget=0)


def test_gather_works_on_non_contiguous_caches():
    """A cache view (e.g. a slice of a preallocated buffer) takes the advanced-indexing path."""
    q, k, v = qkv(6, 2, 3, 2, 260, 8)
    buffer_k, buffer_v = torch.zeros(2, 3, 300, 8), torch.zeros(2, 3, 300, 8)
    buffer_k[:, :, :260], buffer_v[:, :, :260] = k, v
    kv = buffer_k[:, :, :260], buffer_v[:, :, :260]
    assert not kv[0].is_contiguous()
    for gqa in GQA_MODES:
        torch.testing.assert_close(retrieval_decode(q, *kv, 16, 64, gqa), retrieval_decode(q, k, v, 16, 64, gqa), atol=1e-6, rtol=1e-6)
