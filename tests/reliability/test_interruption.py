"""Ctrl-C and SIGTERM stop a reproduction within seconds; nothing half-written stays; a rerun resumes.

Defect 1 of issue 11: kernels run in their own session, so Ctrl-C reached only the runner, whose
thread pool then waited for the notebook to finish (hours for Table III) and printed a raw
KeyboardInterrupt traceback; a killed run left ``.NAME.*.tmp.ipynb`` files nobody removed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from h2eal_core import reproduce as rp

SLOWISH = "fig05_hybrid_algorithm"  # loads SmolLM2 and runs decode steps: about 30 s on 2 cores


def _kernels_of(pid: int) -> list[int]:
    """Processes (kernels) started with JPY_PARENT_PID = ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"JPY_PARENT_PID={pid}".encode() in env.split(b"\0"):
            found.append(int(entry.name))
    return found


def _start(repo, tmp_path, *extra):
    cmd = [sys.executable, "-m", "h2eal_core", "reproduce", "--profile", "quick", "--only", SLOWISH, "--no-progress",
           "--out-root", str(tmp_path / "out"), "--build-dir", str(tmp_path / "build"), *extra]
    # its own process group, like a shell job: the signal goes to the group, as Ctrl-C does
    return subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_kernel(proc, timeout_s=120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("the run ended before it could be interrupted: " + proc.stderr.read()[-2000:])
        if _kernels_of(proc.pid):
            time.sleep(4.0)  # the notebook is now importing and loading the model
            return
        time.sleep(0.2)
    raise AssertionError("no kernel started")


def _outputs(tmp_path) -> list[Path]:
    out = tmp_path / "out"
    return sorted(p for p in out.rglob("*") if p.is_file()) if out.exists() else []


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_run_and_a_rerun_resumes(signum, code, repo, tmp_path):
    proc = _start(repo, tmp_path, "--force")
    _wait_for_kernel(proc)
    kernels = _kernels_of(proc.pid)
    sent = time.monotonic()
    os.killpg(proc.pid, signum)
    try:
        stdout, stderr = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the runner did not exit within 10 s of the signal")
    took = time.monotonic() - sent
    assert took < 10, took
    assert proc.returncode == code, (proc.returncode, stderr[-2000:])
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("stopped by ")]
    assert len(lines) == 1, stderr
    assert SLOWISH in lines[0] and "interrupted" in lines[0] and "Resume with: python -m h2eal_core reproduce" in lines[0]
    time.sleep(0.5)
    assert not [k for k in kernels if Path(f"/proc/{k}").exists() and "zombie" not in Path(f"/proc/{k}/status").read_text()]
    # no partial outputs, no temporary files, no state recorded for the interrupted notebook
    assert _outputs(tmp_path) == []
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert not (tmp_path / "build" / "state" / f"{SLOWISH}.json").exists()
    if signum == signal.SIGINT:
        resumed = _start(repo, tmp_path)
        stdout, stderr = resumed.communicate(timeout=600)
        assert resumed.returncode == 0, stderr[-3000:]
        assert f"{SLOWISH}  ran" in stdout
        assert {p.name for p in _outputs(tmp_path)} >= {f"{SLOWISH}.png", f"{SLOWISH}.csv"}
        assert (tmp_path / "build" / "state" / f"{SLOWISH}.json").is_file()  # recorded: the next run skips it


def test_stale_temporaries_of_killed_runs_are_removed_at_the_next_start(tmp_path):
    """A SIGKILLed run leaves temporary notebooks/outputs; the next start removes them (not live ones)."""
    registry = rp.load_registry()
    runner = rp.Runner(registry, "quick", out_root=tmp_path / "out", build_dir=tmp_path / "build", progress=False)
    dead = 4_000_000  # above any pid_max: no such process
    assert not Path(f"/proc/{dead}").exists()
    for folder in (runner.executed_dir, runner.results_dir, runner.figures_dir):
        folder.mkdir(parents=True, exist_ok=True)
    stale = [
        runner.executed_dir / f".fig01_context_trends.{dead}.140234.tmp.ipynb",  # the old runner's name
        runner.executed_dir / f".fig01_context_trends.ipynb.{dead}-ab12cd34.5555.tmp.ipynb",
        runner.results_dir / f".fig01_context_trends.csv.{dead}-0011aabb.tmp.csv",
        runner.figures_dir / f".fig01_context_trends.png.{dead}-0011aabb.tmp.png",
    ]
    live = runner.results_dir / f".tab2_models.csv.{os.getpid()}-00000000.tmp.csv"
    for p in [*stale, live]:
        p.write_text("half-written")
    (runner.staging_root / str(dead) / "fig01_context_trends" / "figures").mkdir(parents=True)
    results = runner.run(registry.select(["fig01_context_trends"]))
    assert results[0].status == "ran", results[0].error
    assert not [p for p in stale if p.exists()]
    assert not (runner.staging_root / str(dead)).exists()
    assert live.exists(), "a live process's temporary file must be left alone"
