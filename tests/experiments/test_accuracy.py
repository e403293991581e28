"""The accuracy study on a tiny random Llama: the shared dense prefill is exact, caching resumes,
tables are right. (The real SmolLM2 run is the committed default profile.)"""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from h2eal_core.attention.hf import generate_with_policy
from h2eal_core.experiments import accuracy as acc
from h2eal_core.identify import write_gates
from h2eal_core.tasks import generate_sample
from h2eal_core.validation import ParameterError


def study(gates_dir, **kw):
    base = dict(
        gates_dir=gates_dir, tasks=("passkey", "qa"), lengths=(320,), n_samples=2, sink=4, local=16,
        page_size=8, budget=48, decode_tail=None,
    )
    return acc.AccuracyStudyConfig(**{**base, **kw})


@pytest.mark.parametrize("method", ["full", "quest"])
def test_shared_dense_prefill_equals_generate_with_policy(tokenizer, model, gates_dir, method):
    """Full and Quest prefill densely, so the shared prefill must give their exact generations."""
    cfg = study(gates_dir)
    heads = acc.head_sets(cfg, model)
    sample = generate_sample("passkey", tokenizer, 320, seed=0, index=0)
    rec = acc.evaluate_sample(model, tokenizer, sample, cfg, heads, [method])[0]
    ref = generate_with_policy(
        model, torch.tensor(sample.input_ids), acc.METHOD_POLICY[method], cfg.method_config(method), None,
        max_new_tokens=sample.max_new_tokens, decode_prompt_tail=sample.tail_length,
    )
    assert rec["new_tokens"] == ref.new_tokens[0].tolist()
    assert rec["decode_steps"] == ref.stats["decode_steps"] == sample.tail_length + len(rec["new_tokens"]) - 1
    assert rec["read_fraction"] == pytest.approx(ref.stats["read_fraction"])
    assert rec["stored_fraction"] == pytest.approx(ref.stats["stored_fraction"])


def test_each_method_reads_and_stores_what_its_policy_says(tokenizer, model, gates_dir):
    cfg = study(gates_dir)
    heads = acc.head_sets(cfg, model)
    assert heads.identified.tolist() == [[True, False], [False, True]]  # top half of the gates
    assert heads.random.sum() == 2
    sample = generate_sample("qa", tokenizer, 320, seed=0, index=1)
    recs = {r["method"]: r for r in acc.evaluate_sample(model, tokenizer, sample, cfg, heads, list(acc.METHODS))}
    assert recs["full"]["read_fraction"] == 1.0 and recs["full"]["stored_fraction"] == 1.0
    T = sample.length + len(recs["streaming_llm"]["new_tokens"])
    assert recs["streaming_llm"]["stored_fraction"] < 48 / 320 + 0.01  # window widened to budget - sink
    assert recs["quest"]["stored_fraction"] == 1.0
    # per_query_head (the default): a KV head reads the union of its g = 2 query heads' pages
    assert 48 / 320 < recs["quest"]["read_fraction"] < 2 * 48 / 320 + 0.01
    assert recs["oracle"]["stored_fraction"] == 1.0 and recs["oracle"]["read_fraction"] < 2 * 48 / 320 + 0.01
    assert recs["duo"]["stored_fraction"] == pytest.approx(recs["h2eal"]["stored_fraction"], abs=0.01)
    assert recs["h2eal"]["read_fraction"] < recs["duo"]["read_fraction"] < 1.0
    assert recs["h2eal"]["retrieval_ratio"] == recs["h2eal_random"]["retrieval_ratio"] == 0.5
    assert all(r["cache"] == "policy" for r in recs.values()), "the policies' own caches, not a simulation"
    assert T > 320
    for method in ("quest", "h2eal"):  # sharing the prefill between methods changes nothing
        alone = acc.evaluate_sample(model, tokenizer, sample, cfg, heads, [method])[0]
        assert alone["new_tokens"] == recs[method]["new_tokens"]
        assert alone["read_fraction"] == recs[method]["read_fraction"]


