"""Batch reproduction: run every notebook through papermill with the parameters of a profile.

The registry ``notebooks/profiles.yaml`` names the profiles (``quick``, ``default``, ``paper``)
and, per notebook, its paper item, data inputs, dependencies and parameters per profile.

A notebook is skipped when its *fingerprint* (notebook file, parameters, declared input files,
the package's code and data, and the results of the notebooks it depends on) matches the last
successful run and all its outputs are still there unchanged. Executed notebooks are kept under
``build/<profile>/notebooks/``; every write is atomic (temporary file, then rename), so an
interrupted run never leaves a half-written notebook, figure or table behind.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .config import load_yaml
from .io import atomic_path, repo_root, write_json_atomic
from .validation import ParameterError, check_choice, check_positive_int

logger = logging.getLogger(__name__)

KERNEL_NAME = "python3"
OUTPUT_SUFFIXES = (".png", ".pdf", ".csv", ".json", ".svg")


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    description: str
    output_root: str


@dataclasses.dataclass(frozen=True)
class NotebookSpec:
    """One notebook of the registry."""

    name: str
    paper_item: str
    title: str
    issue: int | None
    inputs: tuple[str, ...]
    depends_on: tuple[str, ...]
    expected_runtime_s: dict[str, float | None]
    parameters: dict[str, dict[str, Any]]
    notebooks_dir: Path

    @property
    def path(self) -> Path:
        return self.notebooks_dir / f"{self.name}.ipynb"

    @property
    def built(self) -> bool:
        """False while the notebook is only planned (no .ipynb yet)."""
        return self.path.is_file()

    def parameters_for(self, profile: str) -> dict[str, Any]:
        return dict(self.parameters.get(profile) or {})


@dataclasses.dataclass(frozen=True)
class Registry:
    profiles: dict[str, Profile]
    notebooks: dict[str, NotebookSpec]
    root: Path

    def profile(self, name: str) -> Profile:
        return self.profiles[check_choice("profile", name, list(self.profiles))]

    def select(self, only: Iterable[str] | None = None, *, built_only: bool = True) -> list[NotebookSpec]:
        """Notebooks to run, in registry order; ``only`` names a subset (unknown names raise)."""
        if only:
            wanted = [check_choice("only", name, list(self.notebooks)) for name in only]
            specs = [self.notebooks[n] for n in self.notebooks if n in wanted]
            planned = [s.name for s in specs if not s.built]
            if planned:
                raise ParameterError("only", planned, "notebooks that exist under notebooks/ (these are still planned)")
            return specs
        return [s for s in self.notebooks.values() if s.built or not built_only]


def registry_path(root: Path | None = None) -> Path:
    return (root or repo_root()) / "notebooks" / "profiles.yaml"


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    """Read ``notebooks/profiles.yaml`` and check its structure."""
    path = Path(path) if path else registry_path()
    data = load_yaml(path)
    root = path.resolve().parent.parent
    profiles = {}
    for name, entry in (data.get("profiles") or {}).items():
        if not isinstance(entry, dict) or "output_root" not in entry:
            raise ParameterError(f"profiles.{name}", entry, "a mapping with description and output_root")
        profiles[name] = Profile(name, str(entry.get("description", "")), str(entry["output_root"]))
    if not profiles:
        raise ParameterError("profiles", None, "at least one profile")
    notebooks = {}
    for name, entry in (data.get("notebooks") or {}).items():
        if not isinstance(entry, dict):
            raise ParameterError(f"notebooks.{name}", entry, "a mapping")
        params = entry.get("parameters") or {}
        for prof in params:
            check_choice(f"notebooks.{name}.parameters", prof, list(profiles))
        notebooks[name] = NotebookSpec(
            name=name,
            paper_item=str(entry.get("paper_item", "")),
            title=str(entry.get("title", "")),
            issue=entry.get("issue"),
            inputs=tuple(entry.get("inputs") or ()),
            depends_on=tuple(entry.get("depends_on") or ()),
            expected_runtime_s=dict(entry.get("expected_runtime_s") or {}),
            parameters={k: dict(v or {}) for k, v in params.items()},
            notebooks_dir=path.resolve().parent,
        )
    for spec in notebooks.values():
        for dep in spec.depends_on:
            check_choice(f"notebooks.{spec.name}.depends_on", dep, list(notebooks))
    return Registry(profiles=profiles, notebooks=notebooks, root=root)


# ---- fingerprints -------------------------------------------------------------------------------


def _hash_file(path: Path, root: Path, h: Any) -> None:
    """Feed a file's repository-relative name and its bytes into hash ``h``."""
    h.update(str(path.relative_to(root)).encode())
    h.update(b"\0")
    h.update(path.read_bytes())
    h.update(b"\0")


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def package_files(root: Path) -> list[Path]:
    """The package's code and data files: a change to any of them reruns every notebook."""
    pkg = root / "h2eal_core"
    return sorted(
        p for p in pkg.rglob("*") if p.is_file() and p.suffix in (".py", ".yaml", ".cfg") and "__pycache__" not in p.parts
    )


