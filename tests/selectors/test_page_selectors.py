"""Page selectors: Quest's per-query-head selection equals an independent repeat-KV reference; the
oracle ranks pages exactly and never misses the page that holds the largest q.k."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

from h2eal_core.attention.selectors import OraclePageSelector, QuestBoundSelector, get_selector, selection_recall
from h2eal_core.validation import ParameterError


def _reference_quest_per_query_head(q, k, page_size, budget):
    """Quest's reference recipe, written independently: repeat the KV heads to the query heads,
    compute each page's min/max key, score every page with sum_c max(q_c min_c, q_c max_c), and keep
    the current page plus the top (ceil(budget/page)-1) others. Returns a set of pages per (b, query head)."""
    B, Hq, D = q.shape
    Hkv, T = k.shape[1], k.shape[2]
    g = Hq // Hkv
    kr = k.repeat_interleave(g, dim=1)  # [B, Hq, T, D]
    P = math.ceil(T / page_size)
    out, gaps = {}, []
    for b in range(B):
        for h in range(Hq):
            scores = []
            for p in range(P - 1):
                page = kr[b, h, p * page_size:(p + 1) * page_size]
                mn, mx = page.min(0).values, page.max(0).values
                scores.append(float(torch.maximum(q[b, h] * mn, q[b, h] * mx).sum()))
            n_sel = min(math.ceil(budget / page_size) - 1, P - 1)
            ranked = sorted(scores, reverse=True)
            if 0 < n_sel < P - 1:
                gaps.append(ranked[n_sel - 1] - ranked[n_sel])
            order = sorted(range(P - 1), key=lambda p: -scores[p])[:n_sel]
            out[(b, h)] = set(order) | {P - 1}
    return out, min(gaps, default=float("inf"))


def _sets(selection):
    m = selection.page_mask()
    return {(b, h): set(torch.nonzero(m[b, h]).flatten().tolist()) for b in range(m.shape[0]) for h in range(m.shape[1])}


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 2), Hkv=st.integers(1, 3), g=st.integers(1, 4), D=st.sampled_from([4, 8]),
    page_size=st.sampled_from([2, 4, 16]), n_full=st.integers(2, 12), tail=st.integers(0, 3),
    budget_pages=st.integers(1, 6), seed=st.integers(0, 10_000),
)
def test_quest_per_query_head_equals_the_repeat_kv_reference(B, Hkv, g, D, page_size, n_full, tail, budget_pages, seed):
    gen = torch.Generator().manual_seed(seed)
    T = n_full * page_size + min(tail, page_size - 1)
    q = torch.randn(B, Hkv * g, D, generator=gen)
    k = torch.randn(B, Hkv, T, D, generator=gen)
    budget = budget_pages * page_size
    if T <= budget:
        budget = max(1, T - 1)  # force real selection
    sel = QuestBoundSelector("per_query_head").select(q.unflatten(1, (Hkv, g)), k, None, T, page_size, budget)
    assert not sel.dense
    ref, margin = _reference_quest_per_query_head(q.double(), k.double(), page_size, budget)
    assume(margin > 1e-4)  # no near-tie at the selection boundary (float32 vs float64 order)
    assert _sets(sel) == ref


@settings(max_examples=30, deadline=None)
@given(Hkv=st.integers(1, 3), g=st.integers(1, 3), n_full=st.integers(3, 10), budget_pages=st.integers(2, 4),
       gqa=st.sampled_from(["per_query_head", "group_max"]), seed=st.integers(0, 10_000))
def test_oracle_never_misses_the_page_of_the_largest_score(Hkv, g, n_full, budget_pages, gqa, seed):
    gen = torch.Generator().manual_seed(seed)
    page_size, D = 4, 8
    T = n_full * page_size + 1
    q = torch.randn(1, Hkv * g, D, generator=gen)
    k = torch.randn(1, Hkv, T, D, generator=gen)
    qg = q.unflatten(1, (Hkv, g))
    sel = OraclePageSelector(gqa).select(qg, k, None, T, page_size, budget_pages * page_size)
    logits = torch.einsum("bhgd,bhtd->bhgt", qg, k)[..., : (T // page_size) * page_size]  # non-current pages
    page_max = logits.unflatten(-1, (-1, page_size)).amax(-1)  # [1, Hkv, g, P-1]
    top2 = page_max.flatten(2).topk(2, dim=-1).values if gqa == "group_max" else page_max.topk(2, dim=-1).values
    assume(bool((top2[..., 0] - top2[..., 1] > 1e-4).all()))  # no near-tie between the best two pages
    best_page = logits.argmax(-1) // page_size  # [1, Hkv, g]
    mask = sel.page_mask()
    for h in range(Hkv):
        for j in range(g):
            row = h * g + j if gqa == "per_query_head" else h
            if gqa == "per_query_head":
                assert mask[0, row, best_page[0, h, j]]
            else:  # group_max: the group's overall best page is kept
                flat = logits[0, h].flatten().argmax() % logits.shape[-1] // page_size
                assert mask[0, row, flat]


def test_oracle_bounds_quest_on_recall_of_the_exact_top_pages():
    gen = torch.Generator().manual_seed(0)
    Hkv, g, D, page_size, T = 2, 3, 16, 8, 8 * 40 + 3
    q = torch.randn(1, Hkv * g, D, generator=gen)
    k = torch.randn(1, Hkv, T, D, generator=gen)
    qg = q.unflatten(1, (Hkv, g))
    oracle = OraclePageSelector("per_query_head").select(qg, k, None, T, page_size, 64)
    quest = QuestBoundSelector("per_query_head").select(qg, k, None, T, page_size, 64)
    assert torch.all(selection_recall(oracle, oracle) == 1)
    assert torch.all(selection_recall(quest, oracle) <= 1)
    assert oracle.page_mask().sum(-1).tolist() == quest.page_mask().sum(-1).tolist()  # same pages per row


@pytest.mark.parametrize("selector", [QuestBoundSelector(), OraclePageSelector(), OraclePageSelector(rank="attention_mass")])
def test_context_within_budget_is_read_densely(selector):
    q = torch.randn(1, 2, 3, 8)
    k = torch.randn(1, 2, 40, 8)
    sel = selector.select(q, k, None, 40, 16, 64)
    assert sel.dense and sel.page_mask().all()


def test_bad_selector_arguments_name_the_parameter():
    with pytest.raises(ParameterError, match="'gqa'"):
        QuestBoundSelector("per_head")
    with pytest.raises(ParameterError, match="'rank'"):
        OraclePageSelector(rank="mass")
    with pytest.raises(ParameterError, match="'selector'.*did you mean 'oracle'"):
        get_selector("oracel")
    with pytest.raises(ParameterError, match="'keys'"):
        OraclePageSelector().select(torch.randn(1, 1, 1, 4), None, None, 100, 4, 8)
