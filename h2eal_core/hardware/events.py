"""Event-level replay of the attention of one decode step, to cross-check the analytic latency.

The replay takes the *same placement* as the analytic model (:func:`~.mapping.place`: the same
write-time layout, the same page selection, uniform or from a trace, the same per-bank rows) and
plays the timing event by event instead of using closed-form bounds:

* **DRAM commands**: every bank issues its row activations one after the other. An activation may
  start only when the bank's previous row is done (``max(tRC, row bytes / bank_bw)`` after the
  previous activation) and when the rolling window of its ``activation_window_banks`` banks holds
  fewer than 4 activations in the last ``tFAW`` (checked against the actual issue times of the
  other banks, in time order, with a heap); the bank's data is in its PE ``tRCD + row bytes /
  bank_bw`` after its last activation. The analytic model instead takes
  ``max(bytes / bw, activations x tRC, window activations x tFAW / 4) + tRCD``.
* **top-k**: the scores stream message by message (one per PE holding a head's metadata)
  through the controller's port into the top-k unit, a two-stage pipeline (central option);
* **merge**: the partials of each head are merged by an explicit pairwise tree whose nodes wait for
  both children (or, pipelined, the last level only).

PE compute, NoC ports and links, remote and external data are taken as the analytic model's
serial-server times (bookkeeping, not re-derived). The FC layers are added from the analytic FC
model, so the comparison isolates the attention timing.
"""

from __future__ import annotations

import dataclasses
import heapq

import numpy as np

from ..attention.config import SparseAttentionConfig
from ..models.shape import ModelShape, load_model_shape
from ..validation import check_choice, check_positive_int
from .config import HBConfig, load_hardware
from .cost import fc_costs, remote_times
from .designs import get_design
from .mapping import PhaseLoad, place
from .workload import ceil_log2, decode_workload

SELECTIONS = ("uniform",)


@dataclasses.dataclass(frozen=True)
class EventResult:
    """Attention timing of one decode step replayed event by event."""

    model: str
    design: str
    context_len: int
    attention_latency_s: float
    attention_latency_std_s: float  # over selection seeds (0 for one seed)
    latency_s: float  # attention + analytic FC time
    attention_layer_s: np.ndarray  # [layers replayed]
    phase_s: dict[str, float]
    n_samples: int
    layers: tuple[int, ...]


def dram_replay(bank_bytes: np.ndarray, bank_acts: np.ndarray, hw: HBConfig) -> float:
    """Finish time of every bank's row reads of one phase (see the module docstring)."""
    n = bank_bytes.size
    k = hw.activation_window_banks
    trc, tfaw, trcd, bw = hw.row_cycle_time, hw.four_activation_window, hw.row_activate_delay, hw.bank_bandwidth
    finish = 0.0
    for d0 in range(0, n, k):
        banks = [b for b in range(d0, min(n, d0 + k)) if bank_acts[b] > 0]
        if not banks:
            continue
        rows = {b: bank_bytes[b] / bank_acts[b] for b in banks}
        spacing = {b: max(trc, rows[b] / bw) for b in banks}
        left = {b: int(round(bank_acts[b])) for b in banks}
        if len(banks) == 1:  # one bank alone in its window: the spacing is exact in closed form
            b = banks[0]
            s = max(spacing[b], tfaw / 4.0)
            finish = max(finish, (left[b] - 1) * s + trcd + rows[b] / bw)
            continue
        heap = [(0.0, b) for b in banks]
        heapq.heapify(heap)
        window: list[float] = []  # issue times of the domain's activations (last 4 kept)
        last = {}
        while heap:
            ready, b = heapq.heappop(heap)
            t = ready
            if len(window) >= 4:
                t = max(t, window[-4] + tfaw)
            if t > ready + 1e-18 and heap and heap[0][0] < t:
                heapq.heappush(heap, (t, b))  # another bank may go first in time order
                continue
            window.append(t)
            if len(window) > 8:
                del window[:-4]
            last[b] = t
            left[b] -= 1
            if left[b] > 0:
                heapq.heappush(heap, (t + spacing[b], b))
        for b in banks:
            finish = max(finish, last[b] + trcd + rows[b] / bw)
    return finish


def _other_bounds(load: PhaseLoad, layer: int, hw: HBConfig) -> float:
    """Serial-server times of the PEs, NoC ports and busiest link in one layer (plus hop latency)."""
    t_mac = load.pe_macs[layer].max() / hw.pe_mac_rate
    link = hw.noc_link_bandwidth
    t_noc = max(load.pe_in[layer].max(), load.bank_out[layer].max(), load.link_max[layer]) / link
    lat = load.max_hops[layer] * hw.noc_hop_latency if load.noc_bytes[layer] > 0 else 0.0
    return max(t_mac, t_noc), lat


def _phase(load: PhaseLoad, layer: int, hw: HBConfig, tb: float) -> float:
    t_dram = dram_replay(load.bank_units[layer] * tb, load.bank_acts[layer], hw)
    other, lat = _other_bounds(load, layer, hw)
    if t_dram == 0.0 and other == 0.0:
        return 0.0
    return max(t_dram, other + (hw.row_activate_delay if load.bank_acts[layer].sum() > 0 else 0.0)) + lat


def _pipeline(messages: list[tuple[float, float]]) -> float:
    """Finish time of a two-stage pipeline (port transfer, then top-k consumption) of messages."""
    port = topk = 0.0
    for transfer, consume in messages:
        port += transfer
        topk = max(topk, port) + consume
    return topk


