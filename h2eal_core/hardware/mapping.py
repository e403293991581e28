"""Mapping: where every head's KV, metadata and work lie on the banks, and what each bank, PE and
mesh link carries in one decode step.

Data placement is fixed at write time by the design's layout (:mod:`.layout`): ``home`` for the
head-parallel baseline readings, ``group`` for co-placement (and the split-KV reading), ``global``
for H2EAL. A decode step then reads the pages it needs *where they lie*: dense and streaming heads
read contiguous token ranges, retrieval heads above the budget read the pages of a
:class:`~.pages.PageSelection` (uniformly random or from a recorded :class:`~h2eal_core.traces.PageTrace`).

For each layer and each of the two phases (``score``: metadata read and page scoring; ``kv``: KV
read and attention) the placement gives a :class:`PhaseLoad`: token-equivalents and DRAM row
activations per bank, MACs per PE, bytes in and out of every PE's NoC port, the busiest directed
mesh link (XY routing, so link contention is counted), byte-hops for the NoC energy, and the units
read from the external tier. :mod:`.cost` turns these into time and energy.

Capacity comes first: the weights are spread evenly over all banks (identical for every design);
what is left of each bank holds KV and page metadata. ``home``: a head's data fills its home bank,
then the next banks up to the next head's home, then goes to the external tier. ``group``: a
group's overflow is a uniform fraction of its heads' data held by banks of other groups with spare
capacity (read over the NoC), then by the external tier. ``global``: capacity is pooled over all
banks.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from scipy import sparse as sp

from ..scheduler.lpt import lpt_tiled_loads, pes_per_head_of, schedule_tiles
from ..scheduler.tiles import adaptive_tiles
from .config import HBConfig
from .designs import Design
from .layout import chunk_counts, cyclic_add, interleave_width, layout_of, mesh_routes, split_at_banks
from .pages import PageSelection
from .workload import DecodeWorkload

PHASE_NAMES = ("score", "kv")


@dataclasses.dataclass(frozen=True)
class PhaseLoad:
    """What one phase of every layer puts on each resource (arrays ``[L, n_banks]`` or ``[L]``)."""

    bank_units: np.ndarray  # token-equivalents each bank reads from its DRAM
    bank_acts: np.ndarray  # DRAM row activations per bank
    pe_macs: np.ndarray  # MACs per PE
    pe_in: np.ndarray  # bytes each PE receives over its NoC port
    bank_out: np.ndarray  # bytes each bank's node sends over its NoC port
    link_max: np.ndarray  # [L] bytes on the busiest directed mesh link
    byte_hops: np.ndarray  # [L] bytes x hops (NoC energy)
    noc_bytes: np.ndarray  # [L] bytes injected into the mesh
    max_hops: np.ndarray  # [L] longest route used (latency)
    external_units: np.ndarray  # [L] token-equivalents read from the external tier

    @staticmethod
    def zeros(L: int, n: int) -> PhaseLoad:
        z2, z1 = np.zeros((L, n)), np.zeros(L)
        return PhaseLoad(z2, z2.copy(), z2.copy(), z2.copy(), z2.copy(), z1, z1.copy(), z1.copy(), z1.copy(), z1.copy())


def rr_counts(start: np.ndarray, n: np.ndarray, G: int) -> np.ndarray:
    """Units ``k in [start, start + n)`` per bank ``k mod G``: shape ``start.shape + (G,)``."""
    b = np.arange(G)
    s = np.asarray(start, dtype=np.int64)[..., None]
    e = s + np.asarray(n, dtype=np.int64)[..., None]
    return (e - 1 - b) // G - (s - 1 - b) // G


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


@dataclasses.dataclass(frozen=True)
class Placement:
    """Per-layer, per-bank placement of one decode step under one design (see the module docstring)."""

    design: Design
    layout: str  # home, group or global
    baseline: str  # the baseline reading of the hardware description
    n_banks: int
    group_banks: int  # G of the group layout, n_banks (global) or the largest home region (home)
    n_groups: int
    head_group: np.ndarray  # [N] group of each head column (-1 when global; home: region start bank)
    score: PhaseLoad
    kv: PhaseLoad
    score_units: np.ndarray  # [L, n_banks] metadata token-equivalents per bank before spill (x keep = local reads)
    kv_tokens: np.ndarray  # [L, n_banks] KV tokens per bank before spill (x keep = local reads)
    keep: np.ndarray  # [n_banks] fraction of a bank's data that is local (group layout spill), else 1
    score_max: np.ndarray  # [L] metadata units on the busiest bank
    kv_max: np.ndarray  # [L] KV tokens on the busiest bank
    head_spill: np.ndarray  # [N] fraction of each head's data outside its home banks / region
    remote_share: float  # group layout: of the spilled bytes, the fraction held by remote HB banks
    remote_bank_share: np.ndarray  # [n_banks] share of the remote bytes each bank serves
    pes_per_head: np.ndarray  # [L, N] PEs holding partials of each head (merge fan-in; 1 = no merge)
    weight_bytes_stored: float
    weight_hb_fraction: float
    kv_bytes_stored: float
    hb_free_bytes: float
    external_bytes_stored: float
    tile_sizes: np.ndarray  # [L, 2] LPT statistics of the adaptive tiles (global layout), 0 else
    lpt_gap: np.ndarray
    lpt_makespan: np.ndarray
    lpt_lower_bound: np.ndarray
    interleave_tokens: int  # tokens per bank chunk (0 for the home layout)
    read_tokens: np.ndarray  # [L, N] distinct KV tokens read per head column (from the selection)
    attended_tokens: np.ndarray  # [L, N] tokens x query heads attending to them
    scores_topk_max: np.ndarray  # [L] scores at the busiest top-k site of the distributed option
    scores_local: bool  # distributed top-k needs no NoC transfer (home layout: scores already at the PE)
    selection: PageSelection | None = None


def _bincount2(index: np.ndarray, weights: np.ndarray, L: int, n: int) -> np.ndarray:
    return np.bincount(index, weights=weights, minlength=L * n)[: L * n].reshape(L, n)


def _noc_load(layer, src, dst, nbytes, L: int, hw: HBConfig):
    """NoC quantities of the flows ``(layer, src bank, dst PE, bytes)`` (local flows dropped)."""
    n = hw.n_banks
    m = (src != dst) & (nbytes > 0) & (src >= 0)
    layer, src, dst, nbytes = layer[m], src[m], dst[m], nbytes[m]
    pe_in = _bincount2(layer * n + dst, nbytes, L, n)
    bank_out = _bincount2(layer * n + src, nbytes, L, n)
    if layer.size == 0:
        z = np.zeros(L)
        return pe_in, bank_out, z, z.copy(), z.copy(), z.copy()
    _, hops = mesh_routes(hw.mesh_rows, hw.mesh_cols)
    pair = src * n + dst
    link = _unicast_links(layer, pair, nbytes, L, hw)
    h = hops[pair].astype(float)
    max_hops = np.zeros(L)
    np.maximum.at(max_hops, layer, h)
    return (
        pe_in,
        bank_out,
        link.max(axis=1),
        np.bincount(layer, weights=nbytes * h, minlength=L)[:L],
        np.bincount(layer, weights=nbytes, minlength=L)[:L],
        max_hops,
    )


def _multicast_load(layer, src, consumers, nbytes, L: int, hw: HBConfig):
    """NoC quantities of multicasts: each piece read once at ``src`` and sent to every PE of its
    row of ``consumers`` (``[pieces, k]``) along the union of their XY routes (a link carries the
    piece once; the source port sends it once; every receiving port takes it whole)."""
    n = hw.n_banks
    route, hops = mesh_routes(hw.mesh_rows, hw.mesh_cols)
    k = consumers.shape[1]
    remote = consumers != src[:, None]
    has = remote.any(axis=1) & (nbytes > 0) & (src >= 0)
    layer, src, consumers, nbytes, remote = layer[has], src[has], consumers[has], nbytes[has], remote[has]
    pe_in = _bincount2(np.repeat(layer, k)[remote.ravel()] * n + consumers.ravel()[remote.ravel()], np.repeat(nbytes, k)[remote.ravel()], L, n)
    bank_out = _bincount2(layer * n + src, nbytes, L, n)
    z = np.zeros(L)
    if layer.size == 0:
        return pe_in, bank_out, z, z.copy(), z.copy(), z.copy()
    # distinct (source, consumer set) trees
    key = np.concatenate([src[:, None], consumers], axis=1)
    trees, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    pairs = trees[:, :1] * n + trees[:, 1:]  # [trees, k]
    union = np.zeros((trees.shape[0], route.shape[1]))
    for i in range(k):
        union += route[pairs[:, i]].toarray()
    union = (union > 0).astype(float)
    per_tree = np.zeros((L, trees.shape[0]))
    np.add.at(per_tree, (layer, inverse), nbytes)
    link = per_tree @ union
    depth = np.where(remote, hops[src[:, None] * n + consumers], 0).max(axis=1)
    max_hops = np.zeros(L)
    np.maximum.at(max_hops, layer, depth.astype(float))
    return pe_in, bank_out, link.max(axis=1), per_tree @ union.sum(axis=1), per_tree.sum(axis=1), max_hops


def _acts(units: np.ndarray, tb: float, row: float) -> np.ndarray:
    return np.ceil(np.asarray(units, dtype=float) * tb / row - 1e-9) * (np.asarray(units) > 0)


def _multiplicity(sel: PageSelection) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (row, page) pairs and how many query heads attend to each."""
    return sel.multiplicity()


