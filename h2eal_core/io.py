"""Atomic, deterministic output writers used by every notebook and experiment.

A figure or table is written to a temporary file in the destination folder, then moved into place
with :func:`os.replace`, so an interrupted run never leaves a half-written file behind. The
temporary file is named ``.<name>.<pid>-<random>.tmp<suffix>``: a run killed before it could clean
up leaves one behind, and :func:`remove_stale_temporaries` (called by the reproduction runner at
every start) deletes those whose process is gone. Files get the mode the process umask gives a
new file (0644 under the usual umask 022), not the 0600 of :func:`tempfile.mkstemp`.

Determinism across machines: result CSVs are written at :data:`CSV_SIGNIFICANT_DIGITS`
significant digits (floats that hold whole numbers as integers), a precision that float32 noise
from another CPU or thread count does not reach; PNG, PDF and SVG figures carry no timestamp or
software version, so rerunning with the same parameters gives byte-identical outputs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Significant digits of every float written to a result CSV. Measured quantities (attention mass,
#: recall, losses from float32 models) differ between machines from about the 6th digit on (CPU
#: kernels, thread counts); 4 digits is below every difference the figures show and above that
#: noise, so a fresh clone on another machine regenerates the committed bytes.
CSV_SIGNIFICANT_DIGITS = 4
CSV_FLOAT_FORMAT = f"%.{CSV_SIGNIFICANT_DIGITS}g"

#: Name pattern of the temporary files of :func:`atomic_path` (and of the runner's executed
#: notebooks): ``.<target name>.<pid>[-.]<anything>.tmp[<suffix>]``.
TEMPORARY_PATTERN = re.compile(r"^\.(?P<target>.+?)\.(?P<pid>\d+)[-.][^/]*\.tmp(\.\w+)?$")

_umask_lock = threading.Lock()


def file_mode() -> int:
    """The mode a newly created regular file gets under the current umask (0o644 for umask 022)."""
    try:  # Linux >= 4.7 reports the umask without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def temporary_path_for(target: str | os.PathLike, *, tag: str = "") -> Path:
    """A fresh temporary name beside ``target`` that :func:`remove_stale_temporaries` recognises."""
    target = Path(target)
    extra = f".{tag}" if tag else ""
    return target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{extra}.tmp{target.suffix}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, *, names: set[str] | None = None) -> list[Path]:
    """Delete temporary files of killed runs in ``folder`` (not recursive); return what was removed.

    A temporary file (see :data:`TEMPORARY_PATTERN`) is stale when the process whose id it carries
    is no longer running; live runs' files are left alone. ``names``: only temporaries whose
    target name starts with one of these (e.g. a notebook's outputs).
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = TEMPORARY_PATTERN.match(p.name)
        if not m or not p.is_file():
            continue
        if names is not None and not any(m["target"].startswith(n) for n in names):
            continue
        if _pid_alive(int(m["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
            logger.info("removed %s (temporary file of an interrupted run, process %s is gone)", p, m["pid"])
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The file that lands on ``path`` has the umask's mode (:func:`file_mode`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path_for(target)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def move_into_place(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move a finished file onto ``target`` atomically (a copy first when they are on two file systems)."""
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        source.unlink()
    return target


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as sorted, indented JSON atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def csv_ready(df, significant_digits: int = CSV_SIGNIFICANT_DIGITS):
    """A copy of ``df`` as :func:`save_table` writes it: float columns that hold only whole numbers
    (and missing values) become integers, ``-0.0`` becomes ``0.0``, other floats are rounded to
    ``significant_digits`` significant digits when formatted."""
    import numpy as np
    import pandas as pd

    out = df.copy()
    for col in out.columns:
        values = out[col]
        if not pd.api.types.is_float_dtype(values.dtype):
            continue
        finite = values[np.isfinite(values)]
        if len(finite) and bool((finite == np.round(finite)).all()) and float(np.abs(finite).max()) < 2**53 and len(finite) == values.notna().sum():
            out[col] = values.round().astype("Int64")
        else:
            out[col] = values.astype("float64") + 0.0  # -0.0 -> 0.0
    return out


def save_table(
    df, name: str, results_dir: str | os.PathLike, *, significant_digits: int = CSV_SIGNIFICANT_DIGITS, float_format: str | None = None
) -> Path:
    """Write a pandas DataFrame to ``<results_dir>/<name>.csv`` atomically, without the index.

    Floats are written with ``significant_digits`` significant digits (default
    :data:`CSV_SIGNIFICANT_DIGITS`), whole-number float columns as integers: the bytes do not
    depend on the machine's float32 rounding. ``float_format`` (a printf format such as
    ``"%.8g"``) replaces the digits, for files that are data rather than results (training logs).
    """
    from .validation import ParameterError, check_number

    check_number("significant_digits", significant_digits, minimum=1, maximum=17, integer=True)
    if float_format is not None and not (isinstance(float_format, str) and re.fullmatch(r"%\.\d+[gef]", float_format)):
        raise ParameterError("float_format", float_format, "a printf float format such as '%.8g'")
    path = Path(results_dir) / f"{name}.csv"
    with atomic_path(path) as tmp:
        csv_ready(df, significant_digits).to_csv(
            tmp, index=False, float_format=float_format or f"%.{significant_digits}g", lineterminator="\n"
        )
    logger.info("wrote %s (%d rows)", path, len(df))
    return path


#: Metadata written into figures: no creation date, no software version, so the bytes depend only
#: on what is drawn (matplotlib omits a key whose value is None).
FIGURE_METADATA = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None},
    "svg": {"Date": None, "Creator": None},
}


def save_figure(fig, name: str, figures_dir: str | os.PathLike, *, formats=("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Save a matplotlib figure as ``<figures_dir>/<name>.<fmt>`` for each format, atomically.

    Creation dates and software versions are left out of the metadata (:data:`FIGURE_METADATA`)
    and SVG ids are salted with a fixed string, so reruns give identical bytes.
    """
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "h2eal"
    paths = []
    for fmt in formats:
        path = Path(figures_dir) / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=dict(FIGURE_METADATA.get(fmt, {})))
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