def test_study_resumes_from_its_cache(tokenizer, model, gates_dir, tmp_path, monkeypatch):
    cfg = study(gates_dir, methods=("full", "streaming_llm"))
    first = acc.run_accuracy_study(cfg, cache_dir=tmp_path / "cache", model=model, tokenizer=tokenizer, progress=False)
    assert len(first) == 2 * 2 * 1 * 2 and set(first.method) == {"full", "streaming_llm"}
    path = tmp_path / "cache" / first.attrs["cache_path"].split("/")[-1]
    with open(path, "a") as f:
        f.write('{"task": "passkey", "trunc')  # an interrupted write

    def boom(*a, **k):
        raise AssertionError("cached results must not be recomputed")

    monkeypatch.setattr(acc, "evaluate_batch", boom)
    again = acc.run_accuracy_study(cfg, cache_dir=tmp_path / "cache", model=model, tokenizer=tokenizer, progress=False)
    pd.testing.assert_frame_equal(first, again)
    monkeypatch.undo()
    # a larger study reuses the cached part and computes only the new samples
    calls = []
    original = acc.evaluate_batch

    def counting(model_, tok, samples, *a, **k):
        calls.extend(s.sample_id for s in samples)
        return original(model_, tok, samples, *a, **k)

    monkeypatch.setattr(acc, "evaluate_batch", counting)
    bigger = acc.run_accuracy_study(
        study(gates_dir, methods=("full", "streaming_llm"), n_samples=3), cache_dir=tmp_path / "cache", model=model,
        tokenizer=tokenizer, progress=False,
    )
    assert len(calls) == 2 and len(bigger) == 12
    # another configuration goes to another cache file
    other = acc.run_accuracy_study(
        study(gates_dir, methods=("full",), budget=64, n_samples=1, tasks=("qa",)), cache_dir=tmp_path / "cache",
        model=model, tokenizer=tokenizer, progress=False,
    )
    assert other.attrs["cache_path"] != first.attrs["cache_path"]


def test_committed_records_are_reused_read_only_and_exported_atomically(tokenizer, model, gates_dir, tmp_path, monkeypatch):
    cfg = study(gates_dir, methods=("full", "quest"), tasks=("passkey",))
    records = tmp_path / "records"
    first = acc.run_accuracy_study(
        cfg, cache_dir=tmp_path / "a", records_dir=records, export_records=True, model=model, tokenizer=tokenizer,
        progress=False,
    )
    exported = records / first.attrs["cache_path"].split("/")[-1]
    lines = exported.read_text().splitlines()
    assert "identity" in json.loads(lines[0]) and len(lines) == 1 + len(first)
    before = exported.read_bytes()

    def boom(*a, **k):
        raise AssertionError("committed results must not be recomputed")

    monkeypatch.setattr(acc, "evaluate_batch", boom)
    reused = acc.run_accuracy_study(
        cfg, cache_dir=tmp_path / "b", records_dir=records, model=model, tokenizer=tokenizer, progress=False
    )
    pd.testing.assert_frame_equal(first.drop(columns="seconds"), reused.drop(columns="seconds"))
    assert exported.read_bytes() == before, "the committed records are read, never written"
    with pytest.raises(AssertionError, match="must not be recomputed"):  # remeasuring ignores them
        acc.run_accuracy_study(
            cfg, cache_dir=tmp_path / "c", records_dir=records, reuse_records=False, model=model, tokenizer=tokenizer,
            progress=False,
        )
    with pytest.raises(ParameterError, match="records_dir"):
        acc.run_accuracy_study(cfg, cache_dir=tmp_path / "b", export_records=True, model=model, tokenizer=tokenizer,
                               progress=False)


