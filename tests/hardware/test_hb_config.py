"""HBConfig: loading, SI conversion, derived quantities, and errors that name the field."""

import copy

import pytest
import yaml

from h2eal_core.config import UNITS
from h2eal_core.hardware import QUANTITY_FIELDS, hardware_dir, hb_config_from_dict, list_hardware, load_hardware
from h2eal_core.validation import ParameterError


@pytest.fixture(scope="module")
def raw():
    with (hardware_dir() / "h2eal_hb.yaml").open() as fh:
        return yaml.safe_load(fh)


def test_default_loads_with_spec_values():
    hw = load_hardware("h2eal_hb")
    assert "h2eal_hb" in list_hardware()
    assert hw.n_banks == 128 and hw.mesh_shape == (8, 16)
    assert hw.bank_capacity == 256e6
    assert hw.bank_bandwidth == pytest.approx(25.6e9)
    assert hw.pe_mac_rate == pytest.approx(8 * 16 * 600e6)
    assert hw.hb_dram_energy == pytest.approx(0.66e-12)
    assert hw.external_bandwidth == pytest.approx(68e9)
    assert hw.noc_link_bandwidth == pytest.approx(32e9)
    assert hw.noc_energy == pytest.approx(0.1e-12)
    assert hw.sram_energy == pytest.approx(0.05e-12)
    assert hw.mac_energy == pytest.approx(0.3e-12)


def test_derived_quantities_follow_primary_ones():
    hw = load_hardware()
    assert hw.aggregate_bandwidth == pytest.approx(hw.n_banks * hw.bank_bandwidth)
    assert hw.peak_mac_rate == pytest.approx(hw.n_banks * hw.pe_mac_rate)
    faster = hw.with_values(bank_bandwidth=51.2, pe_clock=1000)
    assert faster.aggregate_bandwidth == pytest.approx(2 * hw.aggregate_bandwidth)
    assert faster.pe_mac_rate == pytest.approx(hw.pe_mac_rate * 1000 / 600)
    assert faster.q("bank_bandwidth").source.startswith("override")
    # mean Manhattan distance on an r x c mesh, by brute force
    r, c = hw.mesh_shape
    pts = [(i, j) for i in range(r) for j in range(c)]
    brute = sum(abs(a - x) + abs(b - y) for a, b in pts for x, y in pts) / len(pts) ** 2
    assert hw.mean_hops == pytest.approx(brute)


def test_every_constant_has_provenance_and_band_contains_value():
    hw = load_hardware()
    for name in QUANTITY_FIELDS:
        q = hw.q(name)
        assert q.source and q.unit in UNITS
        if q.band:
            assert q.band[0] <= q.value <= q.band[1]
    for name in ("bank_bandwidth", "hb_dram_energy", "external_energy", "noc_energy", "sram_energy", "mac_energy"):
        assert hw.q(name).band is not None, name
    from h2eal_core.hardware.config import POLICY_KEYS

    assert set(hw.policy_sources) == set(POLICY_KEYS)
    for name in ("row_size", "row_cycle_time", "four_activation_window", "activation_energy"):
        assert hw.q(name).band is not None, name


def test_mb_and_gb_units_convert(raw):
    data = copy.deepcopy(raw)
    data["structure"]["bank_capacity"] = {"value": 0.256, "unit": "GB", "source": "same in GB"}
    data["memory"]["bank_bandwidth"] = {"value": 25600, "unit": "MB/s", "source": "same in MB/s"}
    hw = hb_config_from_dict(data)
    assert hw.bank_capacity == pytest.approx(256e6)
    assert hw.bank_bandwidth == pytest.approx(25.6e9)


def _broken(raw, section, name, entry):
    data = copy.deepcopy(raw)
    if entry is None:
        del data[section][name]
    else:
        data[section][name] = entry
    return data


@pytest.mark.parametrize(
    "section, name, entry, fragments",
    [
        ("memory", "bank_bandwidth", {"value": -25.6, "unit": "GB/s", "source": "x"}, ["bank_bandwidth", "-25.6", "> 0"]),
        ("memory", "bank_bandwidth", {"value": 0, "unit": "GB/s", "source": "x"}, ["bank_bandwidth", "> 0"]),
        ("memory", "bank_bandwidth", {"value": 25.6, "source": "x"}, ["bank_bandwidth", "unit"]),
        ("memory", "bank_bandwidth", {"value": 25.6, "unit": "pJ/bit", "source": "x"}, ["bank_bandwidth.unit", "bytes/s"]),
        ("memory", "bank_bandwidth", None, ["bank_bandwidth", "missing"]),
        ("structure", "n_channels", {"value": 7.5, "unit": "count", "source": "x"}, ["n_channels", "whole number"]),
        ("structure", "mesh_rows", {"value": 4, "unit": "count", "source": "x"}, ["mesh_rows x mesh_cols", "4 x 16", "128"]),
        ("compute", "mac_energy", {"value": 0.3, "unit": "pJ/MAC", "source": ""}, ["mac_energy.source"]),
        ("compute", "mac_energy", {"value": 0.3, "unit": "pJ/MAC", "source": "x", "band": [0.4, 0.8]}, ["mac_energy.band"]),
    ],
)
def test_bad_config_names_the_field(raw, section, name, entry, fragments):
    with pytest.raises(ParameterError) as err:
        hb_config_from_dict(_broken(raw, section, name, entry), where="bad.yaml")
    for fragment in fragments:
        assert fragment in str(err.value)


def test_bad_policies_and_sections(raw):
    data = copy.deepcopy(raw)
    data["mapping"]["baseline_group_banks"]["value"] = 0
    with pytest.raises(ParameterError, match="baseline_group_banks"):
        hb_config_from_dict(data)
    data = copy.deepcopy(raw)
    data["mapping"]["tile_size"]["value"] = "small"
    with pytest.raises(ParameterError, match="tile_size"):
        hb_config_from_dict(data)
    data = copy.deepcopy(raw)
    data["memroy"] = data.pop("memory")
    with pytest.raises(ParameterError, match="memroy"):
        hb_config_from_dict(data)
    with pytest.raises(ParameterError, match="hardware"):
        load_hardware("no-such-device")
    with pytest.raises(ParameterError, match="policy"):
        load_hardware().with_policies(tile=4)


def test_group_banks_policy():
    hw = load_hardware()
    assert hw.group_banks_for(8) == 16 and hw.group_banks_for(3) == 42 and hw.group_banks_for(1) == 128
    assert hw.with_policies(baseline_group_banks=4).group_banks_for(8) == 4
    with pytest.raises(ParameterError, match="at most"):
        hw.with_policies(baseline_group_banks=256)


def test_to_dict_round_trips():
    hw = load_hardware()
    again = hb_config_from_dict(hw.to_dict())
    assert again.quantities == hw.quantities
    assert (again.baseline_group_banks, again.tile_size, again.tiles_per_pe) == (hw.baseline_group_banks, hw.tile_size, hw.tiles_per_pe)
