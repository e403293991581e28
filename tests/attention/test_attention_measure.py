"""Accounting measured from real masks agrees with the closed forms of accounting.py."""

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from h2eal_core.attention import (
    SparseAttentionConfig,
    access_from_masks,
    head_access,
    measure_hybrid_decode,
)
from h2eal_core.validation import ParameterError

SETTINGS = settings(max_examples=40, deadline=None)


def qk(seed, B, Hkv, g, T, D):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, Hkv * g, D, generator=gen), torch.randn(B, Hkv, T, D, generator=gen)


configs = st.builds(
    SparseAttentionConfig,
    sink=st.integers(0, 30),
    local=st.integers(1, 60),
    page_size=st.integers(1, 20),
    budget=st.integers(1, 150),
    gqa=st.sampled_from(["group_sum", "group_max"]),
)
shapes = st.tuples(st.integers(0, 9999), st.integers(1, 2), st.integers(1, 4), st.integers(1, 4), st.integers(1, 300), st.sampled_from([4, 16]))


@SETTINGS
@given(shapes, configs, st.integers(0, 15))
def test_measured_equals_closed_form_for_group_modes(shape, config, bits):
    seed, B, Hkv, g, T, D = shape
    q, k = qk(*shape)
    heads = np.array([(bits >> h) & 1 == 1 for h in range(Hkv)])
    acc = measure_hybrid_decode(q, k, heads, config)
    for b in range(B):
        for h in range(Hkv):
            kind = "retrieval" if heads[h] else "streaming"
            assert acc.head(b, h) == head_access(kind, T, config, D, g), (b, h)


@SETTINGS
@given(shapes, configs)
def test_per_query_head_reads_at_most_the_closed_form_bound(shape, config):
    seed, B, Hkv, g, T, D = shape
    config = config.replace(gqa="per_query_head")
    q, k = qk(*shape)
    acc = measure_hybrid_decode(q, k, np.ones(Hkv, dtype=bool), config)
    bound = head_access("retrieval", T, config, D, g)
    assert (acc.tokens_read <= bound.tokens_read).all()
    assert (acc.attention_macs <= bound.attention_macs).all()
    assert (acc.pages_selected <= bound.pages_selected).all()
    if g == 1:
        assert all(acc.head(b, h) == bound for b in range(B) for h in range(Hkv))


def test_dense_layers_and_totals():
    q, k = qk(1, 1, 2, 2, 100, 8)
    config = SparseAttentionConfig(sink=4, local=8, page_size=8, budget=16, dense_layers=1)
    acc = measure_hybrid_decode(q, k, [True, False], config, layer_idx=0)
    assert acc.kinds == ("dense", "streaming")
    assert acc.head(0, 0) == head_access("dense", 100, config, 8, 2)
    assert acc.kv_bytes_read(2.0) == 2 * (100 + 12) * 8 * 2.0
    assert acc.read_fraction == pytest.approx((100 + 12) / 200)


def test_mask_shape_errors():
    config = SparseAttentionConfig()
    with pytest.raises(ParameterError, match="read_mask"):
        access_from_masks(("dense",), torch.ones(1, 3, 5, dtype=torch.bool), config, 4, 2)
    with pytest.raises(ParameterError, match=r"kinds\[0\]"):
        access_from_masks(("sparse",), torch.ones(1, 1, 5, dtype=torch.bool), config, 4)
    assert dataclasses.is_dataclass(access_from_masks(("dense",), torch.ones(1, 2, 5, dtype=torch.bool), config, 4, 2))
