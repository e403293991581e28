"""Figure 8: the load-balancing scheduler with real work (bank-bound, page-granular tiles).

Every table here is computed from :mod:`h2eal_core.scheduler` instances (see
:mod:`h2eal_core.scheduler.bank_bound` for the cost model): a model shape, its real gates where
they exist (:mod:`h2eal_core.scheduler.head_patterns`; the fallback is labelled), a page selection
(uniform random, or a recorded :class:`~h2eal_core.traces.PageTrace` from ``data/traces/``), and a
write-time layout. Schedulers compared: locality-first LPT (``lpt``, H2EAL's scheduler),
``owner`` (compute where the data lies: co-placement alone), ``round_robin`` and
``head_parallel``, against the makespan lower bound, and the exact MILP on small instances.

Gains are ratios of step times (sum over layers of makespan + merge) taken from the model as it
is; nothing is tuned. The functions of the first generation (``layer_loads``,
``greedy_gap_table``, ``exact_vs_greedy``, ``small_schedule``: LPT over freely re-tiled tokens, as
the HB model's ``h2eal`` design still assumes) are kept at the end for comparison.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ...attention.config import SparseAttentionConfig
from ...io import data_dir
from ...models.shape import list_model_shapes, load_model_shape
from ...scheduler.bank_bound import SCHEDULERS, lp_lower_bound, schedule, schedule_exact_bank_bound
from ...scheduler.instances import StepInstances, step_instances
from ...scheduler.layout import KVLayout
from ...validation import ParameterError, check_choice, check_list, check_nonnegative_int, check_positive_int

logger = logging.getLogger(__name__)

#: Layouts of the default study: co-placement (token interleave over all banks) and page interleave.
DEFAULT_LAYOUTS = (KVLayout("token"), KVLayout("page"))
SCHEDULER_LABELS = {"lpt": "LPT (H2EAL)", "owner": "owner computes (co-placement only)", "round_robin": "round-robin",
                    "head_parallel": "head-parallel"}


def _hw(hw, hardware: str):
    from ...hardware import load_hardware

    return hw if hw is not None else load_hardware(hardware)


def _layouts(layouts) -> list[KVLayout]:
    out = []
    for item in layouts:
        if isinstance(item, KVLayout):
            out.append(item)
        elif isinstance(item, str):
            gran, _, width = item.partition(":")
            out.append(KVLayout(gran, int(width) if width else None))
        else:
            raise ParameterError("layouts", item, "KVLayout objects or strings 'token', 'page', 'token:32', 'page:16'")
    if not out:
        raise ParameterError("layouts", layouts, "at least one layout")
    return out


def heads_label(kinds) -> str:
    """E.g. ``2R+1S`` (retrieval, streaming, dense heads of a layer)."""
    counts = {k: list(kinds).count(k) for k in ("retrieval", "dense", "streaming")}
    return "+".join(f"{v}{k[0].upper()}" for k, v in counts.items() if v) or "-"


def layer_rows(step: StepInstances, *, radius: int = 4, extra: dict | None = None) -> list[dict]:
    """One row per layer: lower bound, each scheduler's makespan, merge, layer time, gap and fan-in."""
    rows = []
    for inst in step.layers:
        row = {
            "model": step.model, "context_len": step.context_len, "layout": step.layout.label,
            "layout_granularity": step.layout.granularity, "layout_width": step.layout.width_for(inst.n_pe), "gates": step.gates,
            "gates_real": step.gates_real, "selection": step.selection, "layer": inst.layer, "heads": heads_label(inst.head_kinds),
            "n_tiles": inst.n_tiles, "lower_bound_us": inst.lower_bound * 1e6, "max_bank_read_us": float(inst.bank_read_s.max(initial=0)) * 1e6,
        }
        for name in SCHEDULERS:
            cost = schedule(inst, name, radius=radius)
            row[f"{name}_makespan_us"] = cost.makespan * 1e6
            row[f"{name}_merge_us"] = cost.merge_s * 1e6
            row[f"{name}_layer_us"] = cost.layer_s * 1e6
            row[f"{name}_gap"] = cost.gap
            row[f"{name}_fan_in_max"] = int(cost.fan_in.max(initial=0))
            row[f"{name}_moved_tiles"] = cost.moved_tiles
            row[f"{name}_bottleneck"] = cost.bottleneck
        rows.append(row | (extra or {}))
    return rows