def test_batched_evaluation_matches_one_by_one(tokenizer, model, gates_dir):
    cfg = study(gates_dir, decode_tail=40)
    heads = acc.head_sets(cfg, model)
    samples = [generate_sample("qa", tokenizer, 320, seed=0, index=i) for i in range(3)]
    assert len({s.tail_length for s in samples}) > 1, "different tails share a batch with a fixed decode_tail"
    methods = ["full", "h2eal"]
    batched = acc.evaluate_batch(model, tokenizer, samples, cfg, heads, methods)
    single = [r for s in samples for r in acc.evaluate_sample(model, tokenizer, s, cfg, heads, methods)]
    key = lambda r: (r["sample_id"], r["method"])  # noqa: E731
    for b, o in zip(sorted(batched, key=key), sorted(single, key=key)):
        assert b["new_tokens"] == o["new_tokens"] and b["decode_tail"] == 40
        assert b["batch_size"] == 3 and o["batch_size"] == 1
    with pytest.raises(ParameterError, match="decode_tail"):
        acc.evaluate_sample(model, tokenizer, samples[0], study(gates_dir, decode_tail=4), heads, methods)


def test_policy_prefill_mode_runs(tokenizer, model, gates_dir, tmp_path):
    cfg = study(gates_dir, prefill="policy", prefill_chunk_size=128, methods=("full", "h2eal"), n_samples=1, tasks=("passkey",))
    df = acc.run_accuracy_study(cfg, cache_dir=tmp_path, model=model, tokenizer=tokenizer, progress=False)
    assert set(df.method) == {"full", "h2eal"} and (df[df.method == "h2eal"].read_fraction < 1).all()


def synthetic_records():
    rows = []
    rng = np.random.default_rng(0)
    acc_by_method = {"full": 0.9, "quest": 0.85, "h2eal": 0.8, "h2eal_random": 0.3}
    for task in ("passkey", "qa"):
        for length in (1024, 2048):
            for i in range(40):
                for method, p in acc_by_method.items():
                    rows.append(
                        {
                            "sample_id": f"{task}-{length}-{i}", "task": task, "length": length, "index": i,
                            "method": method, "correct": bool(rng.uniform() < p), "read_fraction": 0.5,
                            "stored_fraction": 1.0, "answers": ["x"], "new_tokens": [1],
                        }
                    )
    return pd.DataFrame(rows)


def test_tables():
    rec = synthetic_records()
    cells = acc.cell_table(rec)
    assert len(cells) == 4 * 4 and (cells.n == 40).all()
    assert ((cells.ci_low <= cells.accuracy) & (cells.accuracy <= cells.ci_high)).all()
    assert (cells[cells.method == "full"].drop_vs_full == 0).all()
    summary = acc.summary_table(rec, n_boot=300)
    assert list(summary.method) == ["full", "quest", "h2eal", "h2eal_random"]
    s = summary.set_index("method")
    full_mean = rec[rec.method == "full"].groupby(["task", "length"]).correct.mean().mean()
    assert s.loc["full", "mean_accuracy"] == pytest.approx(full_mean)
    assert s.loc["h2eal", "drop_vs_full_pp"] == pytest.approx(100 * (full_mean - s.loc["h2eal", "mean_accuracy"]))
    assert s.loc["full", "drop_ci_low_pp"] == s.loc["full", "drop_ci_high_pp"] == 0
    assert s.loc["h2eal_random", "drop_ci_low_pp"] > s.loc["h2eal", "drop_ci_high_pp"], "a clear gap is detected"
    assert s.loc["h2eal", "paper_mean_drop_pct"] == 0.87 and np.isnan(s.loc["quest", "paper_mean_drop_pct"])
    assert (summary.n_samples == 160).all()
    pd.testing.assert_frame_equal(summary, acc.summary_table(rec, n_boot=300))  # deterministic
    tables = acc.accuracy_tables(rec)
    assert set(tables) == {"summary", "cells", "samples"} and "new_tokens" not in tables["samples"]


