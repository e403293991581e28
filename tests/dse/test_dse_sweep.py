"""Sweeps: serial vs a 2-worker LocalCluster byte for byte (with a worker killed mid-sweep), resume, refusal."""

import dataclasses
import os
import signal

import numpy as np
import pytest

from h2eal_core.dse import load_space, read_results, result_digest, run_sweep
from h2eal_core.dse.sweep import partition_digests
from h2eal_core.validation import ParameterError


@pytest.fixture(scope="module")
def quick():
    return dataclasses.replace(load_space("quick"), chunk_size=4)  # 24 chunks


@pytest.fixture(scope="module")
def serial_run(quick, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    report = run_sweep(quick, out, serial=True, progress=False)
    assert report.complete and report.computed_points == quick.n_points
    return out


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        with distributed.Client(c) as client:
            yield c, client


def test_serial_table_is_complete_and_ordered(quick, serial_run):
    t = read_results(serial_run)
    assert len(t) == quick.n_points and np.array_equal(t["point"], np.arange(quick.n_points))
    assert t.groupby(["model", "context_len", "design"]).size().nunique() == 1


def test_distributed_equals_serial_byte_for_byte_with_a_worker_killed(quick, serial_run, cluster, tmp_path):
    _, client = cluster
    killed = {}

    def kill_busiest_worker(chunk, done, total):
        if killed:
            return
        processing = client.processing()
        busy = {w: len(keys) for w, keys in processing.items()}
        victim = max(busy, key=busy.get)
        pids = client.run(os.getpid, workers=[victim])
        killed.update(worker=victim, tasks=busy[victim], done=done, total=total)
        os.kill(pids[victim], signal.SIGKILL)

    out = tmp_path / "dist"
    report = run_sweep(quick, out, client=client, cache=False, progress=False, on_chunk=kill_busiest_worker)
    assert killed and killed["done"] < killed["total"], "the worker must die mid-sweep"
    assert killed["tasks"] >= 1, "the killed worker was running tasks"
    assert report.complete and report.computed_chunks == quick.n_chunks
    assert partition_digests(out) == partition_digests(serial_run)  # every partition file, byte for byte
    t = read_results(out)  # raises if a point is missing or duplicated
    assert result_digest(t) == result_digest(read_results(serial_run))
    assert t["point"].is_unique and len(t) == quick.n_points


def test_interrupted_sweep_resumes(quick, serial_run, tmp_path):
    out = tmp_path / "resume"
    first = run_sweep(quick, out, serial=True, max_chunks=5, progress=False)
    assert first.computed_chunks == 5 and not first.complete
    with pytest.raises(ParameterError, match="chunks missing"):
        read_results(out)
    (out / "part-000002.parquet").write_bytes(b"torn")  # an interrupted write is recomputed
    second = run_sweep(quick, out, serial=True, progress=False)
    assert second.reused_chunks == 4 and second.computed_chunks == quick.n_chunks - 4
    assert partition_digests(out) == partition_digests(serial_run)
    third = run_sweep(quick, out, serial=True, progress=False)
    assert third.computed_chunks == 0 and third.reused_chunks == quick.n_chunks


def test_folder_of_another_space_is_refused(quick, serial_run, tmp_path):
    out = tmp_path / "other"
    run_sweep(quick, out, serial=True, max_chunks=1, progress=False)
    other = dataclasses.replace(quick, chunk_size=8)
    with pytest.raises(ParameterError) as err:
        run_sweep(other, out, serial=True, progress=False)
    assert err.value.name == "out_dir" and "fingerprint" in str(err.value)
    report = run_sweep(other, out, serial=True, overwrite=True, progress=False)
    assert report.complete and report.reused_chunks == 0


def test_existing_cluster_by_address_and_by_dask_config(quick, serial_run, cluster, tmp_path):
    import dask

    c, _ = cluster
    by_address = run_sweep(quick, tmp_path / "addr", scheduler=c.scheduler_address, chunks=range(6), progress=False)
    assert by_address.mode == c.scheduler_address and by_address.computed_chunks == 6
    with dask.config.set({"scheduler-address": c.scheduler_address}):
        by_config = run_sweep(quick, tmp_path / "addr", progress=False)  # resumes the 6 chunks, computes the rest
    assert by_config.mode == c.scheduler_address and by_config.reused_chunks == 6 and by_config.complete
    assert partition_digests(tmp_path / "addr") == partition_digests(serial_run)


def test_a_worker_with_other_code_or_data_is_refused(quick, tmp_path, monkeypatch):
    from h2eal_core.dse import sweep

    fp = quick.fingerprint()
    monkeypatch.setitem(sweep._WORKER_SPACES, fp, (quick, "0" * 64))  # as if the worker's files differed
    with pytest.raises(ParameterError) as err:
        run_sweep(quick, tmp_path / "w", serial=True, progress=False)
    assert err.value.name == "worker fingerprint" and "000000000000" in str(err.value) and fp[:12] in str(err.value)
    assert not list((tmp_path / "w").glob("part-*.parquet"))
