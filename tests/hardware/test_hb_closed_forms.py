"""The analytic HB model against closed forms and physical bounds, over the whole default grid."""

import math

import numpy as np
import pytest

from h2eal_core.attention.accounting import head_access
from h2eal_core.attention.config import SparseAttentionConfig
from h2eal_core.hardware import (
    BREAKDOWN_CATEGORIES,
    DEFAULT_CONTEXTS,
    DESIGN_NAMES,
    Design,
    load_hardware,
    simulate_decode,
    simulate_grid,
)
from h2eal_core.models.shape import list_model_shapes, load_model_shape
from h2eal_core.validation import ParameterError

HW = load_hardware()
MODELS = list_model_shapes()


@pytest.fixture(scope="module")
def grid():
    return simulate_grid(MODELS, DEFAULT_CONTEXTS, DESIGN_NAMES, HW, results=True)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("context", [4096, 131072])
def test_dense_baseline_kv_and_weight_bytes(name, context):
    m = load_model_shape(name)
    r = simulate_decode(m, HW, context, "baseline")
    b = HW.kv_bytes
    assert r.bytes["kv_read"] == 2 * m.n_layers * m.n_kv_heads * m.head_dim * b * context
    assert r.bytes["metadata"] == 0
    assert r.extras["weight_bytes_stored"] == m.n_parameters * HW.weight_bytes
    # read per step: every parameter except the embedding table, plus one embedding row and the LM head
    read_params = m.n_parameters - m.embedding_parameters + m.hidden_size + (m.embedding_parameters if m.tie_word_embeddings else 0)
    assert r.bytes["weights"] == read_params * HW.weight_bytes
    assert r.bytes["kv_written"] == 2 * m.n_layers * m.n_kv_heads * m.head_dim * b


def test_sparse_kv_bytes_match_the_accounting():
    m = load_model_shape("llama-3.2-1b")
    cfg = SparseAttentionConfig()
    r = simulate_decode(m, HW, 65536, "h2eal", cfg)
    retrieval = head_access("retrieval", 65536, cfg, m.head_dim, m.group_size)
    streaming = head_access("streaming", 65536, cfg, m.head_dim, m.group_size)
    n_ret = round(0.5 * m.n_layers * m.n_kv_heads)
    n_str = m.n_layers * m.n_kv_heads - n_ret
    tokens = n_ret * retrieval.tokens_read + n_str * streaming.tokens_read
    assert r.bytes["kv_read"] == 2 * m.head_dim * HW.kv_bytes * tokens
    meta = n_ret * retrieval.metadata_elements_read * HW.kv_bytes
    assert r.bytes["metadata"] == pytest.approx(meta + n_ret * 2 * m.head_dim * HW.kv_bytes)
    stored = (n_ret * (retrieval.tokens_stored * 2 * m.head_dim + retrieval.metadata_elements_stored) + n_str * streaming.tokens_stored * 2 * m.head_dim) * HW.kv_bytes
    assert r.extras["kv_stored_bytes"] == pytest.approx(stored)


def test_bounds_and_sums_on_the_whole_grid(grid):
    for r in grid:
        hb_bytes = r.bytes["hb_dram"]
        ext = r.bytes["external"]
        # latency >= bytes / aggregate bandwidth of each tier; energy >= DRAM bits x pJ/bit
        assert r.latency_s >= hb_bytes / HW.aggregate_bandwidth * (1 - 1e-12)
        assert r.latency_s >= ext / HW.external_bandwidth * (1 - 1e-12)
        assert r.energy_j >= 8 * hb_bytes * HW.hb_dram_energy + 8 * ext * HW.external_energy
        attn_bytes = r.bytes["kv_read"] + r.bytes["metadata"]
        assert r.attention_latency_s >= (attn_bytes - ext) / HW.aggregate_bandwidth * (1 - 1e-12)
        assert r.attention_energy_j >= 8 * (attn_bytes + r.bytes["kv_written"] - ext) * HW.hb_dram_energy
        # breakdowns add up, no negative part
        assert set(r.time_breakdown) == set(BREAKDOWN_CATEGORIES)
        assert math.isclose(sum(r.time_breakdown.values()), r.latency_s, rel_tol=1e-9)
        assert math.isclose(sum(r.energy_breakdown.values()), r.energy_j, rel_tol=1e-9)
        assert math.isclose(sum(r.attention_time_breakdown.values()), r.attention_latency_s, rel_tol=1e-9)
        assert math.isclose(sum(r.attention_layer_s), r.attention_latency_s, rel_tol=1e-9)
        assert min(r.time_breakdown.values()) >= 0 and min(r.energy_breakdown.values()) >= 0
        assert r.attention_latency_s < r.latency_s and r.attention_energy_j < r.energy_j
        assert 0 < r.bank_utilization <= 1 + 1e-9
        assert r.energy_breakdown["static"] == pytest.approx(HW.static_power * r.latency_s)
        # per-bank bytes account for every HB byte read (weights, KV, metadata, remote), nothing else
        assert r.per_bank_bytes.sum() == pytest.approx(
            r.bytes["weights"] + r.bytes["kv_read"] + r.bytes["metadata"] - meta_written(r) - ext, rel=1e-9
        )


