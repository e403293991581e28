"""Table III's accuracy study on ``dask.distributed``: one task per unit of samples, on workers that hold the model.

:func:`~h2eal_core.experiments.accuracy.run_accuracy_study` evaluates the study in this process,
and stays the default (one 2-core machine gains nothing from a second copy of the model). This
module runs the very same study on a Dask cluster, which is how the ``paper`` profile (the 7-8B
models at long contexts) scales to several GPUs:

* **A unit** is what the in-process study evaluates in one call of
  :func:`~h2eal_core.experiments.accuracy.evaluate_batch`: samples of one (task, length, decode
  tail) in one index block (``batch_tokens // length`` samples; one sample when a sample fills
  ``batch_tokens``), with all of their missing methods, which share the unit's dense prefill. Each
  unit is one Dask task. The units are formed exactly as the in-process study forms its batches,
  so every record (``batch_size`` included) equals the in-process one, field for field, except
  the wall time ``seconds`` (``tests/experiments/test_accuracy_cluster.py``).
* **Workers hold the model.** A worker process loads ``(model, tokenizer)`` with the
  ``model_loader`` on its first unit and keeps it for every later one (a per-process cache keyed
  by the loader and the model's name, dtype and device). Deploy one single-threaded worker per GPU
  (``CUDA_VISIBLE_DEVICES`` per worker, as ``dask worker --nthreads 1`` under a per-GPU
  environment or ``dask_cuda.LocalCUDACluster`` do), or one per CPU process. On a plain
  ``LocalCluster`` on a machine with several visible GPUs, worker ``i`` uses ``cuda:i mod n``.
  A worker running several threads evaluates one unit at a time per model (the policies patch the
  model's attention while they run).
* **The driver needs no model.** The first task (on any worker) loads the model there and returns
  the study's plan: its retrieval-head sets, its identity (:func:`~.accuracy.study_identity`: the
  configuration, the *worker's* torch and transformers versions, dtype and device type) and the
  samples' ids and decode tails. The driver then opens the same result cache as the in-process
  study (same file name, same identity, same keys; the committed ``records_dir`` file is reused
  read-only), submits one task per missing unit and appends each unit's records to the cache as
  its future completes (``distributed.as_completed``, a tqdm bar over completed samples).
  Every unit reports the identity and head sets its worker computed; a worker whose torch,
  transformers, device type, gates or haystack text differ from the plan's is refused, not mixed.
* **Resume and interruption** are the in-process study's: records are appended only when their
  unit is complete (a torn last line is skipped on reading), so a second call measures nothing
  new and an interrupted one (Ctrl-C, a lost worker: the scheduler reruns its unit elsewhere)
  computes only what is missing.

Clusters: ``client=`` an existing ``distributed.Client``; else ``scheduler="tcp://host:port"``
(or Dask's ``scheduler-address`` config, e.g. ``DASK_SCHEDULER_ADDRESS``); else a ``LocalCluster``
of ``n_workers`` single-threaded worker processes (default: one per visible GPU when the study
runs on CUDA, else one per core). Workers need this package, the gates folder and the model files
at the same paths (a relative ``gates_dir`` inside the repository is sent relative to it, so each
worker reads it from its own checkout).

``python -m h2eal_core.experiments.accuracy_cluster --profile paper --scheduler tcp://host:8786``
runs the ``tab3_accuracy`` notebook's study for that profile on a cluster; the notebook then reads
the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import pandas as pd

from ..io import repo_root, resolve_repo_path
from ..tasks import generate_sample
from ..validation import ParameterError, check_positive_int
from . import accuracy as acc

logger = logging.getLogger(__name__)

DEFAULT_MODEL_LOADER = "h2eal_core.experiments.accuracy_cluster:default_model_loader"

#: Models loaded in this (worker) process: key -> (model, tokenizer, lock).
_WORKER_MODELS: dict[tuple, tuple[Any, Any, threading.Lock]] = {}
_LOAD_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------------
# the model on a worker


def default_model_loader(config: acc.AccuracyStudyConfig):
    """``(model, tokenizer)`` as :func:`~.accuracy.run_accuracy_study` loads them (``load_model``)."""
    import torch

    from ..models.loading import load_model

    dtype = getattr(torch, config.dtype) if config.dtype else None
    return load_model(config.model, dtype=dtype, device=config.device)


def loader_reference(model_loader: Callable | str | None) -> str:
    """``"module:qualname"`` of a model loader (a callable or such a string), checked importable.

    Workers import the loader by this reference, so it must be a module-level function (not a
    lambda or a function defined inside another) of a module the workers can import.
    """
    if model_loader is None:
        return DEFAULT_MODEL_LOADER
    if isinstance(model_loader, str):
        ref = model_loader
    elif callable(model_loader):
        module, qualname = getattr(model_loader, "__module__", None), getattr(model_loader, "__qualname__", "")
        if not module or module == "__main__" or "<" in qualname:
            raise ParameterError(
                "model_loader", repr(model_loader),
                "a module-level function of an importable module (workers import it by name), or 'module:function'",
            )
        ref = f"{module}:{qualname}"
    else:
        raise ParameterError("model_loader", repr(model_loader), "a callable (config) -> (model, tokenizer) or 'module:function'")
    resolve_loader(ref)
    return ref


def resolve_loader(ref: str) -> Callable:
    """The loader named by ``"module:qualname"`` (a clear error when it cannot be imported)."""
    module_name, _, qualname = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ParameterError("model_loader", ref, f"an importable 'module:function' ({type(exc).__name__}: {exc})") from None
    if not qualname or not callable(obj):
        raise ParameterError("model_loader", ref, "'module:function' naming a callable (config) -> (model, tokenizer)")
    return obj


def _worker_device(config: acc.AccuracyStudyConfig) -> str | None:
    """The device this worker loads the model on: ``config.device``, except that on a machine with
    several visible GPUs a ``LocalCluster`` worker named ``i`` takes ``cuda:i mod n``."""
    if config.device not in (None, "cuda"):
        return config.device
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return config.device
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):  # not on a worker
        return config.device
    return f"cuda:{int(name) % torch.cuda.device_count()}" if isinstance(name, int) or str(name).isdigit() else config.device


def worker_model(config: acc.AccuracyStudyConfig, loader_ref: str):
    """``(model, tokenizer, lock)`` of this process: loaded on first use, then kept."""
    device = _worker_device(config)
    key = (loader_ref, config.model, config.dtype, device)
    with _LOAD_LOCK:
        entry = _WORKER_MODELS.get(key)
        if entry is None:
            t0 = time.perf_counter()
            load_config = config if device == config.device else dataclasses.replace(config, device=device)
            model, tokenizer = resolve_loader(loader_ref)(load_config)
            if tokenizer is None:
                raise ParameterError("model_loader", loader_ref, "a loader that returns (model, tokenizer), the tokenizer included")
            entry = _WORKER_MODELS[key] = (model, tokenizer, threading.Lock())
            logger.info("loaded %s with %s in %.1f s", config.model, loader_ref, time.perf_counter() - t0)
    return entry


def _identity_digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _sample(config: acc.AccuracyStudyConfig, tokenizer, task: str, length: int, index: int):
    return generate_sample(task, tokenizer, length, config.seed, index, haystack=config.haystack, chat=config.chat)


def plan_study(config: acc.AccuracyStudyConfig, loader_ref: str) -> dict:
    """The first task: load the model here; the head sets, the identity and every sample's id and tail."""
    model, tokenizer, _ = worker_model(config, loader_ref)
    heads = acc.head_sets(config, model)
    identity = acc.study_identity(config, heads, model)
    samples = []
    for length in config.lengths:
        for task in config.tasks:
            for i in range(config.n_samples):
                s = _sample(config, tokenizer, task, length, i)
                samples.append((task, length, i, s.sample_id, acc.decode_tail_of(s, config)))
    return {"heads": heads, "identity": identity, "samples": samples}


