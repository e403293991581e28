"""The explorer: numbers equal simulate_decode, options come from the model, widgets build, a kernel session runs it."""

import dataclasses
import os

import nbformat
import numpy as np
import pytest

from h2eal_core.attention.config import SparseAttentionConfig
from h2eal_core.dse.explorer import Explorer, Settings, baseline_readings, default_settings
from h2eal_core.hardware import config as hwc
from h2eal_core.hardware import load_hardware, simulate_decode
from h2eal_core.validation import ParameterError


@pytest.fixture(scope="module")
def explorer():
    return Explorer("h2eal_hb", default_settings("llama-3.2-1b", 32768, 2048, -1))


def test_defaults_follow_the_hardware_and_the_model(explorer):
    hw = load_hardware("h2eal_hb")
    s = explorer.defaults
    assert s.banks_per_channel == hw.banks_per_channel and s.bank_bandwidth == hw.q("bank_bandwidth").value
    assert s.retrieval_ratio == 0.5  # GQA default (DuoAttention)
    assert default_settings("phi-3.5-mini", 4096, 1024, -1).retrieval_ratio == 0.25  # MHA
    assert set(explorer.options["baseline"]) == set(getattr(hwc, "BASELINE_READINGS", (hw.baseline,)))
    assert baseline_readings() == explorer.options["baseline"]


def test_numbers_equal_simulate_decode(explorer):
    s = dataclasses.replace(explorer.defaults, banks_per_channel=8, bank_bandwidth=51.2, budget=1024, context_len=131072)
    t = explorer.table(s).set_index("design")
    hw = load_hardware("h2eal_hb").with_values(banks_per_channel=8, mesh_cols=8, bank_bandwidth=51.2).with_policies(baseline=s.baseline)
    sp = SparseAttentionConfig(budget=1024, retrieval_ratio=s.retrieval_ratio)
    base = simulate_decode(s.model, hw, s.context_len, "baseline", sp)
    h2 = simulate_decode(s.model, hw, s.context_len, "h2eal", sp)
    assert t.loc["h2eal", "attention_speedup"] == base.attention_latency_s / h2.attention_latency_s
    assert t.loc["h2eal", "energy_efficiency"] == base.energy_per_token_j / h2.energy_per_token_j
    assert t.loc["baseline", "attention_speedup"] == 1.0


def test_bad_settings_are_refused(explorer):
    with pytest.raises(ParameterError, match="bank_bandwidth"):
        explorer.evaluate(dataclasses.replace(explorer.defaults, bank_bandwidth=7.0))
    with pytest.raises(ParameterError, match="baseline"):
        explorer.evaluate(dataclasses.replace(explorer.defaults, baseline="per_head"))
    with pytest.raises(ParameterError, match="retrieval_ratio"):
        default_settings("llama-3.2-1b", 32768, 2048, 0.0)


def test_figure_and_widget_build(explorer):
    fig = explorer.figure(explorer.defaults)
    assert len(fig.axes) == 3
    png = explorer.render_png(explorer.defaults, dpi=40)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    box = explorer.widget()
    controls = [c for row in box.children[:2] for c in row.children]
    assert [c.description for c in controls] == ["model", "context", "banks/ch", "GB/s/bank", "budget", "retr. ratio", "baseline", "design"]
    out = box.children[2]
    before = out.outputs[0]["data"]["image/png"]
    controls[3].value = 51.2  # a change redraws the plot in the output widget
    assert len(out.outputs) == 1 and out.outputs[0]["data"]["image/png"] != before


def test_kernel_session_runs_the_explorer_notebook(repo, tmp_path):
    """Opens a kernel session (as JupyterLab does), runs every cell with the defaults, gets the widget's view."""
    jupyter_client = pytest.importorskip("jupyter_client")
    nb = nbformat.read(repo / "notebooks" / "hb_explorer.ipynb", as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the inline backend, as in JupyterLab
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3", cwd=str(repo / "notebooks"), env=env)
    try:
        cells = [c.source for c in nb.cells if c.cell_type == "code"]
        override = f"figures_dir = {str(tmp_path)!r}\nresults_dir = {str(tmp_path)!r}"
        sources = [cells[0], override, *cells[1:]]
        outputs = []
        for src in sources:
            msg_id = kc.execute(src)
            while True:
                msg = kc.get_iopub_msg(timeout=120)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "error":
                    raise AssertionError("\n".join(msg["content"]["traceback"]))
                if msg["msg_type"] in ("display_data", "execute_result"):
                    outputs.append(msg["content"]["data"])
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
            reply = kc.get_shell_msg(timeout=120)
            assert reply["content"]["status"] == "ok", reply["content"]
        assert any("application/vnd.jupyter.widget-view+json" in o for o in outputs), "the widget cell showed no widget"
        assert any("image/png" in o for o in outputs), "the default point's figure was not shown"
        assert (tmp_path / "hb_explorer.csv").is_file() and (tmp_path / "hb_explorer.png").is_file()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
