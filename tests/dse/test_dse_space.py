"""Design-space YAML: the shipped spaces load, bad spaces fail naming the knob, the value and what is allowed."""

import copy

import numpy as np
import pytest

from h2eal_core.attention.config import SparseAttentionConfig
from h2eal_core.dse import knob_names, list_spaces, load_space, space_from_dict
from h2eal_core.hardware import config as hwc
from h2eal_core.validation import ParameterError


def test_shipped_spaces_load_and_default_is_large():
    assert {"quick", "default"} <= set(list_spaces())
    default, quick = load_space("default"), load_space("quick")
    assert default.n_points >= 100_000
    assert quick.n_points <= 200
    assert default.n_points == int(np.prod(default.shape))


def test_knob_lists_come_from_the_code_they_configure():
    assert knob_names("hardware") == tuple(hwc.QUANTITY_FIELDS)
    assert knob_names("mapping") == tuple(hwc.POLICY_KEYS)
    assert set(knob_names("algorithm")) == {f for f in SparseAttentionConfig.__dataclass_fields__}


def test_points_enumerate_the_product_in_declared_order(tiny_space):
    s = tiny_space
    assert s.n_points == 2 * 2 * 2 * 1 * 2 * 2 * 2
    seen = {tuple(s.point(i).values()) for i in range(s.n_points)}
    assert len(seen) == s.n_points
    first, last = s.point(0), s.point(s.n_points - 1)
    assert first["hardware.bank_bandwidth"] == 12.8 and last["hardware.bank_bandwidth"] == 25.6
    assert s.point(1)["hardware.bank_bandwidth"] == 25.6  # the last knob varies fastest
    assert first["workload.model"] == "smollm2-135m" and last["workload.model"] == "llama-3.2-1b"


def test_range_expands_linear_log_and_integer(tiny_dict):
    tiny_dict["knobs"]["hardware"] = {
        "bank_bandwidth": {"range": [6.4, 51.2], "steps": 4, "scale": "log"},
        "pe_simd_width": {"range": [8, 32], "steps": 5},
    }
    s = space_from_dict(tiny_dict)
    assert s.knob("hardware.bank_bandwidth").values == pytest.approx((6.4, 12.8, 25.6, 51.2))
    assert s.knob("hardware.pe_simd_width").values == (8, 14, 20, 26, 32)


def test_fingerprint_changes_with_the_space(tiny_dict):
    a = space_from_dict(tiny_dict).fingerprint()
    tiny_dict["knobs"]["algorithm"]["budget"] = [1024]
    assert space_from_dict(tiny_dict).fingerprint() != a


def _fails(data, *fragments):
    with pytest.raises(ParameterError) as err:
        space_from_dict(data, where="bad.yaml")
    text = str(err.value)
    for f in fragments:
        assert f in text, f"{f!r} not in {text!r}"
    return err.value


def test_unknown_knob_names_knob_and_allowed(tiny_dict):
    tiny_dict["knobs"]["hardware"]["bank_bandwith"] = [1.0]
    err = _fails(tiny_dict, "knobs.hardware.bank_bandwith", "bank_bandwidth", "did you mean")
    assert err.name == "bad.yaml:knobs.hardware.bank_bandwith"


def test_unknown_mapping_option_and_section(tiny_dict):
    d = copy.deepcopy(tiny_dict)
    d["knobs"]["mapping"] = {"tile_sise": [64]}
    _fails(d, "knobs.mapping.tile_sise", "tile_size")
    d = copy.deepcopy(tiny_dict)
    d["knobs"]["hw"] = {"x": [1]}
    _fails(d, "knobs.hw", "workload, algorithm, mapping, hardware")


def test_empty_grid_and_empty_range(tiny_dict):
    d = copy.deepcopy(tiny_dict)
    d["knobs"]["algorithm"]["budget"] = []
    _fails(d, "knobs.algorithm.budget", "[]", "at least one value")
    d = copy.deepcopy(tiny_dict)
    d["knobs"]["hardware"]["bank_bandwidth"] = {"range": [51.2, 6.4], "steps": 3}
    _fails(d, "knobs.hardware.bank_bandwidth.range", "[51.2, 6.4]", "low <= high")
    d = copy.deepcopy(tiny_dict)
    d["knobs"]["hardware"]["bank_bandwidth"] = {"range": [6.4, 51.2], "steps": 0}
    _fails(d, "knobs.hardware.bank_bandwidth.steps", "0", "an integer >= 1")


def test_range_outside_physical_sign(tiny_dict):
    d = copy.deepcopy(tiny_dict)
    d["knobs"]["hardware"]["bank_bandwidth"] = {"range": [-6.4, 51.2], "steps": 3}
    _fails(d, "knobs.hardware.bank_bandwidth.range", "[-6.4, 51.2]", "> 0 GB/s")
    d = copy.deepcopy(tiny_dict)
    d["knobs"]["hardware"]["hb_dram_energy"] = [0.66, -0.1]
    _fails(d, "knobs.hardware.hb_dram_energy[1]", "-0.1", "> 0 pJ/bit")
    d = copy.deepcopy(tiny_dict)
    d["knobs"]["hardware"]["banks_per_channel"] = [8, 12.5]
    _fails(d, "knobs.hardware.banks_per_channel[1]", "12.5", "whole number")


def test_constraint_on_unknown_objective(tiny_dict):
    tiny_dict["constraints"]["latency_ms"] = {"max": 5}
    _fails(tiny_dict, "constraints.latency_ms", "{'max': 5}", "latency_s", "power_w")


def test_unknown_objective_and_bad_bounds(tiny_dict):
    d = copy.deepcopy(tiny_dict)
    d["objectives"] = ["attention_latency_s", "cost"]
    _fails(d, "objectives[1]", "'cost'", "area_mm2")
    d = copy.deepcopy(tiny_dict)
    d["constraints"]["power_w"] = {"min": 5, "max": 1}
    _fails(d, "constraints.power_w", "min <= max")


def test_bad_values_are_checked_by_the_code_that_uses_them(tiny_dict):
    d = copy.deepcopy(tiny_dict)
    d["knobs"]["workload"]["design"] = ["baseline", "h2eall"]
    _fails(d, "knobs.workload.design[1]", "'h2eall'", "h2eal")
    d = copy.deepcopy(tiny_dict)
    d["knobs"]["workload"]["model"] = ["llama-9b"]
    _fails(d, "knobs.workload.model[0]", "'llama-9b'", "llama-3.2-1b")
    d = copy.deepcopy(tiny_dict)
    d["knobs"]["algorithm"]["retrieval_ratio"] = [0.5, 1.5]
    _fails(d, "knobs.algorithm.retrieval_ratio[1]", "1.5", "<= 1")
    d = copy.deepcopy(tiny_dict)
    d["knobs"]["mapping"] = {"baseline": ["head_parallel", "per_head"]}
    _fails(d, "knobs.mapping.baseline[1]", "'per_head'", "head_parallel_kv")


def test_coupled_values_fail_per_combination(tiny_dict):
    # a fixed head-group size above the bank count of the smaller design fails when combined
    tiny_dict["knobs"]["mapping"] = {"baseline_group_banks": [96]}
    _fails(tiny_dict, "banks_per_channel=8", "96", "at most n_banks = 64")


def test_unknown_top_level_key(tiny_dict):
    tiny_dict["objective"] = ["latency_s"]
    _fails(tiny_dict, "bad.yaml:objective", "objectives")
