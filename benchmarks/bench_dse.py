"""Benchmark: design-space exploration throughput (serial vs LocalCluster), a 100,000-point sweep, the explorer's redraw.

Three measurements in one run, with the load average printed before and after (other processes
on the machine slow every number down):

1. **points per second, serial vs LocalCluster**: the same chunks of ``data/dse/default.yaml``
   (evenly spread over the space, so every model and design is in) evaluated serially in this
   process and on a ``LocalCluster`` of ``--workers`` single-threaded worker processes (default 2),
   both from cold caches. Cluster start-up is timed separately.
2. **the 100,000-point sweep**: the whole default space (108,864 points) on the LocalCluster, into
   a fresh folder, wall time and points per second (skipped with ``--quick``).
3. **the explorer's redraw**: each control of ``notebooks/hb_explorer.ipynb`` moved in turn, the
   time of a full redraw (four designs evaluated, three panels drawn and rendered to PNG); target
   under 1 s per change on 2 cores.

Context for the points per second (``shared/docs/anchors-hardware.md``): LLMCompass simulates one
GPT-3 node study in about 16 min including 26,400 mapper trials (~27 trials/s); H2-LLM's genetic
DSE runs for about 6 h on 64 cores.

Writes ``build/benchmarks/bench_dse.csv``.

Usage: ``python benchmarks/bench_dse.py [--quick] [--workers 2]``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from h2eal_core.dse import load_space, run_sweep  # noqa: E402
from h2eal_core.dse.explorer import Explorer, default_settings  # noqa: E402
from h2eal_core.io import save_table  # noqa: E402


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _warm_worker() -> str:
    """Imports the model on a worker (counted as cluster start-up, as this process imported it at start)."""
    import h2eal_core.dse.sweep  # noqa: F401
    import h2eal_core.hardware  # noqa: F401

    return "ready"


def explorer_redraws(repeats: int) -> list[tuple[str, float]]:
    import matplotlib

    matplotlib.use("Agg")
    ex = Explorer("h2eal_hb", default_settings("llama-3.2-1b", 32768, 2048, -1))
    s0 = ex.defaults
    ex.redraw_seconds(s0, dpi=100)  # first draw: imports and font caches
    changes = [
        ("model", "phi-3.5-mini"), ("context_len", 131072), ("banks_per_channel", 8), ("bank_bandwidth", 51.2),
        ("budget", 1024), ("retrieval_ratio", 0.25), ("baseline", "split_kv_groups"), ("design", "coplace"),
    ]
    out = []
    for _ in range(repeats):
        s = s0
        for field, value in changes:
            if value not in ex.options[field]:
                continue
            s = dataclasses.replace(s, **{field: value})
            out.append((field, ex.redraw_seconds(s, dpi=100)))
        for field, _value in reversed(changes):  # and back, one control at a time
            s = dataclasses.replace(s, **{field: getattr(s0, field)})
            out.append((field, ex.redraw_seconds(s, dpi=100)))
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer chunks, no 100,000-point sweep, one redraw round")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    parser.add_argument("--out", default=str(REPO / "build" / "benchmarks"), help="folder for bench_dse.csv")
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster

    rows = []
    print(f"cores: {len(os.sched_getaffinity(0))}; load average (1/5/15 min) at start: {_load()}")
    space = load_space("default")
    n_sample = 2 if args.quick else 6
    step = space.n_chunks // n_sample
    sample = [i * step + (i % 2) for i in range(n_sample)]  # alternate baseline/h2eal-heavy chunks
    sample_points = sum(space.chunk_bounds(c)[1] - space.chunk_bounds(c)[0] for c in sample)
    work = Path(tempfile.mkdtemp(prefix="bench_dse_"))
    try:
        serial = run_sweep(space, work / "serial", serial=True, chunks=sample, progress=False)
        rows.append({"measurement": "sample, serial (1 process)", "points": serial.computed_points, "wall_s": serial.wall_s, "points_per_s": serial.points_per_s, "startup_s": 0.0, "load": _load()})
        t0 = time.perf_counter()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
            client.run(_warm_worker)
            startup = time.perf_counter() - t0
            dist = run_sweep(space, work / "dist", client=client, chunks=sample, progress=False)
            rows.append({"measurement": f"sample, LocalCluster {args.workers} workers", "points": dist.computed_points, "wall_s": dist.wall_s, "points_per_s": dist.points_per_s, "startup_s": startup, "load": _load()})
            if not args.quick:
                full = run_sweep(space, work / "full", client=client, progress=True)
                rows.append({"measurement": f"full default space, LocalCluster {args.workers} workers", "points": full.computed_points, "wall_s": full.wall_s, "points_per_s": full.points_per_s, "startup_s": startup, "load": _load()})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    redraws = explorer_redraws(1 if args.quick else 3)
    times = [t for _, t in redraws]
    rows.append({"measurement": "explorer redraw per change (median)", "points": len(times), "wall_s": statistics.median(times), "points_per_s": float("nan"), "startup_s": 0.0, "load": _load()})
    rows.append({"measurement": "explorer redraw per change (max)", "points": len(times), "wall_s": max(times), "points_per_s": float("nan"), "startup_s": 0.0, "load": _load()})
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))
    print(f"sample: {sample_points} points in chunks {sample} of {space.n_chunks}; speed-up of the cluster over serial: "
          f"{rows[1]['points_per_s'] / rows[0]['points_per_s']:.2f}x on {args.workers} workers")
    print(f"one core: {rows[0]['points_per_s']:.0f} points/s (LLMCompass: one GPT-3 node study ~16 min with 26,400 mapper trials; "
          f"H2-LLM: genetic DSE ~6 h on 64 cores)")
    slow = [(f, t) for f, t in redraws if t >= 1.0]
    print(f"explorer: {len(times)} redraws, median {statistics.median(times):.3f} s, max {max(times):.3f} s "
          f"({'all under' if not slow else f'{len(slow)} at or over'} the 1 s target)")
    print(f"load average at end: {_load()}")
    save_table(table, "bench_dse", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
