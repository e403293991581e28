import pytest
import yaml

from h2eal_core.config import Quantity, load_yaml, parse_quantity, resolve_named_file
from h2eal_core.validation import ParameterError

GOOD = {"value": 25.6, "unit": "GB/s", "source": "H2-LLM artifact", "confidence": "medium", "band": [6.4, 51.2]}


def test_parse_and_si_conversion():
    q = parse_quantity("bank_bandwidth", GOOD, expected_dimension="bytes/s")
    assert isinstance(q, Quantity)
    assert q.si == pytest.approx(25.6e9)
    assert q.band_si == pytest.approx((6.4e9, 51.2e9))
    assert q.with_value(12.8).si == pytest.approx(12.8e9)
    assert "override" in q.with_value(12.8).source


@pytest.mark.parametrize(
    "change, field",
    [
        ({"unit": "parsecs"}, "bw.unit"),
        ({"unit": "pJ/bit"}, "bw.unit"),  # wrong dimension
        ({"value": "fast"}, "bw.value"),
        ({"source": ""}, "bw.source"),
        ({"confidence": "sure"}, "bw.confidence"),
        ({"band": [30, 40]}, "bw.band"),  # does not contain the value
        ({"band": [40, 30]}, "bw.band"),
        ({"colour": "red"}, "bw.colour"),
    ],
)
def test_bad_entries_name_the_field(change, field):
    entry = {**GOOD, **change}
    with pytest.raises(ParameterError) as err:
        parse_quantity("bw", entry, expected_dimension="bytes/s")
    assert err.value.name == field


def test_missing_unit_is_reported():
    entry = {k: v for k, v in GOOD.items() if k != "unit"}
    with pytest.raises(ParameterError, match="unit"):
        parse_quantity("bw", entry)


def test_load_yaml_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ParameterError, match="mapping"):
        load_yaml(bad)


def test_resolve_named_file_lists_known(tmp_path):
    (tmp_path / "a.yaml").write_text("x: 1\n")
    assert resolve_named_file("a", tmp_path, "thing") == tmp_path / "a.yaml"
    with pytest.raises(ParameterError, match="'a'"):
        resolve_named_file("b", tmp_path, "thing")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "hw.yaml"
    path.write_text("memory:\n  bank_bandwidth:\n    value: [25.6\n    unit: GB/s\n")
    with pytest.raises(ParameterError) as err:
        load_yaml(path)
    assert err.value.name.endswith("hw.yaml:4") and "valid YAML" in str(err.value) and "\n" not in str(err.value)


def test_yaml_booleans_are_only_true_and_false():
    from h2eal_core.config import parse_yaml_text

    assert parse_yaml_text("a: yes\nb: true\nc: [no, False, on]\nd: 1") == {"a": "yes", "b": True, "c": ["no", False, "on"], "d": 1}


@pytest.mark.parametrize(
    "unit, value, words",
    [("GB/s", -25.6, "must be positive"), ("GB/s", 0, "must be positive"), ("MHz", -1, "must be positive"),
     ("MB", 0.0, "must be positive"), ("pJ/bit", -0.1, "must not be negative"), ("count", -1, "must not be negative")],
)
def test_sign_is_checked_before_the_band(unit, value, words):
    entry = {"value": value, "unit": unit, "source": "s", "band": [1, 2]}
    with pytest.raises(ParameterError) as err:
        parse_quantity("q", entry)
    assert err.value.name == "q.value" and words in str(err.value)


def test_zero_energy_is_allowed_and_wrong_unit_comes_first():
    assert parse_quantity("e", {"value": 0, "unit": "pJ/bit", "source": "ideal"}).si == 0
    with pytest.raises(ParameterError) as err:  # a negative value in the wrong unit: the unit is named first
        parse_quantity("bw", {"value": -1, "unit": "pJ/bit", "source": "s"}, expected_dimension="bytes/s")
    assert err.value.name == "bw.unit"