def input_files(spec: NotebookSpec, root: Path) -> list[Path]:
    """Files matched by the notebook's declared ``inputs`` globs (relative to the repository)."""
    files: set[Path] = set()
    for pattern in spec.inputs:
        for match in glob.glob(str(root / pattern), recursive=True):
            p = Path(match)
            if p.is_file():
                files.add(p)
    return sorted(files)


def outputs_of(name: str, folders: Iterable[Path]) -> list[Path]:
    """Output files of notebook ``name``: files named ``<name>.<ext>`` or ``<name>_<part>.<ext>``."""
    found = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.is_file() and p.suffix in OUTPUT_SUFFIXES and (p.stem == name or p.stem.startswith(name + "_")):
                found.append(p)
    return sorted(found)


def _source_cell_index(path: Path, executed_index: int) -> int:
    """Map a cell index of the executed notebook back to the source (papermill injects one cell)."""
    import nbformat

    cells = nbformat.read(path, as_version=4).cells
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    injected_at = tagged[0] + 1 if tagged else 0
    return executed_index - 1 if executed_index >= injected_at else executed_index


@dataclasses.dataclass
class RunResult:
    name: str
    status: str  # "ran", "skipped", "failed", "blocked"
    seconds: float = 0.0
    outputs: list[str] = dataclasses.field(default_factory=list)
    error: str = ""
    executed_notebook: str = ""


