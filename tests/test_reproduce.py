"""The papermill batch runner: profiles, skipping unchanged notebooks, atomic outputs, failures."""

import subprocess
import sys

import nbformat
import pytest

from h2eal_core import reproduce as rp
from h2eal_core.validation import ParameterError

FOUNDATION = ["fig01_context_trends", "tab2_models"]


@pytest.fixture(scope="module")
def registry():
    return rp.load_registry()


def test_registry_has_every_spec_item(registry):
    items = {s.paper_item.split(" (")[0] for s in registry.notebooks.values()}
    expected = {f"Fig. {i}" for i in range(1, 14)} | {"Table I", "Table II", "Table III", "Table IV"}
    assert expected <= items
    assert set(registry.profiles) == {"quick", "default", "paper"}


def test_select_rejects_unknown_and_planned(registry):
    with pytest.raises(ParameterError, match="'only'"):
        registry.select(["fig99_nothing"])
    planned = [s.name for s in registry.notebooks.values() if not s.built]
    if planned:
        with pytest.raises(ParameterError, match="planned"):
            registry.select(planned[:1])


def test_quick_twice_skips_and_force_is_byte_identical(registry, tmp_path):
    kwargs = dict(out_root=tmp_path / "out", build_dir=tmp_path / "build", registry=registry, progress=False)
    first = rp.reproduce("quick", FOUNDATION, jobs=2, **kwargs)
    assert [r.status for r in first] == ["ran", "ran"], [r.error for r in first]
    csvs = sorted((tmp_path / "out" / "data" / "results").glob("*.csv"))
    assert {p.name for p in csvs} >= {"fig01_context_trends.csv", "tab2_models.csv"}
    assert (tmp_path / "out" / "figures" / "fig01_context_trends.png").is_file()
    assert (tmp_path / "build" / "notebooks" / "fig01_context_trends.ipynb").is_file()
    before = {p.name: p.read_bytes() for p in csvs}

    second = rp.reproduce("quick", FOUNDATION, **kwargs)
    assert [r.status for r in second] == ["skipped", "skipped"]

    forced = rp.reproduce("quick", FOUNDATION, force=True, **kwargs)
    assert [r.status for r in forced] == ["ran", "ran"]
    after = {p.name: p.read_bytes() for p in sorted((tmp_path / "out" / "data" / "results").glob("*.csv"))}
    assert after == before

    # a deleted output makes the notebook rerun; no leftover temporary files anywhere
    (tmp_path / "out" / "figures" / "tab2_models.png").unlink()
    third = rp.reproduce("quick", FOUNDATION, **kwargs)
    assert [r.status for r in third] == ["skipped", "ran"]
    assert not list(tmp_path.rglob("*.tmp*"))


def _write_notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = cells
    nbformat.write(nb, path)


def test_failure_names_notebook_and_cell_and_keeps_no_output(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    params = nbformat.v4.new_code_cell('figures_dir: str = "."\nresults_dir: str = "."\nn: int = 1')
    params.metadata["tags"] = ["parameters"]
    _write_notebook(
        nbdir / "bad.ipynb",
        [params, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError(f'n is {n}')")],
    )
    (nbdir / "profiles.yaml").write_text(
        "profiles:\n  quick: {description: t, output_root: out}\n"
        "notebooks:\n  bad:\n    paper_item: X\n    parameters:\n      quick: {n: 7}\n"
        "  after:\n    paper_item: Y\n    depends_on: [bad]\n"
    )
    _write_notebook(nbdir / "after.ipynb", [params])
    registry = rp.load_registry(nbdir / "profiles.yaml")
    results = rp.reproduce("quick", registry=registry, build_dir=tmp_path / "build", progress=False)
    bad, after = results
    assert bad.status == "failed"
    assert "bad" in bad.error and "cell 2 (0-based" in bad.error and "ValueError: n is 7" in bad.error
    assert bad.executed_notebook.endswith("bad.failed.ipynb")
    assert after.status == "blocked"
    assert not (tmp_path / "build" / "notebooks" / "bad.ipynb").exists()


def test_cli_list_and_bad_profile(repo):
    out = subprocess.run([sys.executable, "-m", "h2eal_core", "list"], capture_output=True, text=True, cwd=repo, check=True)
    assert "fig01_context_trends" in out.stdout and "Fig. 1" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "h2eal_core", "reproduce", "--profile", "fast"], capture_output=True, text=True, cwd=repo
    )
    assert bad.returncode == 2
    assert "'profile'" in bad.stderr and "'quick'" in bad.stderr