def meta_written(r):
    m = load_model_shape(r.model)
    if r.design == "baseline":
        return 0.0
    n_ret = round(r.extras["retrieval_ratio"] * m.n_layers * m.n_kv_heads) * r.batch
    return n_ret * 2 * m.head_dim * HW.kv_bytes


def test_h2eal_never_slower_than_baseline_and_ablation_order(grid):
    by = {(r.model, r.context_len, r.design): r for r in grid}
    worst = []
    for name in MODELS:
        for T in DEFAULT_CONTEXTS:
            base, coplace, h2 = (by[(name, T, d)] for d in ("baseline", "coplace", "h2eal"))
            assert h2.latency_s <= base.latency_s, (name, T)
            assert h2.attention_latency_s <= base.attention_latency_s, (name, T)
            assert h2.attention_energy_j <= base.attention_energy_j, (name, T)
            # the scheduler never hurts: h2eal is at least as fast as co-placement with per-group scheduling
            assert h2.attention_latency_s <= coplace.attention_latency_s * (1 + 1e-9), (name, T)
            worst.append(base.attention_latency_s / h2.attention_latency_s)
    assert min(worst) > 1


def test_streaming_heads_free_capacity_and_overflow_goes_external():
    phi = load_model_shape("phi-3.5-mini")
    base = simulate_decode(phi, HW, 131072, "baseline")
    h2 = simulate_decode(phi, HW, 131072, "h2eal")
    assert base.extras["kv_stored_bytes"] == phi.kv_bytes(131072, HW.kv_bytes)
    assert h2.extras["kv_stored_bytes"] < 0.35 * base.extras["kv_stored_bytes"]  # 75% streaming heads
    free = HW.total_capacity - phi.n_parameters * HW.weight_bytes
    # the home layout stores whole token-equivalents per bank: at most one unit of capacity per bank is lost
    slack = HW.n_banks * 2 * phi.head_dim * HW.kv_bytes
    assert 0 <= base.extras["external_bytes_stored"] - (base.extras["kv_stored_bytes"] - free) <= slack
    assert base.bytes["external"] > 0 and h2.bytes["external"] == 0
    assert base.time_breakdown["external"] > 0.5 * base.latency_s
    short = simulate_decode(phi, HW, 4096, "baseline")
    assert short.bytes["external"] == 0 and short.extras["spilled_fraction"] == 0


def test_batch_repeats_kv_but_reads_weights_once():
    one = simulate_decode("llama-3.2-1b", HW, 16384, "baseline", batch=1)
    four = simulate_decode("llama-3.2-1b", HW, 16384, "baseline", batch=4)
    assert four.bytes["kv_read"] == 4 * one.bytes["kv_read"]
    assert four.bytes["weights"] == one.bytes["weights"]
    assert four.energy_breakdown["compute"] > 3.9 * one.energy_breakdown["compute"]
    assert four.tokens_per_s > one.tokens_per_s


def test_mqa_has_one_group_so_coplacement_equals_h2eal_latency():
    a = simulate_decode("gemma-2b", HW, 32768, "coplace")
    b = simulate_decode("gemma-2b", HW, 32768, "h2eal")
    assert a.attention_latency_s == pytest.approx(b.attention_latency_s, rel=1e-6)


def test_explicit_retrieval_mask():
    m = load_model_shape("llama-3.2-1b")
    none = np.zeros((m.n_layers, m.n_kv_heads), dtype=bool)
    every = np.ones((m.n_layers, m.n_kv_heads), dtype=bool)
    r0 = simulate_decode(m, HW, 32768, "h2eal", retrieval_mask=none)
    r1 = simulate_decode(m, HW, 32768, "h2eal", retrieval_mask=every)
    assert r0.bytes["metadata"] == 0 and r0.extras["retrieval_ratio"] == 0
    assert r1.extras["retrieval_ratio"] == 1 and r1.bytes["kv_read"] > r0.bytes["kv_read"]
    with pytest.raises(ParameterError, match="retrieval_mask"):
        simulate_decode(m, HW, 32768, "h2eal", retrieval_mask=every[:, :4])


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"design": "h2eel"}, "did you mean 'h2eal'"),
        ({"context_len": 0}, "context_len"),
        ({"batch": -1}, "batch"),
        ({"tile_size": 0}, "tile_size"),
        ({"model": "llama-9b"}, "llama-3.2-1b"),
        ({"hw": "nope"}, "h2eal_hb"),
    ],
)
def test_bad_arguments_raise_parameter_error(kwargs, fragment):
    args = {"model": "llama-3.2-1b", "hw": "h2eal_hb", "context_len": 4096, "design": "h2eal"} | kwargs
    with pytest.raises(ParameterError, match=fragment):
        simulate_decode(**args)


def test_to_dict_is_flat_and_complete():
    r = simulate_decode("smollm2-135m", HW, 8192, "h2eal")
    d = r.to_dict()
    assert all(np.isscalar(v) or isinstance(v, str) for v in d.values())
    for key in ("latency_s", "energy_j", "attention_latency_s", "attention_energy_j", "bank_utilization", "bytes_noc", "energy_merge_j", "time_page_selection_s"):
        assert key in d
