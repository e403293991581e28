"""The event-level replay (DRAM commands with a rolling tFAW window, top-k pipeline, merge trees)
agrees with the analytic latency on the same placements and selections."""

import numpy as np
import pytest

from h2eal_core.hardware import DESIGN_NAMES, load_hardware, simulate_decode, simulate_events
from h2eal_core.hardware.events import dram_replay

HW = load_hardware()
POINTS = [("smollm2-135m", 4096), ("llama-3.2-1b", 32768), ("qwen2.5-1.5b", 16384), ("gemma-2b", 65536), ("phi-3.5-mini", 8192)]


@pytest.mark.parametrize("design", DESIGN_NAMES)
@pytest.mark.parametrize("model,context", POINTS)
def test_event_replay_agrees_within_two_percent(model, context, design):
    analytic = simulate_decode(model, HW, context, design)
    replay = simulate_events(model, HW, context, design)
    assert replay.attention_latency_s == pytest.approx(analytic.attention_latency_s, rel=0.02)


@pytest.mark.parametrize("reading", ["head_parallel_kv", "split_kv_groups"])
def test_replay_follows_every_baseline_reading(reading):
    hw = HW.with_policies(baseline=reading, merge="pipelined", topk="distributed")
    for design in DESIGN_NAMES:
        a = simulate_decode("llama-3.2-1b", hw, 16384, design)
        e = simulate_events("llama-3.2-1b", hw, 16384, design)
        assert e.attention_latency_s == pytest.approx(a.attention_latency_s, rel=0.02), design


def test_dram_replay_single_bank_closed_form():
    acts = np.zeros(HW.n_banks)
    by = np.zeros(HW.n_banks)
    acts[0], by[0] = 100, 100 * 256  # 256 B rows: activation-bound
    t = dram_replay(by, acts, HW)
    s = max(HW.row_cycle_time, 256 / HW.bank_bandwidth, HW.four_activation_window / 4)
    assert t == pytest.approx(99 * s + HW.row_activate_delay + 256 / HW.bank_bandwidth)


def test_dram_replay_respects_the_activation_window():
    hw = HW.with_values(four_activation_window=200, row_cycle_time=60)  # ns: tFAW binds
    acts = np.zeros(hw.n_banks)
    acts[:4] = 40
    by = acts * 256
    t = dram_replay(by, acts, hw)
    assert t >= (160 - 4) / 4 * hw.four_activation_window  # 4 activations per window at most
