"""The second-generation accuracy study (budget/accuracy frontier) on a tiny random Llama, and its tables on
hand-made records."""

import json

import numpy as np
import pandas as pd
import pytest

from h2eal_core.experiments import accuracy as acc
from h2eal_core.experiments import frontier as fr
from h2eal_core.identify import write_gates
from h2eal_core.validation import ParameterError


def config(gates_dir, **kw):
    base = dict(
        gates_dir=gates_dir, tasks=("passkey",), lengths=(320,), n_samples=2, sink=4, local=16, page_size=8,
        budgets=(48, 96, 512), table_budget=48, decode_tail=None,
    )
    return fr.FrontierConfig(**{**base, **kw})


def test_arms_skip_budgets_that_cover_the_context(gates_dir):
    cfg = config(gates_dir)
    arms = cfg.arms(320)
    keys = [a.key for a in arms]
    assert keys[0] == "full" and len(set(keys)) == len(keys)
    assert {a.budget for a in arms if a.method in cfg.frontier_methods} == {48, 96}  # 512 >= 320 is dense
    assert {a.key for a in arms if a.gqa == "group_sum"} == {"quest@48/group_sum", "h2eal@48/group_sum"}
    assert {a.method for a in arms if a.budget == 48 and a.gqa == "per_query_head"} == {
        "quest", "h2eal", "oracle", "streaming_llm", "duo", "h2eal_random"
    }
    assert [a.key for a in cfg.arms(40)] == ["full"]  # every budget covers a 40-token context


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(frontier_methods=("quest", "dense")), "frontier_methods"),
        (dict(budgets=(4, 96)), "budgets"),
        (dict(budgets=()), "budgets"),
        (dict(variant_gqa=("by_head",)), "variant_gqa"),
        (dict(gqa="by_head"), "gqa"),
        (dict(table_budget=0), "table_budget"),
        (dict(tasks=("sudoku",)), "tasks"),
    ],
)
def test_bad_configuration_names_the_parameter(gates_dir, change, name):
    with pytest.raises(ParameterError, match=name):
        config(gates_dir, **change)


def test_study_measures_every_arm_once_and_resumes(tokenizer, model, gates_dir, tmp_path, monkeypatch):
    cfg = config(gates_dir, batch_tokens=320)  # one sample per batch: its read fraction is its own
    recs = fr.run_frontier_study(cfg, cache_dir=tmp_path / "c", model=model, tokenizer=tokenizer, progress=False)
    arms = cfg.arms(320)
    assert len(recs) == len(arms) * cfg.n_samples
    assert set(recs.arm) == {a.key for a in arms}
    assert recs.groupby("sample_id").size().tolist() == [len(arms)] * cfg.n_samples
    # the arms' records are the first-generation evaluation of that method at that budget and GQA mode
    heads = acc.head_sets(cfg.study(48, "per_query_head"), model)
    sample_recs = recs[recs.sample_id == recs.sample_id.iloc[0]].set_index("arm")
    from h2eal_core.tasks import generate_sample

    sample = generate_sample("passkey", tokenizer, 320, cfg.seed, int(sample_recs["index"].iloc[0]))
    for arm in ("quest@96/per_query_head", "h2eal@48/group_sum", "oracle@48/per_query_head"):
        method, rest = arm.split("@")
        budget, gqa = rest.split("/")
        ref = acc.evaluate_sample(model, tokenizer, sample, cfg.study(int(budget), gqa), heads, [method])[0]
        assert ref["new_tokens"] == sample_recs.loc[arm, "new_tokens"]
        assert ref["read_fraction"] == pytest.approx(sample_recs.loc[arm, "read_fraction"])
    # per_query_head reads at least what group_sum reads (a KV head reads the union of its query heads' pages)
    assert sample_recs.loc["quest@48/per_query_head", "read_fraction"] >= sample_recs.loc["quest@48/group_sum", "read_fraction"]
    # a rerun measures nothing
    monkeypatch.setattr(fr, "run_method", lambda *a, **k: pytest.fail("re-measured a cached arm"))
    again = fr.run_frontier_study(cfg, cache_dir=tmp_path / "c", model=model, tokenizer=tokenizer, progress=False)
    assert len(again) == len(recs)


def test_time_limit_stops_between_batches_and_a_rerun_completes(tokenizer, model, gates_dir, tmp_path):
    cfg = config(gates_dir, batch_tokens=320, budgets=(48,))  # one sample per batch
    part = fr.run_frontier_study(cfg, cache_dir=tmp_path / "c", model=model, tokenizer=tokenizer, progress=False, time_limit_s=1e-9)
    assert part.attrs["complete"] is False and len(part) == len(cfg.arms(320))  # the first batch, then the stop
    full = fr.run_frontier_study(cfg, cache_dir=tmp_path / "c", model=model, tokenizer=tokenizer, progress=False)
    assert full.attrs["complete"] is True and len(full) == 2 * len(cfg.arms(320))


