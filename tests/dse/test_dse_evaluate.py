"""The DSE evaluation equals simulate_decode point by point; the placement cache never changes a number."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from h2eal_core.attention.config import SparseAttentionConfig
from h2eal_core.dse import AREA_CONSTANTS, METRICS, Evaluator, area_proxy, space_from_dict
from h2eal_core.dse.evaluate import PlacementCache, _traced
from h2eal_core.hardware import decode_workload, get_design, load_hardware, simulate_decode
from h2eal_core.models.shape import load_model_shape

MIXED = {
    "name": "mixed",
    "hardware": "h2eal_hb",
    "knobs": {
        "workload": {"model": ["smollm2-135m", "gemma-2b", "phi-3.5-mini"], "context_len": [4096, 32768], "design": ["baseline", "sparse", "coplace", "h2eal"]},
        "algorithm": {"budget": [512, 2048], "retrieval_ratio": [0.25, 0.5]},
        "mapping": {"baseline": ["head_parallel", "split_kv_groups"], "kv_interleave_width": [1, 16]},
        "hardware": {"banks_per_channel": [8, 16], "bank_capacity": [64, 256], "bank_bandwidth": [6.4, 51.2], "noc_link_width": [16, 64], "hb_dram_energy": [0.55, 0.88]},
    },
    "chunk_size": 64,
}
SPACE = space_from_dict(MIXED, where="mixed")
CACHED = Evaluator(SPACE)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, SPACE.n_points - 1))
def test_point_equals_simulate_decode(i):
    point = SPACE.point(i)
    got = CACHED.evaluate_point(point)  # shares one cache across examples: hits happen
    wl = SPACE.section_values(point, "workload")
    hw = CACHED.hardware_for(point)
    sparsity = SparseAttentionConfig(**SPACE.section_values(point, "algorithm"))
    ref = simulate_decode(wl["model"], hw, wl["context_len"], wl["design"], sparsity, wl["batch"])
    assert got["attention_latency_s"] == ref.attention_latency_s
    assert got["latency_s"] == ref.latency_s
    assert got["energy_per_token_j"] == ref.energy_per_token_j
    assert got["power_w"] == ref.energy_j / ref.latency_s
    assert got["bank_utilization"] == ref.bank_utilization
    assert set(got) == set(METRICS)


def test_cached_and_uncached_tables_are_identical():
    start, stop = 3000, 3000 + 3 * 64
    a = Evaluator(SPACE).evaluate_range(start, stop)
    fresh = Evaluator(SPACE, cache=False)
    b = fresh.evaluate_range(start, stop)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert fresh.placements.hits == 0


def test_cache_hits_only_when_every_read_value_matches():
    hw = load_hardware("h2eal_hb")
    shape = load_model_shape("llama-3.2-1b")
    design = get_design("h2eal")
    wl = decode_workload(shape, 32768, sparse=True)
    cache = PlacementCache()
    p1 = cache.place(("k",), wl, hw, design)
    assert cache.place(("k",), wl, hw.with_values(bank_bandwidth=51.2, noc_energy=0.2), design) is p1  # cost-only constants
    assert cache.hits == 1
    p3 = cache.place(("k",), wl, hw.with_values(bank_capacity=64), design)  # read by the mapping
    assert p3 is not p1 and cache.misses == 2
    reads = {name for (_, name) in cache._entries[("k",)][0][0]}
    assert {"n_channels", "banks_per_channel", "bank_capacity"} <= reads
    assert "bank_bandwidth" not in reads


def test_traced_copy_is_an_equal_hbconfig():
    hw = load_hardware("h2eal_hb")
    t = _traced(hw)
    assert t.n_banks == hw.n_banks and t.bank_bandwidth == hw.bank_bandwidth and t.baseline == hw.baseline


def test_area_proxy_closed_form():
    hw = load_hardware("h2eal_hb")
    c = {k: v.value for k, v in AREA_CONSTANTS.items()}
    a = area_proxy(hw, c)
    n = hw.n_banks
    dram = n * 256e6 * 8 / 1e9 / c["dram_density"]
    logic = n * (8 * 16 * c["mac_lane_area"] * 1e-6 + c["pe_sram_bytes"] * 1024 / 1e6 * c["sram_area_per_byte"]
                 + 32 * c["router_area_per_link_byte"] + 25.6 * c["bank_io_area_per_bandwidth"])
    assert np.isclose(a["dram_area_mm2"], dram) and np.isclose(a["logic_area_mm2"], logic)
    assert np.isclose(a["area_mm2"], dram + logic)
    bigger = area_proxy(hw.with_values(banks_per_channel=32, mesh_cols=32), c)
    assert np.isclose(bigger["area_mm2"], 2 * a["area_mm2"])  # every term is per bank


def test_footprint_and_feasibility(tiny_space):
    t = Evaluator(tiny_space).evaluate_range(0, tiny_space.n_points)
    assert (t["hb_footprint_ratio"] > 0).all()
    expected = (t["hb_footprint_ratio"] <= 1.0) & (t["power_w"] <= 30)
    assert (t["feasible"] == expected).all()
    # sparse H2EAL stores less KV than dense baseline (streaming heads keep sink + local only)
    key = ["model", "context_len", "algorithm.budget", "hardware.banks_per_channel", "hardware.bank_bandwidth"]
    piv = t.pivot_table(index=key, columns="design", values="hb_footprint_ratio")
    assert (piv["h2eal"] <= piv["baseline"]).all()
