"""Command line for page-selection traces.

    python -m h2eal_core.traces record --model smollm2-135m --context 8192 \\
        --budget 512 --budget 2048 --gqa group_sum --gqa per_query_head --out data/traces
    python -m h2eal_core.traces fit data/traces/*.npz --out data/traces/fitted
    python -m h2eal_core.traces check data/traces/smollm2-135m_multikey-niah_ctx8192_b2048_per_query_head.npz --banks 16

``record`` writes one ``.npz`` per (budget, gqa), atomically, and skips files already recorded
with the same settings (rerun the same command to resume; ``--force`` re-records). ``fit`` writes
the fitted generator's parameters of each trace as ``<out>/<trace name>.json``. ``check`` fits
the page-selection generator to a trace and prints the fit-vs-trace statistics (and the uniform
random generator's) as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..validation import ParameterError


def _record(args) -> int:
    from .record import RecordingConfig, record_task_traces

    config = RecordingConfig(
        model=args.model, gates_dir=args.gates_dir, retrieval_ratio=args.retrieval_ratio, task=args.task,
        seed=args.seed, index=args.index, context=args.context, decode_tail=args.decode_tail,
        new_tokens=args.new_tokens, budgets=tuple(args.budget or (512, 2048)),
        gqa_modes=tuple(args.gqa or ("group_sum", "per_query_head")), page_size=args.page_size,
        sink=args.sink, local=args.local, page_order=args.page_order,
    )
    if config.steps < args.min_steps:
        raise ParameterError("decode_tail + new_tokens", config.steps, f"at least --min-steps {args.min_steps}")
    paths = record_task_traces(config, args.out, progress=not args.no_progress, force=args.force)
    for s, path in paths.items():
        print(f"{path}  (budget {s.budget}, {s.gqa})")
    return 0


def _check(args) -> int:
    from pathlib import Path

    from .fit import check_against_trace, load_selection_model
    from .format import load_trace

    trace = load_trace(args.trace)
    if args.budget is not None:
        trace = trace.at_budget(args.budget)
    committed = Path(args.fits) / (Path(args.trace).stem + ".json")
    model = None
    if not args.refit and args.budget is None and committed.is_file():
        model = load_selection_model(committed)
        logging.getLogger(__name__).info("using the committed fit %s (--refit to fit again)", committed)
    report = check_against_trace(trace, n_banks=tuple(args.banks or (16,)), seed=args.seed, model=model)
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


def _fit(args) -> int:
    from pathlib import Path

    from .fit import fit_selection_model
    from .format import load_trace

    for name in args.traces:
        trace = load_trace(name)
        model = fit_selection_model(trace, seed=args.seed)
        path = model.save(Path(args.out) / (Path(name).stem + ".json"))
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    from .record import MIN_STEPS

    parser = argparse.ArgumentParser(prog="python -m h2eal_core.traces", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="record traces on a real model under the H2EAL policy")
    rec.add_argument("--model", default="smollm2-135m", help="built-in name (smollm2-135m) or a local HF folder")
    rec.add_argument("--gates-dir", default="data/head_patterns/smollm2-135m", help="identified gates of the model")
    rec.add_argument("--retrieval-ratio", type=float, default=None, help="share of retrieval heads (default: 0.5 for GQA)")
    rec.add_argument("--task", default="passkey", help="task generator (h2eal_core.tasks.TASKS)")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--index", type=int, default=0, help="sample index of the task set")
    rec.add_argument("--context", type=int, required=True, help="tokens in the context at the last recorded step")
    rec.add_argument("--decode-tail", type=int, default=32, help="prompt tokens fed as teacher-forced decode steps")
    rec.add_argument("--new-tokens", type=int, default=16, help="tokens generated greedily after the prompt")
    rec.add_argument("--budget", type=int, action="append", help="token budget (repeat for several; default 512 and 2048)")
    rec.add_argument("--gqa", action="append", help="GQA mode (repeat; default group_sum and per_query_head)")
    rec.add_argument("--page-size", type=int, default=16)
    rec.add_argument("--sink", type=int, default=64)
    rec.add_argument("--local", type=int, default=256)
    rec.add_argument("--page-order", default="score_rank", help="score_rank (smaller budgets are prefixes) or sorted")
    rec.add_argument("--min-steps", type=int, default=MIN_STEPS, help="refuse fewer decode steps than this")
    rec.add_argument("--out", default="data/traces", help="output folder")
    rec.add_argument("--force", action="store_true", help="re-record files that are already up to date")
    rec.add_argument("--no-progress", action="store_true")
    fit = sub.add_parser("fit", help="fit the page-selection generator to traces; write its parameters as JSON")
    fit.add_argument("traces", nargs="+", help="recorded .npz traces")
    fit.add_argument("--out", default="data/traces/fitted", help="output folder")
    fit.add_argument("--seed", type=int, default=0)
    chk = sub.add_parser("check", help="fit the generator to a trace and compare statistics")
    chk.add_argument("trace", help="a recorded .npz trace")
    chk.add_argument("--budget", type=int, default=None, help="check the score-rank prefix at this budget")
    chk.add_argument("--banks", type=int, action="append", help="bank counts for the busiest-bank load (repeat)")
    chk.add_argument("--seed", type=int, default=0)
    chk.add_argument("--fits", default="data/traces/fitted", help="folder of committed fits (<trace name>.json)")
    chk.add_argument("--refit", action="store_true", help="fit again instead of using the committed fit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return {"record": _record, "fit": _fit, "check": _check}[args.command](args)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
