"""The accuracy study on a 2-worker Dask ``LocalCluster`` equals the in-process study, resumes from the
same cache and measures nothing twice (a tiny random Llama on the real SmolLM2 tokenizer)."""

import pandas as pd
import pytest

from h2eal_core.experiments import accuracy as acc
from h2eal_core.experiments import accuracy_cluster as cl
from h2eal_core.validation import ParameterError

distributed = pytest.importorskip("distributed")


def tiny_study_model(config):
    """The model loader the workers import: ``tiny_model_factory(eos_token_id=None)`` of ``tests/conftest.py``
    (the same seed and shape, built here at module level so that worker processes can import it) with
    the SmolLM2 tokenizer from its GGUF."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from h2eal_core.models.loading import smollm2_gguf_path

    path = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=4096, eos_token_id=None)
    return LlamaForCausalLM(cfg).eval(), tokenizer


@pytest.fixture(scope="module")
def gguf():
    from h2eal_core.models.loading import smollm2_gguf_path

    try:
        return smollm2_gguf_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def study(gates_dir, **kw):
    # batch_tokens = length: one sample per unit, the (model, task, length, sample) unit
    base = dict(
        gates_dir=gates_dir, tasks=("passkey", "qa"), lengths=(320,), n_samples=2, methods=("full", "quest", "h2eal"),
        sink=4, local=16, page_size=8, budget=48, decode_tail=None, batch_tokens=320,
    )
    return acc.AccuracyStudyConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def client():
    import logging

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.WARNING) as cluster, Client(cluster) as c:
        yield c


def test_cluster_study_equals_the_in_process_study_and_resumes(gguf, gates_dir, tmp_path, client, monkeypatch):
    model, tok = tiny_study_model(None)
    shared = tmp_path / "shared"
    # half of the study measured in process first: the cluster computes only the rest, in the same file
    acc.run_accuracy_study(study(gates_dir, n_samples=1), cache_dir=shared, model=model, tokenizer=tok, progress=False)
    cfg = study(gates_dir)

    # an interrupted call (Ctrl-C in the driver after the first unit is written) keeps that unit only
    original, added = acc.ResultCache.add, []

    def interrupted(self, records):
        if added:
            raise KeyboardInterrupt
        added.append(len(records))
        original(self, records)

    monkeypatch.setattr(acc.ResultCache, "add", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cl.run_accuracy_study_on_cluster(cfg, client=client, cache_dir=shared, model_loader=tiny_study_model, progress=False)
    monkeypatch.undo()
    assert added == [3], "one unit: one sample, its three methods"

    cluster = cl.run_accuracy_study_on_cluster(cfg, client=client, cache_dir=shared, model_loader=tiny_study_model,
                                               progress=False)
    assert cluster.attrs["computed_samples"] == 1 and cluster.attrs["computed_units"] == 1  # the one still missing
    reference = acc.run_accuracy_study(cfg, cache_dir=tmp_path / "reference", model=model, tokenizer=tok, progress=False)
    assert len(reference) == 2 * 2 * 3
    assert cluster.attrs["cache_path"].rsplit("/", 1)[1] == reference.attrs["cache_path"].rsplit("/", 1)[1], "same identity"
    assert set(reference.batch_size) == {1}
    pd.testing.assert_frame_equal(cluster.drop(columns="seconds"), reference.drop(columns="seconds"))
    assert cluster.attrs["heads"].digest("h2eal") == reference.attrs["heads"].digest("h2eal")
    path = shared / cluster.attrs["cache_path"].rsplit("/", 1)[1]
    assert len(path.read_text().splitlines()) == 1 + len(reference), "identity line + each record once"

    # a rerun measures nothing and writes nothing
    before = path.read_bytes()
    again = cl.run_accuracy_study_on_cluster(cfg, client=client, cache_dir=shared, model_loader=tiny_study_model,
                                             progress=False)
    assert again.attrs["computed_units"] == 0 and again.attrs["computed_samples"] == 0
    assert path.read_bytes() == before
    pd.testing.assert_frame_equal(again, cluster)


def test_units_are_the_in_process_batches():
    """Samples of one (task, decode tail, missing methods) in one index block form one unit, in the
    in-process study's order."""
    cfg = acc.AccuracyStudyConfig(gates_dir="g", tasks=("passkey", "qa"), lengths=(1000, 4000), n_samples=3,
                                  methods=("full", "quest"), batch_tokens=2000, decode_tail=None)
    samples = [(t, L, i, f"{t}-{L}-{i}", 30 if t == "qa" and i == 1 else 20) for L in cfg.lengths for t in cfg.tasks
               for i in range(3)]
    missing = {s[3]: ("full", "quest") for s in samples}
    missing["passkey-1000-0"] = ("quest",)
    del missing["qa-4000-2"]
    units = cl.plan_units(cfg, samples, missing)
    got = [(u["start"], u["length"], u["task"], u["tail"], u["methods"], u["indices"]) for u in units]
    assert got == [
        (0, 1000, "passkey", 20, ("full", "quest"), (1,)),
        (0, 1000, "passkey", 20, ("quest",), (0,)),
        (0, 1000, "qa", 20, ("full", "quest"), (0,)),
        (0, 1000, "qa", 30, ("full", "quest"), (1,)),
        (0, 4000, "passkey", 20, ("full", "quest"), (0,)),
        (0, 4000, "qa", 20, ("full", "quest"), (0,)),
        (1, 4000, "passkey", 20, ("full", "quest"), (1,)),
        (1, 4000, "qa", 30, ("full", "quest"), (1,)),
        (2, 1000, "passkey", 20, ("full", "quest"), (2,)),
        (2, 1000, "qa", 20, ("full", "quest"), (2,)),
        (2, 4000, "passkey", 20, ("full", "quest"), (2,)),
    ]


def test_bad_arguments_fail_before_any_cluster_starts(gates_dir):
    cfg = study(gates_dir)
    with pytest.raises(ParameterError, match="model_loader"):
        cl.run_accuracy_study_on_cluster(cfg, model_loader=lambda config: None)
    with pytest.raises(ParameterError, match="model_loader"):
        cl.run_accuracy_study_on_cluster(cfg, model_loader="h2eal_core.no_such_module:load")
    with pytest.raises(ParameterError, match="n_workers"):
        cl.run_accuracy_study_on_cluster(cfg, n_workers=0)
    with pytest.raises(ParameterError, match="scheduler"):
        cl.run_accuracy_study_on_cluster(cfg, scheduler="localhost")
    with pytest.raises(ParameterError, match="records_dir"):
        cl.run_accuracy_study_on_cluster(cfg, export_records=True)
    assert cl.loader_reference(None) == cl.DEFAULT_MODEL_LOADER
    assert cl.resolve_loader(cl.loader_reference(tiny_study_model)) is tiny_study_model
