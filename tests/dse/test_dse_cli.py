"""The command line: check, a serial run, the frontier; a bad space fails in one line naming the knob."""

import json
import subprocess
import sys

import yaml


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "h2eal_core.dse", *args], capture_output=True, text=True, cwd=cwd,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_check_run_frontier(tmp_path, tiny_dict):
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(tiny_dict))
    r = _cli("check", str(space))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["points"] == 64
    out = tmp_path / "out"
    r = _cli("run", str(space), "--out", str(out), "--serial", "--no-progress")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["complete"] and report["computed_points"] == 64
    r = _cli("frontier", str(out))
    assert r.returncode == 0, r.stderr
    assert "attention_latency_s" in r.stdout and "h2eal" in r.stdout


def test_bad_space_is_one_line_naming_knob_value_allowed(tmp_path, tiny_dict):
    tiny_dict["knobs"]["hardware"]["bank_bandwidth"] = {"range": [-1, 4], "steps": 2}
    space = tmp_path / "bad.yaml"
    space.write_text(yaml.safe_dump(tiny_dict))
    r = _cli("run", str(space), "--out", str(tmp_path / "o"), "--serial")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "knobs.hardware.bank_bandwidth.range" in lines[0] and "[-1, 4]" in lines[0] and "> 0 GB/s" in lines[0]
    assert not (tmp_path / "o").exists()  # failed before any work