def duo_gate_models(models=None) -> list[str]:
    """Models of ``models`` (default: all) whose DuoAttention gates can be read in this checkout."""
    from ...scheduler.head_patterns import duo_attention_models

    available = duo_attention_models()
    names = list_model_shapes() if not models else [load_model_shape(m).name for m in models]
    return [m for m in names if m in available]


def trace_files(models, traces="auto") -> list[Path]:
    """Recorded traces to use: ``"auto"`` = every ``data/traces/<model>_*.npz`` of ``models``; a list of paths; ``[]`` none."""
    if traces == "auto":
        found = []
        for m in models:
            found += sorted(Path(p) for p in glob.glob(str(data_dir() / "traces" / f"{m}_*.npz")))
        return found
    if not traces:
        return []
    from ...io import resolve_repo_path

    paths = [resolve_repo_path(p) for p in traces]
    for p in paths:
        if not p.is_file():
            raise ParameterError("traces", str(p), "existing .npz page-selection traces (data/traces/) or 'auto'")
    return paths


def scheduler_layer_table(models=None, contexts=(8192, 32768, 131072), layouts=DEFAULT_LAYOUTS, hardware: str = "h2eal_hb", *,
                          hw=None, sparsity: SparseAttentionConfig | None = None, seed: int = 0, radius: int = 4,
                          tile_tokens: int | None = None, traces="auto", trace_step: int = -1, pages=("uniform",),
                          gates: str = "auto") -> pd.DataFrame:
    """Per-layer scheduler comparison on every (model, context, layout, page source), real gates.

    ``pages``: page sources of the grid, ``"uniform"`` and/or ``"fitted"`` (the generator fitted to
    the recorded traces; see :func:`~h2eal_core.scheduler.instances.step_instances`). ``gates``:
    ``"auto"`` (identified gates, else the labelled fallback) or ``"duo_attention"`` (DuoAttention's
    published gates, for the models that have them; see :func:`duo_gate_models`).

    With recorded traces (``traces``), each trace adds rows at its own context, page size, budget and
    GQA mode with ``selection`` = the trace, beside the same step with uniform pages, so that the
    two selections are compared on equal terms.
    """
    config = _hw(hw, hardware)
    names = list_model_shapes() if not models else check_list("models", models, lambda n, v: load_model_shape(v).name)
    contexts = check_list("contexts", contexts, check_positive_int)
    layouts = _layouts(layouts)
    check_nonnegative_int("radius", radius)
    sparsity = sparsity or SparseAttentionConfig()
    pages = check_list("pages", pages, lambda n, v: check_choice(n, v, ("uniform", "fitted")))
    rows = []
    jobs = [(m, T, lay, src) for m in names for T in contexts for lay in layouts for src in pages]
    for m, T, lay, src in tqdm(jobs, desc="scheduler grid", leave=False, disable=len(jobs) < 8):
        step = step_instances(m, config, T, sparsity=sparsity, seed=seed, layout=lay, tile_tokens=tile_tokens, pages=src, gates=gates)
        rows += layer_rows(step, radius=radius, extra={"source": "grid", "pages": src})
    if traces:
        from ...traces import load_trace
        from ...scheduler.selection import trace_config

        for path in trace_files(names, traces):
            trace = load_trace(path)
            s = trace.n_steps + trace_step if trace_step < 0 else trace_step
            if not 0 <= s < trace.n_steps:
                raise ParameterError("trace_step", trace_step, f"a step index of {path.name} ({trace.n_steps} steps)")
            cfg = trace_config(trace, sparsity)
            for lay in layouts:
                tr = step_instances(trace.model, config, trace=trace, trace_step=s, sparsity=cfg, layout=lay, tile_tokens=tile_tokens)
                rows += layer_rows(tr, radius=radius, extra={"source": f"trace {path.name}", "pages": "recorded"})
                uni = step_instances(trace.model, config, tr.context_len, sparsity=cfg, pattern=trace.retrieval_mask, seed=seed,
                                     layout=lay, tile_tokens=tile_tokens)
                uni_rows = layer_rows(uni, radius=radius, extra={"source": f"trace {path.name}", "pages": "uniform"})
                for r in uni_rows:
                    r["gates"], r["gates_real"] = tr.gates, True
                rows += uni_rows
    return pd.DataFrame(rows)


