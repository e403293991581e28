"""Hugging Face integration on a tiny random Llama (built from a config: no download, CPU)."""

import warnings

import numpy as np
import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from h2eal_core.attention import (
    SparseAttentionConfig,
    head_access,
    hybrid_decode,
    model_access,
    spread_retrieval_mask,
)
from h2eal_core.attention.hf import (
    POLICIES,
    PolicyCache,
    apply_policy,
    cache_kwarg,
    chunked_prefill,
    generate_with_policy,
    policy_head_kinds,
)
from h2eal_core.validation import ParameterError

L, HQ, HKV, D = 3, 4, 2, 16
CONFIG = SparseAttentionConfig(sink=4, local=16, page_size=8, budget=32)
HEADS = spread_retrieval_mask(L, HKV, 0.5)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=97, hidden_size=HQ * D, intermediate_size=128, num_hidden_layers=L,
        num_attention_heads=HQ, num_key_value_heads=HKV, max_position_embeddings=512, eos_token_id=None,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 97, (1, 120), generator=torch.Generator().manual_seed(1))


def run(model, ids, cache, n_prefill):
    """Prefill ``n_prefill`` tokens, then decode the rest one by one; logits of every fed position."""
    kw = cache_kwarg(model)
    with torch.no_grad():
        out = [model(ids[:, :n_prefill], **{kw: cache}).logits]
        for i in range(n_prefill, ids.shape[1]):
            out.append(model(ids[:, i : i + 1], **{kw: cache}).logits)
    return torch.cat(out, dim=1)


def test_full_policy_reproduces_the_unpatched_logits_exactly(model, ids):
    implementation = model.config._attn_implementation
    with torch.no_grad():
        ref_one_shot = model(ids).logits
    ref_decode = run(model, ids, DynamicCache(), 100)
    with apply_policy(model, "full") as handle:
        assert model.config._attn_implementation == f"h2eal_{implementation}"
        with torch.no_grad():
            assert torch.equal(model(ids).logits, ref_one_shot)
        assert torch.equal(run(model, ids, handle.new_cache(), 100), ref_decode)
        assert torch.equal(run(model, ids, DynamicCache(), 100), ref_decode)
        stats = handle.stats()
    assert model.config._attn_implementation == implementation
    assert stats["read_fraction"] == 1.0 and stats["decode_steps"] == 40  # two decode runs of 20
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref_one_shot)  # restored


def test_eager_models_work_too(model, ids):
    """A model on ``eager`` attention: ``full`` calls eager (float masks); h2eal runs on its cache."""
    model.set_attn_implementation("eager")
    try:
        ref = run(model, ids, DynamicCache(), 110)
        with apply_policy(model, "full") as handle:
            assert model.config._attn_implementation == "h2eal_eager"
            assert torch.equal(run(model, ids, handle.new_cache(), 110), ref)
        with apply_policy(model, "h2eal", CONFIG, HEADS) as handle:
            torch.testing.assert_close(
                run(model, ids, handle.new_cache(), 110), run(model, ids, DynamicCache(), 110), atol=1e-5, rtol=1e-5
            )
        assert model.config._attn_implementation == "eager"
    finally:
        model.set_attn_implementation("sdpa")


@pytest.mark.parametrize("policy", POLICIES)
def test_policy_cache_equals_the_masked_simulation(model, ids, policy):
    """The cache that drops tokens gives the logits of the same policy on a cache that keeps all."""
    with apply_policy(model, policy, CONFIG, HEADS) as handle:
        sparse = run(model, ids, handle.new_cache(), 96)
        stats = handle.stats()
        simulated = run(model, ids, DynamicCache(), 96)
        sim_stats = handle.stats()
    torch.testing.assert_close(sparse, simulated, atol=1e-5, rtol=1e-5)
    assert stats["cache"] == "policy" and sim_stats["cache"] == "dense (simulated)"
    dense_bytes = 2 * L * HKV * ids.shape[1] * D * 4
    assert stats["kv_bytes_stored_dense"] == dense_bytes == sim_stats["kv_bytes_stored"]
    if policy in ("streaming_llm", "duo", "h2eal"):
        assert stats["kv_bytes_stored"] < dense_bytes
    else:
        assert stats["kv_bytes_stored"] == dense_bytes
    assert (stats["metadata_bytes_stored"] > 0) == (policy in ("quest", "h2eal"))
    assert (stats["read_fraction"] < 1) == (policy != "full")


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_generates_and_matches_generate_with_policy(model, ids, policy):
    with apply_policy(model, policy, CONFIG, HEADS) as handle, torch.no_grad():
        out = model.generate(ids, max_new_tokens=6, do_sample=False, **{cache_kwarg(model): handle.new_cache()})
        stats = handle.stats()
    assert out.shape == (1, ids.shape[1] + 6)
    assert stats["decode_steps"] == 5
    result = generate_with_policy(model, ids, policy, CONFIG, HEADS, max_new_tokens=6)
    assert torch.equal(result.sequences, out)
    assert result.stats["decode_steps"] == 5


