"""Interactive explorer of the HB model (``notebooks/hb_explorer.ipynb``): sliders in, three plots out.

Controls: model, context, banks, bank bandwidth, retrieval budget, retrieval-head ratio, baseline
reading and design. Each change re-evaluates the four designs at the chosen point with the DSE
evaluator (so placements are cached exactly, see :mod:`h2eal_core.dse.evaluate`) and redraws:

1. speedup of every design over the baseline HB (attention and end to end);
2. energy per token of the baseline and the chosen design, stacked by cause;
3. per-bank load (busy time of each bank in the step, FC layers included) of the baseline and the chosen design.

The option lists are themselves a design space (:meth:`Explorer.space`), validated like any other;
the baseline readings and designs are read from the HB model, so a new reading appears without a
change here. Headless (papermill, nbval) the widgets render as static text; the notebook draws the
default point as a plain figure beside them. ``benchmarks/bench_dse.py`` times a redraw.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..attention.config import DEFAULT_RETRIEVAL_RATIO
from ..hardware import DESIGN_LABELS, DESIGN_NAMES, load_hardware
from ..hardware import config as hwc
from ..models.shape import list_model_shapes, load_model_shape
from ..validation import ParameterError, check_choice
from .evaluate import Evaluator
from .space import Space, space_from_dict

CONTEXTS = (4096, 8192, 16384, 32768, 65536, 131072)
BANKS_PER_CHANNEL = (4, 8, 16, 32)
BANK_BANDWIDTHS = (6.4, 12.8, 25.6, 51.2)
BUDGETS = (256, 512, 1024, 2048, 4096, 8192)
RETRIEVAL_RATIOS = (0.125, 0.25, 0.5, 0.75, 1.0)


def baseline_readings() -> tuple[str, ...]:
    """The HB model's baseline readings (its ``BASELINE_READINGS``, else the current default only)."""
    return tuple(getattr(hwc, "BASELINE_READINGS", None) or (load_hardware().baseline,))


@dataclasses.dataclass(frozen=True)
class Settings:
    model: str = "llama-3.2-1b"
    context_len: int = 32768
    banks_per_channel: int = 16
    bank_bandwidth: float = 25.6
    budget: int = 2048
    retrieval_ratio: float = 0.5
    baseline: str = "head_parallel"
    design: str = "h2eal"


def _with(options: Sequence, value) -> tuple:
    return tuple(sorted(set(options) | {value}))


