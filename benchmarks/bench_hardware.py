"""Benchmark: the HB model on the whole default grid (all model shapes x 6 contexts x 4 designs).

Reports the wall time of the grid and points per second for:

* ``analytic (vectorised)``: :func:`h2eal_core.hardware.simulate_grid`, the model every notebook
  uses (numpy over layers, heads and banks; cached LPT schedules and selection statistics within
  the run; cold = first call in a fresh process, warm = repeated).
* ``event-level replay (DRAM commands, Python loop)``: :func:`h2eal_core.hardware.simulate_events`
  on a subset of the same points, the simple baseline measured in the same run: on the same
  placements and page selections it issues every bank's row activations one by one (tRC per bank,
  a rolling tFAW window per group of banks, heap-ordered in Python), streams the top-k messages and
  plays every merge tree; its agreement with the analytic latency is printed too.

The ratio of the two rates is printed, so a busier machine changes both sides. Target (issues 4, 9):
the whole grid (every model of data/models x 6 contexts x 4 designs; 264 points with 11 models) in under 2 s on 2 cores. Writes ``build/benchmarks/bench_hardware.csv``.

Usage: ``python benchmarks/bench_hardware.py [--quick]``
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from h2eal_core.hardware import DEFAULT_CONTEXTS, DESIGN_NAMES, load_hardware, simulate_events, simulate_grid  # noqa: E402
from h2eal_core.io import save_table  # noqa: E402
from h2eal_core.models.shape import list_model_shapes  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and a smaller event-replay subset")
    parser.add_argument("--repeats", type=int, default=None, help="warm repetitions of the analytic grid (default 5, quick 2)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)

    hw = load_hardware("h2eal_hb")
    models = list_model_shapes()
    points = len(models) * len(DEFAULT_CONTEXTS) * len(DESIGN_NAMES)

    t0 = time.perf_counter()
    simulate_grid(models, DEFAULT_CONTEXTS, DESIGN_NAMES, hw)
    cold = time.perf_counter() - t0
    warm_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        simulate_grid(models, DEFAULT_CONTEXTS, DESIGN_NAMES, hw)
        warm_times.append(time.perf_counter() - t0)
    warm = min(warm_times)

    # simple baseline: the event-level replay, point by point, on a subset of the same grid
    subset_models = models[:: 3] if not args.quick else models[:: 5]
    subset_contexts = (4096, 32768) if not args.quick else (8192,)
    subset = list(itertools.product(subset_models, subset_contexts, DESIGN_NAMES))
    t0 = time.perf_counter()
    replays = [simulate_events(model, hw, context, design, n_samples=1) for model, context, design in subset]
    events = time.perf_counter() - t0
    analytic = {(r.model, r.context_len, r.design): r.attention_latency_s for r in simulate_grid(subset_models, subset_contexts, DESIGN_NAMES, hw, results=True)}
    deviation = max(abs(e.attention_latency_s / analytic[(e.model, e.context_len, e.design)] - 1) for e in replays)

    rows = [
        {"method": "analytic grid, cold (first call)", "points": points, "seconds": cold, "points_per_s": points / cold},
        {"method": f"analytic grid, warm (best of {repeats})", "points": points, "seconds": warm, "points_per_s": points / warm},
        {"method": "event-level replay (DRAM commands, Python loop)", "points": len(subset), "seconds": events, "points_per_s": len(subset) / events},
    ]
    df = pd.DataFrame(rows)
    ratio_cold = rows[0]["points_per_s"] / rows[2]["points_per_s"]
    ratio_warm = rows[1]["points_per_s"] / rows[2]["points_per_s"]
    df["ratio_vs_event_replay"] = [ratio_cold, ratio_warm, 1.0]
    print(f"HB model, default grid: {len(models)} models x {len(DEFAULT_CONTEXTS)} contexts x {len(DESIGN_NAMES)} designs = {points} points; "
          f"{os.cpu_count()} CPU(s) visible")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"analytic vs event replay: {ratio_cold:.1f}x (cold), {ratio_warm:.1f}x (warm) more points per second")
    target = 2.0
    print(f"event replay vs analytic attention latency on the subset: max deviation {deviation:.2%} (target 2%)")
    print(f"whole grid cold: {cold:.2f} s ({'within' if cold < target else 'ABOVE'} the {target:.0f} s target)")
    save_table(df, "bench_hardware", REPO / "build" / "benchmarks")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