def test_dense_prefix_written_with_update_then_sparse_decode(model, ids):
    """A dense prefill injected with ``cache.update`` (the accuracy study's fast path) then decoded."""
    kw = cache_kwarg(model)
    with torch.no_grad():
        prefix = DynamicCache()
        model(ids[:, :100], **{kw: prefix})
        kv = [(layer.keys, layer.values) for layer in prefix.layers]
        with apply_policy(model, "h2eal", CONFIG, HEADS) as handle:
            cache, plain = handle.new_cache(), DynamicCache()
            for layer, (k, v) in enumerate(kv):
                cache.update(k, v, layer)
                plain.update(k, v, layer)
            outs = [torch.cat([model(ids[:, i : i + 1], **{kw: c}).logits for i in range(100, 120)], 1) for c in (cache, plain)]
            assert handle.stats()["cache"] == "dense (simulated)"  # the last run used the plain cache
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    assert cache.kv_bytes()["kv"] < cache.kv_bytes()["dense"]


def test_cache_passed_as_past_key_values(model, ids):
    """The name the accuracy study uses (deprecated in favour of ``cache`` by transformers 5)."""
    with apply_policy(model, "h2eal", CONFIG, HEADS) as handle, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        out = model.generate(ids, max_new_tokens=3, do_sample=False, past_key_values=handle.new_cache())
        stats = handle.stats()
    assert out.shape[1] == ids.shape[1] + 3 and stats["cache"] == "policy" and stats["decode_steps"] == 2


def test_generation_stops_at_end_of_sequence(model, ids):
    first = generate_with_policy(model, ids, "h2eal", CONFIG, HEADS, max_new_tokens=4, decode_prompt_tail=3)
    assert first.new_tokens.shape == (1, 4)
    model.generation_config.eos_token_id = int(first.new_tokens[0, 1])
    try:
        stopped = generate_with_policy(model, ids, "h2eal", CONFIG, HEADS, max_new_tokens=4, decode_prompt_tail=3)
    finally:
        model.generation_config.eos_token_id = None
    assert torch.equal(stopped.new_tokens, first.new_tokens[:, :2])
    assert stopped.stats["decode_steps"] == 3 + 1


def test_streaming_prefill_does_not_depend_on_the_chunk_size(model, ids):
    one = generate_with_policy(model, ids, "streaming_llm", CONFIG, max_new_tokens=1)
    logits = {}
    for chunk in (None, 7, 50):
        with apply_policy(model, "streaming_llm", CONFIG) as handle, torch.no_grad():
            cache = handle.new_cache()
            logits[chunk] = chunked_prefill(model, ids, cache, chunk)
            assert cache.kv_bytes()["kv"] == 2 * L * HKV * (CONFIG.sink + CONFIG.local) * D * 4
    for chunk in (7, 50):
        torch.testing.assert_close(logits[chunk], logits[None], atol=1e-5, rtol=1e-5)
    assert int(logits[None].argmax()) == int(one.new_tokens[0, 0])


