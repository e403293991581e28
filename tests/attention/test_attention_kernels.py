"""The fast decode kernels (issue 12) against the references: every dense kernel, the contiguous
page metadata, row gathers from padded caches, the fused selected-page attention, the streaming
store. CPU always; CUDA too when a GPU is present."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from h2eal_core.attention import (
    GQA_MODES,
    PageMetadata,
    SparseAttentionConfig,
    dense_decode,
    hybrid_decode,
    hybrid_token_mask,
    masked_decode,
    quest_page_metadata,
    quest_page_scores,
    quest_select_pages,
    retrieval_decode,
    streaming_decode,
    streaming_kv,
)
from h2eal_core.attention import retrieval as retrieval_module
from h2eal_core.attention.dense import DENSE_DECODE_KERNELS
from h2eal_core.attention.hybrid import head_runs, heads_index
from h2eal_core.attention.retrieval import GatherWorkspace, gather_pages, storage_rows
from h2eal_core.validation import ParameterError

SETTINGS = settings(max_examples=30, deadline=None)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]

shapes = st.tuples(
    st.integers(0, 10_000),  # seed
    st.integers(1, 2),  # B
    st.integers(1, 4),  # Hkv
    st.integers(1, 4),  # group size
    st.integers(1, 200),  # T
    st.sampled_from([4, 8, 16]),  # D
)


def qkv(seed, B, Hkv, g, T, D, device="cpu", dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hkv * g, D, generator=gen)
    k = torch.randn(B, Hkv, T, D, generator=gen)
    v = torch.randn(B, Hkv, T, D, generator=gen)
    return q.to(device, dtype), k.to(device, dtype), v.to(device, dtype)


def reference(q, k, v, mask=None):
    """float64 attention with the KV heads repeated per query head (the textbook GQA form)."""
    g = q.shape[1] // k.shape[1]
    kk, vv = k.double().repeat_interleave(g, dim=1), v.double().repeat_interleave(g, dim=1)
    s = torch.einsum("bhd,bhtd->bht", q.double(), kk) / math.sqrt(q.shape[-1])
    if mask is not None:
        if mask.shape[1] != q.shape[1]:
            mask = mask.repeat_interleave(g, dim=1)
        s = s.masked_fill(~mask, float("-inf"))
    return torch.einsum("bht,bhtd->bhd", torch.softmax(s, -1), vv)


def padded(x: torch.Tensor, extra: int) -> torch.Tensor:
    """``x`` as the first ``T`` tokens of a larger buffer (the PolicyCache layout: non-contiguous)."""
    B, H, T, D = x.shape
    buf = torch.full((B, H, T + extra, D), float("nan"), dtype=x.dtype, device=x.device)
    buf[:, :, :T] = x
    return buf[:, :, :T]


# ---- dense kernels -------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(shape=shapes, kernel=st.sampled_from(sorted(DENSE_DECODE_KERNELS)))
def test_every_dense_kernel_equals_the_reference(device, shape, kernel):
    q, k, v = qkv(*shape, device=device)
    out = dense_decode(q, k, v, kernel=kernel)
    assert out.shape == q.shape and out.dtype == q.dtype
    torch.testing.assert_close(out.double().cpu(), reference(q, k, v).cpu(), atol=1e-5, rtol=1e-5)


def test_dense_kernel_name_is_checked():
    q, k, v = qkv(0, 1, 2, 2, 10, 8)
    with pytest.raises(ParameterError, match="'kernel'"):
        dense_decode(q, k, v, kernel="flash")


@pytest.mark.parametrize("device", DEVICES)
def test_dense_kernels_read_padded_caches(device):
    q, k, v = qkv(1, 2, 3, 2, 77, 8, device=device)
    kp, vp = padded(k, 13), padded(v, 13)
    for name in DENSE_DECODE_KERNELS:
        torch.testing.assert_close(dense_decode(q, kp, vp, kernel=name), dense_decode(q, k, v, kernel=name), atol=1e-6, rtol=1e-6)


# ---- page metadata -------------------------------------------------------------------------------


@SETTINGS
@given(shapes, st.integers(1, 24), st.sampled_from(GQA_MODES))
def test_contiguous_metadata_scores_equal_separate_min_max(shape, page_size, gqa):
    q, k, _ = qkv(*shape)
    meta = quest_page_metadata(k, page_size)
    assert meta.bounds is not None and meta.bounds.is_contiguous()
    P = math.ceil(k.shape[2] / page_size)
    assert meta.bounds.shape == (k.shape[0], k.shape[1], P, 2, k.shape[3])
    pages = torch.nn.functional.pad(k, (0, 0, 0, P * page_size - k.shape[2]), value=float("nan")).unflatten(2, (P, page_size))
    torch.testing.assert_close(meta.max, pages.nan_to_num(float("-inf")).amax(3))
    torch.testing.assert_close(meta.min, pages.nan_to_num(float("inf")).amin(3))
    separate = PageMetadata(meta.min.clone(), meta.max.clone(), page_size, k.shape[2])
    assert separate.packed_bounds() is None
    torch.testing.assert_close(
        quest_page_scores(q, k, page_size, gqa, metadata=meta), quest_page_scores(q, k, page_size, gqa, metadata=separate),
        atol=1e-5, rtol=1e-5,
    )


def test_select_heads_keeps_the_contiguous_layout():
    _, k, _ = qkv(2, 1, 4, 1, 40, 8)
    meta = quest_page_metadata(k, 8)
    for heads in (slice(0, 4, 2), torch.tensor([1, 3])):
        sub = meta.select_heads(heads)
        assert sub.bounds is not None and sub.packed_bounds() is not None
        torch.testing.assert_close(sub.min, meta.min[:, heads])
        torch.testing.assert_close(sub.max, meta.max[:, heads])


# ---- gathers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(shape=shapes, page_size=st.integers(1, 12), budget=st.integers(1, 80), gqa=st.sampled_from(GQA_MODES),
       extra=st.integers(0, 9), use_workspace=st.booleans())
def test_gather_from_padded_caches_equals_advanced_indexing(device, shape, page_size, budget, gqa, extra, use_workspace):
    q, k, v = qkv(*shape, device=device)
    sel = quest_select_pages(q, k, page_size, budget, gqa)
    kp, vp = padded(k, extra), padded(v, extra)
    assert storage_rows(kp) is not None
    ws = GatherWorkspace() if use_workspace else None
    gk, gv = gather_pages(kp, vp, sel, workspace=ws)
    tokens = retrieval_module.selected_token_index(sel, k.device)
    B, S = tokens.shape[:2]
    heads = torch.arange(k.shape[1], device=k.device)
    if sel.per_query_head:
        heads = heads.repeat_interleave(sel.group_size)
    b = torch.arange(B, device=k.device).view(B, 1, 1)
    assert torch.equal(gk, k[b, heads.view(1, S, 1), tokens])
    assert torch.equal(gv, v[b, heads.view(1, S, 1), tokens])


def test_storage_rows_refuses_layouts_without_contiguous_rows():
    k = torch.randn(1, 2, 10, 8)
    assert storage_rows(k.transpose(-1, -2).contiguous().transpose(-1, -2)) is None  # columns contiguous
    assert storage_rows(k[..., :4]) is None  # rows of 4 inside rows of 8
    rows, bs, hs = storage_rows(k[:, 1:])
    assert torch.equal(rows[hs * 0 : 10], k[0, 1])


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(shape=shapes, page_size=st.integers(1, 12), budget=st.integers(1, 80), gqa=st.sampled_from(GQA_MODES), extra=st.integers(0, 5))
def test_fused_selected_page_attention_equals_its_token_mask(device, shape, page_size, budget, gqa, extra):
    """The embedding_bag path (float32 CPU) and the gather + fused-kernel path give the masked result."""
    q, k, v = qkv(*shape, device=device)
    mask = quest_select_pages(q, k, page_size, budget, gqa).token_mask()
    ref = reference(q, k, v, mask)
    out = retrieval_decode(q, padded(k, extra), padded(v, extra), page_size, budget, gqa, workspace=GatherWorkspace())
    torch.testing.assert_close(out.double().cpu(), ref.cpu(), atol=1e-5, rtol=1e-5)


def test_both_selected_page_paths_agree():
    """embedding_bag on V in place (fused) = gathered K and V + the fused dense kernel."""
    q, k, v = qkv(3, 2, 3, 2, 300, 16)
    qg = q.unflatten(1, (3, 2))
    for gqa in GQA_MODES:
        sel = quest_select_pages(q, k, 8, 64, gqa)
        fused = retrieval_module.attend_selection(qg, k, v, sel, 0.25, fused=True)
        gathered = retrieval_module.attend_selection(qg, k, v, sel, 0.25, fused=False)
        torch.testing.assert_close(fused, gathered, atol=1e-6, rtol=1e-6)
        bf = retrieval_decode(q.bfloat16(), k.bfloat16(), v.bfloat16(), 8, 64, gqa)  # gather + fused kernel
        torch.testing.assert_close(bf.float(), retrieval_decode(q, k, v, 8, 64, gqa), atol=3e-2, rtol=3e-2)


# ---- streaming and hybrid -----------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(shape=shapes, sink=st.integers(0, 30), local=st.integers(1, 60), extra=st.integers(0, 5))
def test_streaming_two_views_on_padded_caches(device, shape, sink, local, extra):
    q, k, v = qkv(*shape, device=device)
    T = k.shape[2]
    pos = torch.arange(T, device=device)
    allowed = (pos < sink) | (T - 1 - pos < local)
    ref = reference(q, k, v, allowed.expand(k.shape[0], k.shape[1], T))
    out = streaming_decode(q, padded(k, extra), padded(v, extra), sink, local)
    torch.testing.assert_close(out.double().cpu(), ref.cpu(), atol=1e-5, rtol=1e-5)


configs = st.builds(
    SparseAttentionConfig,
    sink=st.integers(0, 24),
    local=st.integers(1, 48),
    page_size=st.integers(1, 20),
    budget=st.integers(1, 120),
    gqa=st.sampled_from(GQA_MODES),
)


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(shape=shapes, config=configs, bits=st.integers(1, 2**4 - 1))
def test_hybrid_with_a_streaming_store_equals_hybrid_on_the_full_cache(device, shape, config, bits):
    q, k, v = qkv(*shape, device=device)
    Hkv = k.shape[1]
    heads = torch.tensor([(bits >> h) & 1 == 1 for h in range(Hkv)])
    if heads.all():
        heads[-1] = False
    ks, vs = streaming_kv(k[:, ~heads], v[:, ~heads], config.sink, config.local)
    meta = quest_page_metadata(k[:, heads], config.page_size)
    ws = GatherWorkspace()
    out = hybrid_decode(q, k, v, heads, config, metadata=meta, streaming_kv=(ks.clone(), vs.clone()), workspace=ws)
    mask = hybrid_token_mask(q, k, heads, config, metadata=meta)
    torch.testing.assert_close(out.double().cpu(), reference(q, k, v, mask).cpu(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, hybrid_decode(q, k, v, heads, config), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out, masked_decode(q, k, v, mask), atol=1e-5, rtol=1e-5)


def test_streaming_store_shape_is_checked():
    q, k, v = qkv(0, 1, 2, 2, 100, 8)
    config = SparseAttentionConfig(sink=4, local=8, page_size=4, budget=16)
    with pytest.raises(ParameterError, match="'streaming_kv'"):
        hybrid_decode(q, k, v, [True, False], config, streaming_kv=(k[:, 1:, :10], v[:, 1:, :10]))
    with pytest.raises(ParameterError, match="'streaming_kv'"):
        hybrid_decode(q, k, v, [True, False], config, streaming_kv=k)


@given(st.lists(st.integers(0, 15), min_size=1, max_size=10, unique=True))
def test_head_index_helpers_cover_the_heads_exactly(heads):
    heads = sorted(heads)
    idx = heads_index(heads, "cpu")
    as_list = list(range(16))[idx] if isinstance(idx, slice) else idx.tolist()
    assert as_list == heads
    covered = [h for r in head_runs(heads) for h in range(16)[r]]
    assert covered == heads
    if heads == list(range(heads[0], heads[-1] + 1, max(1, heads[1] - heads[0]) if len(heads) > 1 else 1)):
        assert isinstance(idx, slice) and len(head_runs(heads)) == 1


def test_workspace_reuses_and_grows_its_buffers():
    ws = GatherWorkspace()
    a, b = ws.rows(10, 8, torch.float32, "cpu")
    assert a.shape == b.shape == (10, 8) and a.data_ptr() != b.data_ptr()
    c, _ = ws.rows(6, 8, torch.float32, "cpu")
    assert c.data_ptr() == a.data_ptr()
    d, _ = ws.rows(50, 8, torch.float32, "cpu")
    assert d.shape == (50, 8) and ws.nbytes == 2 * 50 * 8 * 4
    assert np.isfinite(ws.nbytes)
    i = ws.indices(30, "cpu")
    assert i.shape == (30,) and i.dtype == torch.long and i.is_contiguous()
    assert ws.indices(12, "cpu").data_ptr() == i.data_ptr()  # reused while large enough
    assert ws.indices(70, "cpu").shape == (70,) and ws.nbytes == 2 * 50 * 8 * 4 + 70 * 8


@pytest.mark.parametrize("gqa", GQA_MODES)
def test_fused_path_with_and_without_workspace_agree_across_steps(gqa):
    """The workspace's buffers are reused from step to step, grow and are then used in part: the
    results stay bit-equal to those of fresh buffers (a batch of 2, so the batch stride of the row
    indices is exercised too)."""
    ws = GatherWorkspace()
    for T in (40, 57, 200, 41):  # grows, then shrinks
        q, k, v = qkv(T, 2, 8, 2, T, 8)
        out = retrieval_decode(q, k, v, 4, 16, gqa, workspace=ws)
        torch.testing.assert_close(out, retrieval_decode(q, k, v, 4, 16, gqa), atol=0, rtol=0)
        mask = quest_select_pages(q, k, 4, 16, gqa).token_mask()
        torch.testing.assert_close(out.double(), reference(q, k, v, mask), atol=1e-5, rtol=1e-5)