def compact_layer_table(layers: pd.DataFrame, decimals: int = 6) -> pd.DataFrame:
    """The per-layer table without its per-row labels (kept in the per-model table: join on
    ``source, pages, model, context_len, layout_granularity, layout_width``) and without the
    derivable layer times (makespan + merge), times rounded to ``decimals`` digits of a microsecond."""
    drop = ["gates", "selection", "layout", "gates_real"] + [f"{s}_layer_us" for s in SCHEDULERS]
    out = layers.drop(columns=[c for c in drop if c in layers.columns])
    floats = out.select_dtypes("float").columns
    out[floats] = out[floats].round(decimals)
    return out


def scheduler_model_table(layers: pd.DataFrame) -> pd.DataFrame:
    """Per (model, context, layout, selection): step times, the gap to the bound and the gains of LPT.

    ``gain_over_X`` = step time of scheduler X / step time of LPT (makespan + merge summed over
    layers); ``makespan_gain_over_X`` the same on makespans only; ``gap`` = sum of LPT makespans /
    sum of lower bounds - 1; ``worst_layer_gap`` the largest per-layer gap.
    """
    keys = ["source", "pages", "model", "context_len", "layout", "layout_granularity", "layout_width", "gates", "gates_real", "selection"]
    rows = []
    for key, g in layers.groupby(keys, sort=False):
        row = dict(zip(keys, key))
        row["layers"] = len(g)
        row["lower_bound_us"] = g["lower_bound_us"].sum()
        for name in SCHEDULERS:
            row[f"{name}_step_us"] = g[f"{name}_layer_us"].sum()
            row[f"{name}_makespan_us"] = g[f"{name}_makespan_us"].sum()
        row["lpt_merge_us"] = g["lpt_merge_us"].sum()
        row["gap"] = row["lpt_makespan_us"] / row["lower_bound_us"] - 1 if row["lower_bound_us"] > 0 else 0.0
        row["worst_layer_gap"] = float(g["lpt_gap"].max())
        row["worst_layer"] = int(g.loc[g["lpt_gap"].idxmax(), "layer"])
        for name in ("round_robin", "head_parallel", "owner"):
            row[f"gain_over_{name}"] = row[f"{name}_step_us"] / row["lpt_step_us"]
            row[f"makespan_gain_over_{name}"] = row[f"{name}_makespan_us"] / row["lpt_makespan_us"]
        row["lpt_bank_bound_layers"] = int((g["lpt_bottleneck"] == "bank").sum())
        rows.append(row)
    return pd.DataFrame(rows)


def pick_layer(step: StepInstances, radius: int = 4) -> int:
    """The layer where LPT improves most on owner-computes; when it never does, the layer with the
    largest lower bound (the most work). Ties: the first."""
    best, best_gain = None, 0.0
    for inst in step.layers:
        gain = schedule(inst, "owner").makespan - schedule(inst, "lpt", radius=radius).makespan
        if gain > best_gain * (1 + 1e-9) and gain > 0:
            best, best_gain = inst.layer, gain
    if best is None:
        bounds = [inst.lower_bound for inst in step.layers]
        best = step.layers[int(np.argmax(bounds))].layer
    return best


