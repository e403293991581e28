"""Batch reproduction: run every notebook through papermill with the parameters of a profile.

The registry ``notebooks/profiles.yaml`` names the profiles (``quick``, ``default``, ``paper``)
and, per notebook, its paper item, data inputs, dependencies and parameters per profile.

A notebook is skipped when its *fingerprint* (notebook file, parameters, declared input files,
the package's code and data, and the results of the notebooks it depends on) matches the last
successful run and all its outputs are still there unchanged. Executed notebooks are kept under
``build/<profile>/notebooks/``; every write is atomic (temporary file, then rename), so an
interrupted run never leaves a half-written notebook, figure or table behind.

Before any kernel starts, every notebook's parameters (profile, overrides) are checked against its
typed parameters cell (:mod:`h2eal_core.notebook`). A notebook writes its outputs into a staging
folder, moved into ``figures/`` and ``data/results/`` only when it finished: a failed or
interrupted notebook changes none of its outputs. SIGINT (Ctrl-C) and SIGTERM stop the running
kernels within seconds; temporary files left by killed runs are removed at the next start.
Injected output folders are relative to ``notebooks/`` (the notebooks' working directory) when
inside the repository, so executed notebooks and fingerprints do not depend on where the clone is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import os
import signal
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
    status: str  # "ran", "skipped", "failed", "blocked", "interrupted", "not started"
    seconds: float = 0.0
    outputs: list[str] = dataclasses.field(default_factory=list)
    error: str = ""
    executed_notebook: str = ""
    missing_inputs: list[dict] = dataclasses.field(default_factory=list)


#: Statuses of a notebook that did not finish because the run was stopped by a signal.
STOPPED_STATUSES = ("interrupted", "not started")

#: Seconds between interrupting the kernels (SIGINT, so cells stop and clean up) and killing
#: them (SIGKILL to the kernel's process group), and the most the runner then waits.
INTERRUPT_GRACE_S = 3.0
KILL_WAIT_S = 3.0


class _LiveKernels:
    """The kernels the runner's notebooks run in, so that a signal can stop them.

    jupyter_client starts every kernel in a session of its own: Ctrl-C in the terminal reaches
    the runner, never the kernels, so the runner forwards it (and SIGTERM) itself.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._by_thread: dict[int, list[Any]] = {}

    def add(self, km) -> None:
        with self._lock:
            self._by_thread.setdefault(threading.get_ident(), []).append(km)

    def forget_thread(self) -> None:
        with self._lock:
            self._by_thread.pop(threading.get_ident(), None)

    def signal_all(self, signum: int) -> int:
        """Send ``signum`` to every live kernel's process group; return how many were signalled."""
        with self._lock:
            managers = [km for kms in self._by_thread.values() for km in kms]
        sent = 0
        for km in managers:
            provisioner = getattr(km, "provisioner", None)
            pgid, pid = getattr(provisioner, "pgid", None), getattr(provisioner, "pid", None)
            try:
                if pgid and hasattr(os, "killpg"):
                    os.killpg(pgid, signum)
                elif pid:
                    os.kill(pid, signum)
                else:
                    continue
                sent += 1
            except (ProcessLookupError, PermissionError):
                continue
        return sent


LIVE_KERNELS = _LiveKernels()


def _tracked_kernel_manager_class():
    from jupyter_client.manager import AsyncKernelManager

    class TrackedKernelManager(AsyncKernelManager):
        """An AsyncKernelManager that registers its kernel in :data:`LIVE_KERNELS` once started."""

        async def start_kernel(self, **kw):  # type: ignore[override]
            await super().start_kernel(**kw)
            LIVE_KERNELS.add(self)

    return TrackedKernelManager


def _notebook_relative(path: Path, notebooks_dir: Path, root: Path) -> str:
    """``path`` as the notebooks write it: relative to ``notebooks/`` when inside the repository."""
    path = Path(path).resolve()
    try:
        path.relative_to(root.resolve())
    except ValueError:
        return str(path)
    return os.path.relpath(path, notebooks_dir.resolve())


def missing_optional_inputs(nb) -> list[dict]:
    """The optional inputs an executed notebook said were absent (see :func:`notebook.optional_input_missing`)."""
    from .notebook import MISSING_INPUT_KEY

    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            record = (out.get("metadata") or {}).get(MISSING_INPUT_KEY)
            if record:
                found.append(dict(record))
    return found