class Explorer:
    """The model behind the widgets: evaluate a :class:`Settings`, draw it, build the widgets."""

    def __init__(self, hardware: str = "h2eal_hb", defaults: Settings | None = None):
        self.hardware = hardware
        base = load_hardware(hardware)
        d = defaults or Settings(bank_bandwidth=base.q("bank_bandwidth").value, banks_per_channel=base.banks_per_channel, baseline=base.baseline)
        self.defaults = d
        self.options = {
            "model": tuple(list_model_shapes()),
            "context_len": _with(CONTEXTS, d.context_len),
            "banks_per_channel": _with(BANKS_PER_CHANNEL, d.banks_per_channel),
            "bank_bandwidth": _with(BANK_BANDWIDTHS, d.bank_bandwidth),
            "budget": _with(BUDGETS, d.budget),
            "retrieval_ratio": _with(RETRIEVAL_RATIOS, d.retrieval_ratio),
            "baseline": baseline_readings(),
            "design": tuple(n for n in DESIGN_NAMES if n != "baseline"),
        }
        self._space = space_from_dict(
            {
                "name": "explorer",
                "hardware": hardware,
                "knobs": {
                    "workload": {"model": list(self.options["model"]), "context_len": list(self.options["context_len"]), "design": list(DESIGN_NAMES)},
                    "algorithm": {"budget": list(self.options["budget"]), "retrieval_ratio": list(self.options["retrieval_ratio"])},
                    "mapping": {"baseline": list(self.options["baseline"])},
                    "hardware": {"banks_per_channel": list(self.options["banks_per_channel"]), "bank_bandwidth": list(self.options["bank_bandwidth"])},
                },
                "chunk_size": 1,
            },
            where="explorer",
        )
        self.check(d)
        self.evaluator = Evaluator(self._space)

    @property
    def space(self) -> Space:
        return self._space

    def check(self, s: Settings) -> Settings:
        for field, options in self.options.items():
            check_choice(field, getattr(s, field), options)
        return s

    # ---- numbers --------------------------------------------------------------------------------
    def evaluate(self, s: Settings) -> dict:
        """Every design's :class:`DecodeResult` at ``s`` (``{design: result}``)."""
        self.check(s)
        out = {}
        for design in DESIGN_NAMES:
            point = {
                "workload.model": s.model, "workload.context_len": int(s.context_len), "workload.design": design, "workload.batch": 1,
                "algorithm.budget": int(s.budget), "algorithm.retrieval_ratio": float(s.retrieval_ratio),
                "mapping.baseline": s.baseline,
                "hardware.banks_per_channel": int(s.banks_per_channel), "hardware.bank_bandwidth": float(s.bank_bandwidth),
            }
            out[design] = self.evaluator.simulate(point)[0]
        return out

    def table(self, s: Settings, results: dict | None = None) -> pd.DataFrame:
        """Numbers of every design at ``s``: latencies, energy, speedups over the baseline, utilisation."""
        results = results or self.evaluate(s)
        b = results["baseline"]
        rows = []
        for d, r in results.items():
            rows.append({
                "design": d,
                "attention_latency_us": r.attention_latency_s * 1e6,
                "latency_ms": r.latency_s * 1e3,
                "energy_per_token_mj": r.energy_per_token_j * 1e3,
                "attention_speedup": b.attention_latency_s / r.attention_latency_s,
                "end_to_end_speedup": b.latency_s / r.latency_s,
                "energy_efficiency": b.energy_per_token_j / r.energy_per_token_j,
                "bank_utilization": r.bank_utilization,
            })
        return pd.DataFrame(rows)

    # ---- drawing --------------------------------------------------------------------------------
    def figure(self, s: Settings, results: dict | None = None):
        """The three panels at ``s`` as a matplotlib figure."""
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        results = results or self.evaluate(s)
        t = self.table(s, results)
        fig = Figure(figsize=(13, 3.8))
        ax1, ax2, ax3 = fig.subplots(1, 3)
        fig.subplots_adjust(left=0.05, right=0.99, bottom=0.14, top=0.9, wspace=0.28)  # fixed layout: a constrained one costs most of a redraw
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        x = np.arange(len(t))
        ax1.bar(x - 0.2, t["attention_speedup"], 0.4, label="attention", color=colors[0])
        ax1.bar(x + 0.2, t["end_to_end_speedup"], 0.4, label="end to end", color=colors[1])
        ax1.set_xticks(x, [DESIGN_LABELS.get(d, d) for d in t["design"]])
        ax1.set_yscale("log")
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax1.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # plain text: mathtext labels cost a redraw ~0.1 s
        ax1.yaxis.set_minor_formatter(NullFormatter())
        ax1.axhline(1.0, color="0.5", lw=0.8)
        ax1.set_ylabel("speedup over baseline HB (x)")
        chosen = t.set_index("design").loc[s.design]
        ax1.set_title(f"{s.model} @ {s.context_len // 1024}K: {DESIGN_LABELS.get(s.design, s.design)} {chosen['attention_speedup']:.1f}x attn", fontsize=9)
        ax1.legend(fontsize=7)
        cats = [c for c in results["baseline"].energy_breakdown if any(results[d].energy_breakdown.get(c, 0) > 0 for d in ("baseline", s.design))]
        bottoms = np.zeros(2)
        for i, c in enumerate(cats):
            vals = np.array([results[d].energy_breakdown.get(c, 0.0) / results[d].batch * 1e3 for d in ("baseline", s.design)])
            ax2.bar([0, 1], vals, bottom=bottoms, label=c, color=colors[i % len(colors)])
            bottoms += vals
        ax2.set_xticks([0, 1], ["baseline HB", DESIGN_LABELS.get(s.design, s.design)])
        ax2.set_ylabel("energy per token (mJ)")
        ax2.set_title(f"energy: {chosen['energy_efficiency']:.2f}x more efficient", fontsize=9)
        ax2.legend(fontsize=6, ncol=2)
        for d, c in (("baseline", colors[0]), (s.design, colors[1])):
            busy = np.asarray(results[d].per_bank_busy_s) * 1e6
            ax3.plot(np.arange(len(busy)), busy, lw=0.9, color=c, label=f"{DESIGN_LABELS.get(d, d)} (util. {results[d].bank_utilization:.2f})")
        ax3.set_xlabel("bank")
        ax3.set_ylabel("bank busy time per step, FC included (us)")
        ax3.set_title(f"per-bank load ({s.baseline} baseline)", fontsize=9)
        ax3.legend(fontsize=7)
        return fig

    def render_png(self, s: Settings, *, dpi: int = 100) -> bytes:
        """The three panels at ``s`` as PNG bytes: what the widget shows after every change."""
        buf = io.BytesIO()
        self.figure(s).savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()

    def redraw_seconds(self, s: Settings, *, dpi: int = 100) -> float:
        """Wall time of one full redraw at ``s`` (evaluate the four designs, draw, render the PNG the widget shows)."""
        t0 = time.perf_counter()
        self.render_png(s, dpi=dpi)
        return time.perf_counter() - t0

    # ---- widgets ----------------------------------------------------------------------------------
    def widget(self):
        """The ipywidgets controls and the plot output (interactive in JupyterLab, static text headless)."""
        import ipywidgets as w
        from IPython.display import Image

        d = self.defaults
        o = self.options
        controls = {
            "model": w.Dropdown(options=o["model"], value=d.model, description="model"),
            "context_len": w.SelectionSlider(options=o["context_len"], value=d.context_len, description="context"),
            "banks_per_channel": w.SelectionSlider(options=o["banks_per_channel"], value=d.banks_per_channel, description="banks/ch"),
            "bank_bandwidth": w.SelectionSlider(options=o["bank_bandwidth"], value=d.bank_bandwidth, description="GB/s/bank"),
            "budget": w.SelectionSlider(options=o["budget"], value=d.budget, description="budget"),
            "retrieval_ratio": w.SelectionSlider(options=o["retrieval_ratio"], value=d.retrieval_ratio, description="retr. ratio"),
            "baseline": w.Dropdown(options=o["baseline"], value=d.baseline, description="baseline"),
            "design": w.Dropdown(options=o["design"], value=d.design, description="design"),
        }

        out = w.Output()

        def redraw(*_):
            # state updates only (no capture context): the same in JupyterLab and headless under
            # nbclient, which routes captured output widgets through its own message handlers
            png = self.render_png(Settings(**{name: c.value for name, c in controls.items()}))  # the path redraw_seconds times
            out.outputs = ()
            out.append_display_data(Image(data=png))

        for c in controls.values():
            c.observe(redraw, names="value")
        redraw()
        return w.VBox([w.HBox(list(controls.values())[:4]), w.HBox(list(controls.values())[4:]), out])


def default_settings(model: str, context: int, budget: int, retrieval_ratio: float, hardware: str = "h2eal_hb") -> Settings:
    """Notebook parameters -> :class:`Settings` (``retrieval_ratio = -1``: DuoAttention's default for the model's type)."""
    shape = load_model_shape(model)
    ratio = DEFAULT_RETRIEVAL_RATIO[shape.attention_type] if retrieval_ratio == -1 else float(retrieval_ratio)
    if ratio <= 0:
        raise ParameterError("retrieval_ratio", retrieval_ratio, "-1 (automatic) or a share in (0, 1]")
    base = load_hardware(hardware)
    return Settings(model=shape.name, context_len=int(context), banks_per_channel=base.banks_per_channel,
                    bank_bandwidth=base.q("bank_bandwidth").value, budget=int(budget), retrieval_ratio=ratio, baseline=base.baseline)