def test_config_validation(gates_dir):
    with pytest.raises(ParameterError, match="methods"):
        study(gates_dir, methods=("quest",))
    with pytest.raises(ParameterError, match="tasks"):
        study(gates_dir, tasks=("niah",))
    with pytest.raises(ParameterError, match="prefill"):
        study(gates_dir, prefill="chunked")
    with pytest.raises(ParameterError, match="budget"):
        study(gates_dir, budget=4)
    assert study(gates_dir).method_config("streaming_llm").local == 44
    assert study(gates_dir, streaming_llm_local=16).method_config("streaming_llm").local == 16
    json.dumps(study(gates_dir).to_dict())


def test_new_gates_recompute_only_the_methods_that_use_them(tokenizer, model, gates_dir, tmp_path, monkeypatch):
    cfg = study(gates_dir, methods=("full", "duo"), n_samples=1, tasks=("qa",))
    first = acc.run_accuracy_study(cfg, cache_dir=tmp_path, model=model, tokenizer=tokenizer, progress=False)
    write_gates(np.array([[0.1, 0.9], [0.8, 0.2]]), gates_dir)  # other gates: other retrieval heads
    calls = []
    original = acc.evaluate_batch

    def counting(model_, tok, samples, config, heads, methods):
        calls.append(tuple(methods))
        return original(model_, tok, samples, config, heads, methods)

    monkeypatch.setattr(acc, "evaluate_batch", counting)
    second = acc.run_accuracy_study(cfg, cache_dir=tmp_path, model=model, tokenizer=tokenizer, progress=False)
    assert calls == [("duo",)]
    assert second.attrs["cache_path"] == first.attrs["cache_path"]
    assert (first.heads[first.method == "duo"].iloc[0] != second.heads[second.method == "duo"].iloc[0])


def test_study_config_from_notebook_parameters():
    cfg = acc.study_config(tasks=["qa"], lengths=[1024], decode_tail=-1, retrieval_ratio=-1.0, streaming_llm_local=-1,
                           budget=256, figures_dir="x")
    assert cfg.tasks == ("qa",) and cfg.lengths == (1024,) and cfg.decode_tail is None
    assert cfg.retrieval_ratio is None and cfg.streaming_llm_local is None and cfg.budget == 256


def test_notebook_defaults_equal_the_config_defaults():
    """The notebook's parameter defaults are the study's defaults (so the CLI and the notebook agree)."""
    import ast

    import papermill

    from h2eal_core.io import repo_root

    inspected = papermill.inspect_notebook(str(repo_root() / "notebooks" / "tab3_accuracy.ipynb"))
    params = {k: ast.literal_eval(v["default"]) for k, v in inspected.items()}
    params["gates_dir"] = acc.AccuracyStudyConfig().gates_dir
    # the first-generation table pins group_sum (its committed records); the study's default is Quest's per_query_head
    assert params.pop("gqa") == "group_sum" and acc.AccuracyStudyConfig().gqa == "per_query_head"
    # ... and its six methods (the oracle is measured by the second-generation study, accuracy_frontier)
    assert params.pop("methods") == [m for m in acc.METHODS if m != "oracle"]
    assert acc.study_config(**params) == acc.AccuracyStudyConfig()


def test_study_identity_covers_the_haystack_text(model, gates_dir, monkeypatch):
    """The pydoc haystack is the running Python's documentation: another text is another study."""
    cfg = study(gates_dir)
    heads = acc.head_sets(cfg, model)
    here = acc.study_identity(cfg, heads, model)
    assert set(here["haystack_digests"]) == {"pydoc", "repeat"}
    monkeypatch.setattr(acc, "haystack_digest", lambda source: "another-python")
    elsewhere = acc.study_identity(cfg, heads, model)
    assert acc.cache_path("c", here, "m") != acc.cache_path("c", elsewhere, "m")
