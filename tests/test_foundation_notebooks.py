"""The foundation notebooks run under papermill with non-default and bad parameter values."""

import subprocess
import sys

import papermill as pm
import pytest


def test_fig01_cli_with_non_default_value(repo, tmp_path):
    out = tmp_path / "out.ipynb"
    cmd = [
        sys.executable, "-m", "papermill", str(repo / "notebooks" / "fig01_context_trends.ipynb"), str(out),
        "-k", "python3", "--cwd", str(repo / "notebooks"), "--no-progress-bar",
        "-p", "since_year", "2021", "-p", "figures_dir", str(tmp_path), "-p", "results_dir", str(tmp_path),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    csv = (tmp_path / "fig01_context_trends.csv").read_text()
    assert "GPT-3" not in csv and "Llama 3.1" in csv  # 2020 rows dropped by the non-default value


@pytest.mark.parametrize(
    "notebook, parameters, expected",
    [
        ("fig01_context_trends", {"since_year": -5}, ["'since_year'", "-5", ">= 2000"]),
        ("fig01_context_trends", {"kinds": ["paper"]}, ["'kinds[0]'", "'model'", "'dataset'"]),
        ("tab2_models", {"models": ["llama-9b"]}, ["'models[0]'", "'llama-9b'", "'llama-3.2-1b'"]),
        ("tab2_models", {"context_len": -4096}, ["'context_len'", "-4096", "an integer >= 1"]),
    ],
)
def test_bad_value_names_parameter_and_allowed(repo, tmp_path, notebook, parameters, expected):
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(
            str(repo / "notebooks" / f"{notebook}.ipynb"), str(tmp_path / "out.ipynb"),
            parameters={**parameters, "figures_dir": str(tmp_path), "results_dir": str(tmp_path)},
            kernel_name="python3", progress_bar=False, cwd=str(repo / "notebooks"),
        )
    assert err.value.ename == "ParameterError"
    for fragment in expected:
        assert fragment in err.value.evalue
    assert not list(tmp_path.glob(f"{notebook}*.png"))  # nothing written after a bad value
