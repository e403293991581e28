"""A fresh clone, without ``../shared``, reproduces the committed outputs: ``git status`` stays clean.

The clone is made from this repository with ``git clone``; uncommitted changes of the working tree
(tracked diffs and new files git does not ignore) are applied and committed inside the temporary
clone, so the check is of the tree as it will be committed. The clone's own package is used (by
``PYTHONPATH``, also in the kernels). Notebooks run with the default profile, which writes the
committed ``figures/`` and ``data/results/``: every file they touch must come back byte-identical.
Fig. 4 is the case of defect 2 (its DuoAttention panels came from ``../shared``); it loads
SmolLM2, so it is marked slow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FAST = ["fig01_context_trends", "tab2_models", "tab4_comparison"]


def _git(*args, cwd, check=True, **kw):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=check, **kw)


@pytest.fixture(scope="module")
def clone(repo, tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("needs git and a git checkout")
    base = tmp_path_factory.mktemp("fresh")
    target = base / "h2eal"  # no ../shared beside it
    _git("clone", "--quiet", "--no-hardlinks", str(repo), str(target), cwd=base)
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=repo, capture_output=True, check=True).stdout
    if diff.strip():
        subprocess.run(["git", "apply", "--binary", "--whitespace=nowarn"], cwd=target, input=diff, check=True, capture_output=True)
    for rel in _git("ls-files", "--others", "--exclude-standard", cwd=repo).stdout.splitlines():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, target / rel)
    _git("add", "-A", cwd=target)
    _git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "--quiet", "--allow-empty", "-m", "working tree", cwd=target)
    assert not (target.parent / "shared").exists()
    return target


def _reproduce(clone: Path, names: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(clone), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(
        [sys.executable, "-m", "h2eal_core", "reproduce", "--profile", "default", "--only", *names, "--no-progress"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=1800,
    )


def _touched(clone: Path, names: list[str]) -> list[Path]:
    return sorted(p for folder in ("figures", "data/results") for p in (clone / folder).iterdir()
                  if any(p.stem == n or p.stem.startswith(n + "_") for n in names))


def test_fresh_clone_reproduces_fast_notebooks_byte_identically(clone):
    proc = _reproduce(clone, FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("  ran ") == len(FAST), proc.stdout
    import h2eal_core

    assert Path(h2eal_core.__file__).resolve().is_relative_to(Path(__file__).resolve().parents[2])  # this process: the repo
    status = _git("status", "--porcelain", "--untracked-files=all", cwd=clone).stdout
    assert status == "", status
    touched = _touched(clone, FAST)
    assert touched
    umask_mode = 0o666 & ~_umask()
    assert all((p.stat().st_mode & 0o777) == umask_mode for p in touched), [(p.name, oct(p.stat().st_mode)) for p in touched]


@pytest.mark.slow
def test_fresh_clone_without_shared_reproduces_fig04(clone):
    """Defect 2: without ../shared, fig04's committed CSVs and figures changed (DuoAttention rows dropped)."""
    proc = _reproduce(clone, ["fig04_head_sparsity"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "optional input missing: DuoAttention's published gates" in proc.stdout
    status = _git("status", "--porcelain", "--untracked-files=all", cwd=clone).stdout
    assert status == "", status


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