def test_export_appends_to_the_committed_file_and_refuses_another_identity(tokenizer, model, gates_dir, tmp_path):
    cfg = config(gates_dir, budgets=(48,), variant_gqa=(), table_methods=())
    fr.run_frontier_study(cfg, records_dir=tmp_path / "rec", export_records=True, model=model, tokenizer=tokenizer, progress=False)
    path = fr.records_file(tmp_path / "rec", cfg.model)
    identity, df = fr.read_records(path)
    assert identity["study"] == "frontier" and len(df) == 2 * len(cfg.arms(320))
    assert json.loads(path.read_text().splitlines()[0])["identity"] == identity
    with pytest.raises(ParameterError, match="records"):
        fr.run_frontier_study(
            config(gates_dir, sink=8, budgets=(48,)), records_dir=tmp_path / "rec", export_records=True, model=model,
            tokenizer=tokenizer, progress=False,
        )


def _records(rows):
    out = []
    for arm, budget, read, correct in rows:
        method = arm.split("@")[0]
        for cell, (task, length) in enumerate([("passkey", 1000), ("qa", 2000)]):
            for i, c in enumerate(correct):
                out.append(dict(task=task, length=length, sample_id=f"{task}-{i}", method=method, arm=arm, budget=budget,
                                gqa="-" if method == "full" else "per_query_head", correct=bool(c), read_fraction=read,
                                stored_fraction=read))
    return pd.DataFrame(out)


def test_tables_find_the_smallest_read_fraction_within_one_point():
    ones = [1] * 20
    recs = _records([
        ("full", 0, 1.0, ones),
        ("h2eal@256/per_query_head", 256, 0.05, [1] * 10 + [0] * 10),  # 50-point drop
        ("h2eal@512/per_query_head", 512, 0.10, [1] * 19 + [0]),  # 5-point drop, CI includes 0: not within 1
        ("h2eal@1024/per_query_head", 1024, 0.20, ones),  # no drop: within, confirmed
        ("quest@256/per_query_head", 256, 0.06, ones),
    ])
    pts = fr.frontier_points(recs)
    h = pts[pts.method == "h2eal"].set_index("budget")
    assert h.loc[256, "drop_pp"] == pytest.approx(50) and h.loc[512, "drop_pp"] == pytest.approx(5)
    assert h.loc[256, "n_samples"] == 40 and h.loc[256, "n_cells"] == 2
    assert h.loc[256, "drop_ci_low_pp"] < 50 < h.loc[256, "drop_ci_high_pp"]
    assert h.loc[1024, "drop_ci_low_pp"] == h.loc[1024, "drop_ci_high_pp"] == 0
    assert h.loc[256, "samples_lost"] == 20 and h.loc[1024, "samples_lost"] == 0
    assert 0 < h.loc[1024, "loss_upper_pp"] < 10  # no loss seen on 40 samples: still ~9 points possible
    w = fr.within_one_point(pts).set_index("method")
    assert w.loc["h2eal", "estimate_read_fraction"] == pytest.approx(0.20)
    assert w.loc["h2eal", "confirmed_budget"] == -1  # 40 samples cannot confirm one point
    many = _records([("full", 0, 1.0, [1] * 400), ("h2eal@1024/per_query_head", 1024, 0.2, [1] * 400)])
    assert fr.within_one_point(fr.frontier_points(many)).set_index("method").loc["h2eal", "confirmed_budget"] == 1024
    assert w.loc["quest", "estimate_read_fraction"] == pytest.approx(0.06)
    t3 = fr.table3(recs, 256).set_index("method")
    assert t3.loc["full", "accuracy"] == 1.0 and t3.loc["h2eal", "drop_pp"] == pytest.approx(50)
    assert t3.loc["h2eal", "paper_mean_drop_pct"] == pytest.approx(acc.paper_accuracy_drop())
    by_len = fr.frontier_points(recs, by_length=True)
    assert set(by_len.length) == {1000, 2000}


