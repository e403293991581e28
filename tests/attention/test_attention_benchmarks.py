"""The attention benchmarks' logic (no timing is asserted): the load check refuses below half the
idle copy bandwidth, the idle reference round-trips, runs are summarised by min and median, the
generation benchmark's instrumentation restores what it wraps."""

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load("bench_attention")


def test_load_check_refuses_below_half_the_idle_bandwidth(bench, monkeypatch, capsys):
    monkeypatch.setattr(bench, "copy_bandwidth", lambda device, repeats=8: 5.0)
    assert bench.check_load("cpu", 1, reference=9.0) == 5.0  # above half: measured
    assert bench.check_load("cpu", 1, reference=None) == 5.0  # no reference: warns, measures
    assert "no idle reference" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        bench.check_load("cpu", 1, reference=10.1)
    assert exc.value.code == 3
    assert "refusing to report" in capsys.readouterr().err


def test_idle_reference_is_stored_per_cpu_and_thread_count(bench, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "REFERENCE_FILE", tmp_path / "idle.json")
    monkeypatch.setattr(bench, "copy_bandwidth", lambda device, repeats=8: 12.5)
    assert bench.load_reference("cpu", 1, None) is None
    bench.calibrate("cpu", [1])
    assert bench.load_reference("cpu", 1, None) == 12.5
    assert bench.load_reference("cpu", 2, None) is None
    assert bench.load_reference("cpu", 2, 7.0) == 7.0  # an explicit value wins
    data = json.loads((tmp_path / "idle.json").read_text())
    assert all("load_avg_1min" in entry for entry in data.values())


def test_summary_gives_min_and_median_over_runs(bench):
    runs = pd.DataFrame({
        "threads": [1, 1, 1], "context_len": [8192] * 3, "fastest_dense": ["sdpa_grouped"] * 3,
        "dense_ms": [4.0, 4.2, 4.4], "hybrid_ms": [1.0, 1.1, 1.3], "ideal_speedup": [5.69] * 3,
        "speedup": [4.0, 3.8, 3.4], "efficiency": [0.70, 0.67, 0.60], "dense_decode_vs_fastest": [1.0, 1.02, 1.0],
        "quest_speedup": [2.0] * 3, "quest_ideal_speedup": [3.2] * 3, "quest_efficiency": [0.6] * 3,
        "dense_GBps": [8.0] * 3, "hybrid_GBps": [6.0] * 3, "copy_GBps": [15.0] * 3,
        "dense_sdpa_grouped_ms": [4.0, 4.2, 4.4], "load_avg_1min": [0.2, 0.4, 0.3],
        "hybrid_hot_ms": [0.8, 0.7, 0.9], "efficiency_hot_bound": [0.88, 1.05, 0.86],
    })
    s = bench.summarize(runs).iloc[0]
    assert s["runs"] == 3 and s["efficiency_min"] == 0.60 and s["efficiency_median"] == 0.67
    assert s["speedup_min"] == 3.4 and s["dense_decode_vs_fastest_max"] == 1.02 and s["load_avg_1min_max"] == 0.4
    assert s["hybrid_hot_ms_median"] == 0.8 and s["efficiency_hot_bound_median"] == 0.88
    table = bench.markdown_table(bench.summarize(runs))
    assert table.count("\n") == 3 and "| 1 | 8192 | sdpa_grouped |" in table


def test_generation_instrumentation_restores_the_integration():
    gen = load("bench_generation")
    hf = gen.hf
    before = (hf.PolicyHandle.attention, hf.PolicyCacheLayer.update, hf.attend, hf._original_function)
    with gen.instrument() as timers:
        assert hf.attend is not before[2]
        hf.attend  # wrapped
        timers.reset()
    assert (hf.PolicyHandle.attention, hf.PolicyCacheLayer.update, hf.attend, hf._original_function) == before


def test_hot_times_call_layer_zero_repeatedly(bench):
    calls = []
    hot = bench.hot_times({"f": lambda layer: calls.append(layer)}, repeats=2, device="cpu", calls=5)
    assert set(calls) == {0} and len(calls) == 1 + 2 * 5  # one warm-up call, then repeats x calls
    assert hot["f"] > 0


def test_generation_benchmark_models_and_outputs():
    from h2eal_core.models.shape import load_model_shape

    gen = load("bench_generation")
    assert gen.output_stem("smollm2-135m") == "bench_generation"  # the committed SmolLM2 artefacts keep their names
    assert gen.output_stem("qwen2.5-coder-0.5b") == "bench_generation_qwen2.5-coder-0.5b"
    for name, (_, contexts) in gen.MODELS.items():
        assert max(contexts) <= load_model_shape(name).max_context, name  # never beyond the native context
        assert (gen.GATE_ROOT / name / "full_attention_heads.tsv").is_file(), name  # identified gates committed
    with pytest.raises(SystemExit):
        gen.main(["--model", "llama-9b"])  # argparse refuses an unknown model before loading anything


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_prepared_device_script_runs_and_stays_within_what_the_device_tool_returns(tmp_path):
    """benchmarks/device_check.sh, the one prepared run for a lent GPU, on the CPU in a short form:
    it must finish, write the version header and both dtypes' tables, and leave at most 8 files no
    more than 2 folders deep (what the device tool brings back)."""
    import os
    import subprocess

    env = {
        **os.environ, "OUT": str(tmp_path / "out"), "DEVICE": "cpu", "CONTEXTS": "4096", "RUNS": "1", "TESTS": "",
        "PYTHON": sys.executable, "BENCH_ARGS": "--threads 1 --repeats 1 --working-set-mb 4 --idle-copy-gbps 0.001",
    }
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "out"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(["device.txt"] + [f"{dt}/bench_attention{s}" for dt in ("float16", "bfloat16") for s in (".csv", ".md", "_runs.csv")])
    assert len(files) <= 8 and all(f.count("/") <= 2 for f in files)
    log = (out / "device.txt").read_text()
    assert "torch " in log and log.count("exit code: 0") == 2, log
    for dt in ("float16", "bfloat16"):
        summary = pd.read_csv(out / dt / "bench_attention.csv")
        assert summary["dtype"].tolist() == [dt] and summary["context_len"].tolist() == [4096]
