"""Event-level replay of the attention of one decode step, to cross-check the analytic model.

The analytic cost model (:mod:`.cost`) works on closed-form per-bank totals and expectations. This
module instead builds the step explicitly and plays it in order:

* every page a head reads is placed on a bank by the page layout's round-robin rule, and every
  retrieval head's *selected pages are sampled* (uniformly at random without replacement, the
  current page always kept) instead of taking an expectation; with the token layout
  (co-placement) the tokens a head reads are interleaved over its group's banks one by one (the
  same idealisation as the analytic model: the interleaving spreads any selection evenly);
* the load-balanced design builds the explicit tile list of each layer and assigns it with the
  general heap-based :func:`~h2eal_core.scheduler.schedule_lpt` (not the cached fast path);
* each PE then processes its work items one after the other (time per item = max of its bytes at
  bank bandwidth and its MACs at the PE rate); the scores stream through the controller's port into
  the top-k unit message by message (a two-stage pipeline); the partials of each head are merged
  by an explicit pairwise tree whose nodes wait for both children.

Phases are separated by barriers, as in the analytic model. Capacity and spill fractions are taken
from the mapping (they are bookkeeping, not timing), and the FC layers are added from the analytic
FC model, so the comparison isolates the attention timing. With ``selection="random"`` (default)
the result is the mean over ``n_samples`` sampled selections.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..attention.config import SparseAttentionConfig
from ..models.shape import ModelShape, load_model_shape
from ..scheduler.lpt import schedule_lpt
from ..scheduler.tiles import adaptive_tiles, make_tiles
from ..validation import check_choice, check_positive_int
from .config import HBConfig, load_hardware
from .cost import fc_costs
from .designs import get_design
from .mapping import place
from .workload import decode_workload

SELECTIONS = ("random", "recent")


@dataclasses.dataclass(frozen=True)
class EventResult:
    """Attention timing of one decode step replayed event by event."""

    model: str
    design: str
    context_len: int
    attention_latency_s: float  # mean over samples
    attention_latency_std_s: float  # standard deviation over samples
    latency_s: float  # attention + analytic FC time
    attention_layer_s: np.ndarray  # [L] mean per layer
    phase_s: dict[str, float]
    n_samples: int
    layers: tuple[int, ...]


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
        nxt = []
        for i in range(0, len(ready) - 1, 2):
            nxt.append(max(ready[i], ready[i + 1]) + level_time)
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
    selection: str = "random",
    n_samples: int = 16,
    seed: int = 0,
) -> EventResult:
    """Replay one decode step event by event (see the module docstring).

    ``layers`` restricts the replay to some layers (their times are reported; the latency then
    covers only those layers). ``selection="recent"`` selects the most recent pages instead of
    random ones (deterministic; for what-if comparisons).
    """
    shape = load_model_shape(model) if not isinstance(model, ModelShape) else model
    config = load_hardware(hw)
    d = get_design(design)
    check_choice("selection", selection, SELECTIONS)
    check_positive_int("n_samples", n_samples)
    workload = decode_workload(shape, context_len, sparse=d.sparse, sparsity=sparsity, retrieval_mask=retrieval_mask, batch=batch)
    placement = place(workload, config, d, tile_size=tile_size)
    tile_size = config.tile_size if tile_size is None else tile_size
    att = workload.attention
    L, N = att.n_layers, att.n_heads
    P = att.page_size
    n = config.n_banks
    tb = 2 * att.head_dim * config.kv_bytes
    mpu = att.macs_per_unit
    bw, pe, link = config.bank_bandwidth, config.pe_mac_rate, config.noc_link_bandwidth
    hop = config.noc_hop_latency
    mean_hops = config.mean_hops
    layer_ids = list(range(L)) if layers is None else [int(x) for x in layers]
    rng = np.random.default_rng(seed)
    random_heads = (att.meta_read_pages > 0) & (d.kv_layout == "page")
    samples = n_samples if (selection == "random" and random_heads[layer_ids].any()) else 1

    G = placement.group_banks
    head_group = placement.head_group
    keep = placement.keep
    partial_elements = att.partial_elements
    level_time = partial_elements * config.partial_bytes / link + mean_hops * hop + partial_elements * config.merge_ops_per_element / pe
    per_query = workload.sparsity.gqa == "per_query_head" and att.group_size > 1

    def play(items: list[list[float]]) -> float:
        """Each PE processes its items in order; the phase ends with the slowest PE."""
        finish = 0.0
        for bank, queue in enumerate(items):
            t = 0.0
            for units in queue:
                u = units * keep[bank]
                t += max(u * tb / bw, u * mpu / pe)
            finish = max(finish, t)
        return finish

    totals = np.zeros((samples, len(layer_ids)))
    phase_totals = {k: 0.0 for k in ("score", "topk", "kv", "remote", "external", "merge")}
    for s in range(samples):
        for li, layer in enumerate(layer_ids):
            kv_items = [[] for _ in range(n)]  # per bank: units of each head it reads
            meta_items = [[] for _ in range(n)]
            fan_in = np.zeros(N, dtype=np.int64)
            if d.scope == "group":
                offset_pages = {}  # running round-robin offsets per group (physical placement)
                offset_tokens = {}
                offset_meta = {}
                rank = {}
                for j in range(N):
                    g = int(head_group[j])
                    base = g * G
                    r = int(att.read_tokens[layer, j])
                    # ---- KV ----
                    if d.kv_layout == "page":
                        start = offset_pages.get(g, 0)
                        n_stored = int(att.stored_pages[layer, j])
                        if random_heads[layer, j]:
                            k = int(att.read_pages[layer, j])
                            if selection == "random":
                                chosen = rng.choice(n_stored - 1, k - 1, replace=False)
                            else:
                                chosen = np.arange(n_stored - k, n_stored - 1)
                            pages = np.append(chosen, n_stored - 1)
                            last_len = r - (k - 1) * P
                            tokens = np.where(pages == n_stored - 1, last_len, P)
                        else:
                            n_read = int(att.read_pages[layer, j])
                            pages = np.arange(n_read)
                            tokens = np.full(n_read, P)
                            tokens[-1] = r - (n_read - 1) * P
                        banks = base + (start + pages) % G
                        offset_pages[g] = start + n_stored
                    else:
                        start = offset_tokens.get(g, 0)
                        banks = base + (start + np.arange(r)) % G
                        tokens = np.ones(r, dtype=np.int64)
                        offset_tokens[g] = start + r
                    per_bank = np.bincount(banks, weights=tokens, minlength=n)
                    for b in np.flatnonzero(per_bank):
                        kv_items[b].append(per_bank[b])
                    fan_in[j] = np.count_nonzero(per_bank)
                    # ---- metadata ----
                    m = int(att.meta_read_pages[layer, j])
                    if m:
                        if d.meta_layout == "home":
                            bank_pages = {base + rank.get(g, 0) % G: m}
                        elif d.meta_layout == "chunk":
                            start_m = offset_meta.get(g, 0)
                            n_chunks = -(-m // P)
                            sizes = np.full(n_chunks, P)
                            sizes[-1] = m - (n_chunks - 1) * P
                            mb = np.bincount(base + (start_m + np.arange(n_chunks)) % G, weights=sizes, minlength=n)
                            bank_pages = {int(b): mb[b] for b in np.flatnonzero(mb)}
                            offset_meta[g] = start_m + n_chunks
                        else:
                            start_m = offset_meta.get(g, 0)
                            mb = np.bincount(base + (start_m + np.arange(m)) % G, minlength=n)
                            bank_pages = {int(b): mb[b] for b in np.flatnonzero(mb)}
                            offset_meta[g] = start_m + m
                        for b, u in bank_pages.items():
                            meta_items[b].append(u)
                    rank[g] = rank.get(g, 0) + 1
            else:
                for phase, work, items in (("score", att.meta_read_pages[layer], meta_items), ("kv", att.read_tokens[layer], kv_items)):
                    if not work.any():
                        continue
                    order = np.lexsort((np.arange(N), -work))
                    w = work[order]
                    tiles = adaptive_tiles(w, n, config.tiles_per_pe) if tile_size == "auto" else make_tiles(w, int(tile_size))
                    schedule = schedule_lpt(tiles.length, n)
                    for t_idx in schedule.order:
                        items[int(schedule.assignment[t_idx])].append(int(tiles.length[t_idx]))
                    if phase == "kv":
                        for h_sorted in range(N):
                            pes = np.unique(schedule.assignment[tiles.head == h_sorted])
                            fan_in[order[h_sorted]] = pes.size
            t_score = play(meta_items)
            t_kv = play(kv_items)
            # ---- top-k: per-PE score messages through the controller port into the top-k unit ----
            messages = []
            for b in range(n):
                pages = sum(meta_items[b])
                if pages:
                    # a PE holding metadata of several heads sends one message per head
                    for u in meta_items[b]:
                        count = u * (att.group_size if per_query else 1)
                        messages.append((count * config.score_bytes / link, count / config.topk_rate))
            t_topk = _pipeline(messages) + 2 * mean_hops * hop if messages else 0.0
            # ---- spilled data ----
            units = (att.read_tokens[layer] + att.meta_read_pages[layer]).astype(float)
            spilled = units * placement.head_spill
            remote = spilled * placement.remote_share
            external = spilled - remote
            t_remote = 0.0
            if d.scope == "group" and remote.sum() > 0:
                per_pe = np.zeros(n)  # remote bytes arriving at each PE of a group, split evenly
                for j in range(N):
                    g = int(head_group[j])
                    per_pe[g * G : (g + 1) * G] += remote[j] * tb / G
                recv = per_pe.max() / link
                serve = remote.sum() * tb * placement.remote_bank_share.max() / bw
                mac = per_pe.max() / tb * mpu / pe
                t_remote = max(recv, serve, mac) + mean_hops * hop
            t_external = external.sum() * tb / config.external_bandwidth
            # ---- merge: one explicit tree per head, all in parallel ----
            t_merge = max((_tree_merge(int(k), level_time) for k in fan_in), default=0.0)
            layer_time = t_score + t_topk + t_kv + t_remote + t_external + t_merge
            totals[s, li] = layer_time
            for key, value in (("score", t_score), ("topk", t_topk), ("kv", t_kv), ("remote", t_remote), ("external", t_external), ("merge", t_merge)):
                phase_totals[key] += value / samples
    per_layer = totals.mean(axis=0)
    attention = float(per_layer.sum())
    std = float(totals.sum(axis=1).std())
    fc = fc_costs(workload, config, placement.weight_hb_fraction)
    fc_latency = fc["hb_dram"] + fc["compute"] + fc["external"] + fc["noc"]
    if layers is not None:
        fc_latency = 0.0
    return EventResult(
        model=shape.name,
        design=d.name,
        context_len=int(context_len),
        attention_latency_s=attention,
        attention_latency_std_s=std,
        latency_s=attention + fc_latency,
        attention_layer_s=per_layer,
        phase_s=phase_totals,
        n_samples=samples,
        layers=tuple(layer_ids),
    )
