"""Claims table verdict rules and the Fig. 2 overview numbers."""

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2eal_core.experiments import claims as cl
from h2eal_core.experiments import overview as ov
from h2eal_core.validation import ParameterError


def test_claims_file_has_the_abstract_numbers():
    claims = {c.id: c for c in cl.load_claims()}
    assert (claims["speedup_range"].low, claims["speedup_range"].high) == (5.20, 48.21)
    assert (claims["energy_efficiency_range"].low, claims["energy_efficiency_range"].high) == (6.22, 73.48)
    assert claims["accuracy_drop"].value == 0.87


@pytest.mark.parametrize(
    "ours, expected",
    [
        ((5.20, 48.21), "reproduced"),
        ((4.0, 60.0), "reproduced"),  # 0.77x and 1.24x: both ends inside +-25%
        ((3.8, 48.21), "same order"),  # low end 1.37x too low
        ((1.37, 19.90), "same order"),  # both ends low, within 10x
        ((1.37, 1230.05), "differs"),  # overlaps the paper's range but the high end is 25.5x too high
        ((0.4, 48.21), "differs"),  # low end 13x too low
        ((40.0, 90.0), "same order"),  # 7.7x and 1.9x too high: within 10x at both ends
        ((60.0, 600.0), "differs"),
    ],
)
def test_range_verdict_rules(ours, expected):
    assert cl.range_verdict(ours, (5.20, 48.21), end_tolerance=0.25) == expected


def test_overlap_alone_is_not_agreement_and_the_reason_names_the_end():
    cmp = cl.compare_range((1.37, 1230.05), (5.20, 48.21))
    assert cmp.verdict == "differs" and cmp.low_off and cmp.high_off
    assert "low end 3.80x too low" in cmp.reason and "high end 25.51x too high" in cmp.reason
    ok = cl.compare_range((5.0, 50.0), (5.20, 48.21))
    assert ok.verdict == "reproduced" and not ok.low_off and not ok.high_off and "within +-25%" in ok.reason
    # the tolerance is a named parameter: 4.0 is inside +-25% of 5.20, outside +-10%
    assert cl.range_verdict((4.0, 48.21), (5.20, 48.21), end_tolerance=0.1) == "same order"
    assert cl.range_verdict((4.0, 48.21), (5.20, 48.21), end_tolerance=0.25) == "reproduced"
    with pytest.raises(ParameterError, match="end_tolerance"):
        cl.compare_range((1, 2), (1, 2), end_tolerance=1.5)
    with pytest.raises(ParameterError, match="order_factor"):
        cl.compare_range((1, 2), (1, 2), order_factor=0.5)
    with pytest.raises(ParameterError, match="ours"):
        cl.compare_range((3, 2), (1, 2))


@settings(max_examples=300, deadline=None)
@given(lo=st.floats(0.01, 1e4), width=st.floats(1.0, 100.0), p_lo=st.floats(0.1, 100.0), p_width=st.floats(1.0, 50.0),
       tol=st.floats(0.0, 0.9))
def test_reproduced_iff_both_ends_within_tolerance(lo, width, p_lo, p_width, tol):
    ours, paper = (lo, lo * width), (p_lo, p_lo * p_width)
    cmp = cl.compare_range(ours, paper, end_tolerance=tol)
    both = abs(ours[0] / paper[0] - 1) <= tol and abs(ours[1] / paper[1] - 1) <= tol
    assert (cmp.verdict == "reproduced") == both
    if cmp.verdict != "reproduced":
        assert cmp.low_off or cmp.high_off
        off = [f for f, o in ((cmp.low_factor, cmp.low_off), (cmp.high_factor, cmp.high_off))]
        within_order = all(0.1 <= f <= 10 for f in off)
        assert (cmp.verdict == "same order") == within_order


def test_band_note_reports_without_deciding():
    assert cl.band_note((5.2, 48.2), None) == ""
    note = cl.band_note((5.2, 48.2), ((1.0, 6.0), (10.0, 40.0)))
    assert "low end 5.20x inside" in note and "high end 48.20x outside" in note


def test_baseline_readings_are_one_list():
    readings = cl.baseline_readings()
    assert readings and all(r is None or isinstance(r, str) for r in readings)


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
    readings = cl.baseline_readings()
    table = cl.claims_table(with_bands=False, readings=readings)
    assert set(table["claim"]) >= {"speedup_range", "energy_efficiency_range", "accuracy_drop", "kv_overflow", "head_parallel_imbalance"}
    assert set(table["verdict"]) <= {"reproduced", "same order", "differs", "holds", "does not hold", "not run"}
    rng = table[table["claim"] == "speedup_range"]
    assert (rng["ours_low"] <= rng["ours_high"]).all()
    # one row per baseline reading, metric and scope
    assert len(rng) == len(readings) * 2 * len(cl.SCOPES)
    for r in rng.itertuples():
        assert r.verdict == cl.range_verdict((r.ours_low, r.ours_high), (5.20, 48.21), end_tolerance=0.25)


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


def test_store_checked_outputs_keeps_only_the_checked_cell(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    source = new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(x)")])
    executed = new_notebook(cells=[new_code_cell("x = 2", execution_count=1, outputs=[new_output("stream", name="stdout", text="noise\n")]),
                                   new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(x)", execution_count=2,
                                                 outputs=[new_output("stream", name="stdout", text="2\n")])])
    nbformat.write(source, tmp_path / "nb.ipynb")
    nbformat.write(executed, tmp_path / "run.ipynb")
    assert cl.store_checked_outputs(tmp_path / "run.ipynb", tmp_path / "nb.ipynb") == 1
    stored = nbformat.read(tmp_path / "nb.ipynb", as_version=4)
    assert stored.cells[0].outputs == [] and stored.cells[0].execution_count is None
    assert stored.cells[1].outputs[0]["text"] == "2\n" and stored.cells[1].execution_count == 2
    executed.cells[1].source = "# NBVAL_CHECK_OUTPUT\nprint(y)"
    nbformat.write(executed, tmp_path / "run.ipynb")
    with pytest.raises(ParameterError, match="executed"):
        cl.store_checked_outputs(tmp_path / "run.ipynb", tmp_path / "nb.ipynb")
