"""Shared helpers of the DSE tests: small spaces written as YAML mappings."""

import copy

import pytest

TINY = {
    "name": "tiny",
    "description": "test space",
    "hardware": "h2eal_hb",
    "knobs": {
        "workload": {"model": ["smollm2-135m", "llama-3.2-1b"], "context_len": [8192, 32768], "design": ["baseline", "h2eal"]},
        "algorithm": {"budget": [1024, 2048]},
        "hardware": {"banks_per_channel": [8, 16], "bank_bandwidth": [12.8, 25.6]},
    },
    "objectives": ["attention_latency_s", "energy_per_token_j", "area_mm2"],
    "constraints": {"hb_footprint_ratio": {"max": 1.0}, "power_w": {"max": 30}},
    "chunk_size": 4,
}


@pytest.fixture
def tiny_dict():
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_space(tiny_dict):
    from h2eal_core.dse import space_from_dict

    return space_from_dict(tiny_dict, where="tiny")
