"""The real SmolLM2-135M: a ~2K-token passkey under ``full`` and ``h2eal`` (budget 512, 50% heads).

Retrieval heads: the 50% of KV heads with the most long-range attention mass (outside sink +
local) on a separate calibration passkey prompt (other key, depth and length). A plain spread
mask (``spread_retrieval_mask``) makes most of this model's needle-reading heads streaming heads
and does not answer: head choice matters, which is the point of identification.
"""

import logging

import numpy as np
import pytest
import torch

from h2eal_core.attention import SparseAttentionConfig, generate_with_policy, long_range_attention_mass
from h2eal_core.attention.hf import apply_policy

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.slow  # loads the real model (~25 s) and runs ~2K-token prompts

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
INTRO = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.\n"
)


def passkey_prompt(tokenizer, n_tokens: int, key: int, depth: float) -> torch.Tensor:
    """Plain-text passkey prompt of about ``n_tokens`` tokens, the needle at ``depth`` of the filler."""
    n = max(1, (n_tokens - 80) // len(tokenizer(FILLER).input_ids))
    parts = [FILLER] * n
    parts.insert(int(round(n * depth)), f"The pass key is {key}. Remember it. {key} is the pass key. ")
    text = INTRO + "".join(parts) + "\nWhat is the pass key? The pass key is"
    return tokenizer(text, return_tensors="pt").input_ids


@pytest.fixture(scope="module")
def smollm2():
    from h2eal_core.models.loading import load_model

    return load_model("smollm2-135m", device="cpu")


def test_full_policy_keeps_smollm2_logits(smollm2):
    model, tokenizer = smollm2
    ids = passkey_prompt(tokenizer, 120, 123, 0.5)
    with torch.no_grad():
        ref = model(ids).logits
        with apply_policy(model, "full"):
            assert torch.equal(model(ids).logits, ref)


def test_passkey_at_2k_under_full_and_h2eal(smollm2):
    model, tokenizer = smollm2
    cfg = model.config
    config = SparseAttentionConfig(budget=512)

    calibration = passkey_prompt(tokenizer, 1000, 36014, 0.4)
    mass = long_range_attention_mass(model, calibration, config, n_queries=8)
    assert mass.shape == (cfg.num_hidden_layers, cfg.num_key_value_heads)
    order = np.argsort(-mass.ravel(), kind="stable")
    heads = np.zeros(mass.size, dtype=bool)
    heads[order[: mass.size // 2]] = True
    heads = heads.reshape(mass.shape)

    key = 71432
    ids = passkey_prompt(tokenizer, 2000, key, 0.5)
    assert 1800 <= ids.shape[1] <= 2200  # about 2K tokens
    answers, stats = {}, {}
    for policy in ("full", "h2eal"):
        result = generate_with_policy(
            model, ids, policy, config, heads, max_new_tokens=7, decode_prompt_tail=12, prefill_chunk_size=1024
        )
        answers[policy] = tokenizer.decode(result.new_tokens[0])
        stats[policy] = result.stats
        logger.info("%s: %r %s", policy, answers[policy], result.stats)
        print(policy, repr(answers[policy]), {k: result.stats[k] for k in ("kv_bytes_stored", "kv_bytes_stored_dense", "metadata_bytes_stored", "read_fraction")})
    assert str(key) in answers["full"]
    assert str(key) in answers["h2eal"]

    full, h2 = stats["full"], stats["h2eal"]
    assert full["kv_bytes_stored"] == full["kv_bytes_stored_dense"]
    # streaming heads keep sink + local tokens: the cache is smaller by exactly their dropped tokens
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * h2["bytes_per_element"]
    T = h2["kv_bytes_stored_dense"] // per_token
    assert ids.shape[1] <= T < ids.shape[1] + 7
    n_streaming = int((~heads).sum())
    dropped = n_streaming * (T - config.streaming_window) * 2 * cfg.head_dim * h2["bytes_per_element"]
    assert h2["kv_bytes_stored"] == h2["kv_bytes_stored_dense"] - dropped
    assert h2["metadata_bytes_stored"] > 0 and h2["read_fraction"] < 0.5
