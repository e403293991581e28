"""Mapping: where every head's KV, metadata and work lie on the banks, and what does not fit.

Capacity comes first: the weights are spread evenly over all banks (identical for every design);
what is left of each bank holds KV cache and page metadata. Streaming heads store only
``sink + local`` tokens, so sparsity also frees capacity.

*Head-parallel* designs (``scope="group"``: baseline, sparse, coplace) split the banks into head
groups of ``G`` banks (``G = n_banks // n_kv_heads`` by default, SPEC 2.3 "KV head h lives in bank
group h"); KV head ``h`` of every layer (and of every request of a batch) lives in group
``h mod n_groups``. Inside a group the data is spread round-robin over its ``G`` banks, by whole
pages (``kv_layout="page"``) or by token (``"token"``, co-placement). When a group's data exceeds
its capacity, the excess (a uniform fraction of each of its heads, an assumption) spills to
*remote* banks with spare capacity, then to the *external* tier.

The *load-balanced* design (``scope="global"``) places each layer's work by the LPT schedule of
its tiles over all PEs (data stored where its tile is computed); capacity is pooled over all banks,
and only what exceeds the pooled capacity goes to the external tier.

Reads of Quest-selected pages: with the page layout a selected page is read by the one bank that
holds it; the selection is modelled as uniformly random among the head's pages (current page always
included) and the busiest bank's *expected* load is computed exactly (:mod:`.selection`). With the
token layout (co-placement) the selected tokens are modelled as spreading evenly over the banks
(an idealisation when a group has more banks than a page has tokens). Dense and streaming heads
read contiguous pages, which round-robin spreads exactly. The event-level simulation
(:mod:`.events`) samples selections explicitly and checks these expectations.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from ..scheduler.lpt import lpt_tiled_loads, pes_per_head_of, schedule_tiles
from ..scheduler.tiles import adaptive_tiles
from .config import HBConfig
from .designs import Design
from .selection import expected_max, group_max_distribution
from .workload import DecodeWorkload


@dataclasses.dataclass(frozen=True)
class Placement:
    """Per-layer, per-bank placement of one decode step under one design."""

    design: Design
    n_banks: int
    group_banks: int  # G (head-parallel) or n_banks (load-balanced)
    n_groups: int
    head_group: np.ndarray  # [N] group of each head column (-1 when load-balanced)
    score_units: np.ndarray  # [L, n_banks] metadata pages scored per bank (before spill)
    kv_tokens: np.ndarray  # [L, n_banks] (expected) KV tokens read per bank (before spill)
    keep: np.ndarray  # [n_banks] fraction of a bank's data that is local (1 - spill of its group)
    score_max: np.ndarray  # [L] metadata pages on the busiest bank (after spill)
    kv_max: np.ndarray  # [L] (expected) KV tokens on the busiest bank (after spill)
    head_spill: np.ndarray  # [N] fraction of each head's data outside its home banks
    remote_share: float  # of the spilled bytes, the fraction held by remote HB banks (rest external)
    remote_bank_share: np.ndarray  # [n_banks] share of remote bytes each bank serves
    pes_per_head: np.ndarray  # [L, N] PEs holding partials of each head (merge fan-in)
    weight_bytes_stored: float
    weight_hb_fraction: float  # fraction of the weights held in HB (the rest is external)
    kv_bytes_stored: float  # KV + metadata bytes stored for all heads
    hb_free_bytes: float  # HB capacity left after the weights
    external_bytes_stored: float
    tile_sizes: np.ndarray  # [L, 2] (score, attention) tile size of the load-balanced design, 0 else
    lpt_gap: np.ndarray  # [L, 2] LPT makespan / lower bound - 1 (load-balanced design), 0 else
    lpt_makespan: np.ndarray  # [L, 2] units
    lpt_lower_bound: np.ndarray  # [L, 2] units


def rr_counts(start: np.ndarray, n: np.ndarray, G: int) -> np.ndarray:
    """Units ``k in [start, start + n)`` per bank ``k mod G``: shape ``start.shape + (G,)``."""
    b = np.arange(G)
    s = np.asarray(start, dtype=np.int64)[..., None]
    e = s + np.asarray(n, dtype=np.int64)[..., None]
    return (e - 1 - b) // G - (s - 1 - b) // G


def _group_spread(units: np.ndarray, tokens: np.ndarray | None, page_size: int, G: int, before: np.ndarray) -> np.ndarray:
    """Tokens per bank ``[L, N, G]`` of a round-robin spread continuing over the heads of a group.

    ``units`` are pages (``tokens`` given: the last page of each head holds only its remainder) or
    tokens (``tokens`` None).
    """
    return _group_spread_from(units @ before, units, tokens, page_size, G)


def _group_spread_from(start: np.ndarray, units: np.ndarray, tokens: np.ndarray | None, page_size: int, G: int) -> np.ndarray:
    """Like :func:`_group_spread` with explicit start offsets ``[L, N]``."""
    counts = rr_counts(start, units, G)
    if tokens is None:
        return counts
    per_bank = counts * page_size
    deficit = units * page_size - tokens
    last = (start + units - 1) % G
    has = units > 0
    li, hi = np.nonzero(has)
    per_bank[li, hi, last[li, hi]] -= deficit[li, hi]
    return per_bank


@dataclasses.dataclass(frozen=True)
class PhaseSchedule:
    """The LPT schedule of one phase of one layer, reduced to what the cost model needs."""

    loads: np.ndarray  # [n_pe] units per PE
    pes_per_head: np.ndarray  # [n_heads] in the order given
    n_tiles: int
    tile_size: int  # largest tile
    makespan: float
    lower_bound: float  # max(total / n_pe, largest tile)

    @property
    def gap(self) -> float:
        return self.makespan / self.lower_bound - 1.0 if self.lower_bound > 0 else 0.0


@functools.lru_cache(maxsize=65536)
def schedule_phase(works: tuple[int, ...], tile_size, n_pe: int, tiles_per_pe: int) -> PhaseSchedule:
    """LPT schedule of one phase: adaptive tiles (``tile_size="auto"``) or fixed-size tiles."""
    w = np.asarray(works, dtype=np.int64)
    if tile_size == "auto":
        tiles = adaptive_tiles(w, n_pe, tiles_per_pe)
        schedule = schedule_tiles(tiles, n_pe)
        loads = schedule.loads.astype(np.int64)
        fan_in = pes_per_head_of(schedule, tiles) if len(tiles) else np.zeros(w.size, dtype=np.int64)
        result = PhaseSchedule(
            loads, fan_in, len(tiles), tiles.tile_size, float(schedule.makespan), float(schedule.lower_bound)
        )
    else:
        fast = lpt_tiled_loads(w, int(tile_size), n_pe)
        result = PhaseSchedule(
            fast.loads, fast.pes_per_head, fast.n_tiles, fast.tile_size, float(fast.makespan), float(fast.lower_bound)
        )
    result.loads.setflags(write=False)
    return result


def _balanced_phase(work: np.ndarray, hw: HBConfig, tile_size):
    """LPT-balanced loads ``[L, n_banks]``, fan-in ``[L, N]``, tile sizes, gaps for one phase."""
    L, N = work.shape
    n = hw.n_banks
    loads = np.zeros((L, n), dtype=np.int64)
    fan_in = np.zeros((L, N), dtype=np.int64)
    tiles = np.zeros(L, dtype=np.int64)
    gap = np.zeros(L)
    makespan = np.zeros(L)
    bound = np.zeros(L)
    offset = 0
    for layer in range(L):
        w = work[layer]
        if not w.any():
            continue
        order = np.lexsort((np.arange(N), -w))  # canonical: longest heads first, ties by index
        result = schedule_phase(tuple(int(x) for x in w[order]), tile_size, n, hw.tiles_per_pe)
        # rotate PEs from layer to layer so that per-bank totals even out over the step
        loads[layer] = np.roll(result.loads, offset)
        offset = (offset + result.n_tiles) % n
        fan_in[layer, order] = result.pes_per_head
        tiles[layer] = result.tile_size
        makespan[layer] = result.makespan
        bound[layer] = result.lower_bound
        gap[layer] = result.gap
    return loads, fan_in, tiles, gap, makespan, bound


def _random_page_layer_max(
    fixed: np.ndarray, avail: np.ndarray, draws: np.ndarray, keep: np.ndarray, page_size: int, cache: dict
) -> np.ndarray:
    """Expected busiest-bank tokens per layer when some groups read randomly selected pages.

    ``fixed``, ``avail``: ``[L, groups, G]`` deterministic tokens and selectable pages per bank;
    ``draws``: ``[L, groups]`` pages drawn (without replacement) per group; ``keep``: ``[groups]``.
    """
    L, n_groups, G = fixed.shape
    combined = np.sort(avail.astype(np.int64) * (1 << 32) + fixed.astype(np.int64), axis=-1)
    out = np.empty(L)
    for layer in range(L):
        det_max = 0.0
        parts: dict[tuple, int] = {}
        for g in range(n_groups):
            k = int(draws[layer, g])
            if k == 0:
                det_max = max(det_max, float(fixed[layer, g].max()) * keep[g])
                continue
            key = (combined[layer, g].tobytes(), k, float(keep[g]))
            parts[key] = parts.get(key, 0) + 1
        layer_key = (tuple(sorted(parts.items())), det_max)
        if layer_key not in cache:
            if len(cache) > 100_000:  # bounded: long sweeps revisit few patterns
                cache.clear()
            groups = []
            for (row, k, kp), mult in parts.items():
                values = np.frombuffer(row, dtype=np.int64)
                av, fx = values >> 32, values & ((1 << 32) - 1)
                pairs, counts = np.unique(np.stack([av, fx], axis=1), axis=0, return_counts=True)
                classes = tuple((int(c), int(a), int(f)) for (a, f), c in zip(pairs, counts))
                vals, cdf = group_max_distribution(classes, k, page_size)
                groups.append((vals * kp, cdf, mult))
            cache[layer_key] = expected_max(groups, det_max)
        out[layer] = cache[layer_key]
    return out


_LAYER_MAX_CACHE: dict = {}


def place(workload: DecodeWorkload, hw: HBConfig, design: Design, tile_size=None) -> Placement:
    """Place one decode step's data and work on the banks under ``design``."""
    att = workload.attention
    model = workload.model
    n = hw.n_banks
    L, N = att.n_layers, att.n_heads
    P = att.page_size
    tb = 2 * att.head_dim * hw.kv_bytes  # bytes per token-equivalent
    tile_size = hw.tile_size if tile_size is None else tile_size

    # ---- capacity: weights first, then KV + metadata ------------------------------------------
    weight_bytes = model.n_parameters * hw.weight_bytes
    weight_hb = min(weight_bytes, hw.total_capacity)
    free_per_bank = max(0.0, hw.bank_capacity - weight_hb / n)
    stored_units = att.stored_tokens + att.meta_stored_pages  # [L, N]
    head_stored = stored_units.sum(axis=0) * tb  # [N] bytes per head column over all layers
    kv_stored = float(head_stored.sum())

    if design.scope == "group":
        G = min(hw.group_banks_for(att.n_kv_heads), n)
        n_groups = n // G
        head_group = att.kv_head_index % n_groups
        onehot = (head_group[:, None] == np.arange(n_groups)[None, :]).astype(np.int64)  # [N, groups]
        same = head_group[:, None] == head_group[None, :]
        before = np.triu(same, 1).astype(np.int64)  # before[j', j]: j' < j in the same group
        rank = before.sum(axis=0)  # index of a head among the heads of its group

        # capacity per group, spill to remote banks with spare capacity, then external
        group_demand = onehot.T @ head_stored  # [groups]
        group_capacity = G * free_per_bank
        overflow = np.maximum(0.0, group_demand - group_capacity)
        spill_group = np.divide(overflow, group_demand, out=np.zeros_like(overflow), where=group_demand > 0)
        spare_bank = np.full(n, free_per_bank)
        spare_bank[: n_groups * G] = np.repeat(np.maximum(0.0, group_capacity - group_demand) / G, G)
        total_overflow = float(overflow.sum())
        total_spare = float(spare_bank.sum())
        remote_share = min(1.0, total_spare / total_overflow) if total_overflow > 0 else 0.0
        remote_bank_share = spare_bank / total_spare if (total_overflow > 0 and total_spare > 0) else np.zeros(n)
        keep_group = 1.0 - spill_group
        keep = np.ones(n)
        keep[: n_groups * G] = np.repeat(keep_group, G)
        head_spill = spill_group[head_group]
        external_stored = total_overflow * (1.0 - remote_share)

        def to_groups(per_head_bank):  # [L, N, G] -> [L, groups, G]
            return np.einsum("lnb,ng->lgb", per_head_bank, onehot)

        # ---- KV read per bank ----------------------------------------------------------------
        if design.kv_layout == "page":
            start = att.stored_pages @ before  # physical placement: pages round-robin from here
            random = att.meta_read_pages > 0  # retrieval heads reading selected pages
            det_units = np.where(random, 0, att.read_pages)
            det_tokens = np.where(random, 0, att.read_tokens)
            det = _group_spread_from(start, det_units, det_tokens, P, G)
            avail = rr_counts(start, np.where(random, att.stored_pages - 1, 0), G)
            current = np.zeros((L, N, G), dtype=np.int64)
            last_len = att.read_tokens - (att.read_pages - 1) * P
            li, hi = np.nonzero(random)
            current[li, hi, (start + att.stored_pages - 1)[li, hi] % G] = last_len[li, hi]
            draws = np.where(random, att.read_pages - 1, 0) @ onehot  # [L, groups] pages drawn at random
            fixed_g = to_groups(det + current)
            avail_g = to_groups(avail)
            p_sel = np.divide(draws, avail_g.sum(axis=2), out=np.zeros(draws.shape), where=avail_g.sum(axis=2) > 0)
            kv_g = fixed_g + avail_g * p_sel[..., None] * P  # expected tokens per bank
            if random.any():
                kv_max = _random_page_layer_max(fixed_g, avail_g, draws, keep_group, P, _LAYER_MAX_CACHE)
            else:
                kv_max = (kv_g * keep_group[None, :, None]).reshape(L, -1).max(axis=1)
            fan_in = np.minimum(G, att.read_pages)
        else:
            kv_g = to_groups(_group_spread(att.read_tokens, None, P, G, before))
            kv_max = (kv_g * keep_group[None, :, None]).reshape(L, -1).max(axis=1)
            fan_in = np.minimum(G, att.read_tokens)

        # ---- metadata scored per bank ---------------------------------------------------------
        if design.meta_layout == "home":
            meta = np.zeros((L, N, G), dtype=np.int64)
            meta[:, np.arange(N), rank % G] = att.meta_read_pages
        elif design.meta_layout == "chunk":
            chunks = -(-att.meta_read_pages // P)
            meta = _group_spread(chunks, att.meta_read_pages, P, G, before)
        else:
            meta = _group_spread(att.meta_read_pages, None, P, G, before)
        meta_g = to_groups(meta)
        score_max = (meta_g * keep_group[None, :, None]).reshape(L, -1).max(axis=1)

        kv_tokens = np.zeros((L, n))
        score_units = np.zeros((L, n))
        kv_tokens[:, : n_groups * G] = kv_g.reshape(L, -1)
        score_units[:, : n_groups * G] = meta_g.reshape(L, -1)
        zeros = np.zeros((L, 2))
        tiles, gaps, makespans, bounds = zeros, zeros, zeros, zeros
    else:
        G, n_groups = n, 1
        head_group = np.full(N, -1)
        score_units, _, t_s, g_s, m_s, b_s = _balanced_phase(att.meta_read_pages, hw, tile_size)
        kv_tokens, fan_in, t_k, g_k, m_k, b_k = _balanced_phase(att.read_tokens, hw, tile_size)
        capacity = n * free_per_bank
        overflow = max(0.0, kv_stored - capacity)
        spill = overflow / kv_stored if kv_stored > 0 else 0.0
        keep = np.full(n, 1.0 - spill)
        head_spill = np.full(N, spill)
        remote_share = 0.0
        remote_bank_share = np.zeros(n)
        external_stored = overflow
        score_max = score_units.max(axis=1) * (1.0 - spill)
        kv_max = kv_tokens.max(axis=1) * (1.0 - spill)
        tiles = np.stack([t_s, t_k], axis=1)
        gaps = np.stack([g_s, g_k], axis=1)
        makespans = np.stack([m_s, m_k], axis=1)
        bounds = np.stack([b_s, b_k], axis=1)

    return Placement(
        design=design,
        n_banks=n,
        group_banks=G,
        n_groups=n_groups,
        head_group=head_group,
        score_units=np.asarray(score_units, dtype=float),
        kv_tokens=np.asarray(kv_tokens, dtype=float),
        keep=keep,
        score_max=np.asarray(score_max, dtype=float),
        kv_max=np.asarray(kv_max, dtype=float),
        head_spill=head_spill,
        remote_share=remote_share,
        remote_bank_share=remote_bank_share,
        pes_per_head=np.asarray(fan_in, dtype=np.int64),
        weight_bytes_stored=weight_bytes,
        weight_hb_fraction=weight_hb / weight_bytes if weight_bytes > 0 else 1.0,
        kv_bytes_stored=kv_stored,
        hb_free_bytes=n * free_per_bank,
        external_bytes_stored=external_stored + (weight_bytes - weight_hb),
        tile_sizes=tiles,
        lpt_gap=gaps,
        lpt_makespan=makespans,
        lpt_lower_bound=bounds,
    )
