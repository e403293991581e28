"""Selectors plugged into the Hugging Face policy: the default equals the built-in Quest path, the
oracle is used when asked, a budget that covers the context makes every selector dense."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from h2eal_core.attention.config import SparseAttentionConfig
from h2eal_core.attention.hf import apply_policy, chunked_prefill, forward_last_logits, generate_with_policy
from h2eal_core.attention.selectors import OraclePageSelector, QuestBoundSelector
from h2eal_core.validation import ParameterError


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory(seed=3, layers=2)


def _ids(n, seed=0):
    return torch.randint(0, 49152, (1, n), generator=torch.Generator().manual_seed(seed))


def _run(model, cfg, selector, n=200, tail=8):
    pages = []
    with apply_policy(model, "quest", cfg, selector=selector) as handle, torch.inference_mode():
        handle.add_selection_observer(lambda layer, heads, sel: pages.append(sel.page_mask().clone()))
        cache = handle.new_cache()
        ids = _ids(n)
        chunked_prefill(model, ids[:, : n - tail], cache)
        logits = [forward_last_logits(model, ids[:, i : i + 1], cache) for i in range(n - tail, n)]
    return torch.stack(logits), pages


@pytest.mark.parametrize("gqa", ["group_sum", "per_query_head"])
def test_named_default_selector_equals_the_builtin_path(model, gqa):
    cfg = SparseAttentionConfig(sink=4, local=16, page_size=8, budget=32, gqa=gqa)
    a, pa = _run(model, cfg, None)
    b, pb = _run(model, cfg, QuestBoundSelector(gqa=gqa))
    assert torch.equal(a, b)
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))


def test_oracle_selects_other_pages_and_covers_the_exact_best(model):
    cfg = SparseAttentionConfig(sink=4, local=16, page_size=8, budget=32, gqa="per_query_head")
    _, quest_pages = _run(model, cfg, None)
    _, oracle_pages = _run(model, cfg, "oracle")
    assert len(oracle_pages) == len(quest_pages) > 0
    assert all(o.sum() == q.sum() for o, q in zip(oracle_pages, quest_pages))  # same budget
    assert any(not torch.equal(o, q) for o, q in zip(oracle_pages, quest_pages))  # a different ranking


@pytest.mark.parametrize("selector", [None, "oracle", OraclePageSelector("group_sum", rank="attention_mass")])
def test_budget_covering_the_context_is_dense_for_every_selector(model, selector):
    ids = _ids(120, seed=1)
    cfg = SparseAttentionConfig(sink=4, local=16, page_size=8, budget=4096, gqa="group_sum")
    full = generate_with_policy(model, ids, "full", cfg, max_new_tokens=4, decode_prompt_tail=4)
    sparse = generate_with_policy(model, ids, "quest", cfg, max_new_tokens=4, decode_prompt_tail=4, selector=selector)
    assert torch.equal(full.sequences, sparse.sequences)
    assert sparse.stats["read_fraction"] == pytest.approx(1.0)


def test_selector_errors_name_the_parameter(model):
    cfg = SparseAttentionConfig(gqa="group_sum")
    with pytest.raises(ParameterError, match="'selector'"):
        apply_policy(model, "quest", cfg, selector="oracel")
    with pytest.raises(ParameterError, match="'selector.gqa'"):
        apply_policy(model, "quest", cfg, selector=QuestBoundSelector(gqa="per_query_head"))
