"""Every committed notebook follows the artifact's conventions (checked statically, no execution)."""

import re

import nbformat
import papermill
import pytest

from h2eal_core import reproduce as rp

REGISTRY = rp.load_registry()
BUILT = [s for s in REGISTRY.notebooks.values() if s.built]


def test_every_notebook_file_is_registered(repo):
    on_disk = {p.stem for p in (repo / "notebooks").glob("*.ipynb")}
    assert on_disk <= set(REGISTRY.notebooks), on_disk - set(REGISTRY.notebooks)


@pytest.mark.parametrize("spec", BUILT, ids=lambda s: s.name)
def test_notebook_conventions(spec):
    nb = nbformat.read(spec.path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.cells[0].cell_type == "markdown", "first cell must say what the notebook reproduces"
    assert spec.paper_item.split(" (")[0] in nb.cells[0].source
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for line in tagged[0].source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert re.match(r"^\w+: [\w\[\], .|]+ = .+  # .+", line), f"untyped or uncommented parameter: {line!r}"
    for cell in nb.cells:
        if cell.cell_type == "code" and "NBVAL_CHECK_OUTPUT" not in cell.source:
            assert not cell.outputs and cell.execution_count is None, "commit notebooks without outputs"


@pytest.mark.parametrize("spec", BUILT, ids=lambda s: s.name)
def test_profile_parameters_exist_in_notebook(spec):
    inspected = papermill.inspect_notebook(str(spec.path))
    declared = {p["name"] for p in inspected.values()}
    nb = nbformat.read(spec.path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = {line.split(":")[0].strip() for line in cell.source.splitlines() if re.match(r"^\w+\s*:", line)}
    assert assigned == declared, f"papermill could not parse {assigned - declared}"
    for p in inspected.values():  # papermill could parse the type and the help text of every line
        assert p["inferred_type_name"] not in ("None", "Unknown type"), f"{p['name']}: no type papermill understands"
        assert p["help"], f"{p['name']}: no comment"
    assert {"figures_dir", "results_dir", "seed"} <= declared
    for profile, params in spec.parameters.items():
        unknown = set(params) - declared
        assert not unknown, f"profiles.yaml {spec.name}.{profile} sets unknown parameters {unknown}"