def test_selection_gap_oracle_mass_bounds_quest(tokenizer, model, gates_dir):
    cfg = config(gates_dir, sink=4, local=16)
    gap = fr.selection_gap(model, tokenizer, cfg, n_samples=1, progress=False)
    assert len(gap) == model.config.num_hidden_layers * model.config.num_attention_heads
    assert gap["recall"].between(0, 1).all() and (gap["n_steps"] > 0).all()
    assert (gap["mass_oracle"] >= gap["mass_quest"] - 1e-6).all()  # the exact mass ranking takes the most mass
    assert gap["mass_oracle"].le(1 + 1e-6).all()


def test_lengths_beyond_the_native_maximum_are_refused_unless_allowed(tokenizer, tiny_model_factory, gates_dir, tmp_path):
    small = tiny_model_factory(eos_token_id=None, max_position_embeddings=256)
    cfg = config(gates_dir, budgets=(48,), table_methods=(), variant_gqa=())
    with pytest.raises(ParameterError, match="lengths.*at most 256"):
        fr.run_frontier_study(cfg, cache_dir=tmp_path / "c", model=small, tokenizer=tokenizer, progress=False)
    assert not list((tmp_path / "c").glob("*.jsonl")) or all(len(p.read_text().splitlines()) <= 1 for p in (tmp_path / "c").glob("*"))
    allowed = config(gates_dir, budgets=(48,), table_methods=(), variant_gqa=(), allow_beyond_native=True)
    recs = fr.run_frontier_study(allowed, cache_dir=tmp_path / "c2", model=small, tokenizer=tokenizer, progress=False)
    assert len(recs) == 2 * len(allowed.arms(320))


def test_claims_judge_the_accuracy_drop_per_model_on_the_frontier():
    from h2eal_core.experiments import claims as cl

    claim = next(c for c in cl.load_claims() if c.id == "accuracy_drop")
    t3 = pd.DataFrame([
        dict(model="a", method="full", gqa="-", budget=0, n_samples=20, accuracy=0.9, drop_pp=0.0, drop_ci_low_pp=0.0,
             drop_ci_high_pp=0.0, kv_read_fraction=1.0, kv_stored_fraction=1.0),
        dict(model="a", method="h2eal", gqa="per_query_head", budget=512, n_samples=20, accuracy=0.85, drop_pp=5.0,
             drop_ci_low_pp=-1.0, drop_ci_high_pp=12.0, kv_read_fraction=0.2, kv_stored_fraction=0.5),
        dict(model="a", method="h2eal", gqa="group_sum", budget=512, n_samples=20, accuracy=0.5, drop_pp=40.0,
             drop_ci_low_pp=30.0, drop_ci_high_pp=50.0, kv_read_fraction=0.1, kv_stored_fraction=0.5),
        dict(model="b", method="full", gqa="-", budget=0, n_samples=10, accuracy=1.0, drop_pp=0.0, drop_ci_low_pp=0.0,
             drop_ci_high_pp=0.0, kv_read_fraction=1.0, kv_stored_fraction=1.0),
        dict(model="b", method="h2eal", gqa="per_query_head", budget=512, n_samples=10, accuracy=0.6, drop_pp=40.0,
             drop_ci_low_pp=20.0, drop_ci_high_pp=60.0, kv_read_fraction=0.1, kv_stored_fraction=0.5),
    ])
    within = pd.DataFrame([dict(model="a", method="h2eal", gqa="per_query_head", estimate_read_fraction=0.3,
                                confirmed_read_fraction=float("nan"), largest_read_fraction_measured=0.4)])
    rows = cl.frontier_accuracy_rows(claim, t3, within).set_index("scope")
    assert rows.loc["a, frontier tasks", "verdict"] == "reproduced"  # 0.87 inside [-1, 12]
    assert "within 1 point of full from KV read 0.300" in rows.loc["a, frontier tasks", "reason"]
    assert "confirmed (CI) from never" in rows.loc["a, frontier tasks", "reason"]
    assert rows.loc["b, frontier tasks", "verdict"] == "differs" and "ours is larger" in rows.loc["b, frontier tasks", "reason"]
    assert cl.frontier_accuracy_rows(claim, None).empty


def test_identified_gates_of_every_model(tmp_path):
    from h2eal_core.experiments import head_sparsity as hs

    write_gates(np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.4]]), tmp_path / "m1")
    write_gates(np.array([[0.3], [0.7]]), tmp_path / "m2")
    g = hs.identified_gates([tmp_path / "m1", tmp_path / "m2"])
    assert g.groupby("model").size().to_dict() == {"m1": 6, "m2": 2}
    assert g[g.model == "m1"].retrieval.sum() == 3 and g[(g.model == "m2") & g.retrieval].layer.tolist() == [1]
    with pytest.raises(ParameterError, match="gate_dirs"):
        hs.identified_gates([tmp_path / "missing"])
