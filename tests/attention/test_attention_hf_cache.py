"""The preallocated PolicyCache (issue 12): growing full-context buffers, in-place page metadata,
the streaming ring store (a decode step attends it as one view), prefill chunks after the ring has
turned, and the fused dense decode kernel. Tiny random Llama, CPU (and CUDA when present)."""

import pytest
import torch
from transformers import DynamicCache

from h2eal_core.attention import SparseAttentionConfig, quest_page_metadata, spread_retrieval_mask
from h2eal_core.attention import hf
from h2eal_core.attention.hf import POLICIES, apply_policy, cache_kwarg
from h2eal_core.validation import ParameterError

L, HQ, HKV, D = 3, 4, 2, 16
CONFIG = SparseAttentionConfig(sink=4, local=16, page_size=8, budget=32)
HEADS = spread_retrieval_mask(L, HKV, 0.5)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory(
        seed=0, layers=L, vocab_size=97, hidden_size=HQ * D, intermediate_size=128,
        num_attention_heads=HQ, num_key_value_heads=HKV, max_position_embeddings=512, eos_token_id=None,
    )


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 97, (1, 150), generator=torch.Generator().manual_seed(2))


def run(model, ids, cache, schedule):
    """Feed ``ids`` in the chunk sizes of ``schedule`` (1 = a decode step); logits of every position."""
    kw, out, s = cache_kwarg(model), [], 0
    with torch.no_grad():
        for n in schedule:
            out.append(model(ids[:, s : s + n], **{kw: cache}).logits)
            s += n
    return torch.cat(out, dim=1)


# prefill, decode past the window (the ring turns), a prefill chunk, decode again
SCHEDULE = [40] + [1] * 30 + [7] + [1] * 25 + [12] + [1] * 36


@pytest.mark.parametrize("policy", POLICIES)
def test_ring_store_and_chunks_after_decode_equal_the_masked_simulation(model, ids, policy):
    with apply_policy(model, policy, CONFIG, HEADS) as handle:
        sparse = run(model, ids, handle.new_cache(), SCHEDULE)
        simulated = run(model, ids, DynamicCache(), SCHEDULE)
    torch.testing.assert_close(sparse, simulated, atol=1e-5, rtol=1e-5)


def test_buffers_grow_and_metadata_is_refreshed_in_place(model, ids, monkeypatch):
    monkeypatch.setattr(hf, "CAPACITY_QUANTUM", 8)  # grow every few tokens
    with apply_policy(model, "h2eal", CONFIG, HEADS) as handle:
        cache = handle.new_cache()
        sparse = run(model, ids, cache, SCHEDULE)
        simulated = run(model, ids, DynamicCache(), SCHEDULE)
        for layer in cache.layers:
            T = layer.seen
            assert T == ids.shape[1] and layer.full_k.shape[2] == T and layer._fk.shape[2] >= T
            if layer.retrieval_rows:
                rows = layer.retrieval_rows
                fresh = quest_page_metadata(layer.full_k[:, rows], CONFIG.page_size)
                assert torch.equal(layer.meta.bounds, fresh.bounds)
            if layer.stream_heads:
                assert layer.stream_k.shape[2] == CONFIG.sink + CONFIG.local
                kept = sorted(layer.stream_pos.tolist())
                assert kept == list(range(CONFIG.sink)) + list(range(T - CONFIG.local, T))
        kv = cache.kv_bytes()
    torch.testing.assert_close(sparse, simulated, atol=1e-5, rtol=1e-5)
    assert kv["kv"] < kv["dense"] and kv["kv_allocated"] >= kv["kv"] and kv["metadata_allocated"] >= kv["metadata"] > 0


@pytest.mark.parametrize("device", DEVICES)
def test_fused_dense_decode_kernel_matches_the_model(model, ids, device):
    m = model.to(device)
    x = ids.to(device)
    try:
        with apply_policy(m, "full") as handle:
            ref = run(m, x, handle.new_cache(), [100] + [1] * 20)
        with apply_policy(m, "full", dense_decode_kernel="fused") as handle:
            fused = run(m, x, handle.new_cache(), [100] + [1] * 20)
            stats = handle.stats()
        torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
        assert torch.equal(fused[:, :100], ref[:, :100])  # prefill still runs the model's own attention
        assert stats["decode_steps"] == 20 and stats["read_fraction"] == 1.0
    finally:
        model.to("cpu")
    with pytest.raises(ParameterError, match="'dense_decode_kernel'"):
        apply_policy(model, "full", dense_decode_kernel="flash")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", ["streaming_llm", "h2eal"])
def test_policies_run_on_the_device(model, ids, device, policy):
    m = model.to(device)
    try:
        with apply_policy(m, policy, CONFIG, HEADS) as handle:
            out = run(m, ids.to(device), handle.new_cache(), [60] + [1] * 10)
            sim = run(m, ids.to(device), DynamicCache(), [60] + [1] * 10)
        assert out.device.type == torch.device(device).type
        torch.testing.assert_close(out, sim, atol=1e-5, rtol=1e-5)
    finally:
        model.to("cpu")
