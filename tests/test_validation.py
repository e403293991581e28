import math

import numpy as np
import pytest

from h2eal_core.validation import (
    ParameterError,
    check_choice,
    check_fraction,
    check_list,
    check_number,
    check_positive,
    check_positive_int,
)


def test_choice_names_parameter_value_and_allowed_and_suggests():
    with pytest.raises(ParameterError) as err:
        check_choice("design", "h2eall", ["baseline", "h2eal"])
    msg = str(err.value)
    assert "'design'" in msg and "'h2eall'" in msg and "'baseline'" in msg and "did you mean 'h2eal'" in msg
    assert err.value.name == "design" and err.value.value == "h2eall"


@pytest.mark.parametrize("bad", [-1, 0, 1.5, True, "3", None, float("nan")])
def test_positive_int_rejects(bad):
    with pytest.raises(ParameterError, match="'n'"):
        check_positive_int("n", bad)


def test_positive_int_accepts_numpy_ints():
    assert check_positive_int("n", np.int64(4)) == 4


@pytest.mark.parametrize("bad", [0, -0.1, math.inf, math.nan, "1"])
def test_positive_rejects(bad):
    with pytest.raises(ParameterError):
        check_positive("x", bad)


def test_fraction_bounds():
    assert check_fraction("r", 0.0) == 0.0 and check_fraction("r", 1) == 1
    with pytest.raises(ParameterError, match="<= 1.0"):
        check_fraction("r", 1.01)


def test_number_exclusive_bounds():
    with pytest.raises(ParameterError, match="> 0"):
        check_number("x", 0, minimum=0, min_inclusive=False)


def test_list_checks_items_with_indexed_names():
    with pytest.raises(ParameterError, match=r"'xs\[1\]'"):
        check_list("xs", [1, -2], check_positive_int)
    with pytest.raises(ParameterError, match="'xs'"):
        check_list("xs", "abc", check_positive_int)
    with pytest.raises(ParameterError):
        check_list("xs", [], check_positive_int)
