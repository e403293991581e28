"""Gate files (DuoAttention TSV) in and out, validation, binarisation, published gates."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from h2eal_core.attention import SparseAttentionConfig
from h2eal_core.identify import (
    binarize,
    format_gates,
    pattern_summary,
    random_retrieval_mask,
    read_gate_config,
    read_gates,
    retrieval_order,
    write_gates,
)
from h2eal_core.validation import ParameterError

PUBLISHED = {  # folder -> (layers, KV heads), from the folder's README
    "Llama-2-7B-32K-Instruct": (32, 32),
    "Llama-3-8B-Instruct-Gradient-1048k": (32, 8),
    "Llama-3-8B-Instruct-Gradient-4194k": (32, 8),
    "Meta-Llama-3.1-8B-Instruct": (32, 8),
    "Mistral-7B-Instruct-v0.2": (32, 8),
    "Mistral-7B-Instruct-v0.3": (32, 8),
}


def test_round_trip_is_exact(tmp_path):
    alpha = np.random.default_rng(0).uniform(size=(30, 3))
    write_gates(alpha, tmp_path, {"lr": 0.02, "sink_size": 128})
    text = (tmp_path / "full_attention_heads.tsv").read_text()
    assert text.count("\n") == 30 and text.splitlines()[0].count("\t") == 2
    assert np.array_equal(read_gates(tmp_path, shape=(30, 3)), alpha)
    assert np.array_equal(read_gates(tmp_path / "full_attention_heads.tsv"), alpha)
    assert read_gate_config(tmp_path) == {"lr": 0.02, "sink_size": 128}
    assert not list(tmp_path.glob("*.tmp*")), "atomic writes leave no temporary files"


def test_validation_and_clipping(tmp_path):
    alpha = np.array([[-1e-3, 0.5], [1.0, 1.2]])
    (tmp_path / "full_attention_heads.tsv").write_text(format_gates(alpha))
    assert np.array_equal(read_gates(tmp_path), [[0.0, 0.5], [1.0, 1.0]])
    assert read_gates(tmp_path, clip=False)[0, 0] == -1e-3
    with pytest.raises(ParameterError, match=r"shape \(30, 3\)"):
        read_gates(tmp_path, shape=(30, 3))
    with pytest.raises(ParameterError, match="gates path"):
        read_gates(tmp_path / "missing")
    (tmp_path / "full_attention_heads.tsv").write_text("0.1\tnan\n0.2\t0.3\n")
    with pytest.raises(ParameterError, match="finite"):
        read_gates(tmp_path)


def test_shape_checked_against_a_model_config(tmp_path):
    from transformers import LlamaConfig

    cfg = LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32)
    write_gates(np.ones((2, 2)), tmp_path)
    assert read_gates(tmp_path, model=cfg).shape == (2, 2)
    write_gates(np.ones((2, 4)), tmp_path)
    with pytest.raises(ParameterError, match="another model"):
        read_gates(tmp_path, model=cfg)


gates = arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 8)), elements=st.sampled_from([0.0, 0.25, 0.5, 1.0]))


@settings(max_examples=200, deadline=None)
@given(gates, st.floats(0, 1))
def test_binarize_ratio_exact_and_ties_deterministic(alpha, ratio):
    mask = binarize(alpha, ratio)
    assert mask.shape == alpha.shape and mask.dtype == bool
    assert mask.sum() == int(round(ratio * alpha.size))
    if mask.any() and (~mask).any():
        assert alpha[mask].min() >= alpha[~mask].max()  # a global quantile
        # ties: among equal gates at the cut, the later (layer, head) is the retrieval head
        cut = alpha[mask].min()
        flat, fm = alpha.ravel(), mask.ravel()
        tied = np.flatnonzero(flat == cut)
        chosen = tied[fm[tied]]
        assert np.array_equal(chosen, tied[len(tied) - len(chosen):])
    assert np.array_equal(mask, binarize(alpha.copy(), ratio))
    assert np.array_equal(alpha, alpha)  # input not mutated (DuoAttention's routine mutates it)


def test_binarize_ties_example_and_order():
    alpha = np.ones((2, 3))
    assert binarize(alpha, 0.5).tolist() == [[False, False, False], [True, True, True]]
    assert retrieval_order(np.array([[0.2, 0.1], [0.1, 0.3]])).tolist() == [1, 2, 0, 3]


def test_binarize_per_layer():
    alpha = np.array([[0.9, 0.8, 0.7, 0.0], [0.1, 0.2, 0.3, 0.4]])
    assert binarize(alpha, 0.5).tolist() == [[True, True, True, False], [False, False, False, True]]
    assert binarize(alpha, 0.5, per_layer=True).tolist() == [[True, True, False, False], [False, False, True, True]]
    with pytest.raises(ParameterError, match="ratio"):
        binarize(alpha, 1.5)


def test_random_mask():
    m = random_retrieval_mask(30, 3, 0.5, seed=1)
    assert m.sum() == 45 and m.shape == (30, 3)
    assert np.array_equal(m, random_retrieval_mask(30, 3, 0.5, seed=1))
    assert not np.array_equal(m, random_retrieval_mask(30, 3, 0.5, seed=2))


def test_pattern_summary_fractions():
    cfg = SparseAttentionConfig(sink=64, local=256, page_size=16, budget=1024)
    mask = np.zeros((4, 2), dtype=bool)
    mask[:, 0] = True
    T = 8192
    h2eal = pattern_summary(mask, cfg, T, head_dim=64, group_size=3)
    duo = pattern_summary(mask, cfg, T, head_dim=64, group_size=3, quest_retrieval=False)
    assert h2eal["retrieval_ratio"] == duo["retrieval_ratio"] == 0.5
    assert duo["kv_read_fraction"] == pytest.approx(0.5 + 0.5 * 320 / T)
    assert duo["kv_stored_fraction"] == pytest.approx(0.5 + 0.5 * 320 / T)
    assert h2eal["kv_stored_fraction"] == duo["kv_stored_fraction"]  # Quest keeps every token
    assert h2eal["kv_read_fraction"] == pytest.approx(0.5 * 1024 / T + 0.5 * 320 / T)


@pytest.mark.parametrize("folder, shape", sorted(PUBLISHED.items()))
def test_published_duo_gates_load_with_the_right_shapes(shared_dir, folder, shape):
    path = shared_dir / "third_party" / "duo_attention_patterns" / folder
    if not path.is_dir():
        pytest.skip(f"published DuoAttention gates not present at {path}")
    alpha = read_gates(path, shape=shape)
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    raw = read_gates(path, shape=shape, clip=False)
    assert raw.min() > -0.01  # tiny negatives only, clipped away
    cfg = read_gate_config(path)
    assert cfg["sink_size"] == 128 and cfg["recent_size"] == 256 and cfg["reg_weight"] == 0.05
    ratio = 0.25 if shape[1] == 32 else 0.5
    assert binarize(alpha, ratio).sum() == round(ratio * alpha.size)
    with pytest.raises(ParameterError):
        read_gates(path, shape=(shape[0], shape[1] + 1))
    json.dumps(cfg)
