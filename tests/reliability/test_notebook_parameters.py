"""Generated: every parameter of every notebook, given a wrong-typed and an out-of-range value.

For each declared parameter (``name: type = value  # comment`` in the cell tagged ``parameters``)
the test runs the notebook's own cells as papermill would, in-process: the parameters cell, the
cell papermill injects (made by papermill itself), then the notebook's first code cell up to and
including its ``notebook.setup(...)`` call, with the kernel's input history (``_ih``) that IPython
keeps. The notebook must refuse the value with a :class:`ParameterError` naming the parameter,
within seconds, before any model or data is loaded. A misspelt name is refused the same way.
A few cases run through a real kernel (papermill) and the runner to show the same end to end.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import time

import nbformat
import papermill.translators
import pytest

from h2eal_core import notebook as nbk
from h2eal_core import reproduce as rp
from h2eal_core.validation import ParameterError

from reliability_checks import assert_parameter_error

REGISTRY = rp.load_registry()
SPECS = [s for s in REGISTRY.notebooks.values() if s.built]

#: A value of the wrong type for each declared type.
WRONG_TYPE = {"int": "12", "float": "fast", "str": 3, "bool": 1, "list": 5, "dict": [1]}


def _cells(spec):
    nb = nbformat.read(spec.path, as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    first = next(c for c in nb.cells[i + 1 :] if c.cell_type == "code")
    return nb, nb.cells[i].source, first.source


def _up_to_setup(source: str) -> str:
    """The statements of ``source`` up to and including the ``notebook.setup(...)`` call."""
    tree = ast.parse(source)
    for k, node in enumerate(tree.body):
        if isinstance(node, ast.Expr) and "notebook.setup" in ast.unparse(node):
            return ast.unparse(ast.Module(body=tree.body[: k + 1], type_ignores=[]))
    raise AssertionError("the first code cell does not call notebook.setup")


def run_first_cells(spec, parameters: dict, *, timeout_s: float = 20.0):
    """Execute parameters cell, papermill's injected cell and the first cell up to setup, like a kernel."""
    nb, params_src, first_src = _cells(spec)
    injected = papermill.translators.translate_parameters("python3", "python", parameters, "Parameters")
    setup_src = _up_to_setup(first_src)
    namespace: dict = {"__name__": "__main__", "_ih": ["", params_src, injected, setup_src]}
    started = time.perf_counter()
    try:
        for src in (params_src, injected, setup_src):
            exec(compile(src, "<cell>", "exec"), namespace)  # noqa: S102 - the notebook's own cells
    finally:
        elapsed = time.perf_counter() - started
        assert elapsed < timeout_s, f"{spec.name}: {elapsed:.1f} s before the error"
    return namespace


CASES = []
for _spec in SPECS:
    for _decl in nbk.notebook_parameters(_spec.path).values():
        base = _decl.type_name.split("[")[0].strip()
        if base in WRONG_TYPE:
            CASES.append(pytest.param(_spec, _decl.name, WRONG_TYPE[base], id=f"{_spec.name}-{_decl.name}-wrong_type"))
        domain = nbk.PARAMETER_DOMAINS.get(_decl.name)
        if domain is not None:
            CASES.append(pytest.param(_spec, _decl.name, domain.invalid, id=f"{_spec.name}-{_decl.name}-out_of_range"))


def test_every_notebook_parameter_has_a_domain():
    missing = {
        f"{spec.name}.{name}" for spec in SPECS for name in nbk.notebook_parameters(spec.path) if name not in nbk.PARAMETER_DOMAINS
    }
    assert not missing, f"add these names to h2eal_core.notebook.PARAMETER_DOMAINS: {sorted(missing)}"


def test_the_defaults_and_every_profile_pass(tmp_path):
    for spec in SPECS:
        declared = nbk.notebook_parameters(spec.path)
        for name, decl in declared.items():
            nbk.check_parameter(decl, decl.default)
        for profile in ("quick", "default"):
            rp.Runner(REGISTRY, profile, out_root=tmp_path, build_dir=tmp_path / "b").check_parameters([spec])


@pytest.mark.parametrize("spec, name, value", CASES)
def test_bad_value_is_refused_in_the_first_cell(spec, name, value, unchanged_repo):
    with pytest.raises(ParameterError) as err:
        run_first_cells(spec, {name: value})
    assert_parameter_error(err, name, value)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_misspelt_name_is_refused_with_a_suggestion(spec, unchanged_repo):
    declared = nbk.notebook_parameters(spec.path)
    name = next(n for n in declared if n not in ("figures_dir", "results_dir")) if len(declared) > 3 else "seed"
    typo = name[:-1] if len(name) > 3 else name + "x"
    with pytest.raises(ParameterError) as err:
        run_first_cells(spec, {typo: declared[name].default})
    assert err.value.name == typo and f"did you mean '{name}'" in str(err.value)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_runner_refuses_before_any_kernel(spec, tmp_path):
    """The same values through the runner: refused by the check, no kernel, no folder written."""
    declared = nbk.notebook_parameters(spec.path)
    name = next(iter(n for n in declared if n not in ("figures_dir", "results_dir")))
    runner = rp.Runner(REGISTRY, "quick", out_root=tmp_path / "out", build_dir=tmp_path / "build", progress=False,
                       overrides={spec.name: {name: WRONG_TYPE.get(declared[name].type_name.split("[")[0].strip(), object())}})
    with pytest.raises(ParameterError) as err:
        runner.run([spec])
    assert err.value.name == name
    assert not (tmp_path / "build").exists() and not (tmp_path / "out").exists()


def test_direct_papermill_fails_fast_in_a_real_kernel(repo, tmp_path, unchanged_repo):
    """Defect 3: ``-p contxt_len 1024`` was only warned about and the notebook ran with defaults."""
    out = tmp_path / "out.ipynb"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", "notebooks/tab2_models.ipynb", str(out), "-k", "python3", "--cwd", "notebooks",
         "-p", "contxt_len", "1024", "-p", "figures_dir", str(tmp_path), "-p", "results_dir", str(tmp_path)],
        cwd=repo, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "ParameterError: parameter 'contxt_len' = 1024" in proc.stderr and "did you mean 'context_len'" in proc.stderr
    assert not list(tmp_path.glob("tab2_models*")), "the notebook must not have written outputs"
    executed = nbformat.read(out, as_version=4)
    failed = [c for c in executed.cells if c.cell_type == "code" and any(o.get("output_type") == "error" for o in c.outputs)]
    assert failed and "notebook.setup" in failed[0].source  # the first cell after the parameters
    assert time.perf_counter() - started < 120


def test_string_boolean_is_refused_in_a_real_kernel(repo, tmp_path, unchanged_repo):
    """Defect 3: ``-r log_scale yes`` was taken as true."""
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", "notebooks/fig01_context_trends.ipynb", str(tmp_path / "o.ipynb"), "-k", "python3",
         "--cwd", "notebooks", "-r", "log_scale", "yes", "-p", "figures_dir", str(tmp_path), "-p", "results_dir", str(tmp_path)],
        cwd=repo, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0 and "parameter 'log_scale' = 'yes' is invalid; allowed: true or false" in proc.stderr
    assert not list(tmp_path.glob("fig01*"))
