"""The vectorised Pareto routine equals the O(n^2) definition (hypothesis, with ties, duplicates and NaN)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from h2eal_core.dse import pareto_mask
from h2eal_core.validation import ParameterError


def brute_force(v: np.ndarray) -> np.ndarray:
    n = len(v)
    out = np.zeros(n, dtype=bool)
    for i in range(n):
        if np.isnan(v[i]).any():
            continue
        dominated = False
        for j in range(n):
            if j == i or np.isnan(v[j]).any():
                continue
            if (v[j] <= v[i]).all() and (v[j] < v[i]).any():
                dominated = True
                break
        out[i] = not dominated
    return out


@st.composite
def tables(draw):
    n = draw(st.integers(0, 60))
    k = draw(st.integers(1, 5))
    # few distinct values -> many ties and duplicates
    values = draw(arrays(np.float64, (n, k), elements=st.sampled_from([0.0, 1.0, 2.0, 2.5, 3.0, -1.0, np.nan])))
    return values


@settings(max_examples=300, deadline=None)
@given(tables(), st.integers(1, 8))
def test_matches_definition(values, block):
    assert np.array_equal(pareto_mask(values, block=block), brute_force(values))


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, (40, 3), elements=st.floats(-5, 5)), st.lists(st.sampled_from(["min", "max"]), min_size=3, max_size=3))
def test_max_sense_is_min_of_the_negation(values, senses):
    flipped = values * np.where(np.array(senses) == "max", -1.0, 1.0)
    assert np.array_equal(pareto_mask(values, senses), brute_force(flipped))


def test_simple_front_and_invariants():
    v = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [2, 2], [6, 6]], dtype=float)
    m = pareto_mask(v)
    assert m.tolist() == [True, True, True, False, True, False]  # duplicates both kept
    rng = np.random.default_rng(0)
    big = rng.random((20000, 3))
    mask = pareto_mask(big)
    front = big[mask]
    # no frontier point dominates another; every other point is dominated by a frontier point
    assert not any(((front <= p).all(1) & (front < p).any(1)).any() for p in front)
    others = big[~mask][:500]
    assert all(((front <= p).all(1) & (front < p).any(1)).any() for p in others)


def test_bad_senses():
    with pytest.raises(ParameterError, match="senses"):
        pareto_mask(np.zeros((3, 2)), ["min"])
