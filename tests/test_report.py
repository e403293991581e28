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