def test_prepare_injects_profile_parameters(registry, tmp_path):
    written = rp.prepare("quick", tmp_path, FOUNDATION, registry=registry)
    nb = nbformat.read(written[0], as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and str(tmp_path) in injected[0].source


def test_parallel_kernels_share_the_cores():
    assert rp.kernel_thread_env(1, cpus=2, environ={}) == {}
    env = rp.kernel_thread_env(2, cpus=2, environ={})
    assert env == {name: "1" for name in rp.THREAD_VARIABLES}
    assert rp.kernel_thread_env(2, cpus=16, environ={})["OMP_NUM_THREADS"] == "8"
    assert rp.kernel_thread_env(4, cpus=2, environ={})["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in rp.kernel_thread_env(2, cpus=2, environ={"OMP_NUM_THREADS": "3"})



def test_optional_input_missing_keeps_its_outputs_and_is_reported(tmp_path):
    """Defect 2: an absent optional input was only a warning inside the notebook. Now it is said in the
    visible output, recorded, shown in the report, and the outputs it would have made are kept."""
    from h2eal_core.report import build_report

    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    params = nbformat.v4.new_code_cell('figures_dir: str = "."  # figures\nresults_dir: str = "."  # results\nseed: int = 0  # seed')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "import pandas as pd\nfrom h2eal_core import notebook\nfrom h2eal_core.io import save_table\nnotebook.setup(seed)\n"
        "save_table(pd.DataFrame({'a': [1]}), 'opt', results_dir)\n"
        "notebook.optional_input_missing('published gates', '../shared/x', 'their panel is not drawn', outputs=['opt_extra'])"
    )
    _write_notebook(nbdir / "opt.ipynb", [params, body])
    (nbdir / "profiles.yaml").write_text("profiles:\n  quick: {description: t, output_root: out}\nnotebooks:\n  opt:\n    paper_item: X\n")
    results_dir = tmp_path / "out" / "data" / "results"
    results_dir.mkdir(parents=True)
    (results_dir / "opt_extra.csv").write_text("committed,by,a,machine,with,the,input\n")
    (results_dir / "opt_old.csv").write_text("no longer an output\n")
    registry = rp.load_registry(nbdir / "profiles.yaml")
    result = rp.reproduce("quick", registry=registry, progress=False)[0]
    assert result.status == "ran", result.error
    assert result.missing_inputs and result.missing_inputs[0]["what"] == "published gates"
    assert (results_dir / "opt_extra.csv").is_file(), "an output of the missing optional input must be kept"
    assert not (results_dir / "opt_old.csv").exists(), "a stale output is still removed"
    assert sorted(result.outputs) == ["data/results/opt.csv", "data/results/opt_extra.csv"]
    executed = nbformat.read(tmp_path / "build" / "quick" / "notebooks" / "opt.ipynb", as_version=4)
    assert any("Optional input missing: published gates" in str(o.get("data", {})) for o in executed.cells[-1].outputs)
    page = build_report("quick", registry=registry).read_text()
    assert "optional input missing: published gates" in page


def test_a_failed_notebook_changes_none_of_its_outputs(tmp_path):
    """Outputs are staged and moved into place only when the notebook finished."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    params = nbformat.v4.new_code_cell('figures_dir: str = "."  # figures\nresults_dir: str = "."  # results\nseed: int = 0  # seed')
    params.metadata["tags"] = ["parameters"]
    cells = [params, nbformat.v4.new_code_cell(
        "import pandas as pd\nfrom h2eal_core.io import save_table\nsave_table(pd.DataFrame({'a': [2]}), 'half', results_dir)"),
        nbformat.v4.new_code_cell("raise RuntimeError('second table failed')")]
    _write_notebook(nbdir / "half.ipynb", cells)
    (nbdir / "profiles.yaml").write_text("profiles:\n  quick: {description: t, output_root: out}\nnotebooks:\n  half:\n    paper_item: X\n")
    results_dir = tmp_path / "out" / "data" / "results"
    results_dir.mkdir(parents=True)
    (results_dir / "half.csv").write_text("a\n1\n")
    result = rp.reproduce("quick", registry=rp.load_registry(nbdir / "profiles.yaml"), progress=False)[0]
    assert result.status == "failed" and "second table failed" in result.error
    assert (results_dir / "half.csv").read_text() == "a\n1\n"
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
