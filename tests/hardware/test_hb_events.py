"""The event-level replay agrees with the analytic latency within 1%; selection statistics are exact."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2eal_core.hardware import DESIGN_NAMES, load_hardware, simulate_decode, simulate_events
from h2eal_core.hardware.selection import expected_group_max, expected_max, group_max_distribution

HW = load_hardware()

POINTS = [
    ("smollm2-135m", 4096),
    ("llama-3.2-1b", 32768),
    ("qwen2.5-1.5b", 16384),
    ("gemma-2b", 65536),
    ("phi-3.5-mini", 8192),
    ("llama-3.1-8b", 131072),  # baseline overflows to the external tier
]


@pytest.mark.parametrize("model, context", POINTS)
@pytest.mark.parametrize("design", DESIGN_NAMES)
def test_event_replay_agrees_within_one_percent(model, context, design):
    analytic = simulate_decode(model, HW, context, design)
    events = simulate_events(model, HW, context, design, n_samples=8, seed=1)
    assert events.attention_latency_s == pytest.approx(analytic.attention_latency_s, rel=0.01)
    assert events.latency_s == pytest.approx(analytic.latency_s, rel=0.01)
    if events.n_samples == 1:  # deterministic replay (no randomly selected pages): layer by layer too
        assert np.allclose(events.attention_layer_s, analytic.attention_layer_s, rtol=0.01)


def test_event_replay_with_remote_spill_and_batch():
    hw = HW.with_values(bank_capacity=128).with_policies(baseline_group_banks=16)
    for design in ("baseline", "sparse"):
        a = simulate_decode("qwen2.5-3b", hw, 131072, design)
        e = simulate_events("qwen2.5-3b", hw, 131072, design, n_samples=4)
        assert e.attention_latency_s == pytest.approx(a.attention_latency_s, rel=0.01)
    a = simulate_decode("llama-3.2-1b", HW, 16384, "h2eal", batch=3)
    e = simulate_events("llama-3.2-1b", HW, 16384, "h2eal", batch=3)
    assert e.attention_latency_s == pytest.approx(a.attention_latency_s, rel=0.01)


def test_fixed_tile_size_replay():
    a = simulate_decode("llama-3.2-3b", HW, 32768, "h2eal", tile_size=64)
    e = simulate_events("llama-3.2-3b", HW, 32768, "h2eal", tile_size=64)
    assert e.attention_latency_s == pytest.approx(a.attention_latency_s, rel=0.01)


def test_recent_selection_is_kinder_to_the_page_layout():
    """Contiguous (most recent) pages spread evenly; random ones pile up on some banks."""
    rnd = simulate_events("qwen2.5-1.5b", HW, 32768, "sparse", n_samples=4, layers=[0, 1])
    recent = simulate_events("qwen2.5-1.5b", HW, 32768, "sparse", selection="recent", layers=[0, 1])
    assert recent.phase_s["kv"] < 0.75 * rnd.phase_s["kv"]
    assert rnd.layers == (0, 1)


def _brute_force_max(avail, fixed, draws, page_size):
    """E[max] by enumerating every selection (tiny cases only)."""
    bank_of = np.repeat(np.arange(len(avail)), avail)
    values = []
    for chosen in itertools.combinations(range(bank_of.size), draws):
        counts = np.bincount(bank_of[list(chosen)], minlength=len(avail))
        values.append((page_size * counts + fixed).max())
    return float(np.mean(values))


def _classes(avail, fixed):
    pairs = {}
    for a, f in zip(avail, fixed):
        pairs[(a, f)] = pairs.get((a, f), 0) + 1
    return tuple(sorted((c, a, f) for (a, f), c in pairs.items()))


@settings(max_examples=40, deadline=None)
@given(
    avail=st.lists(st.integers(0, 4), min_size=1, max_size=4),
    fixed=st.lists(st.integers(0, 20), min_size=4, max_size=4),
    page=st.integers(1, 16),
    data=st.data(),
)
def test_expected_max_is_exact_against_enumeration(avail, fixed, page, data):
    fixed = fixed[: len(avail)]
    total = sum(avail)
    draws = data.draw(st.integers(0, min(total, 6)))
    exact = _brute_force_max(avail, fixed, draws, page)
    assert expected_group_max(_classes(avail, fixed), draws, page) == pytest.approx(exact, rel=1e-9, abs=1e-9)


def test_expected_max_combines_independent_groups():
    rng = np.random.default_rng(0)
    avail, fixed = [8] * 6, [0] * 6
    values, cdf = group_max_distribution(_classes(avail, fixed), 12, 16)
    combined = expected_max([(values, cdf, 3)], deterministic_max=40.0)
    bank_of = np.repeat(np.arange(6), 8)
    samples = []
    for _ in range(20000):
        m = 40.0
        for _ in range(3):
            counts = np.bincount(bank_of[rng.choice(48, 12, replace=False)], minlength=6)
            m = max(m, 16 * counts.max())
        samples.append(m)
    assert combined == pytest.approx(np.mean(samples), rel=0.01)
    assert np.all(np.diff(cdf) >= 0) and cdf[-1] == 1.0
