import pandas as pd
import pytest

from h2eal_core.experiments import related_designs as rd
from h2eal_core.validation import ParameterError


def test_table_is_valid_and_cited():
    df = rd.load_related_designs()
    assert {"H2EAL", "DuoAttention", "Quest", "StreamingLLM", "LServe", "H2-LLM", "AttAcc", "NeuPIMs"} <= set(df["design"])
    assert df["source"].str.startswith("http").all()
    h2eal = df.set_index("design").loc["H2EAL"]
    assert "5.20-48.21x" in h2eal["headline"] and "0.87%" in h2eal["headline"]


def test_feature_matrix_derives_hybrid_bonding_from_memory():
    m = rd.feature_matrix(rd.load_related_designs())
    assert m.loc["H2-LLM", "hybrid_bonding"] == 1 and m.loc["AttAcc", "hybrid_bonding"] == 0
    assert m.loc["Quest", "hybrid_bonding"] == 0  # "GPU HBM" is not hybrid bonding
    assert set(m.values.ravel()) <= {0, 1}


def test_no_other_design_has_all_of_h2eal_features():
    assert rd.features_unique_to(rd.load_related_designs(), "H2EAL") == 0
    # and the check can fail: DuoAttention's features are all present in LServe and H2EAL
    assert rd.features_unique_to(rd.load_related_designs(), "DuoAttention") >= 2


def test_selection_and_errors(tmp_path):
    m = rd.feature_matrix(rd.load_related_designs(), ["H2EAL", "Quest"])
    assert list(m.index) == ["H2EAL", "Quest"]
    with pytest.raises(ParameterError, match=r"designs\[0\]"):
        rd.feature_matrix(rd.load_related_designs(), ["Nope"])
    df = pd.read_csv(rd.data_dir() / "related_designs.csv")
    df.loc[1, "static_sparsity"] = "maybe"
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ParameterError, match="static_sparsity"):
        rd.load_related_designs(tmp_path / "bad.csv")
