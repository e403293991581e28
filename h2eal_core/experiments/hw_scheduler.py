"""Figure 8: the load-balancing scheduler, per-PE load before and after, and the greedy's gap.

"Before" is co-placement with per-group scheduling (each head group's PEs compute only their own
heads); "after" is H2EAL's LPT schedule of adaptive tiles over all PEs. The greedy's quality is
measured against the lower bound ``max(total / n_PE, largest tile)`` on every grid point and
against the exact MILP optimum on small instances.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..hardware import DEFAULT_CONTEXTS, get_design, load_hardware, place, simulate_decode
from ..hardware.workload import decode_workload
from ..models.shape import list_model_shapes, load_model_shape
from ..scheduler import make_tiles, makespan_lower_bound, schedule_exact, schedule_lpt, schedule_tiles
from ..scheduler.tiles import adaptive_tiles
from ..validation import ParameterError, check_choice, check_list, check_nonnegative_int, check_positive_int

PHASE_INDEX = {"score": 0, "kv": 1}


def layer_loads(model: str, context_len: int, layer: int = 0, phase: str = "kv", designs=("coplace", "h2eal"), hardware: str = "h2eal_hb", *, hw=None) -> pd.DataFrame:
    """Per-PE load (token-equivalents) of one layer's phase under each design."""
    config = hw if hw is not None else load_hardware(hardware)
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
            rows.append(
                {
                    "design": d.name,
                    "pe": pe,
                    "load": float(load),
                    "busiest": float(peak),
                    "utilization": float(loads.sum() / (config.n_banks * peak)) if peak > 0 else 1.0,
                    "head_group": int(pe // p.group_banks) if d.scope == "group" and pe < p.n_groups * p.group_banks else -1,
                }
            )
    return pd.DataFrame(rows)


def greedy_gap_table(models=None, contexts=DEFAULT_CONTEXTS, tilings=(("auto", 1), ("auto", 2), ("auto", 4), (16, 1), (64, 1)), hardware: str = "h2eal_hb", *, hw=None) -> pd.DataFrame:
    """LPT quality on every (model, context) point for several tilings.

    Columns: the worst per-layer gap to ``max(total/n_PE, largest tile)`` (``lpt_gap``), the worst
    per-layer makespan over the divisible optimum ``ceil(total / n_PE)`` (``over_divisible``), the
    tiles and merge fan-in of the step, and H2EAL's attention latency with that tiling.
    """
    config = hw if hw is not None else load_hardware(hardware)
    names = list_model_shapes() if not models else check_list("models", models, lambda n, v: load_model_shape(v).name)
    contexts = check_list("contexts", contexts, check_positive_int)
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
                rows.append(
                    {
                        "tiling": f"{tile_size} tokens" if tile_size != "auto" else f"auto, {per_pe}/PE",
                        "tile_size": str(tile_size),
                        "tiles_per_pe": per_pe,
                        "model": name,
                        "context_len": T,
                        "lpt_gap": float(p.lpt_gap.max()),
                        "worst_layer": int(worst[0]),
                        "worst_phase": ("score", "kv")[int(worst[1])],
                        "over_divisible": float(over),
                        "merge_fan_in": int(p.pes_per_head.sum()),
                        "h2eal_attention_us": r.attention_latency_s * 1e6,
                        "merge_us": r.phase_s["merge"] * 1e6,
                    }
                )
    return pd.DataFrame(rows)


def exact_vs_greedy(cases=None, *, time_limit_s: float = 20.0) -> pd.DataFrame:
    """LPT vs the exact optimum on small instances cut from real layers.

    ``cases``: ``(label, works per head, n_pe, tiles_per_pe)``; default: the heads of one layer of
    SmolLM2-135M and Llama-3.2-1B at 8K and 32K on 3-6 PEs.
    """
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
        rows.append(
            {
                "case": label,
                "n_pe": n_pe,
                "tiles_per_pe": per_pe,
                "tiles": len(tiles),
                "lower_bound": makespan_lower_bound(tiles.length, n_pe),
                "lpt_makespan": lpt.makespan,
                "exact_makespan": exact.makespan,
                "lpt_over_exact": lpt.makespan / exact.makespan - 1.0,
                "exact_over_bound": exact.makespan / makespan_lower_bound(tiles.length, n_pe) - 1.0,
            }
        )
    return pd.DataFrame(rows)


def small_schedule(works, n_pe: int, tile_size: int | str = "auto", tiles_per_pe: int = 2):
    """An explicit tile set and its LPT schedule, for drawing (``plot_schedule``)."""
    works = np.asarray(works, dtype=np.int64)
    tiles = adaptive_tiles(works, n_pe, tiles_per_pe) if tile_size == "auto" else make_tiles(works, int(tile_size))
    return tiles, schedule_lpt(tiles.length, n_pe)
