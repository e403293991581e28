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


def test_booleans_are_only_true_or_false():
    from h2eal_core.validation import check_bool

    assert check_bool("flag", True) is True and check_bool("flag", False) is False
    for bad in ("yes", "true", 1, 0, None):
        with pytest.raises(ParameterError, match="'flag'"):
            check_bool("flag", bad)


@pytest.mark.parametrize(
    "type_name, good, bad",
    [("int", 3, [3.0, True, "3"]), ("float", 2.5, ["2.5", False, None]), ("str", "x", [3, None]),
     ("bool", True, ["yes", 1]), ("list", [1], [5, "a,b", None]), ("list[int]", [1], [5])],
)
def test_declared_types(type_name, good, bad):
    from h2eal_core.validation import check_declared_type

    assert check_declared_type("p", good, type_name) == good
    for value in bad:
        with pytest.raises(ParameterError) as err:
            check_declared_type("p", value, type_name)
        assert err.value.name == "p" and type_name in str(err.value)
    assert check_declared_type("p", 2, "float") == 2.0 and isinstance(check_declared_type("p", 2, "float"), float)


def test_unknown_names_get_a_suggestion():
    from h2eal_core.validation import check_known_name

    with pytest.raises(ParameterError, match="did you mean 'context_len'"):
        check_known_name("contxt_len", ["context_len", "models"])
    with pytest.raises(ParameterError, match="unknown name"):
        check_known_name("zzz", ["context_len", "models"])
