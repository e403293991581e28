"""Run every benchmark in this folder (``bench_*.py``), each in its own process, in name order.

Usage: ``python benchmarks/run_all.py [--quick]``. Each benchmark prints its table and writes its
CSV: ``--quick`` runs under ``build/benchmarks/``; full runs of the attention benchmarks
(``bench_attention.py``, ``bench_generation.py``) write the committed artefacts under
``benchmarks/results/``. ``bench_dse.py`` (design-space sweeps on Dask and the explorer's redraw)
writes ``build/benchmarks/bench_dse.csv``; its full run sweeps 108,864 points (a few minutes on 2
cores), ``--quick`` skips that sweep. This runner only sequences them and reports which failed (a benchmark that
refuses to measure on a busy machine, exit code 3, counts as failed).
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