@pytest.mark.parametrize("policy", POLICIES)
def test_measured_reads_and_storage_match_the_closed_form(model, ids, policy):
    """One decode step at context T: per-head reads, stored tokens and metadata equal head_access."""
    T = ids.shape[1]
    with apply_policy(model, policy, CONFIG, HEADS) as handle, torch.no_grad():
        cache = handle.new_cache()
        kw = cache_kwarg(model)
        model(ids[:, : T - 1], **{kw: cache})
        handle.reset_stats()
        model(ids[:, T - 1 :], **{kw: cache})
        per_head, stats = handle.head_stats(), handle.stats()
    kinds = policy_head_kinds(policy, L, HKV, CONFIG, HEADS)
    closed = [[head_access(kd, T, CONFIG, D, HQ // HKV) for kd in row] for row in kinds]
    field = lambda name: np.array([[getattr(a, name) for a in row] for row in closed])  # noqa: E731
    np.testing.assert_array_equal(per_head["tokens_read"], field("tokens_read"))
    np.testing.assert_array_equal(per_head["tokens_stored"], field("tokens_stored"))
    np.testing.assert_array_equal(per_head["metadata_elements_read"], field("metadata_elements_read"))
    assert stats["kv_bytes_stored"] == 2 * field("tokens_stored").sum() * D * 4
    assert stats["metadata_bytes_stored"] == field("metadata_elements_stored").sum() * 4
    assert stats["kv_tokens_read"] == field("tokens_read").sum()
    assert stats["kv_tokens_read_dense"] == L * HKV * T
    if policy in ("quest", "h2eal"):  # the hardware model's entry point agrees too
        acc = model_access(L, HKV, D, HQ // HKV, T, CONFIG, kinds != "streaming")
        np.testing.assert_array_equal(per_head["tokens_read"], acc.tokens_read)
        assert stats["kv_bytes_stored"] == acc.kv_bytes_stored(4.0)


def test_attention_function_equals_hybrid_decode(model):
    """The registered function, called on given K/V, computes hybrid_decode for its layer."""
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, HQ, 1, D, generator=gen)
    k, v = torch.randn(1, HKV, 100, D, generator=gen), torch.randn(1, HKV, 100, D, generator=gen)
    config = CONFIG.replace(dense_layers=1)
    with apply_policy(model, "h2eal", config, HEADS) as handle:
        for layer in range(L):
            module = model.model.layers[layer].self_attn
            out, _ = handle.attention(module, q, k, v, None, scaling=D**-0.5)
            ref = hybrid_decode(q[:, :, 0], k, v, HEADS[layer], config, layer_idx=layer)
            torch.testing.assert_close(out[:, 0], ref, atol=1e-6, rtol=1e-6)


def test_batch_of_equal_length_prompts(model):
    ids = torch.randint(0, 97, (2, 90), generator=torch.Generator().manual_seed(5))
    both = generate_with_policy(model, ids, "h2eal", CONFIG, HEADS, max_new_tokens=3, decode_prompt_tail=4)
    first = generate_with_policy(model, ids[:1], "h2eal", CONFIG, HEADS, max_new_tokens=3, decode_prompt_tail=4)
    assert torch.equal(both.new_tokens[:1, : first.new_tokens.shape[1]], first.new_tokens)
    assert both.stats["decode_steps"] == first.stats["decode_steps"]


def test_errors(model, ids):
    with pytest.raises(ParameterError, match="'policy'.*did you mean 'h2eal'"):
        apply_policy(model, "h2eall")
    with pytest.raises(ParameterError, match="'retrieval_heads'.*needs it"):
        apply_policy(model, "duo")
    with pytest.raises(ParameterError, match="'retrieval_heads'.*shape"):
        apply_policy(model, "h2eal", retrieval_heads=np.ones((L, HKV + 1), dtype=bool))
    with pytest.raises(ParameterError, match="'retrieval_heads'.*binarise"):
        apply_policy(model, "h2eal", retrieval_heads=np.full((L, HKV), 0.7))
    with pytest.raises(ParameterError, match="'config'"):
        apply_policy(model, "quest", config={"budget": 8})
    with pytest.raises(ParameterError, match="'decode_prompt_tail'"):
        generate_with_policy(model, ids, "full", decode_prompt_tail=ids.shape[1] + 1)
    with pytest.raises(ParameterError, match="'input_ids'"):
        generate_with_policy(model, ids.float(), "full")
    handle = apply_policy(model, "h2eal", CONFIG, torch.as_tensor(HEADS))
    with handle:
        with pytest.raises(RuntimeError, match="already applied"):
            apply_policy(model, "full").__enter__()
        cache = handle.new_cache()
        padded = torch.ones(1, 30, dtype=torch.long)
        padded[0, :3] = 0
        with pytest.raises(ParameterError, match="'attention_mask'.*padding"), torch.no_grad():
            model(ids[:, :30], attention_mask=padded, **{cache_kwarg(model): handle.new_cache()})
    assert isinstance(cache, PolicyCache)
    with pytest.raises(RuntimeError, match="not active"), torch.no_grad():
        model(ids[:, :5], **{cache_kwarg(model): cache})