def _tree_merge(n_leaves: int, level_time: float) -> float:
    """Finish time of a pairwise merge tree over ``n_leaves`` partials that are all ready at 0."""
    ready = [0.0] * n_leaves
    while len(ready) > 1:
        nxt = [max(ready[i], ready[i + 1]) + level_time for i in range(0, len(ready) - 1, 2)]
        if len(ready) % 2:
            nxt.append(ready[-1])
        ready = nxt
    return ready[0] if ready else 0.0


def simulate_events(
    model: str | ModelShape,
    hw: str | HBConfig = "h2eal_hb",
    context_len: int = 32768,
    design: str = "h2eal",
    sparsity: SparseAttentionConfig | None = None,
    batch: int = 1,
    *,
    retrieval_mask: np.ndarray | None = None,
    tile_size: int | str | None = None,
    layers: list[int] | None = None,
    selection="uniform",
    n_samples: int = 1,
    seed: int = 0,
) -> EventResult:
    """Replay one decode step event by event (see the module docstring).

    ``layers`` restricts the replay to some layers (the latency then covers only those layers).
    ``n_samples`` > 1 replays that many uniform selections (seeds ``seed, seed + 1, ...``) and
    reports their mean; a :class:`~.pages.PageSelection` may be passed as ``selection``.
    """
    shape = load_model_shape(model) if not isinstance(model, ModelShape) else model
    config = load_hardware(hw)
    d = get_design(design)
    check_positive_int("n_samples", n_samples)
    if isinstance(selection, str):
        check_choice("selection", selection, SELECTIONS)
    workload = decode_workload(shape, context_len, sparse=d.sparse, sparsity=sparsity, retrieval_mask=retrieval_mask, batch=batch)
    att = workload.attention
    L = att.n_layers
    layer_ids = list(range(L)) if layers is None else [int(x) for x in layers]
    tb = 2 * att.head_dim * config.kv_bytes
    partial_elements = att.partial_elements
    link, hop, mean_hops = config.noc_link_bandwidth, config.noc_hop_latency, config.mean_hops
    level = partial_elements * config.partial_bytes / link + mean_hops * hop + partial_elements * config.merge_ops_per_element / config.pe_mac_rate
    per_query = workload.sparsity.gqa == "per_query_head" and att.group_size > 1
    seeds = [selection] if not isinstance(selection, str) else [seed + s for s in range(n_samples)]
    totals = np.zeros((len(seeds), len(layer_ids)))
    phase_totals = {k: 0.0 for k in ("score", "topk", "kv", "remote", "external", "merge")}
    for si, sel in enumerate(seeds):
        p = place(workload, config, d, tile_size=tile_size, selection=sel)
        t_remote_layer, _ = remote_times(workload, p, config)
        # remote and external phases are bookkeeping: take them per layer from the analytic model
        ext_layer = (p.score.external_units + p.kv.external_units) * tb / config.external_bandwidth
        for li, layer in enumerate(layer_ids):
            t_score = _phase(p.score, layer, config, tb)
            t_kv = _phase(p.kv, layer, config, tb)
            scores = float(att.scores[layer].sum())
            t_topk = 0.0
            if scores > 0:
                if config.topk == "central":
                    messages = []
                    units = p.score.bank_units[layer]
                    share = units / units.sum() if units.sum() > 0 else np.zeros_like(units)
                    for b in np.flatnonzero(share):
                        count = scores * share[b]
                        messages.append((count * config.score_bytes / link, count / config.topk_rate))
                    t_topk = _pipeline(messages) + 2 * mean_hops * hop
                elif p.scores_local:
                    t_topk = p.scores_topk_max[layer] / config.topk_rate
                else:
                    s = p.scores_topk_max[layer]
                    t_topk = max(s * config.score_bytes / link, s / config.topk_rate) + 2 * mean_hops * hop
            fan = p.pes_per_head[layer]
            if config.merge == "pipelined":
                depth = int(ceil_log2(fan).max()) if fan.size else 0
                t_merge = level + (depth - 1) * mean_hops * hop if depth > 0 else 0.0
            else:
                t_merge = max((_tree_merge(int(k), level) for k in fan), default=0.0)
            t_remote = float(t_remote_layer[layer])
            t_ext = float(ext_layer[layer])
            total = t_score + t_topk + t_kv + max(0.0, t_remote) + t_ext + t_merge
            totals[si, li] = total
            for key, value in (("score", t_score), ("topk", t_topk), ("kv", t_kv), ("remote", max(0.0, t_remote)), ("external", t_ext), ("merge", t_merge)):
                phase_totals[key] += value / len(seeds)
    per_layer = totals.mean(axis=0)
    attention = float(per_layer.sum())
    fc = fc_costs(workload, config, p.weight_hb_fraction)
    fc_latency = 0.0 if layers is not None else fc["hb_dram"] + fc["compute"] + fc["external"] + fc["noc"]
    return EventResult(
        model=shape.name,
        design=d.name,
        context_len=int(context_len),
        attention_latency_s=attention,
        attention_latency_std_s=float(totals.sum(axis=1).std()),
        latency_s=attention + fc_latency,
        attention_layer_s=per_layer,
        phase_s=phase_totals,
        n_samples=len(seeds),
        layers=tuple(layer_ids),
    )

