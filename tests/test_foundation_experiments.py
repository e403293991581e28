import pandas as pd
import pytest

from h2eal_core.experiments import context_trends as ct
from h2eal_core.experiments.model_table import model_table
from h2eal_core.validation import ParameterError


def test_context_trends_rows_are_cited_and_valid():
    df = ct.load_context_trends()
    assert set(df["kind"]) == {"model", "dataset"}
    assert df["source"].str.startswith("http").all()
    assert (df["length"] > 0).all()


def test_frontier_is_monotone_and_growth_positive():
    df = ct.load_context_trends()
    front = ct.frontier_points(df)
    for _, g in front.groupby("kind"):
        assert g["length"].is_monotonic_increasing and g["year"].is_monotonic_increasing
    growth = ct.frontier_growth(df)
    assert (growth["growth_per_year"] > 1).all()


def test_bad_trend_parameters():
    df = ct.load_context_trends()
    with pytest.raises(ParameterError, match="'since_year'"):
        ct.select_trends(df, since_year=-5)
    with pytest.raises(ParameterError, match=r"'kinds\[0\]'"):
        ct.select_trends(df, kinds=["paper"])


def test_bad_csv_row_is_named(tmp_path):
    df = pd.read_csv(ct.data_dir() / "context_trends.csv")
    df.loc[0, "source"] = "a book"
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    with pytest.raises(ParameterError, match="row 2"):
        ct.load_context_trends(path)


def test_model_table_columns_and_errors():
    table = model_table(["smollm2-135m", "llama-3.2-1b"], context_len=1024)
    assert list(table["name"]) == ["smollm2-135m", "llama-3.2-1b"]
    assert table.loc[0, "kv_kib_per_token"] == pytest.approx(2 * 30 * 3 * 64 * 2 / 1024)
    with pytest.raises(ParameterError) as err:
        model_table(["gpt-5"])
    assert err.value.name == "models[0]" and "'smollm2-135m'" in str(err.value)
    with pytest.raises(ParameterError, match="'context_len'"):
        model_table(context_len=-1)