def evaluate_unit(config: acc.AccuracyStudyConfig, loader_ref: str, task: str, length: int, indices: tuple[int, ...],
                  methods: tuple[str, ...]) -> dict:
    """One task: the records of ``methods`` on the samples ``indices`` of (task, length), one batch.

    Returns the records with the identity digest and the head-set digests this worker computed
    (the driver refuses a worker that disagrees with the plan).
    """
    model, tokenizer, lock = worker_model(config, loader_ref)
    samples = [_sample(config, tokenizer, task, length, i) for i in indices]
    with lock:
        heads = acc.head_sets(config, model)
        identity = acc.study_identity(config, heads, model)
        records = acc.evaluate_batch(model, tokenizer, samples, config, heads, list(methods))
    return {
        "identity": _identity_digest(identity),
        "heads": {m: heads.digest(m) for m in methods},
        "records": records,
    }


# ---------------------------------------------------------------------------------------------------
# the driver


def plan_units(config: acc.AccuracyStudyConfig, samples: list[tuple], missing: dict[str, tuple[str, ...]]) -> list[dict]:
    """The units of the missing results, formed and ordered as the in-process study forms its batches.

    ``samples``: ``(task, length, index, sample_id, decode_tail)`` of every sample; ``missing``:
    sample id -> its missing methods (in the study's method order). Samples of one length are
    taken in index blocks of ``max(1, batch_tokens // length)``; inside a block, samples of equal
    (task, decode tail, missing methods) form one unit. Units are ordered by block, then length,
    then (task, tail, methods): :func:`~.accuracy.plan_batches`, which the in-process study uses too.
    """
    items = [(task, length, index, tail, missing.get(sample_id), index) for task, length, index, sample_id, tail in samples]
    return [
        {"start": start, "length": length, "task": task, "tail": tail, "methods": methods, "indices": tuple(indices)}
        for start, length, (task, tail, methods), indices in acc.plan_batches(config, items)
    ]