def pe_load_table(model: str = "smollm2-135m", context: int = 8192, layer: int | str = "auto", layout: KVLayout | str = "page",
                  hardware: str = "h2eal_hb", *, hw=None, sparsity=None, seed: int = 0, radius: int = 4, trace=None,
                  trace_step: int = -1, schedulers=SCHEDULERS) -> pd.DataFrame:
    """Per-PE busy time of one layer under each scheduler: PE work, bank reads, and their max."""
    config = _hw(hw, hardware)
    lay = _layouts([layout])[0]
    if trace is not None:
        s = trace.n_steps + trace_step if trace_step < 0 else trace_step
        step = step_instances(model, config, trace=trace, trace_step=s, sparsity=sparsity, layout=lay)
    else:
        step = step_instances(model, config, context, sparsity=sparsity, seed=seed, layout=lay)
    if layer == "auto":
        layer = pick_layer(step, radius)
    check_nonnegative_int("layer", layer)
    inst = next((i for i in step.layers if i.layer == layer), None)
    if inst is None:
        raise ParameterError("layer", layer, f"a layer index below {len(step.layers)}")
    rows = []
    for name in schedulers:
        cost = schedule(inst, check_choice("scheduler", name, SCHEDULERS), radius=radius)
        for pe in range(inst.n_pe):
            rows.append({
                "scheduler": name, "pe": pe, "pe_us": cost.pe_s[pe] * 1e6, "bank_us": cost.bank_s[pe] * 1e6, "busy_us": cost.busy_s[pe] * 1e6,
                "makespan_us": cost.makespan * 1e6, "merge_us": cost.merge_s * 1e6, "lower_bound_us": cost.lower_bound * 1e6,
                "bottleneck": cost.bottleneck, "model": step.model, "context_len": step.context_len, "layer": layer,
                "heads": heads_label(inst.head_kinds), "layout": lay.label, "gates": step.gates, "selection": step.selection,
            })
    return pd.DataFrame(rows)


def small_mesh(hw, rows: int = 2, cols: int = 4):
    """``hw`` shrunk to a ``rows x cols`` mesh (one bank per node) for the exact solver."""
    check_positive_int("rows", rows)
    check_positive_int("cols", cols)
    return hw.with_values(n_channels=rows, banks_per_channel=cols, mesh_rows=rows, mesh_cols=cols)


