"""Sweeps: a space's points in chunks, serially or as tasks on ``dask.distributed``, into Parquet partitions.

A results folder holds ``manifest.json`` (the space, its fingerprint, the chunking) and one
``part-NNNNNN.parquet`` per chunk. A chunk's partition is written atomically by the client when
its task completes, so an interrupted sweep (Ctrl-C, a lost machine) resumes where it stopped:
the next run with the same space and code (the same fingerprint) computes only the missing
chunks. A folder of another space or another version of the model code is refused, not mixed.

On Dask each chunk is one task. By default the sweep runs on a ``LocalCluster`` sized to the
machine (one single-threaded worker process per core: the model is numpy code that holds the
GIL). ``scheduler="tcp://host:port"`` (or Dask's ``scheduler-address`` config, e.g. the
``DASK_SCHEDULER_ADDRESS`` environment variable) runs it on an existing cluster, whose workers
need this package and its data files; each task returns its table to the client, so no shared
file system is needed. Every worker reports the fingerprint of the space as it sees it, and a
worker with other model code or data is refused. A worker that dies mid-task has its tasks
rerun by the scheduler; partitions are keyed by chunk, so nothing is lost or written twice.

The serial path (``serial=True``) runs the very same chunk function in this process, without
importing Dask; the distributed result equals it byte for byte (``tests/dse``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import atomic_path, write_json_atomic
from ..validation import ParameterError, check_positive_int
from .evaluate import evaluator_for
from .space import Space, load_space, space_from_dict

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PARTITION = "part-{:06d}.parquet"

#: Spaces rebuilt on a worker, by the client's fingerprint: (space, the worker's own fingerprint).
_WORKER_SPACES: dict[str, tuple[Space, str]] = {}


@dataclasses.dataclass(frozen=True)
class SweepReport:
    """What one call of :func:`run_sweep` did."""

    out_dir: str
    n_points: int
    n_chunks: int
    computed_chunks: int
    reused_chunks: int
    computed_points: int
    wall_s: float  # evaluating and writing the chunks (cluster start-up excluded)
    startup_s: float  # starting or connecting to the Dask cluster (0 when serial or nothing to do)
    mode: str  # "serial" or the scheduler address
    n_workers: int

    @property
    def points_per_s(self) -> float:
        return self.computed_points / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def complete(self) -> bool:
        return self.computed_chunks + self.reused_chunks == self.n_chunks


def machine_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def evaluate_chunk(space_dict: dict, fingerprint: str, chunk: int, cache: bool = True) -> tuple[int, str, pd.DataFrame]:
    """One task: the result table of chunk ``chunk`` (run on a worker, or in this process when serial)."""
    entry = _WORKER_SPACES.get(fingerprint)
    if entry is None:
        space = space_from_dict(space_dict, where=str(space_dict.get("name", "space")))
        entry = _WORKER_SPACES[fingerprint] = (space, space.fingerprint())
    space, own = entry
    start, stop = space.chunk_bounds(chunk)
    table = evaluator_for(space, own, cache=cache).evaluate_range(start, stop)
    return chunk, own, table


def _write_partition(out: Path, chunk: int, table: pd.DataFrame) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = out / PARTITION.format(chunk)
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp, compression="zstd")
    return path


def _partition_ok(path: Path, expected_rows: int) -> bool:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows == expected_rows
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply recomputed
        return False


def _prepare(space: Space, out: Path, fingerprint: str, overwrite: bool) -> list[int]:
    """Write or check the manifest; the chunks still to compute."""
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    manifest = {
        "fingerprint": fingerprint,
        "space": space.to_dict(),
        "n_points": space.n_points,
        "n_chunks": space.n_chunks,
        "chunk_size": space.chunk_size,
    }
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("fingerprint") != fingerprint:
            if not overwrite:
                raise ParameterError(
                    "out_dir", str(out),
                    f"an empty folder or one holding a sweep of this space and code (its fingerprint {str(old.get('fingerprint'))[:12]} "
                    f"is not {fingerprint[:12]}: another space, data or model version); pass overwrite=True / --overwrite to replace it",
                )
            for p in out.glob("part-*.parquet"):
                p.unlink()
    elif any(out.glob("part-*.parquet")):
        if not overwrite:
            raise ParameterError("out_dir", str(out), "an empty folder or a sweep folder with a manifest (partitions without one are not resumed)")
        for p in out.glob("part-*.parquet"):
            p.unlink()
    write_json_atomic(manifest_path, manifest)
    todo = []
    for c in range(space.n_chunks):
        start, stop = space.chunk_bounds(c)
        if not _partition_ok(out / PARTITION.format(c), stop - start):
            todo.append(c)
    return todo


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="chunk", smoothing=0.1)


def run_sweep(
    space: str | os.PathLike | Space,
    out_dir: str | os.PathLike,
    *,
    serial: bool = False,
    scheduler: str | None = None,
    client: Any = None,
    n_workers: int | None = None,
    cache: bool = True,
    overwrite: bool = False,
    max_chunks: int | None = None,
    chunks: Sequence[int] | None = None,
    progress: bool = True,
    on_chunk: Callable[[int, int, int], None] | None = None,
) -> SweepReport:
    """Evaluate every point of ``space`` into ``out_dir`` (resuming what is already there).

    Args:
        space: a :class:`Space`, a space name (``data/dse/<name>.yaml``) or a YAML path.
        out_dir: the results folder (created; see the module docstring).
        serial: evaluate in this process (no Dask).
        scheduler: address of an existing Dask scheduler (``tcp://host:port``); default: Dask's
            ``scheduler-address`` config if set, else a ``LocalCluster`` of ``n_workers``.
        client: an existing ``distributed.Client`` to use (overrides ``scheduler``).
        n_workers: LocalCluster workers (default: the machine's cores), one thread each.
        cache: reuse placements across points (exact; see :mod:`.evaluate`).
        overwrite: replace a folder that holds another sweep.
        max_chunks: compute at most this many missing chunks, then stop (a partial sweep that a
            later call resumes).
        chunks: compute only these chunk indices (those still missing); e.g. a slice of a large
            space for a benchmark. The folder then holds a partial sweep.
        progress: show a tqdm bar over completed chunks.
        on_chunk: called as ``on_chunk(chunk, done, total)`` after each partition is written (in
            the client; e.g. a notebook's own progress display, or a test that kills a worker).
    """
    space = load_space(space)
    out = Path(out_dir)
    if n_workers is not None:
        check_positive_int("n_workers", n_workers)
    if max_chunks is not None:
        check_positive_int("max_chunks", max_chunks)
    if chunks is not None:
        wanted = {int(c) for c in chunks}
        bad = sorted(c for c in wanted if not 0 <= c < space.n_chunks)
        if bad:
            raise ParameterError("chunks", bad[0], f"chunk indices in [0, {space.n_chunks})")
    fingerprint = space.fingerprint()
    todo = _prepare(space, out, fingerprint, overwrite)
    reused = space.n_chunks - len(todo)
    if chunks is not None:
        reused = len(wanted) - len([c for c in todo if c in wanted])
        todo = [c for c in todo if c in wanted]
    if max_chunks is not None:
        todo = todo[:max_chunks]
    points = sum(space.chunk_bounds(c)[1] - space.chunk_bounds(c)[0] for c in todo)
    space_dict = space.to_dict()
    started = time.perf_counter()
    startup = 0.0
    if not todo:
        mode, workers = ("serial" if serial else "nothing to do"), 0
    elif serial:
        mode, workers = "serial", 1
        with _progress(len(todo), progress, f"dse {space.name} (serial)") as bar:
            for c in todo:
                _, own, table = evaluate_chunk(space_dict, fingerprint, c, cache)
                _check_fingerprint(own, fingerprint, "this process")
                _write_partition(out, c, table)
                bar.update(1)
                if on_chunk is not None:
                    on_chunk(c, bar.n, len(todo))
    else:
        mode, workers, startup = _run_distributed(space, space_dict, fingerprint, todo, out, scheduler, client, n_workers, cache, progress, on_chunk)
    wall = time.perf_counter() - started - startup
    report = SweepReport(str(out), space.n_points, space.n_chunks, len(todo), reused, points, wall, startup, mode, workers)
    logger.info("sweep %s: %d chunks computed, %d reused, %.1f s", space.name, len(todo), reused, wall)
    return report


def _check_fingerprint(own: str, expected: str, who: str) -> None:
    if own != expected:
        raise ParameterError(
            "worker fingerprint", own[:12],
            f"{expected[:12]}, the client's: {who} evaluates with other model code or data files (install the same h2eal_core on every worker)",
        )


def _run_distributed(space, space_dict, fingerprint, todo, out, scheduler, client, n_workers, cache, progress, on_chunk):
    import dask
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    own_client = client is None
    t0 = time.perf_counter()
    if client is None:
        address = scheduler or dask.config.get("scheduler-address", None)
        if address:
            client = Client(address)
        else:
            logging.getLogger("distributed").setLevel(logging.WARNING)
            cluster = LocalCluster(
                n_workers=n_workers or machine_cores(), threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.WARNING,
            )
            client = Client(cluster)
    try:
        mode = str(client.scheduler.address)
        workers = len(client.scheduler_info().get("workers", {}))
        startup = time.perf_counter() - t0
        futures = [
            client.submit(evaluate_chunk, space_dict, fingerprint, c, cache, key=f"dse-{fingerprint[:16]}-{int(cache)}-{c:06d}", pure=True)
            for c in todo
        ]
        done = set()
        with _progress(len(todo), progress, f"dse {space.name} ({workers} workers)") as bar:
            try:
                for future in as_completed(futures):
                    chunk, own, table = future.result()
                    _check_fingerprint(own, fingerprint, f"a worker of {mode}")
                    if chunk in done:  # pragma: no cover - as_completed yields each future once
                        raise RuntimeError(f"chunk {chunk} completed twice")
                    _write_partition(out, chunk, table)
                    done.add(chunk)
                    future.release()
                    bar.update(1)
                    if on_chunk is not None:
                        on_chunk(chunk, len(done), len(todo))
            except BaseException:
                client.cancel(futures)
                raise
        return mode, workers, startup
    finally:
        if own_client:
            client.close()
            if cluster is not None:
                cluster.close()


def read_manifest(out_dir: str | os.PathLike) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise ParameterError("out_dir", str(out_dir), "a sweep folder with a manifest.json (run the sweep first)")
    return json.loads(path.read_text())


def read_results(out_dir: str | os.PathLike, *, complete: bool = True) -> pd.DataFrame:
    """The sweep's table, in point order. With ``complete`` every chunk must be there (else raises)."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    manifest = read_manifest(out)
    parts, missing = [], []
    for c in range(int(manifest["n_chunks"])):
        path = out / PARTITION.format(c)
        if path.exists():
            parts.append(pq.read_table(path).to_pandas())
        else:
            missing.append(c)
    if missing and complete:
        raise ParameterError("out_dir", str(out), f"a complete sweep ({len(missing)} of {manifest['n_chunks']} chunks missing, e.g. {missing[:3]}): rerun to resume")
    if not parts:
        return pd.DataFrame()
    table = pd.concat(parts, ignore_index=True)
    if complete and not np.array_equal(table["point"].to_numpy(), np.arange(int(manifest["n_points"]))):
        raise ParameterError("out_dir", str(out), "partitions that hold every point exactly once (some are duplicated or foreign)")
    return table


def result_digest(table: pd.DataFrame) -> str:
    """SHA-256 of a result table's column names, dtypes and raw values (a byte-level identity)."""
    h = hashlib.sha256()
    for col in table.columns:
        h.update(str(col).encode() + b"\0" + str(table[col].dtype).encode() + b"\0")
        values = table[col].to_numpy()
        if values.dtype == object:
            h.update("\x1f".join(map(str, values)).encode())
        else:
            h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def partition_digests(out_dir: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every partition file's bytes, by file name."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(out_dir).glob("part-*.parquet"))}
