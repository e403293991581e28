"""Claims table verdict rules and the Fig. 2 overview numbers."""

import pandas as pd
import pytest

from h2eal_core.experiments import claims as cl
from h2eal_core.experiments import overview as ov
from h2eal_core.validation import ParameterError


def test_claims_file_has_the_abstract_numbers():
    claims = {c.id: c for c in cl.load_claims()}
    assert (claims["speedup_range"].low, claims["speedup_range"].high) == (5.20, 48.21)
    assert (claims["energy_efficiency_range"].low, claims["energy_efficiency_range"].high) == (6.22, 73.48)
    assert claims["accuracy_drop"].value == 0.87


@pytest.mark.parametrize(
    "ours, band, expected",
    [
        ((5.0, 50.0), None, "reproduced"),
        ((2.0, 20.0), ((1.0, 6.0), (10.0, 60.0)), "within band"),
        ((2.0, 20.0), None, "overlaps"),
        ((60.0, 90.0), None, "differs"),
        ((1.0, 4.0), None, "differs"),
    ],
)
def test_range_verdict_rules(ours, band, expected):
    assert cl.range_verdict(ours, (5.20, 48.21), band, tolerance=0.1) == expected


def test_accuracy_row_uses_the_confidence_interval():
    claim = next(c for c in cl.load_claims() if c.id == "accuracy_drop")
    summary = pd.DataFrame([{"method": "h2eal", "drop_vs_full_pp": 1.5, "drop_ci_low_pp": 0.2, "drop_ci_high_pp": 2.9, "n_samples": 240,
                             "n_cells": 12, "kv_read_fraction": 0.25, "kv_stored_fraction": 0.6}])
    row = cl.accuracy_row(claim, summary)
    assert row["verdict"] == "reproduced" and "12 task x length cells" in row["configuration"]
    summary.loc[0, ["drop_ci_low_pp", "drop_ci_high_pp"]] = [1.0, 2.0]
    row = cl.accuracy_row(claim, summary)
    assert row["verdict"] == "differs" and "ours is larger" in row["reason"]
    assert cl.accuracy_row(claim, None)["verdict"] == "not run"
    with pytest.raises(ParameterError, match="'method'"):
        cl.accuracy_row(claim, summary, method="nope")


def test_claims_table_covers_every_claim_without_bands():
    table = cl.claims_table(with_bands=False)
    assert set(table["claim"]) >= {"speedup_range", "energy_efficiency_range", "accuracy_drop", "kv_overflow", "head_parallel_imbalance"}
    assert set(table["verdict"]) <= {"reproduced", "within band", "overlaps", "differs", "holds", "does not hold", "not run"}
    rng = table[table["claim"] == "speedup_range"]
    assert (rng["ours_low"] <= rng["ours_high"]).all()


def test_sparsity_statement_reads_the_per_head_table():
    claims = cl.load_claims()
    heads = pd.DataFrame({"metric": "window_share", "layer": [0, 0, 1], "kv_head": [0, 1, 0], "value": [0.3, 0.9, 0.95]})
    row = cl.statement_rows(claims, head_sparsity=heads).set_index("claim").loc["sparsity_varies_across_heads"]
    assert row["verdict"] == "holds" and row["ours"] == "0.65" and "window_share" in row["metric"]
    flat = heads.assign(value=[0.8, 0.85, 0.9])
    assert cl.statement_rows(claims, head_sparsity=flat).set_index("claim").loc["sparsity_varies_across_heads", "verdict"] == "does not hold"
    with pytest.raises(ParameterError, match="head_sparsity"):
        cl.statement_rows(claims, head_sparsity=heads.rename(columns={"value": "v"}))


def test_study_results_are_read_with_clear_errors(tmp_path):
    (tmp_path / "heads.csv").write_text("source,model,metric,layer,kv_head,value\nmeasured,m,window_share,0,0,0.5\nidentified here,m,gate,0,0,1\n")
    acc, heads = cl.read_study_results("", tmp_path / "heads.csv")
    assert acc is None and list(heads["value"]) == [0.5]
    with pytest.raises(ParameterError, match="accuracy_results.*--only tab3_accuracy"):
        cl.read_study_results(tmp_path / "missing.csv", None)


def test_overview_tables_are_consistent():
    kv = ov.kv_capacity_table(["phi-3.5-mini", "llama-3.2-1b"], [4096, 131072])
    assert (kv["hybrid_kv_gib"] < kv["dense_kv_gib"]).all()
    # Phi-3.5-mini (MHA, 32 KV heads) overflows at 128K under full attention and fits with hybrid sparsity
    phi = kv[(kv["model"] == "Phi-3.5-mini") & (kv["context_len"] == 131072)].iloc[0]
    assert phi["dense_overflows"] and not phi["hybrid_overflows"]
    heads, origin = ov.head_read_table("llama-3.2-1b", 32768)
    assert "spread" in origin and len(heads) == 16 * 8
    assert set(heads["kind"]) == {"streaming", "retrieval"}
    util = ov.utilisation_table("llama-3.2-1b", 32768)
    assert list(util["design"]) == ["baseline", "sparse", "coplace", "h2eal"]
    assert util.set_index("design").loc["h2eal", "attention_speedup"] > 1
    summary = ov.headline_numbers(kv, heads, util)
    assert len(summary) == 3 and summary["result"].str.len().min() > 0