def exact_table(models=("smollm2-135m", "gemma-2b", "llama-3.2-1b"), context: int = 2048, layers=(0, 1, 2, 3, 4, 5),
                layouts=DEFAULT_LAYOUTS, hardware: str = "h2eal_hb", *, hw=None, mesh=(2, 4), budget: int = 512,
                tile_tokens: int = 64, seed: int = 0, radius: int = 4, time_limit_s: float = 20.0, traces=()) -> pd.DataFrame:
    """LPT and the other schedulers against the exact MILP on small instances (a ``mesh`` of PEs).

    Instances are real layers (real gates where they exist) at a small context and budget, on the
    hardware shrunk to ``mesh`` (same per-bank, per-PE and per-link constants). ``traces``: trace
    files whose last step adds instances with recorded pages.
    """
    base = _hw(hw, hardware)
    small = small_mesh(base, *mesh)
    cfg = SparseAttentionConfig(budget=budget)
    rows = []

    def run(step: StepInstances, source: str):
        for inst in step.layers:
            if inst.n_tiles * inst.n_pe > 4000:
                logger.info("skipping %s: %d tiles is too large for the exact solver", inst.label, inst.n_tiles)
                continue
            ex = schedule_exact_bank_bound(inst, time_limit_s=time_limit_s)
            row = {"source": source, "model": step.model, "context_len": step.context_len, "layout": step.layout.label,
                   "gates": step.gates, "selection": step.selection, "layer": inst.layer, "heads": heads_label(inst.head_kinds),
                   "tiles": inst.n_tiles, "pes": inst.n_pe, "lower_bound_us": inst.lower_bound * 1e6,
                   "exact_makespan_us": ex.cost.makespan * 1e6, "exact_optimal": ex.optimal}
            for name in SCHEDULERS:
                row[f"{name}_makespan_us"] = schedule(inst, name, radius=radius).makespan * 1e6
            row["lpt_over_exact"] = row["lpt_makespan_us"] / row["exact_makespan_us"] - 1
            row["exact_over_bound"] = row["exact_makespan_us"] / row["lower_bound_us"] - 1 if row["lower_bound_us"] > 0 else 0.0
            row["lpt_over_bound"] = row["lpt_makespan_us"] / row["lower_bound_us"] - 1 if row["lower_bound_us"] > 0 else 0.0
            rows.append(row)

    for m in models:
        shape = load_model_shape(m)
        use = [layer for layer in layers if layer < shape.n_layers]
        for lay in _layouts(layouts):
            run(step_instances(m, small, context, sparsity=cfg, seed=seed, layout=lay, tile_tokens=tile_tokens, layers=use), "grid")
    if traces:
        from ...traces import load_trace

        for path in trace_files([], traces) if traces != "auto" else trace_files(list(models), "auto"):
            trace = load_trace(path)
            if trace.context_lens[-1] > 4 * context:
                continue
            shape = load_model_shape(trace.model)
            use = [layer for layer in layers if layer < shape.n_layers]
            for lay in _layouts(layouts):
                run(step_instances(trace.model, small, trace=trace, trace_step=trace.n_steps - 1, layout=lay, tile_tokens=tile_tokens,
                                   layers=use), f"trace {Path(path).name}")
    return pd.DataFrame(rows)


def lp_bound_table(layers: pd.DataFrame, context: int | None = None, hardware: str = "h2eal_hb", *, hw=None, sparsity=None,
                   seed: int = 0, radius: int = 4, above: float = 0.05, max_layers: int = 200) -> pd.DataFrame:
    """The LP-relaxation bound (:func:`~h2eal_core.scheduler.bank_bound.lp_lower_bound`) of every grid
    layer of ``layers`` whose LPT gap to the simple bound exceeds ``above`` (at ``context``, default
    the smallest context of the table): how much of the gap is the simple bound's looseness."""
    config = _hw(hw, hardware)
    grid = layers[(layers["source"] == "grid") & (layers["lpt_gap"] > above)]
    if context is None and len(grid):
        context = int(grid["context_len"].min())
    grid = grid[grid["context_len"] == context].head(max_layers)
    rows = []
    for (model, layout, gran, width, src), g in grid.groupby(["model", "layout", "layout_granularity", "layout_width", "pages"], sort=False):
        lay = KVLayout(gran, None if int(width) == config.n_banks else int(width))
        step = step_instances(model, config, context, sparsity=sparsity, seed=seed, layout=lay, layers=[int(x) for x in g["layer"]],
                              pages=src)
        for inst in step.layers:
            lpt = schedule(inst, "lpt", radius=radius).makespan
            lp = lp_lower_bound(inst)
            rows.append({"model": model, "context_len": context, "layout": layout, "pages": src, "layer": inst.layer, "heads": heads_label(inst.head_kinds),
                         "tiles": inst.n_tiles, "lower_bound_us": inst.lower_bound * 1e6, "lp_bound_us": lp * 1e6,
                         "lpt_makespan_us": lpt * 1e6, "lpt_gap": lpt / inst.lower_bound - 1, "lpt_gap_to_lp": lpt / lp - 1})
    return pd.DataFrame(rows)


