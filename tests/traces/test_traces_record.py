"""The recorder on a tiny random Llama: consistent traces, the policy's own selections, resume, bad input."""

import numpy as np
import pytest
import torch

from h2eal_core.traces import selected_page_count
from h2eal_core.traces.record import RecordingConfig, RecordingSettings, record_page_traces, record_task_traces
from h2eal_core.validation import ParameterError

MASK = np.array([[True, False], [False, False], [True, True]])
TAIL, NEW = 20, 12


@pytest.fixture(scope="module")
def tiny(tiny_model_factory):
    return tiny_model_factory(seed=0, layers=3, vocab_size=1000)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 1000, (600,), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def traces(tiny, ids):
    settings = [RecordingSettings(128, "group_sum"), RecordingSettings(128, "per_query_head"), RecordingSettings(64, "group_sum")]
    return record_page_traces(tiny, ids, MASK, settings, decode_tail=TAIL, new_tokens=NEW, progress=False, model_name="tiny")


def policy_selections(model, ids, budget, gqa):
    """Selections of the same protocol on the policy's own cache (PolicyCache), from the observer."""
    from transformers import DynamicCache

    from h2eal_core.attention.config import SparseAttentionConfig
    from h2eal_core.attention.hf import apply_policy, forward_last_logits

    T = ids.numel()
    with torch.inference_mode():
        dense = DynamicCache()
        forward_last_logits(model, ids[None, : T - TAIL], dense)
    sel, step = {}, [0]
    with apply_policy(model, "h2eal", SparseAttentionConfig(budget=budget, gqa=gqa), MASK) as h, torch.inference_mode():
        h.add_selection_observer(lambda layer, heads, s: sel.__setitem__((step[0], layer), s.pages[0].numpy().copy()))
        cache = h.new_cache()
        for layer, lay in enumerate(dense.layers):
            cache.update(lay.keys, lay.values, layer)
        logits = None
        for i in range(TAIL + NEW):
            step[0] = i
            feed = ids[None, T - TAIL + i : T - TAIL + i + 1] if i < TAIL else logits.argmax(-1)[:, None]
            logits = forward_last_logits(model, feed, cache)
    return sel


def test_trace_is_consistent(traces, ids):
    for s, t in traces.items():
        assert t.n_steps == TAIL + NEW and t.budget == s.budget and t.gqa == s.gqa and t.page_order == "score_rank"
        np.testing.assert_array_equal(t.context_lens, np.arange(ids.numel() - TAIL + 1, ids.numel() + NEW + 1))
        rows_per = t.rows_per_kv_head
        stream_rows = ~np.repeat(MASK, rows_per, axis=1)
        assert (t.pages[:, stream_rows] == -1).all()  # streaming heads select no pages
        n = selected_page_count(t.context_lens, 16, s.budget)
        counts = (t.pages >= 0).sum(-1)  # [steps, L, rows]
        retr = np.repeat(MASK, rows_per, axis=1)
        assert (counts[:, retr] == n[:, None]).all()  # the budget, exactly
        for step in range(t.n_steps):
            p = t.pages[step][t.pages[step] >= 0]
            assert p.max() < t.n_pages(step) - 1  # never the current page, always in range
        assert t.source["kind"] == "recorded" and t.source["score_rank_tie_fixups"] == 0
        assert (t.tokens_read(0)[MASK] <= s.budget * rows_per).all()


@pytest.mark.parametrize("budget, gqa", [(128, "group_sum"), (128, "per_query_head"), (64, "group_sum")])
def test_trace_is_the_policys_selection(traces, tiny, ids, budget, gqa):
    t = traces[RecordingSettings(budget, gqa)].at_budget(budget)
    sel = policy_selections(tiny, ids, budget, gqa)
    g = 2 if gqa == "per_query_head" else 1
    assert len(sel) == t.n_steps * 2  # two layers with retrieval heads
    for (step, layer), pages in sel.items():
        heads = np.nonzero(MASK[layer])[0]
        rows = [h * g + j for h in heads for j in range(g)]
        np.testing.assert_array_equal(t.pages[step, layer, rows, : pages.shape[1]], pages)


def test_smaller_budget_prefix_is_close_to_its_own_run(traces):
    """The budget-64 pages cut from the budget-128 run (same queries) vs the budget-64 run itself:
    identical in the first layer at the first step (same prefill, same query), close afterwards
    (later layers and steps see attention outputs of another budget)."""
    cut = traces[RecordingSettings(128, "group_sum")].at_budget(64)
    real = traces[RecordingSettings(64, "group_sum")]
    np.testing.assert_array_equal(cut.pages[0, 0], real.pages[0, 0])
    a, b = cut.pages[:, MASK], real.pages[:, MASK]  # [steps, heads, k]
    shared = (a[..., :, None] == b[..., None, :]).any(-1).sum(-1)
    assert shared.sum() / (a >= 0).sum() > 0.5


def test_recording_is_deterministic(tiny, ids, traces):
    again = record_page_traces(tiny, ids, MASK, [RecordingSettings(128, "per_query_head")], decode_tail=TAIL, new_tokens=NEW, progress=False)
    np.testing.assert_array_equal(again[RecordingSettings(128, "per_query_head")].pages, traces[RecordingSettings(128, "per_query_head")].pages)


