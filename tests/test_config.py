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
