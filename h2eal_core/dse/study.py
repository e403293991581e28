"""The DSE study behind ``notebooks/dse_frontier.ipynb``: frontiers, the paper's point, a recommendation, its sensitivity.

* **Frontiers**: per (model, context, design), the Pareto frontier of the space's objectives over the
  feasible points (:func:`frontiers`), so H2EAL's frontier and the baseline's can be compared on
  the same hardware grid.
* **The paper's configuration**: every knob at the base hardware file's value and the
  :class:`SparseAttentionConfig` defaults (retrieval ratio by attention type), evaluated directly
  (:func:`paper_points`), whether or not the grid contains it.
* **The recommendation** (:func:`recommend`): one configuration (every non-workload knob) for a
  set of workloads. Rule (a compromise rule, stated here so it is not chosen by its result): for
  each workload, divide each objective by its best feasible value over the H2EAL configurations;
  score a configuration by the geometric mean of these ratios over objectives and workloads (its
  log-distance to the per-workload utopia point); only configurations feasible for every workload
  compete. The lowest score wins.
* **Sensitivity** (:func:`band_sensitivity`): every banded constant of the base hardware that is
  not a knob moves to each end of its band; the ``top_n`` best configurations of the nominal
  ranking are re-evaluated and re-ranked by the same rule (normalised among those candidates). A
  recommendation that stays first at every band end is robust to the reconstruction's constants;
  limiting the re-ranking to the nominal top ``top_n`` is an approximation, stated in the output.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..attention.config import DEFAULT_RETRIEVAL_RATIO, SparseAttentionConfig
from ..hardware import load_hardware
from ..models.shape import load_model_shape
from .evaluate import Evaluator, feasible_mask
from .objectives import METRICS
from .pareto import pareto_mask
from .space import Space

logger = logging.getLogger(__name__)

WORKLOAD = ["model", "context_len"]


def config_columns(space: Space) -> list[str]:
    """Columns of every non-workload knob (a full configuration)."""
    return [k.column for k in space.knobs if k.section != "workload"]


def hardware_columns(space: Space) -> list[str]:
    """Columns of the hardware and mapping knobs (a configuration with the algorithm left per model)."""
    return [k.column for k in space.knobs if k.section in ("hardware", "mapping")]


def frontiers(table: pd.DataFrame, space: Space, *, by: Sequence[str] = ("model", "context_len", "design")) -> pd.DataFrame:
    """``table`` with ``on_frontier``: feasible and non-dominated within its group of ``by``."""
    objectives = list(space.objectives)
    senses = [METRICS[o].sense for o in objectives]
    out = table.copy()
    out["on_frontier"] = False
    feasible = out[out["feasible"]]
    for _, g in feasible.groupby(list(by), sort=True):
        mask = pareto_mask(g[objectives].to_numpy(), senses)
        out.loc[g.index[mask], "on_frontier"] = True
    return out


def paper_configuration(space: Space, model: str) -> dict:
    """``{knob path: value}`` of the paper's configuration for ``model`` (see the module docstring)."""
    base = load_hardware(space.hardware)
    defaults = SparseAttentionConfig()
    point = {}
    for k in space.knobs:
        if k.section == "hardware":
            v = base.q(k.name).value
            point[k.path] = int(v) if isinstance(k.values[0], int) else float(v)
        elif k.section == "mapping":
            point[k.path] = getattr(base, k.name)
        elif k.section == "algorithm":
            v = getattr(defaults, k.name)
            if k.name == "retrieval_ratio" and v is None:
                v = DEFAULT_RETRIEVAL_RATIO[load_model_shape(model).attention_type]
            point[k.path] = v
    return point


