"""Run every benchmark in this folder (``bench_*.py``), each in its own process, in name order.

Usage: ``python benchmarks/run_all.py [--quick]``. Each benchmark prints its table and writes a CSV
under ``build/benchmarks/``; this runner only sequences them and reports which failed.
"""

import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for bench in sorted(here.glob("bench_*.py")):
        print(f"== {bench.name} ==", flush=True)
        if subprocess.run([sys.executable, str(bench), *argv], cwd=here.parent).returncode != 0:
            failed.append(bench.name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
