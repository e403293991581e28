"""Figure 13: design space and sensitivity of the hardware conclusions to every reconstructed constant.

Two studies:

* :func:`design_space` sweeps the algorithm and architecture knobs the paper's Fig. 13 is likely to
  show (budget, retrieval ratio, bank count, bank bandwidth, tile size, tiles per PE, the
  baseline's head-group size) and reports H2EAL's improvement over the baseline at each value.
* :func:`band_sweep` moves **every constant that has a band** in the hardware YAML to the low and the
  high end of its band (one at a time, the others at their defaults), reruns the grid, and checks
  each conclusion of :data:`CONCLUSIONS`. :func:`conclusion_summary` then states which conclusions
  hold across all bands and where the others flip.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ...attention.config import SparseAttentionConfig
from ...hardware import DEFAULT_CONTEXTS, DESIGN_NAMES, load_hardware, simulate_grid
from ...models.shape import list_model_shapes, load_model_shape
from ...validation import check_list, check_positive_int
from .grid import PAPER_RANGES, improvement_table

DESIGN_SPACE = {
    "budget": [512, 1024, 2048, 4096],
    "retrieval_ratio": [0.125, 0.25, 0.5, 0.75, 1.0],
    "n_channels": [4, 8, 16],
    "bank_bandwidth": [6.4, 12.8, 25.6, 51.2],
    "tile_size": ["auto", 16, 64, 256],
    "tiles_per_pe": [1, 2, 4],
    # issue 9: the baseline reading, and co-placement's interleave width (bank parallelism vs DRAM
    # row locality: 1 token = 256-512 B per activation, 'page' = a whole page per bank chunk)
    "baseline": ["head_parallel", "head_parallel_kv", "split_kv_groups"],
    "kv_interleave_width": [1, 2, 4, 8, 16, 64],
    "activation_window_banks": [1, 4, 16],
    "merge": ["tree", "pipelined"],
    "topk": ["central", "distributed"],
}


def _names(models):
    return list_model_shapes() if not models else check_list("models", models, lambda n, v: load_model_shape(v).name)


def _grid(names, contexts, hw, sparsity, designs=DESIGN_NAMES) -> pd.DataFrame:
    df = simulate_grid(names, contexts, designs, hw, sparsity)
    df["design_label"] = df["design"]
    df["edge"] = df["model"].map(lambda n: load_model_shape(n).edge)
    return df


def design_space(models=None, contexts=(32768, 131072), sweeps: dict | None = None, hardware: str = "h2eal_hb") -> pd.DataFrame:
    """H2EAL vs baseline (and vs co-placement) for each value of each knob, one knob at a time."""
    names = _names(models)
    contexts = check_list("contexts", contexts, check_positive_int)
    base_hw = load_hardware(hardware)
    sweeps = DESIGN_SPACE if sweeps is None else sweeps
    rows = []
    for knob, values in sweeps.items():
        for value in values:
            hw = base_hw
            sparsity = SparseAttentionConfig()
            if knob == "budget":
                sparsity = sparsity.replace(budget=int(value))
            elif knob == "retrieval_ratio":
                sparsity = sparsity.replace(retrieval_ratio=float(value))
            elif knob == "n_channels":
                hw = hw.with_values(n_channels=value, mesh_rows=value)
            elif knob in ("tile_size", "tiles_per_pe", "baseline_group_banks", "baseline", "kv_interleave_width", "merge", "topk", "gqa_kv_sharing"):
                hw = hw.with_policies(**{knob: value})
            else:
                hw = hw.with_values(**{knob: value})
            imp = improvement_table(_grid(names, contexts, hw, sparsity))
            for _, r in imp[imp["design"].isin(["coplace", "h2eal"])].iterrows():
                rows.append(
                    {
                        "knob": knob,
                        "value": str(value),
                        "model": r["model"],
                        "context_len": r["context_len"],
                        "design": r["design"],
                        "attention_speedup": r["attention_speedup"],
                        "end_to_end_speedup": r["end_to_end_speedup"],
                        "attention_energy_efficiency": r["attention_energy_efficiency"],
                        "end_to_end_energy_efficiency": r["end_to_end_energy_efficiency"],
                    }
                )
    return pd.DataFrame(rows)


# ---- conclusions ------------------------------------------------------------------------------

def _h2(imp):
    return imp[imp["design"] == "h2eal"]


def _ratio(imp, a, b, metric="attention_speedup"):
    """Per point: improvement of design a over design b."""
    x = imp[imp["design"] == a].set_index(["model", "context_len"])[metric]
    y = imp[imp["design"] == b].set_index(["model", "context_len"])[metric]
    return x / y


def _grows_with_context(imp, metric="attention_speedup"):
    h = _h2(imp).sort_values(["model", "context_len"])
    return bool(h.groupby("model")[metric].apply(lambda s: bool(np.all(np.diff(s.to_numpy()) >= -1e-9))).all())


#: (name, statement, test on the improvement table) — each must hold at the default constants.
CONCLUSIONS: list[tuple[str, str, Callable[[pd.DataFrame], bool]]] = [
    ("faster_everywhere", "H2EAL is faster than baseline HB at every grid point (attention-only and end-to-end)",
     lambda imp: bool((_h2(imp)["attention_speedup"] > 1).all() and (_h2(imp)["end_to_end_speedup"] >= 1).all())),
    ("more_efficient_everywhere", "H2EAL uses less energy than baseline HB at every grid point (attention-only and end-to-end)",
     lambda imp: bool((_h2(imp)["attention_energy_efficiency"] > 1).all() and (_h2(imp)["end_to_end_energy_efficiency"] >= 1).all())),
    ("speedup_grows_with_context", "H2EAL's attention speedup grows with context length for every model",
     lambda imp: _grows_with_context(imp)),
    ("scheduler_never_hurts", "load balancing (h2eal) is never slower than co-placement alone (attention)",
     lambda imp: bool((_ratio(imp, "h2eal", "coplace") >= 1 - 1e-9).all())),
    ("coplacement_helps", "co-placement is faster than +sparse at every grid point (attention)",
     lambda imp: bool((_ratio(imp, "coplace", "sparse") > 1).all())),
    ("sparse_helps_long", "+sparse alone beats the dense baseline at every point with context >= 32K (attention)",
     lambda imp: bool((imp[(imp["design"] == "sparse") & (imp["context_len"] >= 32768)]["attention_speedup"] > 1).all())),
    ("energy_gain_exceeds_speedup", "H2EAL's attention energy-efficiency gain exceeds its attention speedup at most points (as in the paper's ranges)",
     lambda imp: bool((_h2(imp)["attention_energy_efficiency"] > _h2(imp)["attention_speedup"]).mean() > 0.5)),
    ("reaches_paper_min", f"the attention speedup reaches the paper's lowest value ({PAPER_RANGES['speedup'][0]}x) somewhere on the grid",
     lambda imp: bool(_h2(imp)["attention_speedup"].max() >= PAPER_RANGES["speedup"][0])),
    ("e2e_below_paper_min_at_4k", f"the end-to-end speedup stays below the paper's lowest value ({PAPER_RANGES['speedup'][0]}x) at 4K for every model",
     lambda imp: bool((_h2(imp)[_h2(imp)["context_len"] == imp["context_len"].min()]["end_to_end_speedup"] < PAPER_RANGES["speedup"][0]).all())),
]


def evaluate_conclusions(imp: pd.DataFrame) -> dict[str, bool]:
    return {name: test(imp) for name, _, test in CONCLUSIONS}


def band_sweep(models=None, contexts=DEFAULT_CONTEXTS, hardware: str = "h2eal_hb", constants=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every banded constant at its low and high end (others at default): ranges and conclusions.

    Returns ``(ranges, conclusions)``: per (constant, end) the min/median/max of H2EAL's four
    improvement metrics, and per (constant, end, conclusion) whether it holds.
    """
    names = _names(models)
    contexts = check_list("contexts", contexts, check_positive_int)
    base = load_hardware(hardware)
    constants = base.sweepable() if constants is None else list(constants)
    settings = [("default", "-", base.q(constants[0]).value if constants else float("nan"), base)]
    for name in constants:
        q = base.q(name)
        lo, hi = q.band
        settings.append((name, "low", lo, base.with_values(**{name: lo})))
        settings.append((name, "high", hi, base.with_values(**{name: hi})))
    range_rows, concl_rows = [], []
    for name, end, value, hw in settings:
        imp = improvement_table(_grid(names, contexts, hw, SparseAttentionConfig()))
        h = _h2(imp)
        row = {"constant": name, "end": end, "value": value if end != "-" else np.nan, "unit": base.q(name).unit if end != "-" else ""}
        for metric in ("attention_speedup", "end_to_end_speedup", "attention_energy_efficiency", "end_to_end_energy_efficiency"):
            row[f"{metric}_min"] = h[metric].min()
            row[f"{metric}_median"] = h[metric].median()
            row[f"{metric}_max"] = h[metric].max()
        range_rows.append(row)
        for cname, holds in evaluate_conclusions(imp).items():
            concl_rows.append({"constant": name, "end": end, "value": row["value"], "conclusion": cname, "holds": holds})
    return pd.DataFrame(range_rows), pd.DataFrame(concl_rows)


def conclusion_summary(conclusions: pd.DataFrame) -> pd.DataFrame:
    """Per conclusion: holds at the defaults, holds at every band end, and where it flips."""
    statements = {name: text for name, text, _ in CONCLUSIONS}
    rows = []
    for name, sub in conclusions.groupby("conclusion", sort=False):
        default = bool(sub[sub["end"] == "-"]["holds"].all())
        flips = sub[(sub["end"] != "-") & (sub["holds"] != default)]
        rows.append(
            {
                "conclusion": name,
                "statement": statements.get(name, name),
                "holds_at_defaults": default,
                "holds_across_all_bands": default and flips.empty,
                "flips_at": "; ".join(f"{r['constant']}={r['value']:g} ({r['end']})" for _, r in flips.iterrows()),
            }
        )
    order = {name: i for i, (name, _, _) in enumerate(CONCLUSIONS)}
    return pd.DataFrame(rows).sort_values("conclusion", key=lambda s: s.map(order)).reset_index(drop=True)
