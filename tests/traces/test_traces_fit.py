"""Statistics (closed forms), the samplers (exact inclusion), the generators (shape properties,
determinism), and the fitted generator against the committed SmolLM2 trace it was fitted to."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2eal_core.traces import PageTrace, load_trace, selected_page_count
from h2eal_core.traces.fit import (
    LayerProfile,
    SelectionModel,
    _cap,
    _systematic_pps,
    check_against_trace,
    fit_selection_model,
    fitted_trace,
    load_selection_model,
    uniform_random_trace,
)
from h2eal_core.traces.library import default_selection_model, find_trace, list_traces, selection_trace, traces_dir
from h2eal_core.traces.stats import adjacency, busiest_bank_load, position_shares, step_overlap, union_ratio
from h2eal_core.validation import ParameterError

REFERENCE = "smollm2-135m_multikey-niah_ctx2048_b512_group_sum"


def fixed_trace(pages_per_step, T=200, page_size=16, budget=64, gqa="group_sum", g=1, rows_per=1):
    """One layer, one retrieval KV head, the given page lists at every step (contexts T, T+1, ...)."""
    steps = len(pages_per_step)
    per_step = [rows if isinstance(rows[0], (list, tuple)) else [rows] * rows_per for rows in pages_per_step]
    k = max(len(p) for rows in per_step for p in rows)
    arr = np.full((steps, 1, rows_per, k), -1)
    for s, rows in enumerate(per_step):
        for r, p in enumerate(rows):
            arr[s, 0, r, : len(p)] = sorted(p)
    return PageTrace("toy", page_size, budget, gqa, g, np.ones((1, 1), dtype=bool), np.arange(T, T + steps), arr)


# ---- statistics: closed forms ------------------------------------------------------------------


def test_contiguous_pages_spread_evenly_over_round_robin_banks():
    t = fixed_trace([list(range(2, 10))] * 3, T=200, budget=144)  # 8 pages + the current page 12
    load = busiest_bank_load(t, 4)
    assert load["imbalance"] == pytest.approx(1.0) and load["busiest_pages"] == 3  # 9 pages over 4 banks
    assert adjacency(t) == pytest.approx(7 / 8)
    assert step_overlap(t, 1) == 1.0 and step_overlap(t, 2) == 1.0


def test_pages_in_one_bank_are_the_worst_case():
    t = fixed_trace([[0, 4, 8, 12, 1]], T=300, budget=96)  # 0, 4, 8, 12 share bank 0 of 4
    load = busiest_bank_load(t, 4)
    assert load["busiest_pages"] == 4 and load["balanced_pages"] == 2  # 6 pages read (current page 18)
    assert load["imbalance"] == pytest.approx(2.0)
    assert position_shares(t, sink_pages=1, recent_pages=4) == pytest.approx({"sink": 0.2, "recent": 0.0, "body": 0.8})


def test_overlap_and_union_closed_forms():
    t = fixed_trace([[1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 8]], budget=80)
    assert step_overlap(t, 1) == pytest.approx(0.5) and step_overlap(t, 2) == pytest.approx(0.0)
    pqh = fixed_trace([[[1, 2, 3, 4], [3, 4, 5, 6]]] * 2, budget=80, gqa="per_query_head", g=2, rows_per=2)
    assert union_ratio(pqh) == pytest.approx(6 / 4)
    assert union_ratio(fixed_trace([[1, 2, 3, 4]] * 2, budget=80)) == 1.0


def test_statistics_refuse_a_trace_without_selection():
    t = fixed_trace([[0]], T=20, budget=64)  # context within the budget: read densely
    with pytest.raises(ParameterError, match="'trace'"):
        step_overlap(t)


# ---- samplers ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(n_pages=st.integers(1, 60), frac=st.floats(0.0, 1.0), shape=st.floats(0.05, 5.0), seed=st.integers(0, 999))
def test_cap_fills_the_budget_with_probabilities(n_pages, frac, shape, seed):
    rng = np.random.default_rng(seed)
    total = np.array([round(frac * n_pages)], dtype=float)
    fixed = np.where(rng.random((1, n_pages)) < 0.2, rng.random((1, n_pages)) * 0.5, np.nan)
    if np.nansum(fixed) > total[0]:
        fixed[:] = np.nan
    if total[0] > np.isnan(fixed).sum() + np.nansum(fixed):
        total[0] = np.isnan(fixed).sum() + np.nansum(fixed)  # the most the free pages can take
    pi = _cap(rng.gamma(shape, 1 / shape, (1, n_pages)), total, fixed)
    assert ((pi >= 0) & (pi <= 1 + 1e-12)).all()
    assert pi.sum() == pytest.approx(total[0], abs=1e-6)
    kept = ~np.isnan(fixed)
    np.testing.assert_allclose(pi[kept], fixed[kept])


def test_systematic_pps_gives_exact_inclusion_probabilities():
    rng = np.random.default_rng(0)
    counts = np.array([3, 8, 15])
    pi = _cap(rng.gamma(0.4, 2.5, (3, 40)), counts.astype(float))
    hits, n = np.zeros_like(pi), 6000
    for _ in range(n):
        sel = _systematic_pps(pi, counts, rng.random(pi.shape), rng.random(3))
        assert (sel.sum(1) == counts).all()
        hits += sel
    z = np.abs(hits / n - pi) / np.sqrt(pi * (1 - pi) / n + 1e-12)
    assert z.max() < 4.5


# ---- generators --------------------------------------------------------------------------------


def toy_model(layers=3):
    prof = LayerProfile((0.9, 0.5, 0.2, 0.1), tuple(np.linspace(0.9, 0.1, 16)), (1.0, 0.5, 2.0), 0.3, 2, 0.6, 0.5)
    return SelectionModel(tuple([prof, None, prof.replace(hot_shape=5.0, hot_block=1)][:layers]), 4, 16, {"kind": "test", "long_lag": 2})


@settings(max_examples=40, deadline=None)
@given(
    layers=st.integers(1, 4), kv=st.integers(1, 3), g=st.integers(1, 4), context=st.integers(20, 900),
    budget=st.integers(1, 400), page_size=st.sampled_from([4, 8, 16]), steps=st.integers(1, 6),
    gqa=st.sampled_from(["group_sum", "group_max", "per_query_head"]), seed=st.integers(0, 50), kind=st.sampled_from(["fitted", "uniform"]),
)
def test_generated_traces_respect_the_budget(layers, kv, g, context, budget, page_size, steps, gqa, seed, kind):
    mask = np.random.default_rng(seed).random((layers, kv)) < 0.6
    args = dict(n_layers=layers, n_kv_heads=kv, group_size=g, retrieval_mask=mask, context_len=context, budget=budget,
                page_size=page_size, steps=steps, seed=seed, gqa=gqa)
    make = (lambda **a: fitted_trace(toy_model(), **a)) if kind == "fitted" else uniform_random_trace
    t = make(**args)
    assert t.source["kind"] == kind
    t.check_shape(layers, kv, g)
    rows_per = g if gqa == "per_query_head" else 1
    retr = np.repeat(mask, rows_per, axis=1)
    n = selected_page_count(t.context_lens, page_size, budget)
    counts = (t.pages >= 0).sum(-1)
    assert (counts[:, retr] == n[:, None]).all() and (counts[:, ~retr] == 0).all()
    valid = np.where(t.pages >= 0, t.pages, np.iinfo(np.int64).max)
    srt = np.sort(valid, -1)
    assert ((srt[..., 1:] > srt[..., :-1]) | (srt[..., 1:] == np.iinfo(np.int64).max)).all()  # distinct pages
    np.testing.assert_array_equal(make(**args).pages, t.pages)  # a pure function of its arguments


def test_seeds_differ_and_inputs_are_checked():
    mask = np.ones((2, 2), dtype=bool)
    args = dict(n_layers=2, n_kv_heads=2, group_size=2, retrieval_mask=mask, context_len=2000, budget=256, steps=4)
    assert not np.array_equal(fitted_trace(toy_model(2), **args, seed=0).pages, fitted_trace(toy_model(2), **args, seed=1).pages)
    with pytest.raises(ParameterError, match="'retrieval_mask'"):
        uniform_random_trace(**{**args, "retrieval_mask": np.ones((3, 2), dtype=bool)})
    with pytest.raises(ParameterError, match="'context_len'"):
        uniform_random_trace(**{**args, "context_len": 2})
    with pytest.raises(ParameterError, match="'gqa'"):
        fitted_trace(toy_model(2), **args, gqa="per_kv")
    with pytest.raises(ParameterError, match="'model'"):
        fitted_trace("model", **args)
    with pytest.raises(ParameterError, match="'retention'"):
        LayerProfile((0.5,), (0.5,), (1.0,), retention=1.5)


def test_selection_model_json_round_trip(tmp_path):
    model = toy_model()
    back = load_selection_model(model.save(tmp_path / "m.json"))
    assert back == model
    assert model.profile_for(0, 30) is model.layers[0] and model.profile_for(29, 30) is model.layers[2]


# ---- against the committed trace ---------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    path = traces_dir() / f"{REFERENCE}.npz"
    if not path.is_file():
        pytest.skip(f"{path} is not committed")
    return load_trace(path)


@pytest.fixture(scope="module")
def committed_fit(reference):
    return load_selection_model(traces_dir() / "fitted" / f"{REFERENCE}.json")


@pytest.mark.slow
def test_committed_fit_is_reproduced(reference, committed_fit):
    """Refitting the committed trace gives the committed parameters exactly (~15 s on a quiet core)."""
    assert fit_selection_model(reference, seed=0) == committed_fit


def test_fitted_generator_matches_its_trace(reference, committed_fit):
    report = check_against_trace(reference, n_banks=(8, 16), seed=0, model=committed_fit)
    real, fit, uni = report["trace"], report["fitted"], report["uniform"]
    d = report["fitted_minus_trace"]
    lag = [k for k in real if k.startswith("overlap_lag") and k != "overlap_lag1"][0]
    assert report["fitted"]["union_ratio"] == 1.0
    for share in ("sink", "recent", "body"):
        assert abs(d["position_shares"][share]) < 0.03
    assert d["position_tv"] < 0.2
    assert abs(d["overlap_lag1"]) < 0.05 and abs(d[lag]) < 0.1 and abs(d["adjacency"]) < 0.05
    for banks in ("banks8", "banks16"):
        assert abs(fit[banks]["imbalance"] / real[banks]["imbalance"] - 1) < 0.15
    # and the fit is closer to the trace than uniform pages on what it models
    du = report["uniform_minus_trace"]
    assert d["position_tv"] < du["position_tv"]
    assert abs(d["overlap_lag1"]) < abs(du["overlap_lag1"]) and abs(d["adjacency"]) < abs(du["adjacency"])
    assert uni["position_shares"]["recent"] < real["position_shares"]["recent"]


# ---- the HB model's entry point ----------------------------------------------------------------


def test_selection_trace_kinds(reference):
    shape = dict(n_layers=reference.n_layers, n_kv_heads=reference.n_kv_heads, group_size=reference.group_size,
                 retrieval_mask=reference.retrieval_mask, budget=512, gqa="group_sum")
    rec = selection_trace("recorded", context_len=2048, model_name="smollm2-135m", **shape)
    assert rec.source["kind"] == "recorded" and rec.budget == 512
    with pytest.raises(ParameterError, match="trace.n_layers"):
        selection_trace("recorded", context_len=2048, model_name="smollm2-135m", **{**shape, "n_layers": 16, "retrieval_mask": np.ones((16, 3), dtype=bool)})
    with pytest.raises(ParameterError, match="'retrieval_mask'"):
        selection_trace("recorded", context_len=2048, model_name="smollm2-135m", **{**shape, "retrieval_mask": ~reference.retrieval_mask})
    with pytest.raises(ParameterError, match="'trace'"):
        selection_trace("recorded", context_len=3000, model_name="smollm2-135m", **shape)
    fit = selection_trace("fitted", context_len=32768, steps=4, **{**shape, "budget": 2048, "gqa": "per_query_head"})
    assert fit.source["kind"] == "fitted" and fit.context_lens[-1] == 32768
    assert fit.source["fitted_from"]["gqa"] == "per_query_head"
    assert selection_trace("uniform", context_len=4096, steps=2, **shape).source["kind"] == "uniform"
    with pytest.raises(ParameterError, match="'kind'"):
        selection_trace("measured", context_len=4096, **shape)


def test_committed_traces_are_valid_and_listed():
    rows = list_traces()
    if not rows:
        pytest.skip("no committed traces")
    total = 0
    for r in rows:
        t = load_trace(r["path"])  # validates every field
        assert t.n_steps >= 32 and t.source["kind"] == "recorded" and t.model == "smollm2-135m"
        t.check_shape(30, 3, 3)
        total += r["path"].stat().st_size
    assert total < 6 * 2**20  # "a few MB at most"
    assert find_trace("smollm2-135m", 8192, 1024, "per_query_head").budget == 1024  # a prefix of budget 2048
    assert default_selection_model(2048, "group_max").fitted_from["gqa"] == "group_sum"


def test_check_cli_prints_the_comparison(reference, capsys):
    import json

    from h2eal_core.traces.__main__ import main

    assert main(["check", str(traces_dir() / f"{REFERENCE}.npz"), "--banks", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"trace", "fitted", "uniform", "fitted_minus_trace", "uniform_minus_trace"}
    assert report["trace"]["banks8"]["imbalance"] >= 1.0
    assert main(["check", str(traces_dir() / f"{REFERENCE}.npz"), "--budget", "1024"]) == 2  # above the recorded 512