class Runner:
    """Runs registry notebooks for one profile (see :func:`reproduce`).

    ``overrides`` maps notebook names to parameters that replace the profile's. Every notebook's
    parameters are checked against its typed parameters cell before any kernel starts. A
    notebook writes into a staging folder; its outputs are moved into ``figures/`` and
    ``data/results/`` only when it finished, so an interrupted or failed notebook changes none of
    them. SIGINT and SIGTERM stop the running kernels (see :meth:`run`).
    """

    def __init__(
        self,
        registry: Registry,
        profile: str,
        *,
        out_root: str | os.PathLike | None = None,
        build_dir: str | os.PathLike | None = None,
        cell_timeout_s: int = 4 * 3600,
        progress: bool = True,
        overrides: dict[str, dict[str, Any]] | None = None,
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
        self.staging_root = self.build_dir / "staging"
        self.cell_timeout_s = cell_timeout_s
        self.progress = progress
        self.overrides = {k: dict(v) for k, v in (overrides or {}).items()}
        self._package_digest: str | None = None
        self._stop = threading.Event()
        #: the signal that stopped the last :meth:`run` (None when it was not stopped)
        self.stopped_by: int | None = None

    # -- parameters and fingerprints --
    def _relative(self, path: Path, spec: NotebookSpec) -> str:
        return _notebook_relative(path, spec.notebooks_dir, self.registry.root)

    def parameters(self, spec: NotebookSpec, *, relative: bool = True) -> dict[str, Any]:
        """The parameters ``spec`` runs with: the profile's, the overrides, and the output folders
        (relative to ``notebooks/``, the kernel's working directory, when inside the repository
        and ``relative``; absolute otherwise, e.g. for notebooks prepared into another folder)."""
        params = spec.parameters_for(self.profile.name)
        params.update(self.overrides.get(spec.name, {}))
        show = (lambda p: self._relative(p, spec)) if relative else str
        params.setdefault("figures_dir", show(self.figures_dir))
        params.setdefault("results_dir", show(self.results_dir))
        return params

    def check_parameters(self, specs: Iterable[NotebookSpec]) -> None:
        """Check every notebook's parameters against its parameters cell (no kernel is started).

        Raises :class:`ParameterError` naming the notebook's parameter for an unknown name (with a
        did-you-mean), a value of the wrong type or a value outside the parameter's domain.
        """
        from .notebook import check_parameters, notebook_parameters

        for spec in specs:
            declared = notebook_parameters(spec.path)
            try:
                check_parameters(declared, self.parameters(spec), notebook=f"notebooks/{spec.path.name}")
            except ParameterError as exc:
                where = f"notebook {spec.name}, profile {self.profile.name}"
                raise ParameterError(exc.name, exc.value, exc.allowed, f"{exc.hint}; {where}" if exc.hint else where) from None

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

    # -- clean-up of killed runs --
    def remove_stale_temporaries(self) -> list[Path]:
        """Delete what killed runs left: temporary notebooks and outputs, staging folders."""
        import shutil

        from .io import _pid_alive, remove_stale_temporaries

        removed = []
        for folder in (self.executed_dir, self.state_dir, self.figures_dir, self.results_dir):
            removed += remove_stale_temporaries(folder)
        if self.staging_root.is_dir():
            for d in self.staging_root.iterdir():
                if d.is_dir() and d.name.isdigit() and not _pid_alive(int(d.name)):
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(d)
        for p in removed:
            logger.info("removed %s, left by an interrupted run", p)
        return removed

    # -- execution --
    def run_one(self, spec: NotebookSpec, *, force: bool = False, position: int = 1) -> RunResult:
        import shutil

        import nbformat
        import papermill

        from .io import move_into_place, temporary_path_for, write_text_atomic

        fingerprint = self.fingerprint(spec)
        if not force and self.up_to_date(spec, fingerprint):
            return RunResult(spec.name, "skipped")
        if self._stop.is_set():
            return RunResult(spec.name, "not started")
        self.executed_dir.mkdir(parents=True, exist_ok=True)
        executed = self.executed_dir / f"{spec.name}.ipynb"
        failed_copy = self.executed_dir / f"{spec.name}.failed.ipynb"
        staging = self.staging_root / str(os.getpid()) / spec.name
        shutil.rmtree(staging, ignore_errors=True)
        staged_figures, staged_results = staging / "figures", staging / "results"
        staged_figures.mkdir(parents=True)
        staged_results.mkdir(parents=True)
        params = self.parameters(spec)
        final_dirs = {"figures_dir": params["figures_dir"], "results_dir": params["results_dir"]}
        run_params = dict(params)
        if "figures_dir" not in self.overrides.get(spec.name, {}) and "figures_dir" not in spec.parameters_for(self.profile.name):
            run_params["figures_dir"] = self._relative(staged_figures, spec)
        if "results_dir" not in self.overrides.get(spec.name, {}) and "results_dir" not in spec.parameters_for(self.profile.name):
            run_params["results_dir"] = self._relative(staged_results, spec)
        started = time.time()
        progress_bar: Any = False
        if self.progress:
            progress_bar = {"desc": f"  {spec.name}", "position": position, "leave": False, "unit": "cell"}
        tmp_nb = temporary_path_for(executed, tag=str(threading.get_ident()))
        try:
            try:
                papermill.execute_notebook(
                    str(spec.path),
                    str(tmp_nb),
                    parameters=run_params,
                    kernel_name=KERNEL_NAME,
                    cwd=str(spec.notebooks_dir),
                    progress_bar=progress_bar,
                    execution_timeout=self.cell_timeout_s,
                    log_output=False,
                    kernel_manager_class=_tracked_kernel_manager_class(),
                )
            except Exception as exc:
                if self._stop.is_set():
                    return RunResult(spec.name, "interrupted", time.time() - started, error=f"notebook {spec.name} interrupted")
                if tmp_nb.exists():
                    os.replace(tmp_nb, failed_copy)
                if isinstance(exc, papermill.PapermillExecutionError):
                    source = (exc.source or "").strip().splitlines()
                    first = source[0] if source else ""
                    msg = (
                        f"notebook {spec.name} failed in cell {_source_cell_index(spec.path, exc.cell_index)} "
                        f"(0-based, of notebooks/{spec.path.name}; In [{exc.exec_count}] of the executed copy) "
                        f"`{first[:80]}`: {exc.ename}: {exc.evalue}"
                    )
                else:  # kernel died, timeout, unreadable notebook
                    msg = f"notebook {spec.name} failed: {type(exc).__name__}: {exc}"
                return RunResult(spec.name, "failed", time.time() - started, error=msg, executed_notebook=str(failed_copy))
            if self._stop.is_set():  # finished as the stop came: its outputs are complete, keep them
                logger.info("%s finished while the run was being stopped", spec.name)
            seconds = time.time() - started
            nb = nbformat.read(tmp_nb, as_version=4)
            missing = missing_optional_inputs(nb)
            _rewrite_injected_paths(nb, {run_params[k]: v for k, v in final_dirs.items() if run_params[k] != v})
            written = {
                **{p.name: self.figures_dir / p.name for p in staged_figures.iterdir() if p.is_file()},
                **{p.name: self.results_dir / p.name for p in staged_results.iterdir() if p.is_file()},
            }
            produced = outputs_of(spec.name, (staged_figures, staged_results))
            if not produced and not (set(final_dirs) & set(self.overrides.get(spec.name, {}))):
                msg = f"notebook {spec.name} ran but wrote no output named {spec.name}.* or {spec.name}_*.*"
                write_text_atomic(failed_copy, nbformat.writes(nb))
                return RunResult(spec.name, "failed", seconds, error=msg, executed_notebook=str(failed_copy))
            write_text_atomic(executed, nbformat.writes(nb))
            for p in produced:
                move_into_place(p, written[p.name])
            if failed_copy.exists():
                failed_copy.unlink()
            kept_names = [n for m in missing for n in m.get("outputs", [])]
            outputs = outputs_of(spec.name, (self.figures_dir, self.results_dir))
            new = {written[p.name] for p in produced}
            for p in outputs:
                if p in new:
                    continue
                if any(p.stem == n or p.stem.startswith(n + "_") for n in kept_names):
                    logger.info("keeping %s: not rewritten because an optional input is missing", p)
                    continue
                logger.warning("removing stale output %s (not written by this run of %s)", p, spec.name)
                p.unlink()
            outputs = outputs_of(spec.name, (self.figures_dir, self.results_dir))
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
                    "missing_optional_inputs": missing,
                },
            )
            return RunResult(spec.name, "ran", seconds, sorted(rel_outputs), executed_notebook=str(executed), missing_inputs=missing)
        finally:
            LIVE_KERNELS.forget_thread()
            if tmp_nb.exists():
                tmp_nb.unlink()
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                staging.parent.rmdir()

    def run(self, specs: list[NotebookSpec], *, jobs: int = 1, force: bool = False) -> list[RunResult]:
        """Run ``specs`` with up to ``jobs`` notebooks at once, each after the ones it depends on.

        Every notebook's parameters are checked first (nothing runs if one is wrong). Temporary
        files of killed runs are removed. SIGINT or SIGTERM (when called from the main thread)
        interrupts the running kernels, kills them after :data:`INTERRUPT_GRACE_S` seconds, and
        returns: finished notebooks are recorded, the others are ``interrupted`` or ``not
        started`` and changed no output; :attr:`stopped_by` holds the signal.
        """
        check_positive_int("jobs", jobs)
        self.check_parameters(specs)
        self.remove_stale_temporaries()
        self._stop.clear()
        self.stopped_by = None
        with _kernel_threads(jobs), self._signals():
            return self._run(specs, jobs=jobs, force=force)

    @contextlib.contextmanager
    def _signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {}

        def handler(signum, frame):
            if self._stop.is_set():  # a second Ctrl-C: do not wait for the cells to stop
                LIVE_KERNELS.signal_all(signal.SIGKILL)
                return
            self.stopped_by = signum
            self._stop.set()
            LIVE_KERNELS.signal_all(signal.SIGINT)

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    def _run(self, specs: list[NotebookSpec], *, jobs: int, force: bool) -> list[RunResult]:
        import queue

        from tqdm.auto import tqdm

        names = {s.name for s in specs}
        results: dict[str, RunResult] = {}
        pending = list(specs)
        running: dict[str, int] = {}  # name -> progress-bar position
        free_positions = list(range(1, jobs + 1))
        done: queue.Queue = queue.Queue()
        overall = tqdm(total=len(specs), desc=f"reproduce [{self.profile.name}]", unit="nb", position=0, disable=not self.progress)

        def work(spec: NotebookSpec, position: int) -> None:
            try:
                result = self.run_one(spec, force=force, position=position)
            except Exception as exc:  # a bug in the runner itself: report, do not hang
                result = RunResult(spec.name, "failed", error=f"{type(exc).__name__}: {exc}")
            done.put(result)

        stop_seen_at: float | None = None
        killed = False
        while pending or running:
            if self._stop.is_set():
                for spec in pending:
                    results[spec.name] = RunResult(spec.name, "not started")
                pending = []
                stop_seen_at = stop_seen_at or time.monotonic()
                waited = time.monotonic() - stop_seen_at
                if not killed and waited > INTERRUPT_GRACE_S:
                    LIVE_KERNELS.signal_all(signal.SIGKILL)
                    killed = True
                if waited > INTERRUPT_GRACE_S + KILL_WAIT_S:
                    for name in running:
                        results[name] = RunResult(name, "interrupted", error=f"notebook {name} interrupted")
                    running = {}
                    break
            for spec in list(pending):
                deps = [d for d in spec.depends_on if d in names]
                if any(results.get(d) and results[d].status in ("failed", "blocked") for d in deps):
                    results[spec.name] = RunResult(spec.name, "blocked", error=f"a notebook it depends on failed: {deps}")
                    pending.remove(spec)
                    overall.update(1)
                    continue
                if len(running) < jobs and all(d in results for d in deps):
                    # a rerun dependency forces its dependents to rerun via the fingerprint
                    position = free_positions.pop(0)
                    running[spec.name] = position
                    pending.remove(spec)
                    threading.Thread(target=work, args=(spec, position), name=f"notebook {spec.name}", daemon=True).start()
            if not running:
                continue
            try:
                result = done.get(timeout=0.2)
            except queue.Empty:
                continue
            if result.name not in running:
                continue
            free_positions.append(running.pop(result.name))
            free_positions.sort()
            results[result.name] = result
            overall.update(1)
            overall.set_postfix_str(f"{result.name}: {result.status}")
            if result.status == "failed":
                logger.error(result.error)
        overall.close()
        return [results.get(s.name) or RunResult(s.name, "not started") for s in specs]


