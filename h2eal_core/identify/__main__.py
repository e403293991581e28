"""Command line: train head gates and write them in DuoAttention's format.

    python -m h2eal_core.identify --preset default \
        --output data/head_patterns/smollm2-135m --checkpoint-dir build/identify/smollm2-135m

Rerunning the same command after an interruption resumes from the last checkpoint. Any training
argument can be overridden, e.g. ``--set num_steps=100 --set full_branch=student``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from ..validation import ParameterError, check_positive_int
from .training import PRESETS, GateTrainingConfig, preset, train_gates


def _parse_override(text: str, fields: dict) -> tuple[str, object]:
    if "=" not in text:
        raise SystemExit(f"--set expects NAME=VALUE, got {text!r}")
    name, raw = text.split("=", 1)
    if name not in fields:
        raise SystemExit(f"--set: unknown training argument {name!r}; known: {', '.join(sorted(fields))}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m h2eal_core.identify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--model", default=None, help="built-in name (smollm2-135m) or a local HF folder")
    parser.add_argument("--output", required=True, help="folder for full_attention_heads.tsv, config.json, curves")
    parser.add_argument("--checkpoint-dir", default=None, help="checkpoint folder (default: build/identify/<output folder name>)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in this call")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a training argument")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fields = {f.name: f for f in dataclasses.fields(GateTrainingConfig)}
    overrides = dict(_parse_override(s, fields) for s in args.set)
    if args.model:
        overrides["model"] = args.model
    try:
        if args.max_steps is not None:  # checked before the model is loaded
            check_positive_int("max_steps", args.max_steps)
        config = preset(args.preset, **overrides)
        logging.getLogger(__name__).info("training config: %s", json.dumps(config.to_dict(), sort_keys=True))
        extra = {"preset": args.preset, "overrides": overrides}
        alpha, trainer = train_gates(
            config, args.output, checkpoint_dir=args.checkpoint_dir, max_steps=args.max_steps, progress=not args.no_progress,
            extra_config=extra,
        )
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status = "finished" if trainer.finished else f"paused at step {trainer.step}/{config.num_steps}"
    print(f"{status}; mean alpha {alpha.mean():.4f}; outputs in {args.output if trainer.finished else args.checkpoint_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
