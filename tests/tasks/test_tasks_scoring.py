"""Exact-match scoring and the Wilson interval."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from h2eal_core.tasks import exact_match, normalize, wilson_interval
from h2eal_core.validation import ParameterError


@pytest.mark.parametrize(
    "prediction, answers, expected",
    [
        (" 71432.", ["71432"], True),
        ("The pass key is 71432, I think", ["71432"], True),
        (" 714320", ["71432"], False),
        (" 7 1 4 3 2", ["71432"], False),
        ("\n- 57889\n- 96944\n", ["57889", "96944"], True),
        ("\n- 57889\n- 9694", ["57889", "96944"], False),
        (" RGP, and VAR ZEJ.", ["RGP", "ZEJ"], True),
        (" Sydney.", ["Sydney"], True),
        (" New York", ["York"], True),
        (" Newyork", ["York"], False),
        ("", ["1"], False),
        ("anything", [], False),
    ],
)
def test_exact_match(prediction, answers, expected):
    assert exact_match(prediction, answers) is expected


def test_strict_mode():
    assert exact_match(" 71432. Done", ["71432"], mode="strict")
    assert not exact_match(" It is 71432", ["71432"], mode="strict")
    assert not exact_match(" 1 2", ["1", "2"], mode="strict")
    with pytest.raises(ParameterError, match="mode"):
        exact_match("a", ["a"], mode="fuzzy")


def test_normalize():
    assert normalize("The PASS-key: 123!") == ["the", "pass", "key", "123"]


def test_wilson_known_values():
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    lo, hi = wilson_interval(10, 20)
    assert (lo, hi) == (pytest.approx(0.2993, abs=1e-4), pytest.approx(0.7007, abs=1e-4))
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


@given(st.integers(1, 500), st.data())
def test_wilson_contains_the_estimate(n, data):
    k = data.draw(st.integers(0, n))
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