def default_n_workers(config: acc.AccuracyStudyConfig) -> int:
    """One worker per visible GPU when the study runs on CUDA (``device`` None or ``"cuda"``), one
    for a named GPU (``"cuda:1"``), else one per core."""
    from ..dse.sweep import machine_cores

    if config.device != "cpu":
        import torch

        if torch.cuda.is_available() and (config.device is None or str(config.device).startswith("cuda")):
            return torch.cuda.device_count() if config.device in (None, "cuda") else 1
    return machine_cores()


@contextmanager
def cluster_client(*, client: Any = None, scheduler: str | None = None, n_workers: int = 1):
    """A ``distributed.Client``: ``client`` as given, else one connected to ``scheduler`` (or Dask's
    ``scheduler-address`` config), else a ``LocalCluster`` of ``n_workers`` single-threaded
    processes; what this opens it closes on exit (mirrors :func:`h2eal_core.dse.sweep.run_sweep`)."""
    if client is not None:
        yield client
        return
    import dask
    from distributed import Client, LocalCluster

    address = scheduler or dask.config.get("scheduler-address", None)
    cluster = None
    if address:
        client = Client(address)
    else:
        logging.getLogger("distributed").setLevel(logging.WARNING)
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.WARNING)
        client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _portable_gates_dir(gates_dir: str) -> str:
    """``gates_dir`` as the workers should read it: relative to the repository when it lies inside
    it (each worker resolves it in its own checkout), else absolute."""
    path = resolve_repo_path(gates_dir).resolve()
    try:
        return str(path.relative_to(repo_root().resolve()))
    except ValueError:
        return str(path)


