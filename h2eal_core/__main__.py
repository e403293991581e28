"""Command line: ``python -m h2eal_core {reproduce,run,list,prepare,report}``.

``reproduce`` runs the registry's notebooks with a profile; ``run NOTEBOOK -p NAME VALUE ...`` runs
one notebook with parameters of your own (checked against its parameters cell before any kernel
starts; outputs under ``build/run/`` unless ``--out-root``). Ctrl-C or SIGTERM stops the kernels,
prints what finished and how to resume, and exits 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from . import reproduce as rp
from .validation import ParameterError, check_choice


def _shown(path) -> str:
    """``path`` relative to the working directory when inside it (what a user can paste)."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except ValueError:
        return str(path)


def _print_results(results, stopped_by, resume_command: str) -> int:
    width = max((len(r.name) for r in results), default=10)
    for r in results:
        extra = f"{r.seconds:7.1f} s" if r.status == "ran" else ""
        print(f"  {r.name:<{width}}  {r.status:<11} {extra}")
        for m in r.missing_inputs:
            print(f"  {'':<{width}}  optional input missing: {m.get('what')} ({m.get('path')}): {m.get('consequence')}")
    failed = [r for r in results if r.status in ("failed", "blocked")]
    for r in failed:
        print(f"FAILED: {r.error}" + (f"\n        executed notebook: {_shown(r.executed_notebook)}" if r.executed_notebook else ""), file=sys.stderr)
    if stopped_by:
        print(rp.summary_line(results, stopped_by=stopped_by, resume_command=resume_command), file=sys.stderr, flush=True)
        return 128 + int(stopped_by)
    ran = sum(r.status == "ran" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    print(f"{ran} ran, {skipped} skipped (up to date), {len(failed)} failed")
    return 1 if failed else 0


def _cmd_reproduce(args) -> int:
    registry = rp.load_registry(args.registry)
    runner = rp.Runner(registry, args.profile, out_root=args.out_root, build_dir=args.build_dir, progress=not args.no_progress)
    specs = registry.select(args.only)
    planned = [s.name for s in registry.notebooks.values() if not s.built and not args.only]
    runner.check_parameters(specs)
    print(
        f"profile {runner.profile.name}: {len(specs)} notebook(s); figures -> {_shown(runner.figures_dir)}, "
        f"results -> {_shown(runner.results_dir)}, executed notebooks -> {_shown(runner.executed_dir)}",
        flush=True,
    )
    results = runner.run(specs, jobs=args.jobs, force=args.force)
    if planned:
        print(f"  (planned, not built yet: {', '.join(planned)})")
    resume = ["python", "-m", "h2eal_core", "reproduce", "--profile", runner.profile.name]
    if args.jobs != 1:
        resume += ["--jobs", str(args.jobs)]
    if args.only:
        resume += ["--only", *args.only]
    for flag, value in (("--out-root", args.out_root), ("--build-dir", args.build_dir)):
        if value:
            resume += [flag, value]
    return _print_results(results, runner.stopped_by, shlex.join(resume) + "  (finished notebooks are skipped)")


def _cmd_run(args) -> int:
    registry = rp.load_registry(args.registry)
    spec = registry.select([check_choice("notebook", args.notebook, list(registry.notebooks))])[0]
    params = rp.cli_parameters(spec, args.param or (), args.yaml or (), args.raw or ())
    out_root = Path(args.out_root) if args.out_root else registry.root / rp.RUN_OUT_ROOT
    print(f"{spec.name} ({args.profile} profile{', ' + ', '.join(f'{k}={v!r}' for k, v in params.items()) if params else ''}): "
          f"outputs -> {_shown(out_root)}", flush=True)
    runner, result = rp.run_notebook(
        spec.name, params, profile=args.profile, out_root=out_root, build_dir=args.build_dir, registry=registry,
        progress=not args.no_progress,
    )
    if result.status == "ran":
        print(f"  executed notebook: {_shown(result.executed_notebook)}")
        for rel in result.outputs:
            print(f"  wrote {_shown(runner.out_root / rel)}")
    return _print_results([result], runner.stopped_by, shlex.join(["python", "-m", "h2eal_core", *args.argv]))


def markdown_table(registry: rp.Registry) -> str:
    """The README's figure/table -> notebook -> runtime table, generated from the registry."""
    profiles = list(registry.profiles)
    lines = [
        "| paper item | content | notebook | status | " + " | ".join(f"{p} (s)" for p in profiles) + " |",
        "|---|---|---|---|" + "---|" * len(profiles),
    ]
    for spec in registry.notebooks.values():
        runtimes = []
        for p in profiles:
            value = spec.expected_runtime_s.get(p)
            runtimes.append(f"{value:.0f}" if isinstance(value, (int, float)) else "-")
        link = f"[`{spec.name}`](notebooks/{spec.name}.ipynb)" if spec.built else f"`{spec.name}`"
        status = "built" if spec.built else "planned"
        lines.append(f"| {spec.paper_item} | {spec.title} | {link} | {status} | " + " | ".join(runtimes) + " |")
    return "\n".join(lines)


def _cmd_list(args) -> int:
    registry = rp.load_registry(args.registry)
    if args.markdown:
        print(markdown_table(registry))
        return 0
    measured = rp.last_runtimes(registry)
    profiles = list(registry.profiles)
    header = f"{'notebook':<24} {'paper item':<22} {'status':<8} " + " ".join(f"{p + ' s':>10}" for p in profiles)
    print(header)
    print("-" * len(header))
    for spec in registry.notebooks.values():
        cells = []
        for p in profiles:
            value = measured.get(spec.name, {}).get(p, spec.expected_runtime_s.get(p))
            cells.append(f"{value:>10.0f}" if isinstance(value, (int, float)) else f"{'-':>10}")
        status = "built" if spec.built else "planned"
        print(f"{spec.name:<24} {spec.paper_item:<22} {status:<8} " + " ".join(cells))
    print("\nruntimes: last measured run on this machine where available, else the expected runtime in notebooks/profiles.yaml")
    for p in registry.profiles.values():
        print(f"profile {p.name}: {p.description} (outputs under {p.output_root})")
    return 0


def _cmd_prepare(args) -> int:
    written = rp.prepare(args.profile, args.dest, args.only, registry=rp.load_registry(args.registry))
    for path in written:
        print(path)
    return 0


def _cmd_report(args) -> int:
    from . import report

    index = report.build_report(args.profile, out_dir=args.out, registry=rp.load_registry(args.registry))
    print(f"report: {_shown(index)}")
    if args.open:
        import webbrowser

        webbrowser.open(index.resolve().as_uri())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m h2eal_core", description=__doc__)
    parser.add_argument("--registry", default=None, help="path of profiles.yaml (default notebooks/profiles.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("reproduce", help="run the notebooks with a profile's parameters")
    p.add_argument("--profile", default="default", help="quick | default | paper (default: default)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks")
    p.add_argument("--jobs", type=int, default=1, help="notebooks run in parallel (default 1)")
    p.add_argument("--force", action="store_true", help="rerun even if inputs did not change")
    p.add_argument("--out-root", default=None, help="write figures/ and data/results/ under this folder")
    p.add_argument("--build-dir", default=None, help="executed notebooks and run state (default build/<profile>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("run", help="run one notebook with your own parameters (checked before the kernel starts)")
    p.add_argument("notebook", help="notebook name, e.g. fig09_speedup")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a parameter, read by its declared type (bool: true/false; list: [a, b])")
    p.add_argument("-r", "--raw", nargs=2, action="append", metavar=("NAME", "VALUE"), help="a string parameter, as is")
    p.add_argument("-y", "--yaml", action="append", metavar="YAML", help="parameters as a YAML mapping, e.g. 'models: [gemma-2b]'")
    p.add_argument("--profile", default="default", help="profile whose parameters are the starting point (default: default)")
    p.add_argument("--out-root", default=None, help=f"write figures/ and data/results/ under this folder (default {rp.RUN_OUT_ROOT}; "
                   "'.' writes over the committed outputs)")
    p.add_argument("--build-dir", default=None, help="executed notebook and run state (default <out-root>/build)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("list", help="list notebooks, paper items and runtimes per profile")
    p.add_argument("--markdown", action="store_true", help="print the README table (expected runtimes)")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("prepare", help="write notebooks with a profile's parameters injected (for nbval)")
    p.add_argument("--profile", default="quick")
    p.add_argument("--dest", required=True, help="folder for the prepared notebooks")
    p.add_argument("--only", nargs="+", metavar="NAME")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("report", help="render executed notebooks to a browsable HTML report")
    p.add_argument("--profile", default="default")
    p.add_argument("--out", default=None, help="report folder (default build/<profile>/report)")
    p.add_argument("--open", action="store_true", help="open the index page in a web browser")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("papermill", "traitlets", "nbclient"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not args.verbose else logging.INFO)
    try:
        return args.func(args)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before or after the notebooks ran (the runner handles SIGINT itself)
        print("interrupted: no notebook was running; nothing was changed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
