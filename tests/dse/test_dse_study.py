"""The study: frontier flags, the recommendation rule, the paper's configuration, the band sensitivity."""

import numpy as np
import pandas as pd

from h2eal_core.attention.config import SparseAttentionConfig
from h2eal_core.dse import Evaluator, METRICS, pareto_mask
from h2eal_core.dse import study
from h2eal_core.hardware import load_hardware, simulate_decode


def _table(space):
    return study.frontiers(Evaluator(space).evaluate_range(0, space.n_points), space)


def test_frontier_flags_are_the_pareto_set_of_feasible_points(tiny_space):
    t = _table(tiny_space)
    obj = list(tiny_space.objectives)
    for _, g in t.groupby(["model", "context_len", "design"]):
        f = g[g["feasible"]]
        assert np.array_equal(f["on_frontier"].to_numpy(), pareto_mask(f[obj].to_numpy(), [METRICS[o].sense for o in obj]))
        assert not g.loc[~g["feasible"], "on_frontier"].any()


def test_recommendation_rule_by_hand(tiny_space):
    t = _table(tiny_space)
    ranked = study.score_configurations(t, tiny_space)
    cfg = study.config_columns(tiny_space)
    h = t[t["design"] == "h2eal"]
    feasible_everywhere = h.groupby(cfg)["feasible"].all()
    assert len(ranked) == int(feasible_everywhere.sum())
    # recompute the score of the winner by hand: geometric mean over workloads and objectives of value / best
    best = ranked.iloc[0]
    logs = []
    for _, g in h.groupby(["model", "context_len"]):
        ok = g[[feasible_everywhere.loc[tuple(r)] for r in g[cfg].itertuples(index=False)]]
        row = ok[np.logical_and.reduce([ok[c] == best[c] for c in cfg])]
        for o in tiny_space.objectives:
            logs.append(np.log(row[o].iloc[0] / ok[o].min()))
    assert np.isclose(best["score"], np.exp(np.mean(logs)))
    assert (ranked["score"].diff().dropna() >= 0).all()


def test_paper_configuration_matches_simulate_decode(tiny_space):
    p = study.paper_points(tiny_space, ["llama-3.2-1b"], [32768])
    hw = load_hardware("h2eal_hb")
    for d in ("baseline", "h2eal"):
        ref = simulate_decode("llama-3.2-1b", hw, 32768, d, SparseAttentionConfig())
        row = p[p["design"] == d].iloc[0]
        assert row["attention_latency_s"] == ref.attention_latency_s and row["energy_per_token_j"] == ref.energy_per_token_j
        assert row["in_grid"]  # 16 banks/channel, 25.6 GB/s and budget 2048 are grid values of the tiny space


def test_at_paper_algorithm_keeps_the_default_budget_only(tiny_space):
    t = _table(tiny_space)
    kept = study.at_paper_algorithm(t, tiny_space)
    assert set(kept["algorithm.budget"]) == {SparseAttentionConfig().budget}
    assert len(kept) == len(t) // 2


def test_band_sensitivity_rows(tiny_space):
    t = study.at_paper_algorithm(_table(tiny_space), tiny_space)
    s = study.band_sensitivity(t, tiny_space, top_n=3)
    hw = load_hardware("h2eal_hb")
    knobs = {k.name for k in tiny_space.knobs if k.section == "hardware"}
    expected = {(c, e) for c in hw.sweepable() if c not in knobs for e, v in zip(("low", "high"), hw.q(c).band) if v != hw.q(c).value}
    assert {(r["constant"], r["end"]) for r in s.to_dict("records") if r["constant"] != "(nominal)"} == expected
    assert s.iloc[0]["same_as_nominal"] and s.attrs["top_n"] <= 3
    assert pd.api.types.is_bool_dtype(s["same_as_nominal"])
