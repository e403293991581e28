"""PageTrace: file round trip, score-rank prefixes, validation errors naming the field, shapes (hypothesis)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2eal_core.traces import PageTrace, load_trace, selected_page_count
from h2eal_core.validation import ParameterError


def make_trace(steps=3, layers=2, kv=2, g=2, gqa="group_sum", T0=100, page_size=16, budget=48, order="sorted", seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros((layers, kv), dtype=bool)
    mask[0, 0] = True
    mask[-1, -1] = True
    lens = np.arange(T0, T0 + steps)
    rows = kv * (g if gqa == "per_query_head" else 1)
    n_sel = selected_page_count(lens, page_size, budget)
    pages = np.full((steps, layers, rows, int(n_sel.max())), -1)
    rep = g if gqa == "per_query_head" else 1
    for s in range(steps):
        N = -(-int(lens[s]) // page_size) - 1
        for layer in range(layers):
            for r in range(rows):
                if mask[layer, r // rep]:
                    chosen = rng.permutation(N)[: n_sel[s]]
                    pages[s, layer, r, : n_sel[s]] = chosen if order == "score_rank" else np.sort(chosen)
    return PageTrace("toy", page_size, budget, gqa, g, mask, lens, pages, {"kind": "test"}, order)


@pytest.mark.parametrize("order", ["sorted", "score_rank"])
@pytest.mark.parametrize("gqa", ["group_sum", "per_query_head"])
def test_round_trip(tmp_path, order, gqa):
    t = make_trace(gqa=gqa, order=order)
    path = t.save(tmp_path / "t.npz")
    back = load_trace(path)
    assert back.page_order == order and back.gqa == gqa and back.source == {"kind": "test"}
    np.testing.assert_array_equal(back.pages, t.pages)
    np.testing.assert_array_equal(back.retrieval_mask, t.retrieval_mask)
    np.testing.assert_array_equal(back.context_lens, t.context_lens)
    assert path.read_bytes() == t.save(tmp_path / "u.npz").read_bytes()  # deterministic bytes


def test_old_file_without_page_order_loads_as_sorted(tmp_path):
    t = make_trace()
    path = t.save(tmp_path / "t.npz")
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    meta = json.loads(str(arrays["meta"]))
    meta.pop("page_order")
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(tmp_path / "old.npz", **arrays)
    assert load_trace(tmp_path / "old.npz").page_order == "sorted"


def test_at_budget_is_a_sorted_prefix():
    t = make_trace(order="score_rank", budget=64)
    small = t.at_budget(32)
    assert small.page_order == "sorted" and small.budget == 32
    n = selected_page_count(t.context_lens, 16, 32)
    for s in range(t.n_steps):
        for layer in range(t.n_layers):
            for r in range(t.pages.shape[2]):
                full = t.pages[s, layer, r]
                if (full < 0).all():
                    assert (small.pages[s, layer, r] < 0).all()
                    continue
                np.testing.assert_array_equal(small.pages[s, layer, r, : n[s]], np.sort(full[: n[s]]))
    assert t.at_budget(64).budget == 64
    with pytest.raises(ParameterError, match="'budget'"):
        t.at_budget(128)
    with pytest.raises(ParameterError, match="'budget'"):
        make_trace(budget=48).at_budget(32)  # a sorted trace answers only its own budget


def test_check_shape_names_the_field():
    t = make_trace(layers=2, kv=2, g=2)
    t.check_shape(2, 2, 2)
    for args, field in (((3, 2, 2), "n_layers"), ((2, 4, 2), "n_kv_heads"), ((2, 2, 3), "group_size")):
        with pytest.raises(ParameterError, match=rf"trace\.{field}"):
            t.check_shape(*args)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"gqa": "per_kv"}, "trace.gqa"),
        ({"page_order": "random"}, "trace.page_order"),
        ({"budget": 0}, "trace.budget"),
        ({"model": ""}, "trace.model"),
        ({"source": []}, "trace.source"),
        ({"context_lens": np.array([0, 1, 2])}, "trace.context_lens"),
        ({"retrieval_mask": np.ones((2, 2), dtype=int)}, "trace.retrieval_mask"),
    ],
)
def test_bad_fields(change, field):
    t = make_trace()
    kwargs = {f: getattr(t, f) for f in ("model", "page_size", "budget", "gqa", "group_size", "retrieval_mask", "context_lens", "pages", "source", "page_order")}
    kwargs.update(change)
    with pytest.raises(ParameterError, match=field.replace(".", r"\.")):
        PageTrace(**kwargs)


def test_bad_pages():
    t = make_trace(order="score_rank")
    pages = t.pages.copy()
    pages[0, 0, 0, 0] = t.n_pages(0) - 1  # the current page is never stored
    with pytest.raises(ParameterError, match="trace.pages"):
        PageTrace(t.model, 16, t.budget, t.gqa, t.group_size, t.retrieval_mask, t.context_lens, pages, page_order="score_rank")
    pages = t.pages.copy()
    pages[0, 0, 0, 0] = -1  # a hole before a selected page
    with pytest.raises(ParameterError, match="padding only at the end"):
        PageTrace(t.model, 16, t.budget, t.gqa, t.group_size, t.retrieval_mask, t.context_lens, pages, page_order="score_rank")
    pages = t.pages.copy()
    pages[0, 0, 0, 1] = pages[0, 0, 0, 0]
    with pytest.raises(ParameterError, match="repeated"):
        PageTrace(t.model, 16, t.budget, t.gqa, t.group_size, t.retrieval_mask, t.context_lens, pages, page_order="score_rank")
    with pytest.raises(ParameterError, match="trace.pages"):
        PageTrace(t.model, 16, t.budget, t.gqa, t.group_size, t.retrieval_mask, t.context_lens, t.pages[:, :1], page_order="score_rank")


def test_load_errors(tmp_path):
    with pytest.raises(ParameterError, match="'trace'"):
        load_trace(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ParameterError, match="'trace'"):
        load_trace(tmp_path / "junk.npz")
    path = make_trace().save(tmp_path / "t.npz")
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    meta = json.loads(str(arrays["meta"]))
    meta["format_version"] = 99
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(tmp_path / "v.npz", **arrays)
    with pytest.raises(ParameterError, match="format_version"):
        load_trace(tmp_path / "v.npz")


@settings(max_examples=40, deadline=None)
@given(
    steps=st.integers(1, 4), layers=st.integers(1, 3), kv=st.integers(1, 3), g=st.integers(1, 3),
    gqa=st.sampled_from(["group_sum", "group_max", "per_query_head"]), T0=st.integers(1, 300),
    page_size=st.sampled_from([1, 4, 16]), budget=st.integers(1, 200), seed=st.integers(0, 99),
)
def test_shapes_and_reads(steps, layers, kv, g, gqa, T0, page_size, budget, seed):
    t = make_trace(steps, layers, kv, g, gqa, T0, page_size, budget, "score_rank", seed)
    for s in range(steps):
        mask = t.kv_head_page_mask(s)
        assert mask.shape == (layers, kv, t.n_pages(s))
        assert (mask[~t.retrieval_mask] == False).all()  # noqa: E712
        assert mask[t.retrieval_mask][:, -1].all()  # the current page is always read
        reads = t.tokens_read(s)
        assert (reads[t.retrieval_mask] <= t.context_lens[s]).all()
        n = int(selected_page_count(t.context_lens[s], page_size, budget))
        rows_per = g if gqa == "per_query_head" else 1
        assert (mask[t.retrieval_mask][:, :-1].sum(-1) <= min(n * rows_per, t.n_pages(s) - 1)).all()
    if budget > 1:
        small = t.at_budget(max(1, budget // 2))
        assert small.pages.shape[:3] == t.pages.shape[:3]
