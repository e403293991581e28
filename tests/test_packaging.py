"""pyproject.toml, environment.yml, the Makefile, CI and the README agree with each other."""

import re
import tomllib

import yaml

from h2eal_core import reproduce as rp

CONDA_TO_PIP = {"pytorch": "torch"}


def _name_and_spec(requirement: str):
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject(repo):
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    pip_reqs = dict(_name_and_spec(r) for r in project["dependencies"])
    env = yaml.safe_load((repo / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(line.startswith("python=") for line in conda) and "pip" in conda
    for dep in conda:
        if dep.startswith("python=") or dep == "pip":
            continue
        name, spec = _name_and_spec(dep)
        name = CONDA_TO_PIP.get(name, name)
        assert name in pip_reqs, f"environment.yml lists {name}, pyproject.toml does not"
        assert spec == pip_reqs[name], f"{name}: environment.yml {spec} vs pyproject.toml {pip_reqs[name]}"
    extras = re.search(r"-e \.\[([\w,]+)\]", " ".join(pip_section)).group(1).split(",")
    assert set(extras) <= set(project["optional-dependencies"])


def test_torch_is_not_pinned_for_users_but_cpu_build_is_installed_here(repo):
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    torch_req = [r for r in project["dependencies"] if r.startswith("torch")]
    assert torch_req and "==" not in torch_req[0]
    makefile = (repo / "Makefile").read_text()
    assert "TORCH_SPEC ?= torch==2.13.0" in makefile


def test_ci_runs_the_readme_test_command(repo):
    readme = (repo / "README.md").read_text()
    ci = (repo / ".ci" / "run").read_text()
    assert "make test" in readme
    assert re.search(r"^make test$", ci, re.M)


def test_readme_lists_every_notebook_and_paper_item(repo):
    readme = (repo / "README.md").read_text()
    for spec in rp.load_registry().notebooks.values():
        assert spec.name in readme, f"README table misses {spec.name}"


def test_readme_table_is_generated_from_the_registry(repo):
    from h2eal_core.__main__ import markdown_table

    readme = (repo / "README.md").read_text()
    block = readme.split("<!-- notebook-table:start")[1].split("-->", 1)[1].split("<!-- notebook-table:end -->")[0]
    assert block.strip() == markdown_table(rp.load_registry()).strip(), (
        "README table is stale: paste the output of `python -m h2eal_core list --markdown`"
    )