def paper_points(space: Space, models: Sequence[str], contexts: Sequence[int], designs: Sequence[str] = ("baseline", "h2eal")) -> pd.DataFrame:
    """The paper's configuration evaluated for every (model, context, design), one row each."""
    ev = Evaluator(space)
    rows = []
    for m in models:
        cfg = paper_configuration(space, m)
        for T in contexts:
            for d in designs:
                point = {**cfg, "workload.model": m, "workload.context_len": int(T), "workload.design": d, "workload.batch": 1}
                metrics = ev.evaluate_point(point)
                row = {"model": m, "context_len": int(T), "design": d, "batch": 1}
                row.update({k.column: point[k.path] for k in space.knobs if k.section != "workload"})
                row.update(metrics)
                rows.append(row)
    table = pd.DataFrame(rows)
    table["feasible"] = feasible_mask(table, space)
    table["in_grid"] = [all(row[k.column] in k.values for k in space.knobs if k.section != "workload") for row in table.to_dict("records")]
    return table


def score_configurations(table: pd.DataFrame, space: Space, *, design: str = "h2eal", columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Configurations of ``design`` ranked by the recommendation rule (module docstring), best first.

    ``columns`` are the knobs that make a configuration (default: every non-workload knob); with
    :func:`hardware_columns` the algorithm knobs may differ per model (e.g. at the paper's defaults,
    whose retrieval ratio depends on the attention type).
    """
    objectives = list(space.objectives)
    cfg = list(columns) if columns is not None else config_columns(space)
    t = table[table["design"] == design]
    n_workloads = t.groupby(WORKLOAD).ngroups
    if n_workloads == 0:
        return pd.DataFrame(columns=[*cfg, "score", "n_workloads"])
    ok = t.groupby(cfg, sort=False)["feasible"].transform("all")
    t = t[ok.to_numpy()]
    if t.empty:
        return pd.DataFrame(columns=[*cfg, "score", "n_workloads"])
    logs = {}
    for o in objectives:
        v = t[o].to_numpy(dtype=float)
        if METRICS[o].sense == "max":
            v = 1.0 / v
        best = pd.Series(v, index=t.index).groupby([t[c] for c in WORKLOAD]).transform("min").to_numpy()
        logs[o] = np.log(v / best)
    scored = t[[*WORKLOAD, *cfg]].copy()
    for o in objectives:
        scored[f"ratio_{o}"] = logs[o]
    scored["score"] = np.mean([logs[o] for o in objectives], axis=0)
    agg = scored.groupby(cfg, sort=False).agg(score=("score", "mean"), n_workloads=("score", "size"), **{f"ratio_{o}": (f"ratio_{o}", "mean") for o in objectives})
    agg = agg[agg["n_workloads"] == n_workloads].reset_index()
    for o in objectives:
        agg[f"ratio_{o}"] = np.exp(agg[f"ratio_{o}"])  # geometric-mean ratio to the per-workload best
    agg["score"] = np.exp(agg["score"])
    return agg.sort_values(["score", *cfg], kind="mergesort").reset_index(drop=True)


def recommend(table: pd.DataFrame, space: Space, *, design: str = "h2eal", columns: Sequence[str] | None = None) -> dict:
    """The recommended configuration (``{column: value}``) with its score, or ``{}`` when none is feasible everywhere."""
    ranked = score_configurations(table, space, design=design, columns=columns)
    if ranked.empty:
        return {}
    return ranked.iloc[0].to_dict()


SENSITIVITY_COLUMNS = ["constant", "end", "value", "unit", "recommended", "same_as_nominal", "nominal_rank"]


def band_sensitivity(table: pd.DataFrame, space: Space, *, top_n: int = 40, design: str = "h2eal", columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Does the recommendation hold when each banded constant moves to the ends of its band? One row per (constant, end).

    Knobs outside ``columns`` (default: every non-workload knob) take the paper's value for each
    model (:func:`paper_configuration`), as in a table filtered by :func:`at_paper_algorithm`.
    """
    cfg = list(columns) if columns is not None else config_columns(space)
    ranked = score_configurations(table, space, design=design, columns=cfg)
    if ranked.empty:
        out = pd.DataFrame([{"constant": "(nominal)", "end": "-", "value": np.nan, "unit": "", "recommended": "none feasible for every workload",
                             "same_as_nominal": True, "nominal_rank": np.nan}], columns=SENSITIVITY_COLUMNS)
        out.attrs["top_n"] = 0
        return out
    candidates = ranked.head(top_n)[cfg]
    workloads = table[table["design"] == design][["model", "context_len", "batch"]].drop_duplicates()
    base = load_hardware(space.hardware)
    knob_names = {k.name for k in space.knobs if k.section == "hardware"}
    constants = [c for c in base.sweepable() if c not in knob_names]
    col_to_path = {k.column: k.path for k in space.knobs}

    def rerank(hw_base) -> pd.DataFrame:
        ev = Evaluator(space, base=hw_base)
        rows = []
        for c in candidates.to_dict("records"):
            cfg_point = {col_to_path[col]: _native(c[col]) for col in cfg}
            for w in workloads.to_dict("records"):
                point = {**paper_configuration(space, w["model"]), **cfg_point, "workload.model": w["model"], "workload.context_len": int(w["context_len"]), "workload.design": design, "workload.batch": int(w["batch"])}
                row = {**{col: c[col] for col in cfg}, "model": w["model"], "context_len": int(w["context_len"]), "design": design}
                row.update(ev.evaluate_point(point))
                rows.append(row)
        t = pd.DataFrame(rows)
        t["feasible"] = feasible_mask(t, space)
        return score_configurations(t, space, design=design, columns=cfg)

    nominal = rerank(base)
    nominal_best = tuple(nominal.iloc[0][cfg]) if not nominal.empty else None
    out = [{"constant": "(nominal)", "end": "-", "value": np.nan, "unit": "", "recommended": _describe(nominal, cfg), "same_as_nominal": True, "nominal_rank": 1}]
    for name in constants:
        q = base.q(name)
        for end, value in zip(("low", "high"), q.band):
            if value == q.value:
                continue
            try:
                hw = base.with_values(**{name: value})
            except Exception as exc:  # noqa: BLE001 - a band end the description refuses is reported, not hidden
                out.append({"constant": name, "end": end, "value": value, "unit": q.unit, "recommended": f"invalid: {exc}", "same_as_nominal": False, "nominal_rank": np.nan})
                continue
            r = rerank(hw)
            if r.empty:
                out.append({"constant": name, "end": end, "value": value, "unit": q.unit, "recommended": "none feasible", "same_as_nominal": False, "nominal_rank": np.nan})
                continue
            keys = [tuple(row) for row in r[cfg].itertuples(index=False)]
            rank = keys.index(nominal_best) + 1 if nominal_best in keys else np.nan
            out.append({"constant": name, "end": end, "value": value, "unit": q.unit, "recommended": _describe(r, cfg), "same_as_nominal": keys[0] == nominal_best, "nominal_rank": rank})
    result = pd.DataFrame(out, columns=SENSITIVITY_COLUMNS)
    result.attrs["top_n"] = len(candidates)
    return result


def _native(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _describe(ranked: pd.DataFrame, cfg: list[str]) -> str:
    if ranked.empty:
        return "none feasible"
    best = ranked.iloc[0]
    return ", ".join(f"{c.split('.', 1)[-1]}={best[c]:g}" if isinstance(best[c], (int, float, np.number)) else f"{c.split('.', 1)[-1]}={best[c]}" for c in cfg)


def design_comparison(table: pd.DataFrame, space: Space, paper: pd.DataFrame) -> pd.DataFrame:
    """Per (model, context): the best feasible objectives of each design, and the paper point's ratios."""
    rows = []
    objectives = list(space.objectives)
    for (m, T), g in table[table["feasible"]].groupby(["model", "context_len"], sort=False):
        row = {"model": m, "context_len": int(T)}
        for d, gd in g.groupby("design"):
            for o in objectives:
                row[f"best_{o}_{d}"] = gd[o].min() if METRICS[o].sense == "min" else gd[o].max()
            row[f"frontier_points_{d}"] = int(gd["on_frontier"].sum()) if "on_frontier" in gd else np.nan
        p = paper[(paper["model"] == m) & (paper["context_len"] == T)].set_index("design")
        if {"baseline", "h2eal"} <= set(p.index):
            row["paper_attention_speedup"] = p.loc["baseline", "attention_latency_s"] / p.loc["h2eal", "attention_latency_s"]
            row["paper_end_to_end_speedup"] = p.loc["baseline", "latency_s"] / p.loc["h2eal", "latency_s"]
            row["paper_energy_efficiency"] = p.loc["baseline", "energy_per_token_j"] / p.loc["h2eal", "energy_per_token_j"]
        rows.append(row)
    return pd.DataFrame(rows)


def at_paper_algorithm(table: pd.DataFrame, space: Space) -> pd.DataFrame:
    """Rows whose algorithm knobs sit at the paper's (SPEC) defaults for their model (budget, ratio by type, ...).

    The HB model scores latency and energy, not accuracy: a smaller budget or retrieval ratio always
    looks better to it. A hardware recommendation is therefore also given at the accuracy point the
    accuracy study measured (the defaults), so that it does not silently trade accuracy away.
    """
    keep = np.ones(len(table), dtype=bool)
    for m in table["model"].unique():
        cfg = paper_configuration(space, m)
        rows = (table["model"] == m).to_numpy()
        ok = np.ones(len(table), dtype=bool)
        for k in space.knobs:
            if k.section == "algorithm":
                ok &= (table[k.column] == cfg[k.path]).to_numpy()
        keep &= ~rows | ok
    return table[keep]


@dataclasses.dataclass
class StudyResult:
    """Everything the DSE notebook shows (tables are pandas DataFrames)."""

    space: Space
    table: pd.DataFrame  # every point, with on_frontier
    paper: pd.DataFrame  # the paper's configuration per (model, context, design)
    comparison: pd.DataFrame  # per (model, context): best of each design, paper-point ratios
    recommendations: pd.DataFrame  # one row per (scope, algorithm): the recommended configuration
    sensitivity: pd.DataFrame  # per (constant, band end): recommendation at the paper's algorithm point
    sweep: object  # the SweepReport of the distributed run
    serial_check: str  # "equal", "skipped (n points)" or raises


def run_study(space, cache_dir, *, scheduler: str | None = None, serial_check_max_points: int = 2000, top_n: int = 40, progress: bool = True) -> StudyResult:
    """Sweep ``space`` on Dask into ``cache_dir/<space name>`` (resuming), then the analysis of the module docstring.

    A space of at most ``serial_check_max_points`` points is also evaluated serially in a
    temporary folder and must equal the distributed result byte for byte (every partition file).
    """
    import tempfile

    from .space import load_space
    from .sweep import partition_digests, read_results, run_sweep

    from ..io import resolve_repo_path

    space = load_space(space)
    out = resolve_repo_path(cache_dir) / space.name
    # cache_dir is a cache: a sweep of another space or model version there is replaced, one of this
    # space and code resumed
    report = run_sweep(space, out, scheduler=scheduler or None, progress=progress, overwrite=True)
    table = read_results(out)
    if space.n_points <= serial_check_max_points:
        with tempfile.TemporaryDirectory() as tmp:
            run_sweep(space, tmp, serial=True, progress=False)
            if partition_digests(tmp) != partition_digests(out):
                raise AssertionError("the distributed sweep differs from the serial evaluation")
        serial_check = "equal"
    else:
        serial_check = f"skipped ({space.n_points} points > {serial_check_max_points})"
    table = frontiers(table, space)
    models = list(dict.fromkeys(table["model"]))
    contexts = sorted(table["context_len"].unique())
    paper = paper_points(space, models, contexts)
    comparison = design_comparison(table, space, paper)
    recs = []
    paper_alg = at_paper_algorithm(table, space)
    for scope, sub_all, sub_paper in [("all contexts", table, paper_alg)] + [
        (f"{int(T) // 1024}K", table[table["context_len"] == T], paper_alg[paper_alg["context_len"] == T]) for T in contexts
    ]:
        for algorithm, sub, cols in (("swept", sub_all, config_columns(space)), ("paper defaults", sub_paper, hardware_columns(space))):
            ranked = score_configurations(sub, space, columns=cols)
            row = {"scope": scope, "algorithm": algorithm, "candidates": len(ranked)}
            if not ranked.empty:
                row.update(ranked.iloc[0].to_dict())
            recs.append(row)
    sensitivity = band_sensitivity(paper_alg, space, top_n=top_n, columns=hardware_columns(space))
    return StudyResult(space, table, paper, comparison, pd.DataFrame(recs), sensitivity, report, serial_check)


def plot_frontiers(result: StudyResult, *, x: str = "attention_latency_s", y: str = "energy_per_token_j", color: str = "area_mm2"):
    """One panel per (context, model): feasible H2EAL points, both designs' frontiers, the paper's and the recommended point."""
    import matplotlib.pyplot as plt

    t = result.table
    models = list(dict.fromkeys(t["model"]))
    contexts = sorted(t["context_len"].unique())
    fig, axes = plt.subplots(len(contexts), len(models), figsize=(2.9 * len(models), 2.8 * len(contexts)), squeeze=False)
    cfg = hardware_columns(result.space)
    rec = result.recommendations
    rec = rec[(rec["scope"] == "all contexts") & (rec["algorithm"] == "paper defaults")]
    rec_cfg = rec.iloc[0][cfg].to_dict() if len(rec) and cfg[0] in rec and pd.notna(rec.iloc[0][cfg[0]]) else None
    vmin, vmax = t[color].min(), t[color].max()
    sc = None
    for i, T in enumerate(contexts):
        for j, m in enumerate(models):
            ax = axes[i, j]
            g = t[(t["model"] == m) & (t["context_len"] == T) & t["feasible"]]
            h = g[g["design"] == "h2eal"]
            ax.scatter(h[x], h[y], s=2, color="0.85", rasterized=True, label="H2EAL points")
            for d, marker in (("baseline", "x"), ("h2eal", "o")):
                f = g[(g["design"] == d) & g["on_frontier"]].sort_values(x)
                sc = ax.scatter(f[x], f[y], c=f[color], s=14 if d == "h2eal" else 18, marker=marker, cmap="viridis", vmin=vmin, vmax=vmax,
                                label=f"{d} frontier", linewidths=0.8)
            p = result.paper[(result.paper["model"] == m) & (result.paper["context_len"] == T)]
            for d, marker in (("baseline", "X"), ("h2eal", "*")):
                q = p[p["design"] == d]
                ax.scatter(q[x], q[y], marker=marker, s=90, color="tab:red", edgecolors="k", linewidths=0.5, zorder=5, label=f"paper config ({d})")
            if rec_cfg is not None:
                ha = at_paper_algorithm(h, result.space)
                r = ha.loc[np.logical_and.reduce([ha[c] == v for c, v in rec_cfg.items()])] if len(ha) else ha
                ax.scatter(r[x], r[y], marker="D", s=40, facecolors="none", edgecolors="tab:green", linewidths=1.5, zorder=6, label="recommended")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{m} @ {int(T) // 1024}K", fontsize=8)
            ax.tick_params(which="both", labelsize=6)
            if i == len(contexts) - 1:
                ax.set_xlabel(f"{x} ({METRICS[x].unit})", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{y} ({METRICS[y].unit})", fontsize=7)
    axes[0, 0].legend(fontsize=5, loc="best")
    if sc is not None:
        fig.colorbar(sc, ax=axes, shrink=0.6, label=f"{color} ({METRICS[color].unit})")
    return fig
