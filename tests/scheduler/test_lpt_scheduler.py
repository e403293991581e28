"""LPT, lower bound, exact solver, tiles, and the greedy's gap on every grid point."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2eal_core.hardware import DEFAULT_CONTEXTS, load_hardware, place
from h2eal_core.hardware.designs import get_design
from h2eal_core.hardware.workload import decode_workload
from h2eal_core.models.shape import list_model_shapes, load_model_shape
from h2eal_core.scheduler import (
    lpt_tiled_loads,
    lpt_tiled_loads_reference,
    make_tiles,
    makespan_lower_bound,
    pes_per_head_of,
    plot_schedule,
    schedule_exact,
    schedule_lpt,
    schedule_round_robin,
    schedule_tiles,
    tiles_from_heads,
)
from h2eal_core.scheduler.tiles import adaptive_tiles
from h2eal_core.validation import ParameterError

costs_strategy = st.lists(st.integers(0, 50), min_size=0, max_size=25)


@settings(max_examples=200, deadline=None)
@given(costs=costs_strategy, m=st.integers(1, 8))
def test_lpt_between_lower_bound_and_list_scheduling_bound(costs, m):
    s = schedule_lpt(costs, m)
    lb = makespan_lower_bound(costs, m)
    assert s.makespan >= lb - 1e-9
    assert s.makespan <= sum(costs) / m + max(costs, default=0) + 1e-9
    assert sorted(np.flatnonzero(np.bincount(s.assignment, minlength=m) >= 0)) == list(range(m))
    assert s.loads.sum() == pytest.approx(sum(costs))


def _brute_force_optimum(costs, m):
    best = float("inf")
    for assignment in itertools.product(range(m), repeat=len(costs)):
        loads = np.bincount(assignment, weights=costs, minlength=m)
        best = min(best, loads.max())
    return best


@settings(max_examples=40, deadline=None)
@given(costs=st.lists(st.integers(1, 30), min_size=1, max_size=7), m=st.integers(1, 3))
def test_exact_solver_is_optimal_and_lpt_within_graham(costs, m):
    exact = schedule_exact(costs, m)
    assert exact.makespan == pytest.approx(_brute_force_optimum(costs, m))
    lpt = schedule_lpt(costs, m)
    assert lpt.makespan <= (4 / 3 - 1 / (3 * m)) * exact.makespan + 1e-9
    assert exact.makespan >= makespan_lower_bound(costs, m) - 1e-9


def test_known_instance_where_lpt_is_not_optimal():
    costs = [3, 3, 2, 2, 2]
    assert schedule_lpt(costs, 2).makespan == 7
    assert schedule_exact(costs, 2).makespan == 6
    assert schedule_round_robin(costs, 2).makespan == 7


@settings(max_examples=200, deadline=None)
@given(work=st.lists(st.integers(0, 400), min_size=1, max_size=12), t=st.integers(1, 64), m=st.integers(1, 40))
def test_fast_tiled_lpt_equals_explicit_lpt(work, t, m):
    fast = lpt_tiled_loads(work, t, m)
    ref = lpt_tiled_loads_reference(work, t, m)
    assert np.array_equal(fast.loads, ref.loads)
    assert np.array_equal(fast.pes_per_head, ref.pes_per_head)
    assert (fast.n_tiles, fast.largest_tile) == (ref.n_tiles, ref.largest_tile)


@settings(max_examples=200, deadline=None)
@given(work=st.lists(st.integers(0, 3000), min_size=1, max_size=40), m=st.integers(1, 128), per_pe=st.integers(1, 4))
def test_adaptive_tiles_cover_every_head_with_near_equal_tiles(work, m, per_pe):
    tiles = adaptive_tiles(work, m, per_pe)
    budget = max(m * per_pe, sum(w > 0 for w in work))  # a tile never spans two heads
    assert len(tiles) <= budget
    for h, w in enumerate(work):
        lengths = tiles.length[tiles.head == h]
        assert lengths.sum() == w
        if lengths.size:
            assert lengths.max() - lengths.min() <= 1
            starts = tiles.start[tiles.head == h]
            assert np.array_equal(starts, np.concatenate([[0], np.cumsum(lengths)[:-1]]))
    if sum(work):  # the largest tile is the smallest bound that fits: one less would need more tiles
        s = int(tiles.length.max())
        assert sum(-(-w // s) for w in work) <= budget
        if s > 1 and budget == m * per_pe:
            assert sum(-(-w // (s - 1)) for w in work) > budget


def test_make_tiles_and_errors():
    tiles = make_tiles([10, 0, 7], 4, kinds=["retrieval", "streaming", "dense"])
    assert tiles.head.tolist() == [0, 0, 0, 2, 2]
    assert tiles.length.tolist() == [4, 4, 2, 4, 3]
    assert [t.kind for t in tiles.tiles()] == ["retrieval"] * 3 + ["dense"] * 2
    assert len(tiles_from_heads(["r", "s"], [2048, 320], "auto", n_pe=16)) <= 16
    with pytest.raises(ParameterError, match="tile_size"):
        make_tiles([4], 0)
    with pytest.raises(ParameterError, match="work"):
        make_tiles([-1], 2)
    with pytest.raises(ParameterError, match="costs"):
        schedule_lpt([1.0, float("nan")], 2)
    with pytest.raises(ParameterError, match="n_pe"):
        schedule_lpt([1.0], 0)
    with pytest.raises(ParameterError, match="exact solver"):
        schedule_exact(list(range(1, 200)), 64)


def test_exact_solver_on_small_real_tile_sets():
    """Small instances cut from real layers (few PEs): greedy vs optimum."""
    gaps = []
    for work in ([2048, 2048, 320], [2304, 320, 320, 2304], [8192, 8192, 320, 320, 320]):
        for m in (3, 4, 6):
            tiles = adaptive_tiles(work, m, 2)
            lpt = schedule_tiles(tiles, m)
            exact = schedule_exact(tiles.length, m, time_limit_s=30)
            assert exact.makespan <= lpt.makespan + 1e-9
            assert lpt.makespan <= (4 / 3) * exact.makespan
            gaps.append(lpt.makespan / exact.makespan - 1)
    assert max(gaps) < 0.1


@pytest.fixture(scope="module")
def grid_gaps():
    hw = load_hardware()
    design = get_design("h2eal")
    rows = []
    for name in list_model_shapes():
        shape = load_model_shape(name)
        for T in DEFAULT_CONTEXTS:
            w = decode_workload(shape, T, sparse=True)
            p = place(w, hw, design)
            ideal = np.ceil(np.stack([w.attention.meta_read_pages.sum(1), w.attention.read_tokens.sum(1)], 1) / hw.n_banks)
            busy = ideal > 0
            rows.append(
                (name, T, float(p.lpt_gap.max()), float((p.lpt_makespan[busy] / ideal[busy]).max() - 1))
            )
    return rows


def test_greedy_within_five_percent_of_lower_bound_on_every_grid_point(grid_gaps):
    worst = max(grid_gaps, key=lambda r: r[2])
    print(f"worst LPT gap to max(total/n_PE, largest tile): {worst[2]:.4f} at {worst[0]} T={worst[1]}")
    assert worst[2] <= 0.05
    # and the adaptive tiling itself stays close to the divisible optimum ceil(total / n_PE)
    quant = max(grid_gaps, key=lambda r: r[3])
    print(f"worst makespan over ceil(total/n_PE): {quant[3]:.4f} at {quant[0]} T={quant[1]}")
    assert quant[3] <= 0.15


def test_fixed_tiles_stay_within_one_tile_of_the_bound():
    """With fixed 16-token tiles the bound max(total/n_PE, tile) is loose (ceil(tiles/n_PE) tiles is
    optimal for equal tiles), but LPT never exceeds it by more than one tile."""
    hw = load_hardware()
    for name, T in (("llama-3.2-1b", 8192), ("qwen2.5-3b", 131072), ("phi-3.5-mini", 32768)):
        w = decode_workload(load_model_shape(name), T, sparse=True)
        p = place(w, hw, get_design("h2eal"), tile_size=16)
        busy = p.lpt_lower_bound > 0
        assert (p.lpt_makespan[busy] <= p.lpt_lower_bound[busy] + 16).all()
        assert (p.lpt_gap >= 0).all()


def test_plot_schedule_draws_every_task():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiles = adaptive_tiles([300, 300, 40], 8, 2)
    s = schedule_tiles(tiles, 8)
    fig, ax = plt.subplots()
    plot_schedule(s, ax, task_groups=tiles.head, group_labels=["head 0", "head 1", "head 2"], unit="tokens")
    assert len(ax.patches) == len(tiles)
    assert pes_per_head_of(s, tiles).sum() >= 3
    plt.close(fig)