def _unicast_links(layer, pair, nbytes, L: int, hw: HBConfig) -> np.ndarray:
    """``[L, links]`` bytes per directed link of unicast flows ``(layer, src * n + dst, bytes)``."""
    route, _ = mesh_routes(hw.mesh_rows, hw.mesh_cols)
    n2 = hw.n_banks * hw.n_banks
    key, inverse = np.unique(layer * n2 + pair, return_inverse=True)
    weight = np.bincount(np.asarray(inverse).ravel(), weights=nbytes, minlength=key.size)
    sel = sp.csr_matrix((weight, (key // n2, np.arange(key.size))), shape=(L, key.size))
    return np.asarray((sel @ route[key % n2]).todense())


def home_sites(hw: HBConfig, N: int, g: int):
    """Where the head-parallel readings compute and store: ``(col_kv, start, consumers, replicate, pe_q)``.

    ``head_parallel``: one PE per query head; the ``g`` query heads of KV head ``j`` sit on adjacent
    banks from ``start_j = j * n // N`` (the KV is written from ``start_j`` on and shared over the
    NoC), or, with ``gqa_kv_sharing: replicate``, every query head ``q`` keeps its own copy from
    bank ``q * n // (N g)``. ``head_parallel_kv``: one PE per KV head at ``start_j``. ``col_kv``
    maps each stored copy to its KV head column, ``consumers`` lists the PEs that read each copy.
    """
    n = hw.n_banks
    Q = N * g
    start_kv = (np.arange(N) * n) // N
    if hw.baseline == "head_parallel":
        replicate = hw.gqa_kv_sharing == "replicate" and g > 1
        if replicate:
            pe_q = (np.arange(Q) * n) // Q
            return np.arange(Q) // g, pe_q, pe_q[:, None], True, pe_q
        region = np.maximum(1, np.append(start_kv[1:], n) - start_kv)
        offset = np.minimum(np.arange(g)[None, :], region[:, None] - 1)
        pe_q = (start_kv[:, None] + offset).ravel()
        return np.arange(N), start_kv, pe_q.reshape(N, g), False, pe_q
    return np.arange(N), start_kv, start_kv[:, None], False, start_kv


def _home(att, hw: HBConfig, sel: PageSelection | None, free_units: int, selecting: np.ndarray):
    """Home-bank layout of the head-parallel readings: loads of both phases, spill, fan-in."""
    L, N, g, P, n = att.n_layers, att.n_heads, att.group_size, att.page_size, hw.n_banks
    tb = 2 * att.head_dim * hw.kv_bytes
    hd2 = 2 * att.head_dim
    row = hw.row_size
    col_kv, start, consumers, replicate, _ = home_sites(hw, N, g)
    mpu = hd2 * g if hw.baseline == "head_parallel_kv" else hd2
    D = col_kv.size
    region = np.maximum(1, np.append(start[1:], n) - start)
    stored = (att.stored_tokens + att.meta_stored_pages)[:, col_kv]  # [L, D]
    off = np.cumsum(stored, axis=0) - stored

    def locate(l, d, pos, length):
        piece, k, units = split_at_banks(pos, length, free_units)
        inside = k < region[d[piece]]
        bank = np.where(inside, start[d[piece]] + np.minimum(k, region[d[piece]] - 1), -1)
        return piece, bank, units.astype(float)

    loads = {}
    fan = np.ones((L, N), dtype=np.int64)
    ll, dd = np.meshgrid(np.arange(L), np.arange(D), indexing="ij")
    ll, dd = ll.ravel(), dd.ravel()
    # ---- score phase: metadata, contiguous after the KV pages of each layer ----------------------
    meta = att.meta_read_pages[:, col_kv].ravel()
    piece, bank, units = locate(ll, dd, off.ravel() + att.stored_tokens[:, col_kv].ravel(), meta)
    score_per_unit = np.divide(att.score_macs[:, col_kv].ravel(), np.maximum(meta, 1))[piece]
    loads["score"] = _home_phase(ll[piece], dd[piece], bank, units, consumers, score_per_unit / (1 if hw.baseline == "head_parallel_kv" else g), tb, row, L, hw)
    # ---- KV phase ----------------------------------------------------------------------------
    sel_rows = selecting[:, col_kv].ravel()
    contiguous = np.where(sel_rows, 0, att.read_tokens[:, col_kv].ravel())
    piece, bank, units = locate(ll, dd, off.ravel(), contiguous)
    parts = [(ll[piece], dd[piece], bank, units, None, float(mpu))]
    if sel is not None and sel.rows.size:
        if replicate:
            r, p, o = sel.expanded()
            d_of = (r % N) * g + o
            l_of = r // N
            t = sel.page_tokens(p)
            piece, bank, units = locate(l_of, d_of, off[l_of, d_of] + p * P, t)
            parts.append((l_of[piece], d_of[piece], bank, units, None, float(hd2)))
        elif hw.baseline == "head_parallel" and g > 1:
            # the bank reads each distinct page once; every query head's PE receives its own pages
            r, p, count = _multiplicity(sel)
            l_of, d_of = r // N, r % N
            piece, bank, units = locate(l_of, d_of, off[l_of, d_of] + p * P, sel.page_tokens(p))
            parts.append((l_of[piece], d_of[piece], bank, units, "read_only", 0.0))
            r2, p2, o2 = sel.expanded()
            l2, d2 = r2 // N, r2 % N
            piece, bank, units = locate(l2, d2, off[l2, d2] + p2 * P, sel.page_tokens(p2))
            parts.append((l2[piece], d2[piece], bank, units, o2[piece], float(hd2)))
        else:
            r, p, count = _multiplicity(sel)
            l_of, d_of = r // N, r % N
            piece, bank, units = locate(l_of, d_of, off[l_of, d_of] + p * P, sel.page_tokens(p))
            parts.append((l_of[piece], d_of[piece], bank, units, None, hd2 * count[piece]))
    loads["kv"] = _home_kv(parts, consumers, tb, row, L, hw)
    ext_units = loads["kv"].external_units.sum() + loads["score"].external_units.sum()
    return loads, fan, start, col_kv, float(ext_units), region, off, stored


def _home_phase(l, d, bank, units, consumers, macs_per_unit, tb, row, L, hw):
    """Score phase of the home layout: one read per piece, delivered to every consumer PE of its head."""
    n = hw.n_banks
    local = bank >= 0
    bank_units = _bincount2(l[local] * n + bank[local], units[local], L, n)
    bank_acts = _bincount2(l[local] * n + bank[local], _acts(units[local], tb, row), L, n)
    ext = np.bincount(l[~local], weights=units[~local], minlength=L)[:L].astype(float)
    c = consumers[d]  # [pieces, k]
    k = c.shape[1]
    lr, ur = np.repeat(l, k), np.repeat(units, k)
    mr = np.repeat(np.broadcast_to(macs_per_unit, units.shape), k)
    pe_macs = _bincount2(lr * n + c.ravel(), ur * mr, L, n)
    pe_in, bank_out, link_max, byte_hops, noc_bytes, max_hops = _multicast_load(l, bank, c, units * tb, L, hw)
    return PhaseLoad(bank_units, bank_acts, pe_macs, pe_in, bank_out, link_max, byte_hops, noc_bytes, max_hops, ext)


def _home_kv(parts, consumers, tb, row, L, hw):
    """KV phase of the home layout from read parts ``(layer, column, bank, units, owner, macs/unit)``."""
    n = hw.n_banks
    bank_units = np.zeros((L, n))
    bank_acts = np.zeros((L, n))
    pe_macs = np.zeros((L, n))
    ext = np.zeros(L)
    flows = []
    casts = []
    for l, d, bank, units, owner, mpu in parts:
        if isinstance(owner, str) or owner is None:
            local = bank >= 0
            bank_units += _bincount2(l[local] * n + bank[local], units[local], L, n)
            bank_acts += _bincount2(l[local] * n + bank[local], _acts(units[local], tb, row), L, n)
            ext += np.bincount(l[~local], weights=units[~local], minlength=L)[:L]
        if isinstance(owner, str):
            continue  # read once here; delivered by the next part
        if owner is None:
            c = consumers[d]
            k = c.shape[1]
            lr, ur, cr = np.repeat(l, k), np.repeat(units, k), c.ravel()
            mr = np.repeat(np.broadcast_to(mpu, units.shape), k)
            pe_macs += _bincount2(lr * n + cr, ur * mr, L, n)
            casts.append((l, bank, c, units * tb))
            continue
        else:
            lr, br, ur, cr = l, bank, units, consumers[d, owner]
            mr = np.broadcast_to(mpu, units.shape)
        pe_macs += _bincount2(lr * n + cr, ur * mr, L, n)
        flows.append((lr, br, cr, ur * tb))
    if flows:
        lr = np.concatenate([f[0] for f in flows])
        br = np.concatenate([f[1] for f in flows])
        cr = np.concatenate([f[2] for f in flows])
        by = np.concatenate([f[3] for f in flows])
    else:
        lr = br = cr = np.zeros(0, dtype=np.int64)
        by = np.zeros(0)
    pe_in, bank_out, link_max, byte_hops, noc_bytes, max_hops = _noc_load(lr, br, cr, by, L, hw)
    if casts:
        m = _multicast_load(
            np.concatenate([c[0] for c in casts]),
            np.concatenate([c[1] for c in casts]),
            np.concatenate([c[2] for c in casts]),
            np.concatenate([c[3] for c in casts]),
            L,
            hw,
        )
        if flows and by.size:
            # unicast and multicast share the links: add the per-link loads before taking the max
            link_max = _combined_link_max(lr, br, cr, by, casts, L, hw)
        else:
            link_max = m[2]
        pe_in, bank_out = pe_in + m[0], bank_out + m[1]
        byte_hops, noc_bytes, max_hops = byte_hops + m[3], noc_bytes + m[4], np.maximum(max_hops, m[5])
    return PhaseLoad(bank_units, bank_acts, pe_macs, pe_in, bank_out, link_max, byte_hops, noc_bytes, max_hops, ext)


def _link_loads_unicast(layer, src, dst, nbytes, L, hw):
    m = (src != dst) & (nbytes > 0) & (src >= 0)
    route, _ = mesh_routes(hw.mesh_rows, hw.mesh_cols)
    if not m.any():
        return np.zeros((L, route.shape[1]))
    return _unicast_links(layer[m], src[m] * hw.n_banks + dst[m], nbytes[m], L, hw)


def _link_loads_multicast(layer, src, consumers, nbytes, L, hw):
    n = hw.n_banks
    route, _ = mesh_routes(hw.mesh_rows, hw.mesh_cols)
    has = (consumers != src[:, None]).any(axis=1) & (nbytes > 0) & (src >= 0)
    layer, src, consumers, nbytes = layer[has], src[has], consumers[has], nbytes[has]
    out = np.zeros((L, route.shape[1]))
    if layer.size == 0:
        return out
    key = np.concatenate([src[:, None], consumers], axis=1)
    trees, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    union = np.zeros((trees.shape[0], route.shape[1]))
    for i in range(consumers.shape[1]):
        union += route[trees[:, 0] * n + trees[:, 1 + i]].toarray()
    per_tree = np.zeros((L, trees.shape[0]))
    np.add.at(per_tree, (layer, inverse), nbytes)
    return per_tree @ (union > 0).astype(float)


def _combined_link_max(lr, br, cr, by, casts, L, hw):
    uni = _link_loads_unicast(lr, br, cr, by, L, hw)
    multi = _link_loads_multicast(
        np.concatenate([c[0] for c in casts]),
        np.concatenate([c[1] for c in casts]),
        np.concatenate([c[2] for c in casts]),
        np.concatenate([c[3] for c in casts]),
        L,
        hw,
    )
    return (uni + multi).max(axis=1)


def _interleave(att, hw: HBConfig, sel: PageSelection | None, selecting, G: int, base, c0, w: int, wm: int):
    """Interleaved layout (group or global): per (layer, column) loads per slot, before spill.

    Returns per-(row, slot) arrays ``[L*N, G]``: kv tokens, kv activations, kv MACs, metadata
    units, metadata activations, metadata MACs.
    """
    L, N, g, P = att.n_layers, att.n_heads, att.group_size, att.page_size
    tb = 2 * att.head_dim * hw.kv_bytes
    hd2 = 2 * att.head_dim
    row = hw.row_size
    R = L * N
    starts = np.tile(c0, L)
    sel_flat = selecting.ravel()
    contiguous = np.where(sel_flat, 0, att.read_tokens.ravel())
    kv = chunk_counts(contiguous, starts, w, G).astype(float)
    kv_acts = _acts(kv, tb, row)
    kv_macs = kv * (hd2 * g)
    if sel is not None and sel.rows.size:
        r, p, count = _multiplicity(sel)
        cur = p == sel.n_pages - 1
        rc, rn, pn, cn = r[cur], r[~cur], p[~cur], count[~cur]
        if w <= P:
            cpp = P // w
            s = (starts[rn] + pn * cpp) % G
            chunks = cyclic_add(rn, s, np.full(rn.size, cpp), np.ones(rn.size), R, G)
            kv += chunks * w
            kv_acts += chunks * _acts(np.array([w]), tb, row)[0]
            kv_macs += cyclic_add(rn, s, np.full(rn.size, cpp), cn.astype(float), R, G) * w * hd2
        else:
            s = (starts[rn] + (pn * P) // w) % G
            idx = rn * G + s
            kv += np.bincount(idx, weights=np.full(rn.size, float(P)), minlength=R * G).reshape(R, G)
            kv_acts += np.bincount(idx, weights=np.full(rn.size, _acts(np.array([P]), tb, row)[0]), minlength=R * G).reshape(R, G)
            kv_macs += np.bincount(idx, weights=cn * float(P * hd2), minlength=R * G).reshape(R, G)
        # the current (partial) page: a contiguous token range
        T = att.context_len
        first = (sel.n_pages - 1) * P
        t_cur = (chunk_counts(np.full(rc.size, T), starts[rc], w, G) - chunk_counts(np.full(rc.size, first), starts[rc], w, G)).astype(float)
        np.add.at(kv, rc, t_cur)
        np.add.at(kv_acts, rc, _acts(t_cur, tb, row))
        np.add.at(kv_macs, rc, t_cur * hd2 * count[cur][:, None])
    meta = att.meta_read_pages.ravel()
    mu = chunk_counts(meta, starts, wm, G).astype(float)
    m_acts = _acts(mu, tb, row)
    m_macs = mu * np.divide(att.score_macs.ravel(), np.maximum(meta, 1))[:, None]
    return kv, kv_acts, kv_macs, mu, m_acts, m_macs


def _selection_for(workload: DecodeWorkload, selection) -> tuple[PageSelection | None, np.ndarray]:
    """The page selection of a workload (``None`` when no retrieval head is above the budget)."""
    att = workload.attention
    selecting = (att.meta_read_pages > 0) & (att.read_tokens < att.stored_tokens)
    if not workload.sparse or not selecting.any():
        return None, np.zeros_like(selecting)
    if isinstance(selection, PageSelection):
        if selection.selecting.shape != selecting.shape:
            from ..validation import ParameterError

            raise ParameterError("selection", f"shape {selection.selecting.shape}", f"a selection of shape {selecting.shape} (layers, batch x kv heads)")
        both = selection.selecting & selecting
        keep = both.ravel()[selection.rows]
        if not keep.all():
            selection = dataclasses.replace(
                selection, rows=selection.rows[keep], pages=selection.pages[keep], owners=selection.owners[keep], selecting=both, _cache={}
            )
        return selection, both
    from .pages import uniform_selection

    per_query = workload.sparsity.gqa == "per_query_head" and att.group_size > 1
    seed = 0 if selection in (None, "uniform") else int(selection)
    sel = _uniform_cached(selecting.tobytes(), selecting.shape, att.read_tokens.tobytes(), att.context_len, att.page_size, att.group_size, per_query, seed)
    return sel, selecting


@functools.lru_cache(maxsize=256)
def _uniform_cached(sel_bytes, shape, read_bytes, context_len, page_size, group_size, per_query, seed):
    from .pages import uniform_selection

    selecting = np.frombuffer(sel_bytes, dtype=bool).reshape(shape)
    read = np.frombuffer(read_bytes, dtype=np.int64).reshape(shape)
    return uniform_selection(selecting, read, context_len, page_size, group_size, per_query, seed)


def place(workload: DecodeWorkload, hw: HBConfig, design: Design, tile_size=None, *, selection=None) -> Placement:
    """Place one decode step's data and work on the banks under ``design``.

    ``selection``: a :class:`~.pages.PageSelection` (e.g. from a recorded trace), ``"uniform"`` /
    ``None`` (uniform random pages, seed 0) or an integer seed for the uniform draw.
    """
    att = workload.attention
    model = workload.model
    n = hw.n_banks
    L, N = att.n_layers, att.n_heads
    P = att.page_size
    g = att.group_size
    tb = 2 * att.head_dim * hw.kv_bytes
    tile_size = hw.tile_size if tile_size is None else tile_size
    layout = layout_of(design, hw)
    sel, selecting = _selection_for(workload, selection)

    # ---- capacity: weights first, then KV + metadata ------------------------------------------
    weight_bytes = model.n_parameters * hw.weight_bytes
    weight_hb = min(weight_bytes, hw.total_capacity)
    free_per_bank = max(0.0, hw.bank_capacity - weight_hb / n)
    stored_units = att.stored_tokens + att.meta_stored_pages
    head_stored = stored_units.sum(axis=0) * tb  # [N] bytes per head column over all layers
    kv_stored = float(head_stored.sum())

    read_tokens = att.read_tokens.astype(np.int64).copy()
    attended = att.read_tokens * g
    if sel is not None:
        read_tokens = np.where(selecting, sel.tokens_read(), read_tokens)
        attended = np.where(selecting, sel.attended_tokens(), attended)

    zeros2 = np.zeros((L, 2))
    tiles = gaps = makespans = bounds = zeros2
    remote_share = 0.0
    remote_bank_share = np.zeros(n)
    keep = np.ones(n)
    if layout == "home":
        free_units = int(free_per_bank // tb)
        loads, fan, start, col_kv, _, region, off, stored = _home(att, hw, sel, free_units, selecting)
        score, kv = loads["score"], loads["kv"]
        G = int(region.max())
        n_groups = int(start.size)
        head_group = start[: N] if col_kv.size == N else start[:: g][:N]
        # external fraction of each head column's stored data (extends beyond its region)
        cap = region * free_units
        tot = stored.sum(axis=0)
        outside = np.maximum(0, tot - cap) / np.maximum(tot, 1)
        head_spill = outside if col_kv.size == N else outside.reshape(N, g).mean(axis=1)
        external_stored = float((np.maximum(0, tot - cap) * tb).sum())
        kv_bytes_held = float((tot * tb).sum())
        w = 0
    else:
        w = interleave_width(design, hw, P)
        # metadata pages per bank chunk: page-sized chunks, one page per bank, or all in the head's first bank
        wm = {"chunk": P, "distributed": 1, "home": 1 << 40}[design.meta_layout]
        if layout == "global":
            G, n_groups = n, 1
            head_group = np.full(N, -1)
            base = np.zeros(N, dtype=np.int64)
            c0 = (np.arange(N) * n) // N
        else:
            G = min(hw.group_banks_for(att.n_kv_heads), n)
            n_groups = n // G
            head_group = att.kv_head_index % n_groups
            base = head_group * G
            rank = np.array([(head_group[:j] == head_group[j]).sum() for j in range(N)], dtype=np.int64)
            members = np.bincount(head_group, minlength=n_groups)[head_group]
            c0 = (rank * G) // members
        kv_s, kv_a, kv_m, mu, m_a, m_m = _interleave(att, hw, sel, selecting, G, base, c0, w, wm)
        # ---- spill ---------------------------------------------------------------------------
        if layout == "global":
            capacity = n * free_per_bank
            overflow = max(0.0, kv_stored - capacity)
            spill = overflow / kv_stored if kv_stored > 0 else 0.0
            keep = np.full(n, 1.0 - spill)
            head_spill = np.full(N, spill)
            external_stored = overflow
        else:
            onehot = (head_group[:, None] == np.arange(n_groups)[None, :]).astype(float)
            group_demand = onehot.T @ head_stored
            group_capacity = G * free_per_bank
            overflow = np.maximum(0.0, group_demand - group_capacity)
            spill_group = np.divide(overflow, group_demand, out=np.zeros_like(overflow), where=group_demand > 0)
            spare_bank = np.full(n, free_per_bank)
            spare_bank[: n_groups * G] = np.repeat(np.maximum(0.0, group_capacity - group_demand) / G, G)
            total_overflow = float(overflow.sum())
            total_spare = float(spare_bank.sum())
            remote_share = min(1.0, total_spare / total_overflow) if total_overflow > 0 else 0.0
            remote_bank_share = spare_bank / total_spare if (total_overflow > 0 and total_spare > 0) else np.zeros(n)
            keep[: n_groups * G] = np.repeat(1.0 - spill_group, G)
            head_spill = spill_group[head_group]
            external_stored = total_overflow * (1.0 - remote_share)
        kv_bytes_held = kv_stored
        bank_of = (np.tile(base, L)[:, None] + np.arange(G)[None, :])  # [L*N, G]
        layer_of = np.repeat(np.arange(L), N)[:, None] * n
        idx = (layer_of + bank_of).ravel()

        def per_bank(a):
            return np.bincount(idx, weights=a.ravel(), minlength=L * n).reshape(L, n) * keep[None, :]

        zero = np.zeros((L, n))
        z1 = np.zeros(L)
        spilled = (read_tokens + att.meta_read_pages) * head_spill[None, :]
        ext_units = (spilled * (1.0 - remote_share)).sum(axis=1) if layout == "group" else spilled.sum(axis=1)
        score = PhaseLoad(per_bank(mu), per_bank(m_a), per_bank(m_m), zero, zero.copy(), z1, z1.copy(), z1.copy(), z1.copy(), z1.copy())
        kv = PhaseLoad(per_bank(kv_s), per_bank(kv_a), per_bank(kv_m), zero.copy(), zero.copy(), z1.copy(), z1.copy(), z1.copy(), z1.copy(), ext_units)
        fan = (kv_s > 0).sum(axis=1).reshape(L, N).astype(np.int64)
        if layout == "global":
            _, _, t_s, g_s, m_s, b_s = _balanced_phase(att.meta_read_pages, hw, tile_size)
            _, _, t_k, g_k, m_k, b_k = _balanced_phase(att.read_tokens, hw, tile_size)
            tiles = np.stack([t_s, t_k], axis=1)
            gaps = np.stack([g_s, g_k], axis=1)
            makespans = np.stack([m_s, m_k], axis=1)
            bounds = np.stack([b_s, b_k], axis=1)

    # ---- top-k load of the distributed option ----------------------------------------------------
    per_query = workload.sparsity.gqa == "per_query_head" and g > 1
    if layout == "home":
        _, _, _, _, pe_q = home_sites(hw, N, g)
        site = np.zeros((L, n))
        if hw.baseline == "head_parallel":
            per_q = np.repeat(att.scores / g, g, axis=1)  # each query head's PE ranks its own scores
            for q in range(N * g):
                site[:, pe_q[q]] += per_q[:, q]
        else:
            for j in range(N):
                site[:, pe_q[j]] += att.scores[:, j]
        scores_max = site.max(axis=1)
        scores_local = True
    else:
        scores_max = att.scores.max(axis=1).astype(float)
        scores_local = False

    return Placement(
        design=design,
        layout=layout,
        baseline=hw.baseline,
        n_banks=n,
        group_banks=int(G),
        n_groups=int(n_groups),
        head_group=np.asarray(head_group),
        score=score,
        kv=kv,
        score_units=np.divide(score.bank_units, keep[None, :], out=np.zeros(score.bank_units.shape), where=keep[None, :] > 0),
        kv_tokens=np.divide(kv.bank_units, keep[None, :], out=np.zeros(kv.bank_units.shape), where=keep[None, :] > 0),
        keep=keep,
        score_max=score.bank_units.max(axis=1),
        kv_max=kv.bank_units.max(axis=1),
        head_spill=np.asarray(head_spill, dtype=float),
        remote_share=remote_share,
        remote_bank_share=remote_bank_share,
        pes_per_head=np.asarray(fan, dtype=np.int64),
        weight_bytes_stored=weight_bytes,
        weight_hb_fraction=weight_hb / weight_bytes if weight_bytes > 0 else 1.0,
        kv_bytes_stored=kv_bytes_held,
        hb_free_bytes=n * free_per_bank,
        external_bytes_stored=external_stored + (weight_bytes - weight_hb),
        tile_sizes=tiles,
        lpt_gap=gaps,
        lpt_makespan=makespans,
        lpt_lower_bound=bounds,
        interleave_tokens=int(w),
        read_tokens=read_tokens,
        attended_tokens=np.asarray(attended, dtype=np.int64),
        scores_topk_max=np.asarray(scores_max, dtype=float),
        scores_local=scores_local,
        selection=sel,
    )