def test_sorted_order_and_dense_steps(tiny, ids):
    """A budget above the context: every step dense, every non-current page stored."""
    t = record_page_traces(tiny, ids[:100], MASK, [RecordingSettings(4096, "group_sum")], decode_tail=5, new_tokens=3, page_order="sorted", progress=False)
    t = t[RecordingSettings(4096, "group_sum")]
    for s in range(t.n_steps):
        for layer in (0, 2):
            heads = np.nonzero(MASK[layer])[0]
            np.testing.assert_array_equal(t.pages[s, layer, heads, : t.n_pages(s) - 1], np.tile(np.arange(t.n_pages(s) - 1), (heads.size, 1)))


def test_bad_input(tiny, ids):
    with pytest.raises(ParameterError, match="'decode_tail'"):
        record_page_traces(tiny, ids[:10], MASK, [RecordingSettings(64, "group_sum")], decode_tail=10, new_tokens=1, progress=False)
    with pytest.raises(ParameterError, match="'retrieval_heads'"):
        record_page_traces(tiny, ids, MASK[:2], [RecordingSettings(64, "group_sum")], decode_tail=4, new_tokens=1, progress=False)
    with pytest.raises(ParameterError, match="'context'"):
        record_page_traces(tiny, torch.zeros(4090, dtype=torch.long), MASK, [RecordingSettings(64, "group_sum")], decode_tail=4, new_tokens=8, progress=False)
    with pytest.raises(ParameterError, match="'gqa'"):
        RecordingSettings(64, "per_kv")
    with pytest.raises(ParameterError, match="'context'"):
        RecordingConfig(context=40, decode_tail=32, new_tokens=16)
    with pytest.raises(ParameterError, match="'task'"):
        RecordingConfig(task="essay")
    with pytest.raises(ParameterError, match=r"budgets\[1\]"):
        RecordingConfig(budgets=(512, -1))


def test_cli_refuses_bad_arguments_before_loading(capsys):
    from h2eal_core.traces.__main__ import main

    assert main(["record", "--context", "40"]) == 2
    assert "'context'" in capsys.readouterr().err
    assert main(["record", "--context", "4096", "--decode-tail", "4", "--new-tokens", "4"]) == 2
    assert "at least --min-steps" in capsys.readouterr().err


def test_record_task_traces_resumes(tmp_path, tokenizer, tiny_model_factory):
    """Task prompt + gates file + atomic files; a rerun skips up-to-date files, --force re-records."""
    from h2eal_core.identify.gates import write_gates

    model = tiny_model_factory(seed=1, layers=3)
    gates = tmp_path / "gates"
    write_gates(np.array([[1.0, 0.0], [0.0, 0.1], [0.9, 0.8]]), gates)
    cfg = RecordingConfig(
        model="tiny-llama", gates_dir=str(gates), task="multikey_niah", context=700, decode_tail=8, new_tokens=4,
        budgets=(128,), gqa_modes=("group_sum",),
    )
    paths = record_task_traces(cfg, tmp_path / "out", progress=False, model=model, tokenizer=tokenizer)
    (path,) = paths.values()
    assert path.name == "tiny-llama_multikey-niah_ctx700_b128_group_sum.npz"
    from h2eal_core.traces import load_trace

    t = load_trace(path)
    np.testing.assert_array_equal(t.retrieval_mask, [[True, False], [False, False], [True, True]])  # 50% of the gates
    assert t.source["task"] == "multikey_niah" and t.context_lens[-1] == 700 and "answer_correct" in t.source
    stamp = path.stat().st_mtime_ns
    record_task_traces(cfg, tmp_path / "out", progress=False, model=model, tokenizer=tokenizer)
    assert path.stat().st_mtime_ns == stamp  # up to date: not recorded again
    record_task_traces(cfg, tmp_path / "out", progress=False, force=True, model=model, tokenizer=tokenizer)
    assert load_trace(path).source["identity_digest"] == t.source["identity_digest"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.suffix == ".tmp" or p.name.startswith(".")]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=8, deadline=None)
@given(
    layers=st.integers(1, 3), kv=st.integers(1, 2), g=st.integers(1, 3), T=st.integers(60, 300),
    budget=st.sampled_from([16, 40, 64, 200]), gqa=st.sampled_from(["group_sum", "group_max", "per_query_head"]), seed=st.integers(0, 9),
)
def test_recorder_on_random_shapes(tiny_model_factory, layers, kv, g, T, budget, gqa, seed):
    model = tiny_model_factory(seed=seed, layers=layers, num_attention_heads=kv * g, num_key_value_heads=kv, hidden_size=8 * kv * g, vocab_size=500)
    mask = np.random.default_rng(seed).random((layers, kv)) < 0.5
    ids = torch.randint(0, 500, (T,), generator=torch.Generator().manual_seed(seed))
    (t,) = record_page_traces(model, ids, mask, [RecordingSettings(budget, gqa)], decode_tail=3, new_tokens=2, page_size=8, sink=8, local=16, progress=False).values()
    t.check_shape(layers, kv, g)
    rows_per = g if gqa == "per_query_head" else 1
    retr = np.repeat(mask, rows_per, axis=1)
    counts = (t.pages >= 0).sum(-1)
    n = selected_page_count(t.context_lens, 8, budget)
    assert (counts[:, retr] == n[:, None]).all() and (counts[:, ~retr] == 0).all()
