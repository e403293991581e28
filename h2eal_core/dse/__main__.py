"""Command line of the design-space exploration.

Examples::

    python -m h2eal_core.dse check data/dse/default.yaml
    python -m h2eal_core.dse run data/dse/quick.yaml --out build/dse/quick            # LocalCluster
    python -m h2eal_core.dse run quick --serial                                        # no Dask
    python -m h2eal_core.dse run default --scheduler tcp://10.0.0.5:8786               # existing cluster
    python -m h2eal_core.dse frontier build/dse/quick

An interrupted ``run`` resumes when started again with the same space and output folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from ..validation import ParameterError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m h2eal_core.dse", description="Design-space exploration of the HB model")
    sub = p.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a space YAML and print its size")
    check.add_argument("space", help="space name (data/dse/<name>.yaml) or YAML path")
    run = sub.add_parser("run", help="evaluate every point of a space into Parquet partitions (resumable)")
    run.add_argument("space", help="space name (data/dse/<name>.yaml) or YAML path")
    run.add_argument("--out", default=None, help="results folder (default: build/dse/<space name>)")
    run.add_argument("--serial", action="store_true", help="evaluate in this process, without Dask")
    run.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler, e.g. tcp://host:8786 (default: Dask config, else a LocalCluster)")
    run.add_argument("--workers", type=int, default=None, help="LocalCluster worker processes (default: the machine's cores)")
    run.add_argument("--chunk-size", type=int, default=None, help="points per task (default: the space's chunk_size)")
    run.add_argument("--max-chunks", type=int, default=None, help="stop after this many chunks (resume later)")
    run.add_argument("--no-cache", action="store_true", help="recompute the placement of every point")
    run.add_argument("--overwrite", action="store_true", help="replace a folder that holds another sweep")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    fr = sub.add_parser("frontier", help="print the Pareto frontier of a finished sweep")
    fr.add_argument("out", help="results folder of a sweep")
    fr.add_argument("--by", default="model,context_len,design", help="comma-separated columns to group by")
    fr.add_argument("--all", action="store_true", help="include points that violate the constraints")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except ParameterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    from .space import load_space

    if args.command == "check":
        space = load_space(args.space)
        print(json.dumps({"name": space.name, "points": space.n_points, "chunks": space.n_chunks, "shape": dict(zip([k.path for k in space.knobs], space.shape))}, indent=2))
        return 0
    if args.command == "run":
        from ..io import repo_root
        from ..validation import check_positive_int
        from .sweep import run_sweep

        space = load_space(args.space)
        if args.chunk_size is not None:
            space = dataclasses.replace(space, chunk_size=check_positive_int("--chunk-size", args.chunk_size))
        out = args.out or str(repo_root() / "build" / "dse" / space.name)
        report = run_sweep(
            space, out, serial=args.serial, scheduler=args.scheduler, n_workers=args.workers, cache=not args.no_cache,
            overwrite=args.overwrite, max_chunks=args.max_chunks, progress=not args.no_progress,
        )
        summary = dataclasses.asdict(report)
        summary["points_per_s"] = report.points_per_s
        summary["complete"] = report.complete
        print(json.dumps(summary, indent=2))
        return 0
    if args.command == "frontier":
        import pandas as pd

        from .pareto import pareto_front
        from .sweep import read_manifest, read_results

        manifest = read_manifest(args.out)
        table = read_results(args.out)
        objectives = manifest["space"]["objectives"]
        from .objectives import METRICS

        by = [c for c in args.by.split(",") if c]
        for c in by:
            if c not in table.columns:
                raise ParameterError("--by", c, "columns of the result table: " + ", ".join(table.columns))
        rows = table if args.all else table[table["feasible"]]
        front = pareto_front(rows, objectives, [METRICS[o].sense for o in objectives], by=by)
        with pd.option_context("display.max_rows", 200, "display.width", 200):
            print(front[["point", *by, *[c for c in table.columns if "." in c], *objectives]].to_string(index=False))
        return 0
    raise AssertionError(args.command)  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