class Runner:
    """Runs registry notebooks for one profile (see :func:`reproduce`)."""

    def __init__(
        self,
        registry: Registry,
        profile: str,
        *,
        out_root: str | os.PathLike | None = None,
        build_dir: str | os.PathLike | None = None,
        cell_timeout_s: int = 4 * 3600,
        progress: bool = True,
    ):
        self.registry = registry
        self.profile = registry.profile(profile)
        root = registry.root
        self.out_root = Path(out_root) if out_root is not None else (root / self.profile.output_root)
        self.out_root = self.out_root.resolve()
        self.figures_dir = self.out_root / "figures"
        self.results_dir = self.out_root / "data" / "results"
        self.build_dir = Path(build_dir).resolve() if build_dir is not None else root / "build" / self.profile.name
        self.executed_dir = self.build_dir / "notebooks"
        self.state_dir = self.build_dir / "state"
        self.cell_timeout_s = cell_timeout_s
        self.progress = progress
        self._package_digest: str | None = None

    # -- parameters and fingerprints --
    def parameters(self, spec: NotebookSpec) -> dict[str, Any]:
        params = spec.parameters_for(self.profile.name)
        params.setdefault("figures_dir", str(self.figures_dir))
        params.setdefault("results_dir", str(self.results_dir))
        return params

    def package_digest(self) -> str:
        if self._package_digest is None:
            h = hashlib.sha256()
            for p in package_files(self.registry.root):
                _hash_file(p, self.registry.root, h)
            self._package_digest = h.hexdigest()
        return self._package_digest

    def fingerprint(self, spec: NotebookSpec) -> str:
        root = self.registry.root
        h = hashlib.sha256()
        h.update(spec.path.read_bytes())
        h.update(json.dumps(self.parameters(spec), sort_keys=True, default=str).encode())
        h.update(self.package_digest().encode())
        for p in input_files(spec, root):
            _hash_file(p, root, h)
        for dep in spec.depends_on:
            for p in outputs_of(dep, (self.figures_dir, self.results_dir)):
                if p.suffix == ".csv":
                    _hash_file(p, self.out_root, h)
        return h.hexdigest()

    def state_path(self, spec: NotebookSpec) -> Path:
        return self.state_dir / f"{spec.name}.json"

    def up_to_date(self, spec: NotebookSpec, fingerprint: str) -> bool:
        path = self.state_path(spec)
        if not path.is_file():
            return False
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError:
            return False
        if state.get("fingerprint") != fingerprint:
            return False
        for rel, digest in (state.get("outputs") or {}).items():
            p = self.out_root / rel
            if not p.is_file() or _file_digest(p) != digest:
                return False
        return bool(state.get("outputs"))

    # -- execution --
    def run_one(self, spec: NotebookSpec, *, force: bool = False, position: int = 1) -> RunResult:
        import papermill

        fingerprint = self.fingerprint(spec)
        if not force and self.up_to_date(spec, fingerprint):
            return RunResult(spec.name, "skipped")
        self.executed_dir.mkdir(parents=True, exist_ok=True)
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        executed = self.executed_dir / f"{spec.name}.ipynb"
        failed_copy = self.executed_dir / f"{spec.name}.failed.ipynb"
        params = self.parameters(spec)
        started = time.time()
        progress_bar: Any = False
        if self.progress:
            progress_bar = {"desc": f"  {spec.name}", "position": position, "leave": False, "unit": "cell"}
        tmp_nb = self.executed_dir / f".{spec.name}.{os.getpid()}.{threading.get_ident()}.tmp.ipynb"
        try:
            papermill.execute_notebook(
                str(spec.path),
                str(tmp_nb),
                parameters=params,
                kernel_name=KERNEL_NAME,
                cwd=str(spec.notebooks_dir),
                progress_bar=progress_bar,
                execution_timeout=self.cell_timeout_s,
                log_output=False,
            )
            os.replace(tmp_nb, executed)
        except papermill.PapermillExecutionError as exc:
            os.replace(tmp_nb, failed_copy)
            source = (exc.source or "").strip().splitlines()
            first = source[0] if source else ""
            msg = (
                f"notebook {spec.name} failed in cell {_source_cell_index(spec.path, exc.cell_index)} "
                f"(0-based, of notebooks/{spec.path.name}; In [{exc.exec_count}] of the executed copy) "
                f"`{first[:80]}`: {exc.ename}: {exc.evalue}"
            )
            return RunResult(spec.name, "failed", time.time() - started, error=msg, executed_notebook=str(failed_copy))
        except Exception as exc:  # kernel died, timeout, unreadable notebook
            if tmp_nb.exists():
                os.replace(tmp_nb, failed_copy)
            msg = f"notebook {spec.name} failed: {type(exc).__name__}: {exc}"
            return RunResult(spec.name, "failed", time.time() - started, error=msg, executed_notebook=str(failed_copy))
        finally:
            if tmp_nb.exists():
                tmp_nb.unlink()
        seconds = time.time() - started
        if failed_copy.exists():
            failed_copy.unlink()
        outputs = outputs_of(spec.name, (self.figures_dir, self.results_dir))
        stale = [p for p in outputs if p.stat().st_mtime < started - 1]
        for p in stale:  # written by an earlier run, not by this one: no longer an output
            logger.warning("removing stale output %s (not written by this run of %s)", p, spec.name)
            p.unlink()
        outputs = [p for p in outputs if p not in stale]
        if not outputs:
            msg = f"notebook {spec.name} ran but wrote no output named {spec.name}.* or {spec.name}_*.* under {self.out_root}"
            return RunResult(spec.name, "failed", seconds, error=msg, executed_notebook=str(executed))
        rel_outputs = {str(p.relative_to(self.out_root)): _file_digest(p) for p in outputs}
        write_json_atomic(
            self.state_path(spec),
            {
                "notebook": spec.name,
                "profile": self.profile.name,
                "fingerprint": fingerprint,
                "parameters": params,
                "seconds": round(seconds, 2),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "outputs": rel_outputs,
            },
        )
        return RunResult(spec.name, "ran", seconds, sorted(rel_outputs), executed_notebook=str(executed))

    def run(self, specs: list[NotebookSpec], *, jobs: int = 1, force: bool = False) -> list[RunResult]:
        """Run ``specs`` with up to ``jobs`` notebooks at once, each after the ones it depends on."""
        check_positive_int("jobs", jobs)
        with _kernel_threads(jobs):
            return self._run(specs, jobs=jobs, force=force)

    def _run(self, specs: list[NotebookSpec], *, jobs: int, force: bool) -> list[RunResult]:
        from tqdm.auto import tqdm

        names = {s.name for s in specs}
        results: dict[str, RunResult] = {}
        pending = list(specs)
        running: dict[concurrent.futures.Future, NotebookSpec] = {}
        free_positions = list(range(1, jobs + 1))
        lock = threading.Lock()
        overall = tqdm(total=len(specs), desc=f"reproduce [{self.profile.name}]", unit="nb", position=0, disable=not self.progress)
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            while pending or running:
                for spec in list(pending):
                    deps = [d for d in spec.depends_on if d in names]
                    if any(results.get(d) and results[d].status in ("failed", "blocked") for d in deps):
                        results[spec.name] = RunResult(spec.name, "blocked", error=f"a notebook it depends on failed: {deps}")
                        pending.remove(spec)
                        overall.update(1)
                        continue
                    if len(running) < jobs and all(d in results for d in deps):
                        # a rerun dependency forces its dependents to rerun via the fingerprint
                        with lock:
                            position = free_positions.pop(0)
                        fut = pool.submit(self.run_one, spec, force=force, position=position)
                        fut.position = position  # type: ignore[attr-defined]
                        running[fut] = spec
                        pending.remove(spec)
                if not running:
                    continue
                done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for fut in done:
                    spec = running.pop(fut)
                    with lock:
                        free_positions.append(fut.position)  # type: ignore[attr-defined]
                        free_positions.sort()
                    try:
                        result = fut.result()
                    except Exception as exc:  # a bug in the runner itself: report, do not hang
                        result = RunResult(spec.name, "failed", error=f"{type(exc).__name__}: {exc}")
                    results[spec.name] = result
                    overall.update(1)
                    overall.set_postfix_str(f"{spec.name}: {result.status}")
                    if result.status == "failed":
                        logger.error(result.error)
        overall.close()
        return [results[s.name] for s in specs]


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def kernel_thread_env(jobs: int, cpus: int | None = None, environ: dict | None = None) -> dict[str, str]:
    """Thread-count variables for the kernels of ``jobs`` parallel notebooks: ``cpus // jobs`` each.

    PyTorch and BLAS start one OpenMP thread per core in every kernel; two kernels of two threads
    on two cores spin-wait on each other and run orders of magnitude slower (measured here: a
    CPU study step went from 0.15 s to 40 s). Variables the user set are kept; one job sets nothing.
    """
    environ = os.environ if environ is None else environ
    if jobs <= 1:
        return {}
    share = str(max(1, (cpus or os.cpu_count() or 1) // jobs))
    return {name: share for name in THREAD_VARIABLES if name not in environ}


@contextlib.contextmanager
def _kernel_threads(jobs: int):
    """Set :func:`kernel_thread_env` in this process (kernels inherit it) for the duration of a run."""
    env = kernel_thread_env(jobs)
    if env:
        logger.info("%d notebooks at a time: %s per kernel", jobs, ", ".join(f"{k}={v}" for k, v in env.items()))
    os.environ.update(env)
    try:
        yield
    finally:
        for name in env:
            os.environ.pop(name, None)


def reproduce(
    profile: str = "default",
    only: Iterable[str] | None = None,
    *,
    jobs: int = 1,
    force: bool = False,
    out_root: str | os.PathLike | None = None,
    build_dir: str | os.PathLike | None = None,
    registry: Registry | None = None,
    progress: bool = True,
) -> list[RunResult]:
    """Run the registry's notebooks (all built ones, or ``only``) with ``profile``'s parameters."""
    registry = registry or load_registry()
    runner = Runner(registry, profile, out_root=out_root, build_dir=build_dir, progress=progress)
    return runner.run(registry.select(only), jobs=jobs, force=force)


def prepare(
    profile: str,
    dest: str | os.PathLike,
    only: Iterable[str] | None = None,
    *,
    out_root: str | os.PathLike | None = None,
    registry: Registry | None = None,
) -> list[Path]:
    """Write each notebook with ``profile``'s parameters injected (not executed) into ``dest``.

    This is what nbval tests: the notebooks as a user would run them with that profile.
    Outputs of the prepared notebooks go under ``out_root`` (default ``dest``).
    """
    import papermill

    registry = registry or load_registry()
    dest = Path(dest).resolve()
    runner = Runner(registry, profile, out_root=out_root or dest, build_dir=dest / "build", progress=False)
    written = []
    for spec in registry.select(only):
        target = dest / spec.path.name
        with atomic_path(target) as tmp:
            papermill.execute_notebook(
                str(spec.path), str(tmp), parameters=runner.parameters(spec), kernel_name=KERNEL_NAME, prepare_only=True, progress_bar=False
            )
        written.append(target)
    return written


def last_runtimes(registry: Registry) -> dict[str, dict[str, float]]:
    """Measured seconds of the last successful run of each notebook per profile (from build state)."""
    out: dict[str, dict[str, float]] = {}
    for profile in registry.profiles:
        state_dir = registry.root / "build" / profile / "state"
        for path in state_dir.glob("*.json") if state_dir.is_dir() else []:
            try:
                state = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
            out.setdefault(state.get("notebook", path.stem), {})[profile] = float(state.get("seconds", 0.0))
    return out
