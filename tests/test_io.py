import matplotlib.pyplot as plt
import pandas as pd
import pytest

from h2eal_core.io import atomic_path, save_figure, save_table


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_save_table_is_deterministic(tmp_path):
    df = pd.DataFrame({"a": [1.0 / 3, 2.0], "b": ["x", "y"]})
    p1 = save_table(df, "t", tmp_path / "one")
    p2 = save_table(df, "t", tmp_path / "two")
    assert p1.read_bytes() == p2.read_bytes()
    assert "0.333333" in p1.read_text()


def test_save_figure_is_byte_identical(tmp_path):
    def draw():
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        return fig

    a = save_figure(draw(), "f", tmp_path / "a")
    b = save_figure(draw(), "f", tmp_path / "b")
    plt.close("all")
    assert [p.suffix for p in a] == [".png", ".pdf"]
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes()


def test_paths_resolve_from_any_working_directory(tmp_path, monkeypatch):
    from h2eal_core.io import repo_root, resolve_repo_path

    monkeypatch.chdir(tmp_path)  # e.g. a notebook prepared into build/nbval
    assert resolve_repo_path("../data/head_patterns") == (repo_root() / "data" / "head_patterns").resolve()
    assert resolve_repo_path("data/head_patterns") == (repo_root() / "data" / "head_patterns").resolve()
    assert resolve_repo_path("../build/not_there_yet") == (repo_root() / "build" / "not_there_yet").resolve()
    (tmp_path / "local").mkdir()
    assert resolve_repo_path("local").resolve() == tmp_path / "local"
    assert resolve_repo_path(str(tmp_path)) == tmp_path
