"""Bad inputs at every public entry point: a one-line error naming the parameter, the value and what
is allowed, no traceback from deep inside numpy, torch or yaml, and no file changed.

Entry points: the command line (``python -m h2eal_core reproduce|run``), ``load_model``,
``load_hardware``, ``load_model_shape``, ``simulate_decode``, ``SparseAttentionConfig`` /
``apply_policy`` and the identification CLI (``python -m h2eal_core.identify``). Every notebook's
parameters are covered by the generated ``test_notebook_parameters.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from h2eal_core.__main__ import main
from h2eal_core.validation import ParameterError

from reliability_checks import REPO, assert_names, assert_parameter_error, tree_digest

# ---- command line ---------------------------------------------------------------------------------

CLI_CASES = [
    # (argv, parameter named, value named)
    (["reproduce", "--profile", "fast"], "profile", "fast"),
    (["reproduce", "--only", "fig99_nothing"], "only", "fig99_nothing"),
    (["reproduce", "--profile", "quick", "--jobs", "0"], "jobs", 0),
    (["prepare", "--profile", "fast", "--dest", "{tmp}/nbval"], "profile", "fast"),
    (["report", "--profile", "fast"], "profile", "fast"),
    (["run", "fig99_nothing"], "notebook", "fig99_nothing"),
    (["run", "tab2_models", "-p", "contxt_len", "1024"], "contxt_len", "1024"),
    (["run", "tab2_models", "-p", "context_len", "1k"], "context_len", "1k"),
    (["run", "tab2_models", "-p", "context_len", "1024.5"], "context_len", "1024.5"),
    (["run", "tab2_models", "-p", "context_len", "0"], "context_len", 0),
    (["run", "tab2_models", "-p", "bytes_per_element", "fast"], "bytes_per_element", "fast"),
    (["run", "tab2_models", "-p", "bytes_per_element", "-2"], "bytes_per_element", -2.0),
    (["run", "tab2_models", "-p", "edge_only", "yes"], "edge_only", "yes"),
    (["run", "tab2_models", "-p", "edge_only", "1"], "edge_only", "1"),
    (["run", "tab2_models", "-p", "models", "llama-3.2-1b"], "models", "llama-3.2-1b"),
    (["run", "tab2_models", "-p", "models", "[llama-9b]"], "models", "llama-9b"),
    (["run", "tab2_models", "-y", "models: [llama-9b]"], "models", "llama-9b"),
    (["run", "tab2_models", "-y", "[1, 2]"], "-y", None),
    (["run", "tab2_models", "-r", "context_len", "1024"], "context_len", "1024"),
    (["run", "tab2_models", "-p", "seed", "-1"], "seed", -1),
    (["run", "tab2_models", "-p", "figures_dir", ""], "figures_dir", ""),
    (["run", "fig01_context_trends", "-p", "log_scale", "yes"], "log_scale", "yes"),
    (["run", "fig01_context_trends", "-p", "since_year", "1990"], "since_year", 1990),
    (["run", "fig01_context_trends", "-p", "kinds", "[models]"], "kinds", "models"),
    (["run", "fig01_context_trends", "-p", "trends_csv", "no_such.csv"], "trends_csv", "no_such.csv"),
    (["run", "fig05_hybrid_algorithm", "-p", "page_size", "0"], "page_size", 0),
    (["run", "fig05_hybrid_algorithm", "-p", "task", "passkeys"], "task", "passkeys"),
    (["run", "fig04_head_sparsity", "-p", "tasks", "[passkeys]"], "tasks", "passkeys"),
    (["run", "fig04_head_sparsity", "-p", "gates_dir", "../data/head_patterns/none"], "gates_dir", "../data/head_patterns/none"),
    (["run", "fig04_head_sparsity", "-p", "model", "llama-9b"], "model", "llama-9b"),
    (["run", "fig09_speedup", "-p", "retrieval_ratio", "1.5"], "retrieval_ratio", 1.5),
    (["run", "fig09_speedup", "-p", "hardware", "no_such_hw"], "hardware", "no_such_hw"),
    (["run", "fig09_speedup", "-p", "contexts", "[4096, 0]"], "contexts", 0),
    (["run", "tab3_accuracy", "-p", "prefill", "sparse"], "prefill", "sparse"),
    (["run", "tab3_accuracy", "-p", "decode_tail", "0"], "decode_tail", 0),
    (["run", "tab3_accuracy", "-p", "methods", "[full, fastest]"], "methods", "fastest"),
    (["run", "tab3_accuracy", "-p", "lengths", "[]"], "lengths", None),
]


@pytest.mark.parametrize("argv, name, value", CLI_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_cli_refuses_with_one_line(argv, name, value, tmp_path, capsys, unchanged_repo, monkeypatch):
    monkeypatch.chdir(REPO)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    before = tree_digest(REPO / "build" / "run")
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: parameter "), captured.err
    assert_names(captured.err.removeprefix("error: "), name, value)
    assert tree_digest(REPO / "build" / "run") == before


def test_cli_yaml_syntax_error_names_the_line(capsys, unchanged_repo):
    assert main(["run", "tab2_models", "-y", "models: [a, b\ncontext_len: 3"]) == 2
    err = capsys.readouterr().err
    assert "-y value:2" in err and "valid YAML" in err and "line 2" in err
    assert_names(err.removeprefix("error: "), "-y value:2")


def _registry_copy(tmp_path, notebooks=("tab2_models", "fig01_context_trends")) -> Path:
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for n in notebooks:
        shutil.copy(REPO / "notebooks" / f"{n}.ipynb", nbdir)
    return nbdir / "profiles.yaml"


@pytest.mark.parametrize(
    "profiles, name, value",
    [
        ("quick: {contxt_len: 1024}", "contxt_len", 1024),
        ("quick: {edge_only: yes}", "edge_only", "yes"),
        ("quick: {context_len: -5}", "context_len", -5),
        ("quick: {models: gemma-2b}", "models", "gemma-2b"),
    ],
)
def test_registry_parameters_are_checked_before_any_kernel(profiles, name, value, tmp_path, capsys):
    path = _registry_copy(tmp_path)
    path.write_text(
        "profiles:\n  quick: {description: t, output_root: out}\n"
        f"notebooks:\n  tab2_models:\n    paper_item: X\n    parameters:\n      {profiles}\n"
    )
    assert main(["--registry", str(path), "reproduce", "--profile", "quick", "--no-progress"]) == 2
    assert_names(capsys.readouterr().err.removeprefix("error: "), name, value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "build").exists()


def test_registry_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    path = _registry_copy(tmp_path)
    path.write_text("profiles:\n  quick: {description: t, output_root: out\nnotebooks: {}\n")
    assert main(["--registry", str(path), "reproduce", "--profile", "quick"]) == 2
    err = capsys.readouterr().err
    assert "profiles.yaml:3" in err and "valid YAML" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_missing_registry_file(tmp_path, capsys):
    assert main(["--registry", str(tmp_path / "none.yaml"), "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: YAML file not found") and len(err.strip().splitlines()) == 1


def test_cli_subprocess_exit_code_and_one_line(repo, unchanged_repo):
    proc = subprocess.run([sys.executable, "-m", "h2eal_core", "run", "fig05_hybrid_algorithm", "-p", "page_size", "0"],
                          cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: parameter 'page_size' = 0 is invalid; allowed: an integer >= 1"


# ---- load_model -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name, value",
    [
        ({"device": "gpu"}, "device", "gpu"),
        ({"device": "cuda:0"}, "device", "cuda:0"),
        ({"dtype": "int8"}, "dtype", "int8"),
        ({"dtype": 16}, "dtype", 16),
        ({"name_or_path": "llama-9b"}, "model", "llama-9b"),
        ({"name_or_path": ""}, "model", ""),
        ({"name_or_path": 3}, "model", 3),
    ],
)
def test_load_model(kwargs, name, value, unchanged_repo):
    import torch

    from h2eal_core.models import load_model

    if name == "device" and value.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ParameterError) as err:
        load_model(**kwargs)
    assert_parameter_error(err, name, value)


def test_load_model_folder_without_config(tmp_path, unchanged_repo):
    from h2eal_core.models import load_model

    with pytest.raises(ParameterError) as err:
        load_model(str(tmp_path))
    assert_parameter_error(err, "model", str(tmp_path))


# ---- load_hardware --------------------------------------------------------------------------------

HW = REPO / "data" / "hardware" / "h2eal_hb.yaml"


def _hw_variant(tmp_path, edit) -> Path:
    data = yaml.safe_load(HW.read_text())
    edit(data)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _set(section, key, field, value):
    def edit(data):
        if value is KeyError:
            del data[section][key][field]
        else:
            data[section][key][field] = value
    return edit


@pytest.mark.parametrize(
    "edit, name, value, words",
    [
        (_set("memory", "bank_bandwidth", "value", -25.6), "memory:bank_bandwidth.value", -25.6, "must be positive"),
        (_set("memory", "bank_bandwidth", "value", 0), "memory:bank_bandwidth.value", 0, "must be positive"),
        (_set("memory", "bank_bandwidth", "value", "fast"), "memory:bank_bandwidth.value", "fast", "a number"),
        (_set("memory", "bank_bandwidth", "unit", "parsecs"), "memory:bank_bandwidth.unit", "parsecs", "one of"),
        (_set("memory", "bank_bandwidth", "unit", "pJ/bit"), "memory:bank_bandwidth.unit", "pJ/bit", "bytes/s"),
        (_set("memory", "bank_bandwidth", "unit", KeyError), "memory:bank_bandwidth", None, "unit"),
        (_set("memory", "bank_bandwidth", "band", [30, 40]), "memory:bank_bandwidth.band", None, "contains the value"),
        (_set("memory", "bank_bandwidth", "confidence", "sure"), "memory:bank_bandwidth.confidence", "sure", "high"),
        (_set("structure", "bank_capacity", "value", -256), "structure:bank_capacity.value", -256, "must be positive"),
        (_set("memory", "bank_bandwidth", "colour", "red"), "memory:bank_bandwidth.colour", "red", "keys"),
    ],
)
def test_load_hardware_bad_constant(edit, name, value, words, tmp_path, unchanged_repo):
    from h2eal_core.hardware import load_hardware

    path = _hw_variant(tmp_path, edit)
    with pytest.raises(ParameterError) as err:
        load_hardware(str(path))
    assert err.value.name.endswith(name), (err.value.name, name)
    assert words in str(err.value)
    assert_names(str(err.value), err.value.name, value)


def test_negative_bandwidth_is_a_sign_error_not_a_band_error(tmp_path):
    """Defect 3: a negative bank bandwidth was reported as 'not inside the band'."""
    from h2eal_core.hardware import load_hardware

    path = _hw_variant(tmp_path, _set("memory", "bank_bandwidth", "value", -25.6))
    with pytest.raises(ParameterError) as err:
        load_hardware(str(path))
    assert "must be positive" in str(err.value) and err.value.name.endswith(".value")


@pytest.mark.parametrize("value", ["no_such_hardware", 3, ""])
def test_load_hardware_unknown_name(value, unchanged_repo):
    from h2eal_core.hardware import load_hardware

    with pytest.raises(ParameterError) as err:
        load_hardware(value)
    assert_parameter_error(err, "hardware", value)


def test_load_hardware_yaml_syntax_error_names_file_and_line(tmp_path, unchanged_repo):
    """Defect 3: a malformed hardware YAML gave a raw yaml ScannerError."""
    from h2eal_core.hardware import load_hardware

    lines = HW.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "bank_bandwidth:" in line)
    lines[at + 1] = lines[at + 1].replace("value: 25.6", "value: [25.6")
    path = tmp_path / "broken.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ParameterError) as err:
        load_hardware(str(path))
    assert "broken.yaml:" in err.value.name and "valid YAML" in str(err.value)
    assert_names(str(err.value), err.value.name)


def test_yaml_tab_indentation_names_the_line(tmp_path):
    from h2eal_core.config import load_yaml

    path = tmp_path / "tabs.yaml"
    path.write_text("a:\n  b: 1\n\tc: 2\n")
    with pytest.raises(ParameterError) as err:
        load_yaml(path)
    assert err.value.name.endswith("tabs.yaml:3") and "\n" not in str(err.value)


# ---- load_model_shape -----------------------------------------------------------------------------

SHAPE = yaml.safe_load((REPO / "data" / "models" / "llama-3.2-1b.yaml").read_text())


@pytest.mark.parametrize(
    "change, name, value",
    [
        ({"n_layers": -1}, "n_layers", -1),
        ({"n_layers": 1.5}, "n_layers", 1.5),
        ({"n_kv_heads": 7}, "n_kv_heads", 7),
        ({"hidden_size": "big"}, "hidden_size", "big"),
        ({"colour": "red"}, "colour", "red"),
        ({"attention_type": "MHA"}, "attention_type", "MHA"),
        ({"attention_type": "XYZ"}, "attention_type", "XYZ"),
        ({"vocab_size": None}, "vocab_size", None),
    ],
)
def test_load_model_shape_bad_file(change, name, value, tmp_path, unchanged_repo):
    from h2eal_core.models import load_model_shape

    data = {**SHAPE, **change}
    if change.get("vocab_size", 0) is None:
        del data["vocab_size"]
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ParameterError) as err:
        load_model_shape(str(path))
    assert err.value.name.endswith("." + name), (err.value.name, name)
    assert_names(str(err.value), err.value.name, value)


@pytest.mark.parametrize("value", ["llama-9b", 3, ""])
def test_load_model_shape_unknown(value, unchanged_repo):
    from h2eal_core.models import load_model_shape

    with pytest.raises(ParameterError) as err:
        load_model_shape(value)
    assert_parameter_error(err, "model", value)


def test_load_model_shape_yaml_syntax(tmp_path):
    from h2eal_core.models import load_model_shape

    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nn_layers: [16\n")
    with pytest.raises(ParameterError) as err:
        load_model_shape(str(path))
    assert "broken.yaml:" in err.value.name and "\n" not in str(err.value)


# ---- simulate_decode ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name, value",
    [
        ({"model": "llama-9b"}, "model", "llama-9b"),
        ({"context_len": 0}, "context_len", 0),
        ({"context_len": 1024.5}, "context_len", 1024.5),
        ({"context_len": "1k"}, "context_len", "1k"),
        ({"design": "fastest"}, "design", "fastest"),
        ({"batch": 0}, "batch", 0),
        ({"batch": True}, "batch", True),
        ({"hw": "no_such_hw"}, "hardware", "no_such_hw"),
        ({"tile_size": -4}, "tile_size", -4),
        ({"tile_size": "big"}, "tile_size", "big"),
        ({"sparsity": "quest"}, "sparsity", None),
        ({"retrieval_mask": np.ones((1, 1), bool)}, "retrieval_mask", None),
    ],
)
def test_simulate_decode(kwargs, name, value, unchanged_repo):
    from h2eal_core.hardware import simulate_decode

    kwargs = {"model": "llama-3.2-1b", **kwargs}
    model = kwargs.pop("model")
    with pytest.raises(ParameterError) as err:
        simulate_decode(model, **kwargs)
    assert_parameter_error(err, name, value)


# ---- SparseAttentionConfig and apply_policy -------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name, value",
    [
        ({"sink": -1}, "sink", -1),
        ({"local": 0}, "local", 0),
        ({"page_size": 0}, "page_size", 0),
        ({"budget": 0}, "budget", 0),
        ({"retrieval_ratio": 1.5}, "retrieval_ratio", 1.5),
        ({"gqa": "mean"}, "gqa", "mean"),
    ],
)
def test_sparse_attention_config(kwargs, name, value, unchanged_repo):
    from h2eal_core.attention import SparseAttentionConfig

    with pytest.raises(ParameterError) as err:
        SparseAttentionConfig(**kwargs)
    assert_parameter_error(err, name, value)


@pytest.fixture(scope="module")
def tiny_model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize(
    "args, name, value",
    [
        (("h2eal_fast",), "policy", "h2eal_fast"),
        (("quest", "budget=512"), "config", None),
        (("duo",), "retrieval_heads", None),
        (("h2eal", None, np.ones((3, 2), bool)), "retrieval_heads", None),
    ],
)
def test_apply_policy(args, name, value, tiny_model, unchanged_repo):
    from h2eal_core.attention.hf import apply_policy

    with pytest.raises(ParameterError) as err:
        apply_policy(tiny_model, *args)
    assert_parameter_error(err, name, value)


# ---- the identification CLI -----------------------------------------------------------------------

IDENTIFY_CASES = [
    pytest.param(["--preset", "nope"], "--preset", id="preset"),
    pytest.param(["--max-steps", "x"], "--max-steps", id="max-steps-not-int"),
    pytest.param(["--set", "nosuch=1"], "nosuch", id="unknown-training-argument"),
    pytest.param(["--set", "num_steps=abc"], "num_steps", id="num_steps-not-int"),
    pytest.param(["--set", "lr=-1"], "lr", id="negative-lr"),
    pytest.param(["--max-steps", "-3"], "max_steps", id="negative-max-steps"),
    pytest.param(["--model", "llama-9b"], "model", id="unknown-model"),
]


@pytest.mark.parametrize("argv, name", IDENTIFY_CASES)
def test_identify_cli(argv, name, tmp_path, repo, unchanged_repo):
    out = tmp_path / "gates"
    proc = subprocess.run([sys.executable, "-m", "h2eal_core.identify", "--output", str(out), "--no-progress", *argv],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert name in last, last
    assert "Traceback" not in proc.stderr, proc.stderr[-500:]
    assert not out.exists()


# ---- the Fig. 4 / Fig. 5 experiment functions: checked before the model is loaded ------------------


@pytest.mark.parametrize(
    "func, kwargs, name, value",
    [
        ("hybrid_example", {"page_size": 0}, "page_size", 0),
        ("hybrid_example", {"budget": -256}, "budget", -256),
        ("hybrid_example", {"task": "passkeys"}, "task", "passkeys"),
        ("hybrid_example", {"gates_dir": "data/head_patterns/none"}, "gates_dir", "data/head_patterns/none"),
        ("head_sparsity", {"length": 0}, "length", 0),
        ("head_sparsity", {"sink": -1}, "sink", -1),
        ("head_sparsity", {"tasks": ("passkey", "riddle")}, "tasks", "riddle"),
        ("head_sparsity", {"pattern_contexts": (1024, 0)}, "pattern_contexts", 0),
    ],
)
def test_figure_experiments_refuse_before_loading_the_model(func, kwargs, name, value, unchanged_repo, monkeypatch):
    import h2eal_core.models.loading as loading
    from h2eal_core.experiments import head_sparsity, hybrid_algorithm

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the parameters were checked")

    monkeypatch.setattr(loading, "load_model", no_model)
    fn = getattr({"hybrid_example": hybrid_algorithm, "head_sparsity": head_sparsity}[func], func)
    with pytest.raises(ParameterError) as err:
        fn("smollm2-135m", **({"gates_dir": "data/head_patterns/smollm2-135m"} | kwargs))
    assert_parameter_error(err, name, value)