def _rewrite_injected_paths(nb, replacements: dict[str, str]) -> None:
    """Show the final output folders, not the staging ones, in the executed notebook's injected cell."""
    if not replacements:
        return
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            for old, new in replacements.items():
                cell.source = cell.source.replace(repr(old), repr(new)).replace(json.dumps(old), json.dumps(new))
    params = nb.metadata.get("papermill", {}).get("parameters", {})
    for key, value in list(params.items()):
        if isinstance(value, str) and value in replacements:
            params[key] = replacements[value]


def summary_line(results: list[RunResult], *, stopped_by: int | None, resume_command: str) -> str:
    """One line: what finished, what was interrupted, how to resume."""
    by = {}
    for r in results:
        by.setdefault(r.status, []).append(r.name)
    finished = by.get("ran", []) + by.get("skipped", [])
    interrupted = by.get("interrupted", [])
    not_started = by.get("not started", [])
    name = signal.Signals(stopped_by).name if stopped_by else "a signal"
    return (
        f"stopped by {name}: {len(finished)} notebook(s) finished and recorded"
        + (f" ({', '.join(finished)})" if finished and len(finished) <= 6 else "")
        + f"; interrupted, outputs unchanged: {', '.join(interrupted) or 'none'}"
        + (f"; not started: {len(not_started)}" if not_started else "")
        + f". Resume with: {resume_command}"
    )


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
    overrides: dict[str, dict[str, Any]] | None = None,
) -> list[RunResult]:
    """Run the registry's notebooks (all built ones, or ``only``) with ``profile``'s parameters."""
    registry = registry or load_registry()
    runner = Runner(registry, profile, out_root=out_root, build_dir=build_dir, progress=progress, overrides=overrides)
    return runner.run(registry.select(only), jobs=jobs, force=force)