def width_table(model: str = "smollm2-135m", context: int = 8192, widths=(8, 16, 32, 64, 128), granularities=("token", "page"),
                hardware: str = "h2eal_hb", *, hw=None, sparsity=None, seed: int = 0, radius: int = 4) -> pd.DataFrame:
    """Interleave width: balance (makespan) against merge fan-in, for LPT and owner-computes."""
    config = _hw(hw, hardware)
    rows = []
    for gran in granularities:
        for w in widths:
            lay = KVLayout(gran, min(int(w), config.n_banks))
            step = step_instances(model, config, context, sparsity=sparsity, seed=seed, layout=lay)
            layer_df = pd.DataFrame(layer_rows(step, radius=radius))
            rows.append({"model": step.model, "context_len": step.context_len, "granularity": gran, "width": lay.width,
                         "gates": step.gates, "lower_bound_us": layer_df["lower_bound_us"].sum(),
                         **{f"{s}_{q}_us": layer_df[f"{s}_{q}_us"].sum() for s in ("lpt", "owner", "head_parallel")
                            for q in ("makespan", "merge", "layer")},
                         "lpt_fan_in_max": int(layer_df["lpt_fan_in_max"].max())})
    return pd.DataFrame(rows)


def gain_summary(models_table: pd.DataFrame) -> pd.DataFrame:
    """Per (model, layout): the range over contexts of LPT's gains and gap (grid rows, uniform pages)."""
    grid = models_table[models_table["source"] == "grid"]
    agg = grid.groupby(["model", "layout", "pages", "gates"], sort=False).agg(
        contexts=("context_len", lambda s: f"{min(s)}-{max(s)}"),
        gain_over_round_robin_min=("gain_over_round_robin", "min"), gain_over_round_robin_max=("gain_over_round_robin", "max"),
        gain_over_head_parallel_min=("gain_over_head_parallel", "min"), gain_over_head_parallel_max=("gain_over_head_parallel", "max"),
        gain_over_owner_max=("gain_over_owner", "max"), gap_max=("gap", "max"), worst_layer_gap=("worst_layer_gap", "max"),
    )
    return agg.reset_index()


# ---- first generation (freely re-tiled tokens; kept for comparison) -----------------------------------
PHASE_INDEX = {"score": 0, "kv": 1}


