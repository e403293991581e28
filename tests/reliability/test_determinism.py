"""Rerunning gives the same bytes: CSVs, PNGs and PDFs, in this process and in fresh ones."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from h2eal_core import reproduce as rp
from h2eal_core.io import CSV_SIGNIFICANT_DIGITS, save_table

QUICK = ["fig01_context_trends", "tab2_models", "tab4_comparison"]


def test_two_runs_give_identical_bytes(tmp_path):
    registry = rp.load_registry()
    outputs = []
    for run in ("a", "b"):
        results = rp.reproduce("quick", QUICK, registry=registry, progress=False, force=True,
                               out_root=tmp_path / run, build_dir=tmp_path / f"build_{run}")
        assert [r.status for r in results] == ["ran"] * len(QUICK), [r.error for r in results]
        files = sorted(p for p in (tmp_path / run).rglob("*") if p.is_file())
        outputs.append({str(p.relative_to(tmp_path / run)): p.read_bytes() for p in files})
    assert outputs[0].keys() == outputs[1].keys()
    assert {k.rsplit(".", 1)[1] for k in outputs[0]} == {"csv", "png", "pdf"}
    different = [k for k in outputs[0] if outputs[0][k] != outputs[1][k]]
    assert not different, different


_FIGURE = """
import sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from h2eal_core.io import save_figure
fig, ax = plt.subplots()
ax.plot([0, 1, 2], [2, 0, 1], label="a")
ax.set_title("determinism")
ax.legend()
save_figure(fig, "f", sys.argv[1], formats=("png", "pdf", "svg"))
"""


def test_figures_are_identical_across_processes(tmp_path):
    """PNG, PDF and SVG bytes carry no timestamp, version or per-process hash (PYTHONHASHSEED varies)."""
    blobs = []
    for run, seed in (("a", "1"), ("b", "2")):
        env = {**os.environ, "PYTHONHASHSEED": seed, "SOURCE_DATE_EPOCH": ""}
        env.pop("SOURCE_DATE_EPOCH")
        subprocess.run([sys.executable, "-c", _FIGURE, str(tmp_path / run)], check=True, env=env, timeout=120)
        blobs.append({p.name: p.read_bytes() for p in sorted((tmp_path / run).iterdir())})
    assert blobs[0].keys() == {"f.png", "f.pdf", "f.svg"}
    assert blobs[0] == blobs[1]
    assert b"CreationDate" not in blobs[0]["f.pdf"] and b"Matplotlib" not in blobs[0]["f.png"]


def test_float32_noise_does_not_reach_the_csv(tmp_path):
    """Defect 2: fig05's CSVs changed in the 6th significant digit on another machine.

    The same quantities computed on two machines differ by float32 rounding (here: one float32
    ulp, the smallest difference two CPUs or thread counts give). At the old 6 digits a large share
    of such pairs printed differently; at 4 digits only values within a hair of a rounding boundary
    can (expected ~0.01%), so a table of a few thousand measured numbers stays byte-identical.
    """
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, 20000).astype(np.float32)
    noisy = np.nextafter(values, np.float32(2)).astype(np.float32)
    a = save_table(pd.DataFrame({"mass": values}), "a", tmp_path).read_text().splitlines()[1:]
    b = save_table(pd.DataFrame({"mass": noisy}), "b", tmp_path).read_text().splitlines()[1:]
    changed = np.mean([x != y for x, y in zip(a, b)])
    assert CSV_SIGNIFICANT_DIGITS == 4
    assert changed < 0.002, changed
    old_a = pd.DataFrame({"m": values}).to_csv(index=False, float_format="%.6g").splitlines()[1:]
    old_b = pd.DataFrame({"m": noisy}).to_csv(index=False, float_format="%.6g").splitlines()[1:]
    assert np.mean([x != y for x, y in zip(old_a, old_b)]) > 10 * max(changed, 1e-4)


def test_whole_numbers_stay_integers_and_negative_zero_is_zero(tmp_path):
    df = pd.DataFrame({"context": [131072.0, np.nan, 4096.0], "x": [-0.0, 1.23456789, 123456.7], "s": ["a", "b", "c"]})
    text = save_table(df, "t", tmp_path).read_text()
    assert text == "context,x,s\n131072,0,a\n,1.235,b\n4096,1.235e+05,c\n"


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_outputs_follow_the_umask(tmp_path, mask):
    """Defect 5: regenerated figures and CSVs got mode 0600 (mkstemp's), the committed ones are 0644."""
    import matplotlib.pyplot as plt

    from h2eal_core.io import file_mode, save_figure, write_json_atomic

    old = os.umask(mask)
    try:
        assert file_mode() == 0o666 & ~mask
        paths = [save_table(pd.DataFrame({"a": [1]}), "t", tmp_path), write_json_atomic(tmp_path / "s.json", {"a": 1})]
        fig, ax = plt.subplots()
        paths += save_figure(fig, "f", tmp_path)
        plt.close(fig)
    finally:
        os.umask(old)
    for p in paths:
        assert (p.stat().st_mode & 0o777) == 0o666 & ~mask, (p, oct(p.stat().st_mode))