#: Where ``python -m h2eal_core run`` writes (figures/, data/results/, notebooks/) unless told:
#: never over the committed outputs, since its parameters are the user's own.
RUN_OUT_ROOT = "build/run"


def cli_parameters(spec: NotebookSpec, pairs: Iterable[tuple[str, str]] = (), yaml_texts: Iterable[str] = (),
                   raw_pairs: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """Parameters from the command line, checked against ``spec``'s parameters cell.

    ``pairs`` (``-p NAME VALUE``) are read by the declared type (booleans only true/false),
    ``raw_pairs`` (``-r NAME VALUE``) are strings, ``yaml_texts`` (``-y``) are YAML mappings.
    Unknown names, unreadable values, wrong types and out-of-domain values raise
    :class:`ParameterError` naming the parameter.
    """
    from .config import parse_yaml_text
    from .notebook import check_parameters, notebook_parameters, parse_cli_value
    from .validation import check_known_name

    declared = notebook_parameters(spec.path)
    where = f"a parameter of notebooks/{spec.path.name}"
    values: dict[str, Any] = {}
    for text in yaml_texts:
        data = parse_yaml_text(text, where="-y value")
        if not isinstance(data, dict):
            raise ParameterError("-y", text, "a YAML mapping such as 'models: [llama-3.2-1b]'")
        values.update(data)
    for name, text in pairs:
        check_known_name(name, list(declared), what=where, value=text)
        values[name] = parse_cli_value(declared[name], text)
    for name, text in raw_pairs:
        check_known_name(name, list(declared), what=where, value=text)
        values[name] = text
    return check_parameters(declared, values, notebook=f"notebooks/{spec.path.name}")


def run_notebook(
    name: str,
    parameters: dict[str, Any] | None = None,
    *,
    profile: str = "default",
    out_root: str | os.PathLike | None = None,
    build_dir: str | os.PathLike | None = None,
    registry: Registry | None = None,
    progress: bool = True,
) -> tuple[Runner, RunResult]:
    """Run one notebook with ``profile``'s parameters updated by ``parameters`` (always reruns).

    Outputs go under ``out_root`` (default :data:`RUN_OUT_ROOT`), the executed notebook and the
    run state under ``build_dir`` (default ``<out_root>/build``).
    """
    registry = registry or load_registry()
    spec = registry.select([name])[0]
    out = Path(out_root) if out_root is not None else registry.root / RUN_OUT_ROOT
    runner = Runner(
        registry, profile, out_root=out, build_dir=build_dir if build_dir is not None else out / "build",
        progress=progress, overrides={spec.name: dict(parameters or {})},
    )
    return runner, runner.run([spec], force=True)[0]


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
    specs = registry.select(only)
    runner.check_parameters(specs)
    written = []
    for spec in specs:
        target = dest / spec.path.name
        with atomic_path(target) as tmp:
            papermill.execute_notebook(
                str(spec.path), str(tmp), parameters=runner.parameters(spec, relative=False), kernel_name=KERNEL_NAME, prepare_only=True,
                progress_bar=False
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
