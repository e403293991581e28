"""Small helpers shared by the notebooks: one setup call, paths, and table display.

Notebooks stay thin: parameters, one call into an experiment function, a figure, the numbers.
Everything a notebook needs beyond that lives here or in :mod:`h2eal_core.experiments`.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from pathlib import Path

import numpy as np

#: Figure width in inches that reads well both in JupyterLab and in the HTML report.
FIGURE_WIDTH_IN = 7.0


def setup(seed: int = 0, *, log_level: str = "WARNING") -> None:
    """Seed every RNG, pin the plotting style, and route package logging to stderr.

    Rerunning a notebook with the same parameters must give the same numbers, so every notebook
    calls this first with its ``seed`` parameter.
    """
    logging.basicConfig(level=getattr(logging, log_level), format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("h2eal_core").setLevel(getattr(logging, log_level))
    random.seed(seed)
    np.random.seed(seed)
    # torch costs seconds to import: seed it only where the notebook already uses it (import torch
    # before calling setup); package functions that use torch take and apply their own seed.
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "h2eal"
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams["figure.dpi"] = 100
    matplotlib.rcParams["savefig.dpi"] = 150


def output_dirs(figures_dir: str | os.PathLike, results_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Create and return the figure and result folders a notebook was given."""
    figures, results = Path(figures_dir), Path(results_dir)
    figures.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    return figures, results


def rounded(df, digits: int = 3):
    """A copy of ``df`` with floats rounded for display (the CSV keeps full precision)."""
    return df.round(digits)