def layer_loads(model: str, context_len: int, layer: int = 0, phase: str = "kv", designs=("coplace", "h2eal"), hardware: str = "h2eal_hb", *, hw=None) -> pd.DataFrame:
    """Per-PE load (token-equivalents) of one layer's phase under each design of the HB model."""
    from ...hardware import get_design, place
    from ...hardware.workload import decode_workload

    config = _hw(hw, hardware)
    shape = load_model_shape(model)
    check_choice("phase", phase, tuple(PHASE_INDEX))
    check_nonnegative_int("layer", layer)
    if layer >= shape.n_layers:
        raise ParameterError("layer", layer, f"a layer index below {shape.n_layers}")
    rows = []
    for design in designs:
        d = get_design(design)
        w = decode_workload(shape, context_len, sparse=d.sparse)
        p = place(w, config, d)
        loads = (p.kv_tokens if phase == "kv" else p.score_units)[layer] * p.keep
        peak = (p.kv_max if phase == "kv" else p.score_max)[layer]
        for pe, load in enumerate(loads):
            rows.append({
                "design": d.name, "pe": pe, "load": float(load), "busiest": float(peak),
                "utilization": float(loads.sum() / (config.n_banks * peak)) if peak > 0 else 1.0,
                "head_group": int(pe // p.group_banks) if d.scope == "group" and pe < p.n_groups * p.group_banks else -1,
            })
    return pd.DataFrame(rows)


def greedy_gap_table(models=None, contexts=None, tilings=(("auto", 1), ("auto", 2), ("auto", 4), (16, 1), (64, 1)), hardware: str = "h2eal_hb", *, hw=None) -> pd.DataFrame:
    """First-generation LPT quality (freely re-tiled tokens) on every (model, context) point."""
    from ...hardware import DEFAULT_CONTEXTS, get_design, place, simulate_decode
    from ...hardware.workload import decode_workload

    config = _hw(hw, hardware)
    names = list_model_shapes() if not models else check_list("models", models, lambda n, v: load_model_shape(v).name)
    contexts = check_list("contexts", DEFAULT_CONTEXTS if contexts is None else contexts, check_positive_int)
    design = get_design("h2eal")
    rows = []
    for tile_size, per_pe in tilings:
        hw_t = config.with_policies(tile_size=tile_size, tiles_per_pe=per_pe)
        for name in names:
            shape = load_model_shape(name)
            for T in contexts:
                w = decode_workload(shape, T, sparse=True)
                p = place(w, hw_t, design)
                att = w.attention
                totals = np.stack([att.meta_read_pages.sum(axis=1), att.read_tokens.sum(axis=1)], axis=1)
                divisible = np.ceil(totals / config.n_banks)
                busy = divisible > 0
                over = (p.lpt_makespan[busy] / divisible[busy] - 1.0).max() if busy.any() else 0.0
                worst = np.unravel_index(np.argmax(p.lpt_gap), p.lpt_gap.shape)
                r = simulate_decode(shape, hw_t, T, "h2eal")
                rows.append({
                    "tiling": f"{tile_size} tokens" if tile_size != "auto" else f"auto, {per_pe}/PE", "tile_size": str(tile_size),
                    "tiles_per_pe": per_pe, "model": name, "context_len": T, "lpt_gap": float(p.lpt_gap.max()),
                    "worst_layer": int(worst[0]), "worst_phase": ("score", "kv")[int(worst[1])], "over_divisible": float(over),
                    "merge_fan_in": int(p.pes_per_head.sum()), "h2eal_attention_us": r.attention_latency_s * 1e6,
                    "merge_us": r.phase_s["merge"] * 1e6,
                })
    return pd.DataFrame(rows)


def exact_vs_greedy(cases=None, *, time_limit_s: float = 20.0) -> pd.DataFrame:
    """First-generation LPT vs the exact optimum on identical PEs (tiles cut freely from heads)."""
    from ...hardware.workload import decode_workload
    from ...scheduler import makespan_lower_bound, schedule_exact, schedule_tiles
    from ...scheduler.tiles import adaptive_tiles

    if cases is None:
        cases = []
        for model, T in (("smollm2-135m", 8192), ("llama-3.2-1b", 32768)):
            w = decode_workload(load_model_shape(model), T, sparse=True).attention.read_tokens[0]
            for n_pe in (3, 4, 6):
                for per_pe in (1, 2, 3):
                    cases.append((f"{model} @ {T}, layer 0", tuple(int(x) for x in w), n_pe, per_pe))
    rows = []
    for label, works, n_pe, per_pe in cases:
        tiles = adaptive_tiles(works, n_pe, per_pe)
        lpt = schedule_tiles(tiles, n_pe)
        exact = schedule_exact(tiles.length, n_pe, time_limit_s=time_limit_s)
        rows.append({
            "case": label, "n_pe": n_pe, "tiles_per_pe": per_pe, "tiles": len(tiles), "lower_bound": makespan_lower_bound(tiles.length, n_pe),
            "lpt_makespan": lpt.makespan, "exact_makespan": exact.makespan, "lpt_over_exact": lpt.makespan / exact.makespan - 1.0,
            "exact_over_bound": exact.makespan / makespan_lower_bound(tiles.length, n_pe) - 1.0,
        })
    return pd.DataFrame(rows)


def small_schedule(works, n_pe: int, tile_size: int | str = "auto", tiles_per_pe: int = 2):
    """An explicit first-generation tile set and its LPT schedule, for drawing (``plot_schedule``)."""
    from ...scheduler import make_tiles, schedule_lpt
    from ...scheduler.tiles import adaptive_tiles

    works = np.asarray(works, dtype=np.int64)
    tiles = adaptive_tiles(works, n_pe, tiles_per_pe) if tile_size == "auto" else make_tiles(works, int(tile_size))
    return tiles, schedule_lpt(tiles.length, n_pe)
