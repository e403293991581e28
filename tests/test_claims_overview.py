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
    summary = pd.DataFrame([{"method": "h2eal", "drop_vs_full_pts": 1.5, "drop_ci_low_pts": 0.2, "drop_ci_high_pts": 2.9, "n": 240}])
    assert cl.accuracy_row(claim, summary)["verdict"] == "reproduced"
    summary.loc[0, ["drop_ci_low_pts", "drop_ci_high_pts"]] = [1.0, 2.0]
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
