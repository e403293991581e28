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
    assert "0.3333," in p1.read_text()  # CSV_SIGNIFICANT_DIGITS = 4


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


def test_remove_stale_temporaries_keeps_live_ones_and_other_files(tmp_path):
    import os

    from h2eal_core.io import remove_stale_temporaries, temporary_path_for

    dead = 4_000_000
    stale = tmp_path / f".t.csv.{dead}-00aa11bb.tmp.csv"
    live = temporary_path_for(tmp_path / "u.csv")
    other = [tmp_path / ".hidden", tmp_path / "t.csv", tmp_path / f".x.{dead}.tmpl"]
    for p in [stale, live, *other]:
        p.write_text("x")
    assert str(os.getpid()) in live.name
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert live.exists() and all(p.exists() for p in other)


def test_atomic_path_gives_the_umask_mode(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
