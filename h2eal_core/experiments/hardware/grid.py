"""Figures 9-12: speedup, energy efficiency, breakdowns and ablation over the model x context grid.

Every number comes from :func:`h2eal_core.hardware.simulate_decode` with the SPEC defaults (the
hardware constants and mapping policies of ``data/hardware/<hardware>.yaml``, the sparse-attention
defaults) and the retrieval-head pattern named by ``head_pattern``
(:mod:`h2eal_core.hardware.head_patterns`: SmolLM2's identified gates for SmolLM2, its resampled
per-layer profile as the labelled fallback for the other shapes); nothing is tuned to the paper.
The paper's only published numbers are the ranges in its abstract (:data:`PAPER_RANGES`); they are
put beside ours, under every baseline reading (:func:`reading_ranges`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...attention.config import SparseAttentionConfig
from ...hardware import DEFAULT_CONTEXTS, DESIGN_LABELS, DESIGN_NAMES, load_hardware, simulate_grid
from ...hardware.config import BASELINE_READINGS
from ...hardware.head_patterns import retrieval_mask_for
from ...models.shape import list_model_shapes, load_model_shape
from ...validation import check_choice, check_list, check_positive_int

#: The paper's published ranges (abstract of arXiv 2508.16653): H2EAL over the baseline HB design.
PAPER_RANGES = {
    "speedup": (5.20, 48.21),
    "energy_efficiency": (6.22, 73.48),
}
PAPER_SOURCE = "H2EAL abstract (arXiv 2508.16653, ICCAD 2025): 5.20-48.21x speedup, 6.22-73.48x energy efficiency over baseline HB"

METRICS = {
    # name: (column of the result table, larger is better?)
    "attention_speedup": ("attention_latency_s", False),
    "end_to_end_speedup": ("latency_s", False),
    "attention_energy_efficiency": ("attention_energy_j", False),
    "end_to_end_energy_efficiency": ("energy_j", False),
}


def _models(models) -> list[str]:
    known = list_model_shapes()
    if not models:
        return known
    return check_list("models", models, lambda n, v: check_choice(n, v, known))


def decode_grid(
    models=None,
    contexts=DEFAULT_CONTEXTS,
    designs=DESIGN_NAMES,
    hardware: str = "h2eal_hb",
    *,
    budget: int | None = None,
    retrieval_ratio: float | None = None,
    batch: int = 1,
    tile_size=None,
    hw=None,
    head_pattern: str = "auto",
    baseline: str | None = None,
) -> pd.DataFrame:
    """One row per (model, context, design) with every metric of :class:`DecodeResult`.

    ``budget`` and ``retrieval_ratio`` override the sparse-attention defaults; ``hw`` (an
    :class:`HBConfig`) overrides ``hardware``; ``baseline`` overrides its baseline reading;
    ``head_pattern`` names the retrieval-head masks (column ``head_pattern`` says which one each
    model got).
    """
    names = _models(models)
    contexts = check_list("contexts", contexts, check_positive_int)
    config = hw if hw is not None else load_hardware(hardware)
    changes = {}
    if budget is not None:
        changes["budget"] = budget
    if retrieval_ratio is not None:
        changes["retrieval_ratio"] = retrieval_ratio
    sparsity = SparseAttentionConfig(**changes)
    if baseline is not None:
        config = config.with_policies(baseline=baseline)
    masks, labels = {}, {}
    for name in names:
        masks[name], labels[name] = retrieval_mask_for(name, sparsity, head_pattern)
    df = simulate_grid(names, contexts, designs, config, sparsity, batch, tile_size=tile_size, retrieval_masks=masks)
    df["head_pattern"] = df["model"].map(labels)
    df["design_label"] = df["design"].map(DESIGN_LABELS).fillna(df["design"])
    df["edge"] = df["model"].map(lambda n: load_model_shape(n).edge)
    return df


def improvement_table(grid: pd.DataFrame, reference: str = "baseline") -> pd.DataFrame:
    """Per (model, context, design): each metric of :data:`METRICS` as a ratio over ``reference``.

    Speedup = reference latency / design latency; energy efficiency = reference energy / design
    energy (both > 1 when the design is better).
    """
    keys = ["model", "context_len"]
    ref = grid[grid["design"] == reference].set_index(keys)
    rows = []
    for _, r in grid.iterrows():
        base = ref.loc[(r["model"], r["context_len"])]
        row = {
            "model": r["model"],
            "model_display": r["model_display"],
            "attention_type": r["attention_type"],
            "context_len": r["context_len"],
            "design": r["design"],
            "design_label": r["design_label"],
            "edge": r["edge"],
            "beyond_native_context": r["beyond_native_context"],
            "baseline_spills_external": bool(base["bytes_external"] > 0),
        }
        for metric, (column, _) in METRICS.items():
            row[metric] = base[column] / r[column]
        rows.append(row)
    return pd.DataFrame(rows)


def range_table(improvements: pd.DataFrame, design: str = "h2eal") -> pd.DataFrame:
    """Min-max of each metric over the grid for ``design``, beside the paper's range.

    Three scopes: every grid point; points where the baseline does not spill to the external tier;
    and points within every model's native context length.
    """
    d = improvements[improvements["design"] == design]
    subsets = {
        "all points": d,
        "baseline fits in HB": d[~d["baseline_spills_external"]],
        "within native context": d[~d["beyond_native_context"]],
    }
    rows = []
    for metric in METRICS:
        paper = PAPER_RANGES["speedup" if "speedup" in metric else "energy_efficiency"]
        for scope, sub in subsets.items():
            if sub.empty:
                continue
            lo = sub.loc[sub[metric].idxmin()]
            hi = sub.loc[sub[metric].idxmax()]
            rows.append(
                {
                    "metric": metric,
                    "points": scope,
                    "ours_min": lo[metric],
                    "ours_max": hi[metric],
                    "ours_median": sub[metric].median(),
                    "paper_min": paper[0],
                    "paper_max": paper[1],
                    "min_at": f"{lo['model']} @ {int(lo['context_len'])}",
                    "max_at": f"{hi['model']} @ {int(hi['context_len'])}",
                    "n_points": len(sub),
                }
            )
    return pd.DataFrame(rows)


def reading_ranges(
    models=None,
    contexts=DEFAULT_CONTEXTS,
    hardware: str = "h2eal_hb",
    readings=BASELINE_READINGS,
    *,
    head_pattern: str = "auto",
    hw=None,
    budget: int | None = None,
    retrieval_ratio: float | None = None,
) -> pd.DataFrame:
    """H2EAL's ranges under every baseline reading: one row per (reading, metric, points scope).

    Columns as :func:`range_table` plus ``baseline_reading`` and ``default_reading`` (True for the
    hardware description's own reading). This is what Fig. 9 and the claims notebook tabulate.
    """
    config = hw if hw is not None else load_hardware(hardware)
    readings = check_list("readings", readings, lambda n, v: check_choice(n, v, BASELINE_READINGS))
    out = []
    for reading in readings:
        grid = decode_grid(
            models, contexts, hw=config, baseline=reading, head_pattern=head_pattern, budget=budget, retrieval_ratio=retrieval_ratio
        )
        table = range_table(improvement_table(grid))
        table.insert(0, "baseline_reading", reading)
        table.insert(1, "default_reading", reading == config.baseline)
        out.append(table)
    return pd.concat(out, ignore_index=True)


SELECTION_KINDS = ("uniform", "fitted", "recorded")


def selection_sources(
    model: str = "smollm2-135m",
    contexts=(4096, 8192),
    budget: int = 2048,
    kinds=SELECTION_KINDS,
    designs=DESIGN_NAMES,
    hardware: str = "h2eal_hb",
    *,
    gqa: str = "per_query_head",
    hw=None,
) -> pd.DataFrame:
    """The same points with page selections from each source of :func:`h2eal_core.traces.library.selection_trace`.

    ``recorded``: a trace recorded on the real model (SmolLM2-135M under the H2EAL policy, with its
    identified gates), at the context of its last step; ``fitted``: the generator fitted to the
    recordings; ``uniform``: uniformly random pages. Every source uses the same retrieval mask
    (the recording's when there is one, else :func:`retrieval_mask_for`). Points without a
    recording are skipped for ``recorded``. One row per (kind, context, design) with the
    latencies, energies, speedup over the baseline and the busiest bank's share.
    """
    from ...hardware import simulate_decode
    from ...traces.library import selection_trace

    config = hw if hw is not None else load_hardware(hardware)
    shape = load_model_shape(model)
    kinds = check_list("kinds", kinds, lambda n, v: check_choice(n, v, SELECTION_KINDS))
    rows = []
    for T in check_list("contexts", contexts, check_positive_int):
        recorded = None
        try:
            recorded = selection_trace(
                "recorded", n_layers=shape.n_layers, n_kv_heads=shape.n_kv_heads, group_size=shape.group_size,
                retrieval_mask=retrieval_mask_for(shape)[0], context_len=T, budget=budget, gqa=gqa, model_name=shape.name,
            )
        except Exception:  # no recording at this point: the other sources still run
            recorded = None
        mask = recorded.retrieval_mask if recorded is not None else retrieval_mask_for(shape)[0]
        for kind in kinds:
            if kind == "recorded":
                trace = recorded
            else:
                trace = selection_trace(
                    kind, n_layers=shape.n_layers, n_kv_heads=shape.n_kv_heads, group_size=shape.group_size,
                    retrieval_mask=mask, context_len=T, budget=budget, gqa=gqa, model_name=shape.name, steps=4,
                )
            if trace is None:
                continue
            step = trace.n_steps - 1
            ctx = int(trace.context_lens[step])
            base = None
            for design in designs:
                r = simulate_decode(shape, config, ctx, design, page_trace=trace, trace_step=step)
                base = r if design == "baseline" else base
                rows.append(
                    {
                        "model": shape.name,
                        "selection": kind,
                        "trace_source": trace.source.get("kind", kind),
                        "context_len": ctx,
                        "design": design,
                        "attention_latency_us": r.attention_latency_s * 1e6,
                        "attention_energy_uj": r.attention_energy_j * 1e6,
                        "bank_utilization": r.bank_utilization,
                        "attention_speedup": (base.attention_latency_s / r.attention_latency_s) if base is not None else np.nan,
                        "kv_read_fraction": r.extras["kv_read_fraction"],
                    }
                )
    return pd.DataFrame(rows)


def stage_breakdown(grid: pd.DataFrame, *, scope: str = "attention") -> pd.DataFrame:
    """Fig. 12: every ablation stage's latency and energy by cause, relative to the baseline.

    One row per (model, context, design, kind, category): ``value`` (s or J), ``of_baseline`` =
    value / the baseline's total of that kind, and ``stage_gain`` = the previous stage's total /
    this stage's total (each stage's own contribution; 1 for the baseline).
    """
    long = breakdown_table(grid, scope=scope)
    totals = long.groupby(["model", "context_len", "design", "kind"])["value"].sum()
    order = {d: i for i, d in enumerate(DESIGN_NAMES)}
    base = totals.xs("baseline", level="design")
    long["of_baseline"] = [
        v / base.loc[(m, c, k)] if base.loc[(m, c, k)] > 0 else np.nan
        for m, c, k, v in zip(long["model"], long["context_len"], long["kind"], long["value"])
    ]
    gains = {}
    for (m, c, k), sub in totals.groupby(level=["model", "context_len", "kind"]):
        seq = sorted(((order[d], d, float(v)) for (_, _, d, _), v in sub.items()))
        prev = None
        for _, d, v in seq:
            gains[(m, c, d, k)] = 1.0 if prev is None else (prev / v if v > 0 else np.nan)
            prev = v
    long["stage_gain"] = [gains[(m, c, d, k)] for m, c, d, k in zip(long["model"], long["context_len"], long["design"], long["kind"])]
    long["step"] = long["design"].map(order)
    return long


def breakdown_table(grid: pd.DataFrame, *, scope: str = "attention") -> pd.DataFrame:
    """Long table of the time and energy breakdowns: one row per (point, kind, category).

    ``scope``: ``attention`` (attention core only) or ``end_to_end``.
    """
    check_choice("scope", scope, ("attention", "end_to_end"))
    prefix_t, prefix_e = ("attn_time_", "attn_energy_") if scope == "attention" else ("time_", "energy_")
    rows = []
    for _, r in grid.iterrows():
        for kind, prefix, suffix, total in (
            ("time", prefix_t, "_s", r["attention_latency_s"] if scope == "attention" else r["latency_s"]),
            ("energy", prefix_e, "_j", r["attention_energy_j"] if scope == "attention" else r["energy_j"]),
        ):
            for column in r.index:
                if column.startswith(prefix) and column.endswith(suffix) and not (scope == "end_to_end" and column.startswith("attn_")):
                    category = column[len(prefix) : -len(suffix)]
                    if not category:  # the total itself (e.g. energy_j)
                        continue
                    rows.append(
                        {
                            "model": r["model"],
                            "model_display": r["model_display"],
                            "context_len": r["context_len"],
                            "design": r["design"],
                            "design_label": r["design_label"],
                            "kind": kind,
                            "category": category,
                            "value": r[column],
                            "share": r[column] / total if total > 0 else np.nan,
                        }
                    )
    return pd.DataFrame(rows)


def ablation_table(improvements: pd.DataFrame) -> pd.DataFrame:
    """Each design's improvement over the baseline and over the previous ablation step."""
    order = list(DESIGN_NAMES)
    df = improvements.copy()
    df["step"] = df["design"].map({d: i for i, d in enumerate(order)})
    df = df.sort_values(["model", "context_len", "step"])
    for metric in METRICS:
        df[f"{metric}_vs_previous"] = df.groupby(["model", "context_len"])[metric].transform(lambda s: s / s.shift(1))
    return df.reset_index(drop=True)


def headline(grid: pd.DataFrame) -> dict[str, float]:
    """A few numbers for the notebooks' text: grid size and how many points overflow the HB stack."""
    base = grid[grid["design"] == "baseline"]
    return {
        "points": int(len(base)),
        "baseline_points_spilling_external": int((base["bytes_external"] > 0).sum()),
        "points_beyond_native_context": int(base["beyond_native_context"].sum()),
    }


def model_order(models) -> list[str]:
    """Display names of ``models`` sorted by parameter count (smallest first), for plot axes."""
    shapes = sorted({load_model_shape(m) for m in models}, key=lambda s: s.n_parameters)
    return [s.display_name for s in shapes]


def context_label(tokens: int) -> str:
    """``4096 -> '4K'``."""
    return f"{tokens // 1024}K" if tokens % 1024 == 0 else str(tokens)