def run_accuracy_study_on_cluster(
    config: acc.AccuracyStudyConfig,
    *,
    client: Any = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    records_dir: str | os.PathLike | None = None,
    export_records: bool = False,
    reuse_records: bool = True,
    model_loader: Callable | str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run (or resume) the accuracy study on Dask; the same records and cache as the in-process study.

    Args:
        config: the study.
        client, scheduler, n_workers: the cluster (see the module docstring; ``n_workers`` sizes a
            ``LocalCluster`` only).
        cache_dir, records_dir, export_records, reuse_records: as in
            :func:`~.accuracy.run_accuracy_study` (the same file, shared with in-process runs).
        model_loader: ``(config) -> (model, tokenizer)``, a module-level function or
            ``"module:function"`` the workers import (default: ``load_model(config.model)``).
        progress: a tqdm bar over completed samples.

    Returns:
        The per-(sample, method) records (as :func:`~.accuracy.run_accuracy_study` returns them),
        with ``attrs``: ``cache_path``, ``heads``, ``computed_units``, ``computed_samples`` (what
        this call measured) and ``scheduler`` (the cluster's address). A call with nothing
        missing still loads the model on one worker (the plan needs the model's head shape and
        the worker's identity) but evaluates nothing.
    """
    from tqdm.auto import tqdm

    if export_records and not records_dir:
        raise ParameterError("records_dir", records_dir, "a folder when export_records is set")
    if n_workers is not None:
        check_positive_int("n_workers", n_workers)
    if scheduler is not None and (not isinstance(scheduler, str) or "://" not in scheduler):
        raise ParameterError("scheduler", scheduler, "a Dask scheduler address such as 'tcp://host:8786'")
    loader_ref = loader_reference(model_loader)
    worker_config = dataclasses.replace(config, gates_dir=_portable_gates_dir(config.gates_dir))
    cache_dir = resolve_repo_path(cache_dir) if cache_dir is not None else repo_root() / "build" / "accuracy_cache"

    with cluster_client(client=client, scheduler=scheduler, n_workers=n_workers or default_n_workers(config)) as dask_client:
        from distributed import as_completed

        address = str(dask_client.scheduler.address)
        n = len(dask_client.scheduler_info().get("workers", {}))
        logger.info("accuracy study on %s (%d workers), model loader %s", address, n, loader_ref)
        plan = dask_client.submit(plan_study, worker_config, loader_ref, pure=False).result()
        heads, identity = plan["heads"], plan["identity"]
        expected_identity = _identity_digest(identity)
        target = acc.cache_path(cache_dir, identity, config.model)
        readonly = ()
        if records_dir and reuse_records:
            committed = resolve_repo_path(records_dir) / target.name
            readonly = (committed,) if committed.is_file() and committed.resolve() != target.resolve() else ()
        cache = acc.ResultCache(target, identity, readonly=readonly)
        keys, missing = [], {}
        for task, length, _index, sample_id, _tail in plan["samples"]:
            keys += [(task, length, sample_id, m, heads.digest(m)) for m in config.methods]
            todo = tuple(m for m in config.methods if (task, length, sample_id, m, heads.digest(m)) not in cache.records)
            if todo:
                missing[sample_id] = todo
        units = plan_units(config, plan["samples"], missing)
        logger.info(
            "accuracy study: %d cached results in %s; %d units (%d samples) to compute",
            len(cache.records), cache.path, len(units), len(missing),
        )
        # readable task keys, unique per call (a key cancelled by an interrupted call is not reused)
        prefix = f"accuracy-{expected_identity[:12]}-{uuid.uuid4().hex[:8]}"
        futures = {
            dask_client.submit(
                evaluate_unit, worker_config, loader_ref, u["task"], u["length"], u["indices"], u["methods"],
                key=f"{prefix}-{u['task']}-L{u['length']}-t{u['tail']}-i{u['indices'][0]}x{len(u['indices'])}-{'+'.join(u['methods'])}",
                pure=False,
            ): u
            for u in units
        }
        computed_samples = 0
        bar = tqdm(total=len(missing), disable=not progress, desc=f"accuracy samples ({n} workers)", dynamic_ncols=True)
        try:
            for future in as_completed(list(futures)):
                unit, result = futures[future], future.result()
                _check_unit(result, unit, expected_identity, heads, address)
                cache.add(result["records"])
                future.release()
                computed_samples += len(unit["indices"])
                bar.update(len(unit["indices"]))
                bar.set_postfix(task=unit["task"], L=unit["length"])
        except BaseException:
            dask_client.cancel(list(futures))
            raise
        finally:
            bar.close()

    df = acc.study_records(cache, keys, heads, export_to=resolve_repo_path(records_dir) / target.name if export_records else None)
    df.attrs.update(computed_units=len(units), computed_samples=computed_samples, scheduler=address)
    return df


def _check_unit(result: dict, unit: dict, expected_identity: str, heads: acc.HeadSets, address: str) -> None:
    """Refuse a unit computed by a worker whose study identity or head sets differ from the plan's."""
    if result["identity"] != expected_identity:
        raise ParameterError(
            "worker study identity", result["identity"][:12],
            f"{expected_identity[:12]}, the plan's: a worker of {address} has other torch/transformers versions, dtype, "
            "device type or haystack text (install the same environment on every worker)",
        )
    for method, digest in result["heads"].items():
        if digest != heads.digest(method):
            raise ParameterError(
                "worker head set", f"{method}: {digest}",
                f"{heads.digest(method)}, the plan's: a worker of {address} reads other gates (the same gates_dir on every worker)",
            )
    expected = {(unit["task"], unit["length"], i, m) for i in unit["indices"] for m in unit["methods"]}
    got = {(r["task"], r["length"], r["index"], r["method"]) for r in result["records"]}
    if got != expected or len(result["records"]) != len(expected):
        raise RuntimeError(f"unit {unit['task']} L{unit['length']} {unit['indices']} returned other records than asked for")


def main(argv: list[str] | None = None) -> int:
    """``python -m h2eal_core.experiments.accuracy_cluster --profile paper --scheduler tcp://host:8786``.

    The study of the ``tab3_accuracy`` notebook for a profile (as ``python -m
    h2eal_core.experiments.accuracy``), on a Dask cluster: ``--scheduler`` an existing one, else a
    ``LocalCluster`` of ``--workers`` processes.
    """
    import argparse

    parser = argparse.ArgumentParser(description="Run (or resume) the Table III accuracy study on a Dask cluster.")
    parser.add_argument("--profile", default="default", help="profile of notebooks/profiles.yaml (tab3_accuracy)")
    parser.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--workers", type=int, default=None, help="LocalCluster workers (default: one per GPU, else per core)")
    parser.add_argument("--cache-dir", default=None, help="result cache folder (default: the notebook's cache_dir)")
    parser.add_argument("--model-loader", default=None, help="'module:function' (config) -> (model, tokenizer) the workers import")
    parser.add_argument("--export", action="store_true", help="afterwards write the study's records to the notebook's records_dir")
    parser.add_argument("--remeasure", action="store_true", help="do not reuse the committed records of records_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = acc.profile_parameters(args.profile)
    config = acc.study_config(**params)
    logger.info("study: %s", json.dumps(config.to_dict(), sort_keys=True))
    records = run_accuracy_study_on_cluster(
        config, scheduler=args.scheduler, n_workers=args.workers, cache_dir=args.cache_dir or params["cache_dir"],
        records_dir=params.get("records_dir") or None, export_records=args.export, reuse_records=not args.remeasure,
        model_loader=args.model_loader,
    )
    print(acc.summary_table(records).to_string(index=False))
    return 0


if __name__ == "__main__":
    import sys

    # run the importable module's main, not this ``__main__`` copy's: its tasks are then pickled
    # by reference (workers import h2eal_core.experiments.accuracy_cluster), not by value
    from h2eal_core.experiments import accuracy_cluster

    sys.exit(accuracy_cluster.main())
