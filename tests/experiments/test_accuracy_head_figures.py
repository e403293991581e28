"""Fig. 4 and Fig. 5 experiment functions on a tiny random Llama (real numbers come from SmolLM2)."""

import numpy as np
import pandas as pd
import pytest
import torch

from h2eal_core.attention.hf import long_range_attention_mass
from h2eal_core.experiments import head_sparsity as hs
from h2eal_core.experiments import hybrid_algorithm as ha
from h2eal_core.identify import write_gates
from h2eal_core.validation import ParameterError


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory(eos_token_id=None)


@pytest.fixture()
def gates_dir(tmp_path):
    write_gates(np.array([[0.9, 0.1], [0.2, 0.8]]), tmp_path)
    return str(tmp_path)


def test_head_sparsity_tables(tokenizer, model, gates_dir, shared_dir):
    duo = shared_dir / "third_party" / "duo_attention_patterns"
    out = hs.head_sparsity(
        "tiny", gates_dir, str(duo), tasks=("passkey",), length=300, n_samples=2, sink=4, local=16, n_queries=4,
        model_obj=model, tokenizer=tokenizer,
    )
    heads, summary = out["heads"], out["summary"]
    ours = hs.own_head_rows(heads)
    assert hs.PUBLISHED_SOURCE not in set(ours.source)
    assert len(ours) == 2 * 4 and set(ours.metric) == {"gate", "window_share"}
    window = ours[ours.metric == "window_share"].value.to_numpy()
    assert ((0 <= window) & (window <= 1)).all()
    assert out["agreement"].n_retrieval_heads.iloc[0] == 2
    pattern = out["pattern"].set_index(["context_len", "method"])
    assert len(pattern) == 8 and (pattern.retrieval_ratio == 0.5).all()
    assert pattern.loc[(8192, "h2eal"), "kv_read_fraction"] < pattern.loc[(8192, "duo"), "kv_read_fraction"]
    assert pattern.loc[(8192, "h2eal"), "kv_stored_fraction"] == pattern.loc[(8192, "duo"), "kv_stored_fraction"]
    if duo.is_dir():
        published = summary[summary.source == hs.PUBLISHED_SOURCE]
        assert len(published) == 6 and len(heads) > len(ours)
        assert published.set_index("model").loc["Llama-2-7B-32K-Instruct", "retrieval_ratio"] == 0.25
        assert (published.layers == 32).all()


def test_window_share_is_one_minus_the_long_range_mass(tokenizer, model):
    from h2eal_core.attention import SparseAttentionConfig
    from h2eal_core.tasks import generate_sample

    share = hs.measured_window_share(model, tokenizer, tasks=("qa",), length=300, n_samples=1, sink=4, local=16, n_queries=4)
    s = generate_sample("qa", tokenizer, 300, 0, 0)
    mass = long_range_attention_mass(model, np.asarray(s.input_ids), SparseAttentionConfig(sink=4, local=16), n_queries=4)
    np.testing.assert_allclose(share, 1 - mass)


def test_decode_attention_pages(model):
    ids = torch.randint(0, 49152, (200,), generator=torch.Generator().manual_seed(2)).numpy()
    obs = ha.decode_attention_pages(model, ids, n_queries=3, page_size=16, budget=64, sink=4, local=16)
    steps, L, H, P = obs["page_mass"].shape
    assert (steps, L, H, P) == (3, 2, 2, 13)
    np.testing.assert_allclose(obs["page_mass"].sum(-1), 1.0, rtol=1e-5)  # attention sums to one
    assert (obs["selected"].sum(-1) == 4).all(), "budget 64 / page 16 = 4 pages, the current one included"
    assert obs["selected"][:, :, :, -1].all()
    assert ((obs["recall"] > 0) & (obs["recall"] <= 1 + 1e-6)).all()
    # the selected pages hold at least the mass of the same number of pages chosen blindly, on average
    assert obs["recall"].mean() > 4 / 13 - 0.05
    with pytest.raises(ParameterError, match="n_queries"):
        ha.decode_attention_pages(model, ids[:3], n_queries=3)


def test_hybrid_example_and_curves(tokenizer, model, gates_dir, tmp_path):
    out = ha.hybrid_example(
        "tiny", gates_dir, task="passkey", length=300, n_queries=3, page_size=16, budget=64, sink=4, local=16,
        model_obj=model, tokenizer=tokenizer,
    )
    heads, pages = out["heads"], out["pages"]
    assert list(heads.role) == ["retrieval", "streaming", "streaming", "retrieval"]
    assert set(pages.example) == {"retrieval", "streaming"}
    streaming = pages[pages.example == "streaming"].iloc[0]
    assert (streaming.layer, streaming.kv_head) == (0, 1)  # the lowest gate
    assert pages.needle.any()
    with pytest.raises(ParameterError, match="gates_dir"):
        ha.training_curves(tmp_path)
    mask = ha.streaming_mask_table(10, sink=2, local=3)
    assert len(mask) == 100
    grid = mask.pivot(index="query", columns="key", values="allowed").to_numpy()
    assert grid[9].tolist() == [True, True, False, False, False, False, False, True, True, True]
    assert not np.triu(grid, 1).any()
    pd.testing.assert_frame_equal(mask, ha.streaming_mask_table(10, sink=2, local=3))
