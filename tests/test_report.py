from h2eal_core import reproduce as rp
from h2eal_core.report import build_report


def test_report_indexes_executed_notebooks(tmp_path):
    registry = rp.load_registry()
    kwargs = dict(out_root=tmp_path / "out", build_dir=tmp_path / "build")
    results = rp.reproduce("quick", ["tab4_comparison"], registry=registry, progress=False, **kwargs)
    assert results[0].status == "ran", results[0].error
    index = build_report("quick", out_dir=tmp_path / "report", registry=registry, **kwargs)
    text = index.read_text()
    assert "Table IV" in text and "tab4_comparison.html" in text and "figures/tab4_comparison.png" in text
    assert (tmp_path / "report" / "figures" / "tab4_comparison.png").is_file()
    page = (tmp_path / "report" / "tab4_comparison.html").read_text()
    assert "Table IV" in page and "<html" in page
    # notebooks that did not run are listed, not silently dropped
    assert "fig01_context_trends: not run yet" in text


def _mini_repo(tmp_path, notebooks=("tab4_comparison",)):
    """A repository-like folder (notebooks/ + profiles.yaml, default output_root '.') in tmp_path."""
    import shutil

    nbdir = tmp_path / "repo" / "notebooks"
    nbdir.mkdir(parents=True)
    for n in notebooks:
        shutil.copy(rp.registry_path().parent / f"{n}.ipynb", nbdir)
    (nbdir / "profiles.yaml").write_text(
        "profiles:\n  default: {description: t, output_root: .}\nnotebooks:\n"
        + "".join(f"  {n}:\n    paper_item: Table IV\n" for n in notebooks)
    )
    return rp.load_registry(nbdir / "profiles.yaml")


def test_report_and_executed_notebooks_show_repository_relative_paths(tmp_path):
    """Defect 4: the report showed this machine's absolute paths in the injected parameter cells."""
    registry = _mini_repo(tmp_path)
    results = rp.reproduce("default", registry=registry, progress=False)
    assert results[0].status == "ran", results[0].error
    executed = (registry.root / "build" / "default" / "notebooks" / "tab4_comparison.ipynb").read_text()
    assert '\\"../figures\\"' in executed and '\\"../data/results\\"' in executed
    index = build_report("default", registry=registry)
    for page in (index, index.parent / "tab4_comparison.html"):
        text = page.read_text()
        assert str(tmp_path) not in text, page
    assert (registry.root / "figures" / "tab4_comparison.png").is_file()
