"""Tiled attention: partials merged by log-sum-exp equal dense attention (SPEC 1.4)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from h2eal_core.attention import (
    AttentionPartials,
    attention_partials,
    dense_decode,
    masked_decode,
    merge_partials,
    tiled_decode,
)
from h2eal_core.validation import ParameterError

SETTINGS = settings(max_examples=40, deadline=None)

shapes = st.tuples(
    st.integers(0, 10_000), st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 150), st.sampled_from([4, 8, 16])
)


def qkv(seed, B, Hkv, g, T, D):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, Hkv * g, D, generator=gen),
        torch.randn(B, Hkv, T, D, generator=gen) * 2,
        torch.randn(B, Hkv, T, D, generator=gen),
    )


@SETTINGS
@given(shapes, st.integers(1, 160))
def test_tiled_equals_dense_for_every_tile_size(shape, tile):
    q, k, v = qkv(*shape)
    torch.testing.assert_close(tiled_decode(q, k, v, tile), dense_decode(q, k, v), atol=1e-5, rtol=1e-5)


@SETTINGS
@given(shapes, st.integers(1, 40), st.booleans(), st.integers(0, 2**31))
def test_tiled_with_mask_equals_masked_dense(shape, tile, per_query_head, mask_seed):
    q, k, v = qkv(*shape)
    B, Hkv, T, _ = k.shape
    rows = q.shape[1] if per_query_head else Hkv
    mask = torch.rand(B, rows, T, generator=torch.Generator().manual_seed(mask_seed)) < 0.4
    mask[..., -1] = True  # the current token, as in every decode path
    torch.testing.assert_close(tiled_decode(q, k, v, tile, mask), masked_decode(q, k, v, mask), atol=1e-5, rtol=1e-5)


def test_merge_is_associative_and_partials_are_d_plus_2_numbers():
    q, k, v = qkv(1, 2, 2, 3, 90, 8)
    parts = [attention_partials(q, k[..., s : s + 30, :], v[..., s : s + 30, :]) for s in (0, 30, 60)]
    assert parts[0].m.shape == parts[0].l.shape == (2, 6) and parts[0].o.shape == (2, 6, 8)
    flat = merge_partials(parts)
    nested = merge_partials([merge_partials(parts[:2]), parts[2]])
    other_order = merge_partials([parts[2], merge_partials([parts[1], parts[0]])])
    for p in (nested, other_order):
        torch.testing.assert_close(p.output(), flat.output(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(flat.output(), dense_decode(q, k, v), atol=1e-6, rtol=1e-6)


def test_fully_masked_tiles_drop_out_and_empty_rows_give_zero():
    q, k, v = qkv(2, 1, 1, 2, 20, 4)
    mask = torch.zeros(1, 1, 20, dtype=torch.bool)
    mask[..., 15:] = True
    empty = attention_partials(q, k[..., :10, :], v[..., :10, :], mask[..., :10])
    assert torch.isinf(empty.m).all() and (empty.l == 0).all() and (empty.o == 0).all()
    torch.testing.assert_close(tiled_decode(q, k, v, 10, mask), masked_decode(q, k, v, mask), atol=1e-6, rtol=1e-6)
    nothing = torch.zeros(1, 1, 20, dtype=torch.bool)
    assert (tiled_decode(q, k, v, 7, nothing) == 0).all()
    assert (masked_decode(q, k, v, nothing) == 0).all()


def test_bfloat16_tiles():
    q, k, v = (t.bfloat16() for t in qkv(3, 1, 2, 2, 64, 16))
    out = tiled_decode(q, k, v, 10)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, dense_decode(q, k, v), atol=1e-2, rtol=1e-2)


def test_errors():
    q, k, v = qkv(0, 1, 1, 1, 8, 4)
    with pytest.raises(ParameterError, match="'tile_size'"):
        tiled_decode(q, k, v, 0)
    with pytest.raises(ParameterError, match="'partials'"):
        merge_partials([])
    with pytest.raises(ParameterError, match="'mask'"):
        tiled_decode(q, k, v, 4, torch.ones(1, 1, 8))
    assert isinstance(merge_partials([attention_partials(q, k, v)]), AttentionPartials)
