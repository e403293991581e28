import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2eal_core.models.shape import (
    ModelShape,
    list_model_shapes,
    load_model_shape,
    model_shape_from_dict,
    model_shape_from_hf_config,
)
from h2eal_core.validation import ParameterError

SPEC_TABLE = {  # SPEC section 3: layers, hidden, q heads, kv heads, head dim, ffn, vocab, type
    "smollm2-135m": (30, 576, 9, 3, 64, 1536, 49152, "GQA"),
    "llama-3.2-1b": (16, 2048, 32, 8, 64, 8192, 128256, "GQA"),
    "llama-3.2-3b": (28, 3072, 24, 8, 128, 8192, 128256, "GQA"),
    "qwen2.5-1.5b": (28, 1536, 12, 2, 128, 8960, 151936, "GQA"),
    "qwen2.5-3b": (36, 2048, 16, 2, 128, 11008, 151936, "GQA"),
    "qwen2.5-coder-0.5b": (24, 896, 14, 2, 64, 4864, 151936, "GQA"),  # issue 10: the second real model
    "phi-3.5-mini": (32, 3072, 32, 32, 96, 8192, 32064, "MHA"),
    "gemma-2b": (18, 2048, 8, 1, 256, 16384, 256000, "MQA"),
    "llama-2-7b-32k": (32, 4096, 32, 32, 128, 11008, 32000, "MHA"),
    "mistral-7b-v0.2": (32, 4096, 32, 8, 128, 14336, 32000, "GQA"),
    "llama-3.1-8b": (32, 4096, 32, 8, 128, 14336, 128256, "GQA"),
}


def test_every_spec_model_has_a_yaml():
    assert sorted(SPEC_TABLE) == list_model_shapes()


@pytest.mark.parametrize("name", sorted(SPEC_TABLE))
def test_shape_matches_spec_and_published_parameter_count(name):
    s = load_model_shape(name)
    assert (s.n_layers, s.hidden_size, s.n_q_heads, s.n_kv_heads, s.head_dim, s.ffn_size, s.vocab_size, s.attention_type) == SPEC_TABLE[name]
    # the closed-form count must equal the count published on the model card
    assert s.n_parameters == s.published_parameters


def test_closed_forms():
    s = load_model_shape("llama-3.2-1b")
    assert s.kv_bytes(4096, 2) == 2 * 16 * 8 * 64 * 2 * 4096
    assert s.weight_bytes(2) == s.n_parameters * 2
    assert s.group_size == 4


def test_unknown_name_lists_known_names():
    with pytest.raises(ParameterError) as err:
        load_model_shape("llama-9b")
    assert err.value.name == "model"
    assert "'llama-3.2-1b'" in str(err.value)


def test_declared_attention_type_must_match():
    base = load_model_shape("gemma-2b").to_dict()
    data = {k: base[k] for k in ("name", "display_name", "n_layers", "hidden_size", "n_q_heads", "n_kv_heads", "head_dim", "ffn_size", "vocab_size", "max_context")}
    with pytest.raises(ParameterError, match="attention_type"):
        model_shape_from_dict({**data, "attention_type": "GQA"})
    with pytest.raises(ParameterError, match="n_kv_heads"):
        model_shape_from_dict({**data, "n_kv_heads": 3})
    with pytest.raises(ParameterError, match="colour"):
        model_shape_from_dict({**data, "colour": "blue"})


def test_from_hf_config_matches_yaml():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
        vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True, head_dim=64,
    )
    s = model_shape_from_hf_config(cfg, "smollm2-135m")
    assert s.n_parameters == load_model_shape("smollm2-135m").n_parameters


@settings(max_examples=25, deadline=None)
@given(
    layers=st.integers(1, 8), kv=st.integers(1, 8), group=st.integers(1, 4), d=st.sampled_from([16, 32, 64]),
    ffn=st.integers(1, 512), vocab=st.integers(1, 1000), tied=st.booleans(), bias=st.booleans(),
)
def test_parameter_count_equals_torch_llama(layers, kv, group, d, ffn, vocab, tied, bias):
    """The closed form counts exactly the parameters of a real (random) Llama of that shape."""
    transformers = pytest.importorskip("transformers")
    hidden = kv * group * d
    cfg = transformers.LlamaConfig(
        num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=kv * group, num_key_value_heads=kv,
        head_dim=d, intermediate_size=ffn, vocab_size=vocab, tie_word_embeddings=tied, attention_bias=bias,
    )
    model = transformers.LlamaForCausalLM(cfg)
    counted = sum(p.numel() for p in model.parameters())
    shape = ModelShape(
        name="t", display_name="t", n_layers=layers, hidden_size=hidden, n_q_heads=kv * group, n_kv_heads=kv,
        head_dim=d, ffn_size=ffn, vocab_size=vocab, max_context=128, tie_word_embeddings=tied, attention_bias=bias,
    )
    # Llama's attention_bias also adds an o_proj bias (hidden); our formula models Qwen2's q/k/v bias only
    extra = hidden * layers if bias else 0
    assert shape.n_parameters + extra == counted
