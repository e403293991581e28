"""Atomic, deterministic output writers used by every notebook and experiment.

A figure or table is written to a temporary file in the destination folder, then moved into place
with :func:`os.replace`, so an interrupted run never leaves a half-written file behind. CSVs use a
fixed float format and PNGs/PDFs drop volatile metadata, so rerunning with the same parameters
gives byte-identical outputs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Significant digits written to result CSVs: enough for every reported number, stable across runs.
CSV_FLOAT_FORMAT = "%.6g"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as sorted, indented JSON atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def save_table(df, name: str, results_dir: str | os.PathLike, *, float_format: str = CSV_FLOAT_FORMAT) -> Path:
    """Write a pandas DataFrame to ``<results_dir>/<name>.csv`` atomically, without the index."""
    path = Path(results_dir) / f"{name}.csv"
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format=float_format, lineterminator="\n")
    logger.info("wrote %s (%d rows)", path, len(df))
    return path


def save_figure(fig, name: str, figures_dir: str | os.PathLike, *, formats=("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Save a matplotlib figure as ``<figures_dir>/<name>.<fmt>`` for each format, atomically.

    Creation dates and software versions are stripped from the metadata so reruns are identical.
    """
    paths = []
    for fmt in formats:
        path = Path(figures_dir) / f"{name}.{fmt}"
        metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None, "Creator": None}}.get(
            fmt, {}
        )
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    logger.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths


def repo_root() -> Path:
    """The repository root (the folder holding ``h2eal_core``), for locating ``data/``."""
    return Path(__file__).resolve().parent.parent


def resolve_repo_path(path: str | os.PathLike) -> Path:
    """Resolve a path parameter the same way wherever a notebook runs.

    ``path`` as given when absolute or existing; else relative to ``notebooks/`` (the notebooks'
    convention, e.g. ``../data/...``, so that a notebook prepared into another folder, as nbval
    does, or opened in JupyterLab finds the same files); else relative to the repository root
    (``data/head_patterns/...``). A path that exists nowhere resolves to the ``notebooks/``
    reading when it starts with ``..`` and to the repository reading otherwise, so that the error
    that follows names a sensible location.
    """
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    from_notebooks, from_root = (repo_root() / "notebooks" / p).resolve(), (repo_root() / p).resolve()
    for candidate in (from_notebooks, from_root):
        if candidate.exists():
            return candidate
    return from_notebooks if p.parts and p.parts[0] == ".." else from_root


def data_dir() -> Path:
    """The project's ``data/`` folder (``$H2EAL_DATA_DIR`` overrides the repository's own)."""
    override = os.environ.get("H2EAL_DATA_DIR")
    return Path(override) if override else repo_root() / "data"
