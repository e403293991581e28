"""Prefill: causal and chunked streaming attention against full-mask references."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from h2eal_core.attention import (
    SparseAttentionConfig,
    causal_mask,
    causal_prefill,
    hybrid_prefill,
    streaming_mask,
    streaming_prefill,
)
from h2eal_core.validation import ParameterError

SETTINGS = settings(max_examples=30, deadline=None)


def qkv(seed, B, Hkv, g, n, T, D):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, Hkv * g, n, D, generator=gen),
        torch.randn(B, Hkv, T, D, generator=gen),
        torch.randn(B, Hkv, T, D, generator=gen),
    )


def reference(q, k, v, mask):
    g = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(
        q.double(), k.double().repeat_interleave(g, 1), v.double().repeat_interleave(g, 1), attn_mask=mask
    ).float()


cases = st.tuples(
    st.integers(0, 10_000), st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 120), st.sampled_from([4, 8])
)


@SETTINGS
@given(cases, st.integers(0, 60))
def test_causal_prefill_after_a_prefix(case, prefix):
    seed, B, Hkv, g, n, D = case
    q, k, v = qkv(seed, B, Hkv, g, n, n + prefix, D)
    pos = torch.arange(n + prefix)
    torch.testing.assert_close(causal_prefill(q, k, v), reference(q, k, v, causal_mask(pos[prefix:], pos)), atol=1e-5, rtol=1e-5)


@SETTINGS
@given(cases, st.integers(0, 20), st.integers(1, 40), st.one_of(st.none(), st.integers(1, 50)), st.integers(0, 30))
def test_streaming_prefill_equals_the_streaming_mask_for_any_chunk(case, sink, local, chunk, prefix):
    seed, B, Hkv, g, n, D = case
    T = n + prefix
    q, k, v = qkv(seed, B, Hkv, g, n, T, D)
    pos = torch.arange(T)
    ref = reference(q, k, v, streaming_mask(pos[prefix:], pos, sink, local))
    torch.testing.assert_close(streaming_prefill(q, k, v, sink, local, chunk_size=chunk), ref, atol=1e-5, rtol=1e-5)


def test_streaming_prefill_on_a_trimmed_cache_with_positions():
    """Keys a streaming cache keeps (sink + window) plus a new chunk give the same outputs as all keys."""
    sink, local, T, n = 4, 10, 60, 7
    q, k, v = qkv(0, 1, 2, 2, n, T, 8)
    keep = (torch.arange(T) < sink) | (torch.arange(T) >= T - n - local)
    full = streaming_prefill(q, k, v, sink, local)
    kept = streaming_prefill(q, k[:, :, keep], v[:, :, keep], sink, local, key_positions=torch.arange(T)[keep], chunk_size=3)
    torch.testing.assert_close(kept, full, atol=1e-6, rtol=1e-6)
    with pytest.raises(ParameterError, match="key_positions"):
        streaming_prefill(q, k, v, sink, local, key_positions=torch.arange(T).flip(0))


def test_hybrid_prefill_per_head_kind():
    config = SparseAttentionConfig(sink=3, local=9)
    q, k, v = qkv(1, 1, 3, 2, 40, 40, 8)
    out = hybrid_prefill(q, k, v, [True, False, True], config, chunk_size=16)
    pos = torch.arange(40)
    causal = reference(q, k, v, causal_mask(pos, pos))
    stream = reference(q, k, v, streaming_mask(pos, pos, 3, 9))
    torch.testing.assert_close(out[:, 0:2], causal[:, 0:2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 2:4], stream[:, 2:4], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 4:6], causal[:, 4:6], atol=1e-5, rtol=1e-5)


def test_prefill_errors():
    q, k, v = qkv(0, 1, 1, 1, 5, 4, 4)
    with pytest.raises(ParameterError, match="'q'.*query tokens"):
        causal_prefill(q, k, v)
    q, k, v = qkv(0, 1, 1, 1, 4, 4, 4)
    with pytest.raises(ParameterError, match="'chunk_size'"):
        streaming_prefill(q, k, v, 1, 2, chunk_size=0)
