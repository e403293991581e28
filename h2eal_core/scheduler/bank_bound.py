"""Scheduling instances with real work: page-granular tiles bound to the banks their data lies in.

One instance is the attention (KV) phase of one layer at one decode step. Its tasks are tiles:
whole page chunks of one KV head lying in one bank (a *page chunk* is the part of a read page that
the write-time layout, :class:`~h2eal_core.scheduler.layout.KVLayout`, put in that bank; a tile
gathers the chunks of one head in one bank, in page order, a chunk joining the tile in which it
starts, ``tile_tokens`` tokens per tile; chunks are never split). A tile has

* ``bytes``: its K and V (``2 * head_dim * kv_bytes`` per token), read by its bank;
* ``macs``: ``2 * head_dim`` per token and attending query head (QK and PV);
* ``bank``: where its data lies, fixed when it was written.

Cost model of a schedule (an assignment of tiles to PEs), three resources working concurrently
(reads, computation and the network are streamed; reconstruction, labelled):

* bank ``b`` reads every byte that lies in it: ``R_b = bytes in b / bank_bw``, whatever the schedule;
* PE ``p``: ``C_p = sum over its tiles of macs / PE rate``, plus, for every tile whose data lies in
  another bank, ``bytes / link_bw + hops * hop_latency`` (the transfer is serialised with the
  receiving PE's work: no double buffering of remote data, conservative for moving);
* mesh link ``l`` (2D mesh ``hw.mesh_shape``, dimension-ordered XY routing, each direction its own
  link): ``Lambda_l = bytes routed over l / link_bw`` (link contention).

The makespan is ``max(max_b R_b, max_p C_p, max_l Lambda_l)``. The partials of a head computed on
``k`` PEs merge by a log-sum-exp tree of ``ceil(log2 k)`` levels (SPEC 1.4), each level one partial
message (``group_size * (head_dim + 2)`` elements) over ``mean_hops`` hops plus its merge ops; trees
of different heads run in parallel, so the layer's merge time is the deepest tree. The layer time
is makespan + merge time: merge cost grows with fan-in.

Lower bound of the makespan of every schedule: ``max(max_b R_b, total macs / (n_PE * PE rate),
largest tile's macs / PE rate)`` (SPEC 2.4's ``max(total / n_PE, largest task)`` with the fixed
bank reads added): no assignment can read a bank faster or compute the total with fewer PEs.

Schedulers (:func:`schedule`): ``lpt`` (locality-first longest-processing-time: tiles by
decreasing MACs; a tile stays on its own bank's PE while that PE stays under the lower bound,
otherwise it goes to the PE within ``radius`` hops (default 4: with token interleave over all banks
a page's 16 tokens lie in one 16-bank mesh row, so relieving a hot row needs a reach of a few rows)
that finishes it first, link loads included;
then a local search moves single tiles off the busiest PE (or swaps them with a tile of a nearby
PE) while that lowers it; the same search
is also started from owner-computes and the better of the two is kept, so LPT is never worse than
every tile staying local),
``owner`` (every tile on its bank's PE: co-placement without a scheduler), ``round_robin`` (tiles in
head-major order dealt to PE ``i mod n_PE``, the naive balancer that ignores locality),
``head_parallel`` (every tile of a head on the head's home PE, the layout origin: one PE per KV
head, Fig. 3a's head parallelism), and the exact MILP :func:`schedule_exact_bank_bound` for small
instances.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from ..validation import ParameterError, check_choice, check_nonnegative_int, check_positive, check_positive_int
from .layout import KVLayout
from .selection import HeadRead

SCHEDULERS = ("lpt", "owner", "round_robin", "head_parallel")
#: Above this many binary variables the exact solver refuses (small instances only).
MAX_EXACT_BINARIES = 4000


@dataclasses.dataclass(frozen=True)
class MeshCosts:
    """The hardware constants a schedule's cost needs (SI units), taken from an HBConfig."""

    n_pe: int
    rows: int
    cols: int
    bank_bw: float  # B/s
    pe_rate: float  # MAC/s
    link_bw: float  # B/s per link
    hop_s: float  # s per hop
    kv_bytes: float  # B per element
    partial_bytes: float  # B per element
    merge_ops: float  # ops per partial element
    mean_hops: float

    @classmethod
    def from_hw(cls, hw) -> MeshCosts:
        rows, cols = hw.mesh_shape
        return cls(
            n_pe=int(hw.n_banks), rows=int(rows), cols=int(cols), bank_bw=float(hw.bank_bandwidth), pe_rate=float(hw.pe_mac_rate),
            link_bw=float(hw.noc_link_bandwidth), hop_s=float(hw.noc_hop_latency), kv_bytes=float(hw.kv_bytes),
            partial_bytes=float(hw.partial_bytes), merge_ops=float(hw.merge_ops_per_element), mean_hops=float(hw.mean_hops),
        )

    @functools.cached_property
    def hops(self) -> np.ndarray:
        """``[n_pe, n_pe]`` Manhattan distance on the mesh (PE ``i`` at row ``i // cols``)."""
        r, c = np.divmod(np.arange(self.n_pe), self.cols)
        return np.abs(r[:, None] - r[None, :]) + np.abs(c[:, None] - c[None, :])

    @property
    def n_links(self) -> int:
        return 2 * self.rows * (self.cols - 1) + 2 * (self.rows - 1) * self.cols

    def route(self, src: int, dst: int) -> list[int]:
        """Directed link ids of the XY route ``src -> dst`` (columns first, then rows)."""
        r1, c1 = divmod(int(src), self.cols)
        r2, c2 = divmod(int(dst), self.cols)
        n_h = self.rows * (self.cols - 1)
        n_v = (self.rows - 1) * self.cols
        links = []
        if c2 > c1:
            links += [r1 * (self.cols - 1) + c for c in range(c1, c2)]
        elif c2 < c1:
            links += [n_h + r1 * (self.cols - 1) + c for c in range(c2, c1)]
        if r2 > r1:
            links += [2 * n_h + r * self.cols + c2 for r in range(r1, r2)]
        elif r2 < r1:
            links += [2 * n_h + n_v + r * self.cols + c2 for r in range(r2, r1)]
        return links

    def link_loads(self, src: np.ndarray, dst: np.ndarray, volume: np.ndarray) -> np.ndarray:
        """Bytes on every directed link when ``volume[i]`` goes ``src[i] -> dst[i]`` (XY routing)."""
        R, C = self.rows, self.cols
        src, dst, volume = np.asarray(src), np.asarray(dst), np.asarray(volume, dtype=float)
        r1, c1 = np.divmod(src, C)
        r2, c2 = np.divmod(dst, C)
        parts = []
        for go, row, a, b in ((c2 > c1, r1, c1, c2), (c2 < c1, r1, c2, c1)):  # east, west
            d = np.zeros((R, C + 1))
            np.add.at(d, (row[go], a[go]), volume[go])
            np.add.at(d, (row[go], b[go]), -volume[go])
            parts.append(np.cumsum(d, axis=1)[:, : C - 1].ravel())
        for go, a, b in ((r2 > r1, r1, r2), (r2 < r1, r2, r1)):  # south, north
            d = np.zeros((R + 1, C))
            np.add.at(d, (a[go], c2[go]), volume[go])
            np.add.at(d, (b[go], c2[go]), -volume[go])
            parts.append(np.cumsum(d, axis=0)[: R - 1, :].ravel())
        return np.concatenate(parts)


@dataclasses.dataclass(frozen=True)
class BankBoundInstance:
    """The tiles of one layer's attention phase, each bound to the bank its data lies in."""

    label: str
    layer: int
    costs: MeshCosts
    head: np.ndarray  # [n] KV head of each tile
    bank: np.ndarray  # [n] bank holding the tile's data
    tokens: np.ndarray  # [n]
    bytes: np.ndarray  # [n]
    macs: np.ndarray  # [n]
    head_kinds: tuple[str, ...]  # [H]
    head_home: np.ndarray  # [H] home PE of each head (its layout origin)
    partial_elements: int  # numbers in one head's partial: group_size * (head_dim + 2)

    def __post_init__(self):
        n = self.head.size
        for name in ("bank", "tokens", "bytes", "macs"):
            if getattr(self, name).shape != (n,):
                raise ParameterError(f"instance.{name}", getattr(self, name).shape, f"shape ({n},), one entry per tile")
        if n and (self.bank.min() < 0 or self.bank.max() >= self.costs.n_pe):
            raise ParameterError("instance.bank", int(self.bank.max()), f"a bank index below n_pe = {self.costs.n_pe}")
        if n and (self.head.min() < 0 or self.head.max() >= len(self.head_kinds)):
            raise ParameterError("instance.head", int(self.head.max()), f"a head index below {len(self.head_kinds)}")

    @property
    def n_tiles(self) -> int:
        return int(self.head.size)

    @property
    def n_pe(self) -> int:
        return self.costs.n_pe

    @property
    def n_heads(self) -> int:
        return len(self.head_kinds)

    @functools.cached_property
    def compute_s(self) -> np.ndarray:
        return self.macs / self.costs.pe_rate

    @functools.cached_property
    def transfer_s(self) -> np.ndarray:
        return self.bytes / self.costs.link_bw

    @functools.cached_property
    def bank_read_s(self) -> np.ndarray:
        """``[n_pe]`` seconds each bank reads (fixed by the layout and the selection)."""
        return np.bincount(self.bank, weights=self.bytes, minlength=self.n_pe) / self.costs.bank_bw

    def cost_matrix(self) -> np.ndarray:
        """``[n, n_pe]`` seconds tile ``i`` adds to PE ``p``: MACs, plus transfer and hops when moved."""
        hops = self.costs.hops[self.bank]  # [n, n_pe]
        moved = hops > 0
        return self.compute_s[:, None] + moved * (self.transfer_s[:, None] + hops * self.costs.hop_s)

    @property
    def lower_bound(self) -> float:
        """``max(max_b R_b, total MACs / (n_PE rate), largest tile MACs / rate)``: no schedule is faster."""
        if self.n_tiles == 0:
            return 0.0
        return float(max(self.bank_read_s.max(), self.compute_s.sum() / self.n_pe, self.compute_s.max()))

    @property
    def merge_level_s(self) -> float:
        """One level of a head's log-sum-exp merge tree: a partial message plus its merge ops."""
        c = self.costs
        pb = self.partial_elements * c.partial_bytes
        return pb / c.link_bw + c.mean_hops * c.hop_s + self.partial_elements * c.merge_ops / c.pe_rate

    def evaluate(self, assignment, scheduler: str = "") -> ScheduleCost:
        """Cost of ``assignment`` (PE of every tile)."""
        a = np.asarray(assignment, dtype=np.int64)
        if a.shape != (self.n_tiles,):
            raise ParameterError("assignment", a.shape, f"shape ({self.n_tiles},): exactly one PE per tile")
        if self.n_tiles and (a.min() < 0 or a.max() >= self.n_pe):
            raise ParameterError("assignment", int(a.max() if a.max() >= self.n_pe else a.min()), f"PE indices in [0, {self.n_pe - 1}]")
        c = self.costs
        hops = c.hops[self.bank, a] if self.n_tiles else np.zeros(0, dtype=np.int64)
        moved = hops > 0
        per_tile = self.compute_s + moved * (self.transfer_s + hops * c.hop_s)
        pe = np.bincount(a, weights=per_tile, minlength=self.n_pe)
        links = c.link_loads(self.bank[moved], a[moved], self.bytes[moved]) / c.link_bw
        pairs = np.unique(self.head * self.n_pe + a) if self.n_tiles else np.zeros(0, dtype=np.int64)
        fan_in = np.bincount(pairs // self.n_pe, minlength=self.n_heads)
        depth = np.ceil(np.log2(np.maximum(fan_in, 1))).astype(np.int64)
        merge = float(depth.max(initial=0) * self.merge_level_s)
        return ScheduleCost(
            scheduler=scheduler, assignment=a, pe_s=pe, bank_s=self.bank_read_s, link_s=links, fan_in=fan_in,
            merge_s=merge, lower_bound=self.lower_bound, moved_tiles=int(moved.sum()),
            noc_byte_hops=float((self.bytes * hops).sum()),
        )


@dataclasses.dataclass(frozen=True)
class ScheduleCost:
    """Per-resource times of one schedule of one instance (seconds)."""

    scheduler: str
    assignment: np.ndarray
    pe_s: np.ndarray  # [n_pe]
    bank_s: np.ndarray  # [n_pe]
    link_s: np.ndarray  # [n_links]
    fan_in: np.ndarray  # [H] PEs holding partials of each head
    merge_s: float
    lower_bound: float
    moved_tiles: int
    noc_byte_hops: float

    @property
    def makespan(self) -> float:
        return float(max(self.bank_s.max(initial=0.0), self.pe_s.max(initial=0.0), self.link_s.max(initial=0.0)))

    @property
    def layer_s(self) -> float:
        """Makespan plus the deepest merge tree."""
        return self.makespan + self.merge_s

    @property
    def gap(self) -> float:
        """Makespan / lower bound - 1 (0: provably optimal)."""
        return self.makespan / self.lower_bound - 1.0 if self.lower_bound > 0 else 0.0

    @property
    def bottleneck(self) -> str:
        values = {"bank": self.bank_s.max(initial=0.0), "pe": self.pe_s.max(initial=0.0), "link": self.link_s.max(initial=0.0)}
        return max(values, key=values.get)

    @property
    def busy_s(self) -> np.ndarray:
        """``[n_pe]`` time each bank-PE node is busy: max of its bank's reads and its PE's work."""
        return np.maximum(self.pe_s, self.bank_s)


# ---- building instances --------------------------------------------------------------------------
def tiles_of_head(read: HeadRead, *, origin: int, layout: KVLayout, page_size: int, n_banks: int,
                  tile_tokens: int) -> tuple[np.ndarray, ...]:
    """``(bank, tokens, queries-weighted tokens)`` of the tiles of one head (whole page chunks)."""
    if read.pages.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    start = np.repeat(read.pages * page_size, read.tokens)
    offset = np.arange(start.size) - np.repeat(np.cumsum(read.tokens) - read.tokens, read.tokens)
    page_of = np.repeat(np.arange(read.pages.size), read.tokens)
    bank = layout.banks_of_tokens(start + offset, page_size, origin, n_banks)
    chunk, chunk_tokens = np.unique(bank * read.pages.size + page_of, return_counts=True)  # sorted by (bank, page)
    c_bank, c_page = np.divmod(chunk, read.pages.size)
    first = np.r_[True, c_bank[1:] != c_bank[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(chunk.size), 0))
    cum = np.cumsum(chunk_tokens) - chunk_tokens
    within = cum - cum[group_start]
    key = c_bank * (int(chunk_tokens.sum()) + 1) + within // tile_tokens  # a chunk joins the tile it starts in
    tile, inverse = np.unique(key, return_inverse=True)
    t_bank = np.bincount(inverse, weights=c_bank, minlength=tile.size) / np.bincount(inverse, minlength=tile.size)
    t_tokens = np.bincount(inverse, weights=chunk_tokens, minlength=tile.size)
    t_qtokens = np.bincount(inverse, weights=chunk_tokens * read.queries[c_page], minlength=tile.size)
    return t_bank.astype(np.int64), t_tokens.astype(np.int64), t_qtokens.astype(np.int64)


def layer_instance(reads, layer: int, *, head_dim: int, group_size: int, costs: MeshCosts, layout: KVLayout,
                   page_size: int, tile_tokens: int | None = None, label: str = "") -> BankBoundInstance:
    """The bank-bound tiles of one layer from what each of its KV heads reads."""
    n = costs.n_pe
    tt = page_size if tile_tokens is None else check_positive_int("tile_tokens", tile_tokens)
    n_kv = len(reads)
    heads, banks, toks, qtoks, homes = [], [], [], [], []
    for h, read in enumerate(reads):
        origin = layout.origin(layer, h, n_kv, n)
        b, t, q = tiles_of_head(read, origin=origin, layout=layout, page_size=page_size, n_banks=n, tile_tokens=tt)
        heads.append(np.full(b.size, h, dtype=np.int64))
        banks.append(b)
        toks.append(t)
        qtoks.append(q)
        homes.append(origin)
    tokens = np.concatenate(toks)
    return BankBoundInstance(
        label=label, layer=layer, costs=costs, head=np.concatenate(heads), bank=np.concatenate(banks), tokens=tokens,
        bytes=tokens * 2.0 * head_dim * costs.kv_bytes, macs=np.concatenate(qtoks) * 2.0 * head_dim,
        head_kinds=tuple(r.kind for r in reads), head_home=np.asarray(homes, dtype=np.int64),
        partial_elements=group_size * (head_dim + 2),
    )


# ---- schedulers ------------------------------------------------------------------------------------
def schedule_owner(inst: BankBoundInstance) -> np.ndarray:
    """Every tile on the PE below its bank: compute where the data lies, no balancing.

    The ``+coplace`` stage of SPEC 2.3 ("compute goes where data is") without H2EAL's scheduler:
    what co-placement alone achieves, so LPT's gain over it is the scheduler's own share."""
    return inst.bank.copy()


def schedule_round_robin_tiles(inst: BankBoundInstance) -> np.ndarray:
    """Tile ``i`` (head-major, then bank order) on PE ``i mod n_PE``: balances counts, ignores locality.

    The naive balancer of SPEC 2.4's comparison (the first generation's ``schedule_round_robin``):
    tiles are spread without regard to cost or to where their data lies."""
    return np.arange(inst.n_tiles, dtype=np.int64) % inst.n_pe


def schedule_head_parallel(inst: BankBoundInstance) -> np.ndarray:
    """Every tile of a head on the head's home PE (its layout origin): one PE per KV head.

    The head parallelism of the paper's "basic HB implementation" (Fig. 3a, SPEC 2.3): no
    intra-head tiling and so no merge; data in other banks reaches the home PE over the mesh. Here
    one PE computes all query heads of a KV head (the ``head_parallel_kv`` reading), on the same
    write-time layout as the other schedulers, so only the placement of computation differs."""
    return inst.head_home[inst.head].copy()


@functools.lru_cache(maxsize=64)
def _neighbourhoods(costs: MeshCosts, radius: int) -> tuple[tuple[np.ndarray, ...], dict]:
    hops = costs.hops
    near = []
    for b in range(costs.n_pe):
        cand = np.flatnonzero(hops[b] <= radius)
        near.append(cand[np.lexsort((cand, hops[b, cand]))])  # own PE first, then by distance and index
    return tuple(near), {}


def schedule_lpt_bank_bound(inst: BankBoundInstance, radius: int = 4, *, improve: bool = True) -> np.ndarray:
    """Locality-first LPT (see the module docstring), then (``improve``) a local search that moves
    single tiles off the busiest PE while that lowers it; deterministic (ties: fewer hops, then PE index)."""
    check_nonnegative_int("radius", radius)
    c = inst.costs
    near, routes = _neighbourhoods(c, int(radius))
    n = inst.n_tiles
    assignment = np.empty(n, dtype=np.int64)
    if n == 0:
        return assignment
    target = inst.lower_bound * (1 + 1e-12)
    load = np.zeros(c.n_pe)
    link = np.zeros(c.n_links)
    comp, trans = inst.compute_s, inst.transfer_s

    def path(b: int, p: int) -> tuple:
        r = routes.get((b, p))
        if r is None:
            r = routes[(b, p)] = tuple(c.route(b, p))
        return r

    def cost(i: int, p: int) -> float:
        b = int(inst.bank[i])
        return comp[i] if p == b else comp[i] + trans[i] + c.hops[b, p] * c.hop_s

    order = np.lexsort((np.arange(n), -comp))
    holds: set[tuple[int, int]] = set()
    for i in order:
        b = int(inst.bank[i])
        ci = comp[i]
        h = int(inst.head[i])
        if load[b] + ci <= target:
            best = b
        else:
            best, best_key = b, None
            for p in near[b]:
                p = int(p)
                if p == b:
                    obj = load[b] + ci
                else:
                    obj = max(load[p] + cost(i, p), max(link[l] for l in path(b, p)) + trans[i])
                key = (obj, (h, p) not in holds, c.hops[b, p], p)
                if best_key is None or key < best_key:
                    best, best_key = p, key
        load[best] += cost(i, best)
        for l in path(b, best):
            link[l] += trans[i]
        holds.add((h, best))
        assignment[i] = best
    if not improve:
        if inst.evaluate(assignment).makespan > inst.evaluate(inst.bank).makespan:
            return inst.bank.copy()  # a greedy is kept only if it beats the locality it started from
        return assignment
    _local_search(inst, assignment, load, link, near, path, cost)
    # the same local search started from owner-computes (every tile local); keep the better start
    local = inst.bank.copy()
    local_load = np.bincount(local, weights=comp, minlength=c.n_pe)
    _local_search(inst, local, local_load, np.zeros(c.n_links), near, path, cost)
    greedy_cost, local_cost = inst.evaluate(assignment), inst.evaluate(local)
    if (greedy_cost.makespan, greedy_cost.moved_tiles) < (local_cost.makespan, local_cost.moved_tiles):
        return assignment
    return local


def _local_search(inst: BankBoundInstance, assignment: np.ndarray, load: np.ndarray, link: np.ndarray, near, path, cost) -> None:
    """Lower the busiest PE while possible (in place, at most ``4 n`` steps): move one of its tiles to a
    PE near the tile's bank, or, when no move helps, swap it with a tile of such a PE."""
    trans = inst.transfer_s
    floor = float(inst.bank_read_s.max(initial=0.0))

    def link_peak(changes) -> float:
        """Largest load on the links of the new routes after ``changes`` = [(tile, old PE, new PE)]."""
        touched, delta = set(), {}
        for i, old, new in changes:
            b = int(inst.bank[i])
            for l in path(b, old):
                delta[l] = delta.get(l, 0.0) - trans[i]
            for l in path(b, new):
                delta[l] = delta.get(l, 0.0) + trans[i]
                touched.add(l)
        return max((link[l] + delta[l] for l in touched), default=0.0)

    for _ in range(4 * inst.n_tiles):
        top = int(np.argmax(load))
        peak = load[top]
        if peak <= floor * (1 + 1e-12) or peak <= link.max(initial=0.0):
            return  # the busiest PE is not the bottleneck: bank reads or a link set the makespan
        mine = [int(i) for i in np.flatnonzero(assignment == top)]
        best = None
        for i in mine:
            for q in near[int(inst.bank[i])]:
                q = int(q)
                if q == top:
                    continue
                score = max(load[q] + cost(i, q), peak - cost(i, top), link_peak([(i, top, q)]))
                if score < peak * (1 - 1e-12) and (best is None or (score, q, i) < best[0]):
                    best = ((score, q, i), [(i, top, q)])
        if best is None:  # no single move lowers the busiest PE: try swaps with nearby PEs
            for i in mine:
                for q in near[int(inst.bank[i])]:
                    q = int(q)
                    if q == top:
                        continue
                    for j in np.flatnonzero(assignment == q):
                        j = int(j)
                        new_top = peak - cost(i, top) + cost(j, top)
                        new_q = load[q] - cost(j, q) + cost(i, q)
                        score = max(new_top, new_q)
                        if score >= peak * (1 - 1e-12):
                            continue
                        score = max(score, link_peak([(i, top, q), (j, q, top)]))
                        if score < peak * (1 - 1e-12) and (best is None or (score, q, i, j) < best[0]):
                            best = ((score, q, i, j), [(i, top, q), (j, q, top)])
        if best is None:
            return
        for i, old, new in best[1]:
            b = int(inst.bank[i])
            load[old] -= cost(i, old)
            load[new] += cost(i, new)
            for l in path(b, old):
                link[l] -= trans[i]
            for l in path(b, new):
                link[l] += trans[i]
            assignment[i] = new


def schedule(inst: BankBoundInstance, scheduler: str, *, radius: int = 4) -> ScheduleCost:
    """Run one of :data:`SCHEDULERS` on ``inst`` and return its cost."""
    check_choice("scheduler", scheduler, SCHEDULERS)
    if scheduler == "lpt":
        a = schedule_lpt_bank_bound(inst, radius)
    elif scheduler == "owner":
        a = schedule_owner(inst)
    elif scheduler == "round_robin":
        a = schedule_round_robin_tiles(inst)
    else:
        a = schedule_head_parallel(inst)
    return inst.evaluate(a, scheduler)


@dataclasses.dataclass(frozen=True)
class ExactResult:
    cost: ScheduleCost
    optimal: bool  # the solver proved optimality
    dual_bound: float  # the solver's lower bound on the makespan
    status: str


@functools.lru_cache(maxsize=16)
def _route_table(costs: MeshCosts) -> tuple[np.ndarray, np.ndarray]:
    """CSR of every XY route: links of pair ``src * n_pe + dst`` are ``links[start[k]:start[k + 1]]``."""
    links, start = [], [0]
    for src in range(costs.n_pe):
        for dst in range(costs.n_pe):
            r = costs.route(src, dst)
            links += r
            start.append(start[-1] + len(r))
    return np.asarray(links, dtype=np.int64), np.asarray(start, dtype=np.int64)


def _milp_problem(inst: BankBoundInstance, scale: float):
    """Objective, constraints and bounds of the minimum-makespan MILP (times multiplied by ``scale``)."""
    n, m = inst.n_tiles, inst.n_pe
    c = inst.costs
    nv = n * m + 1
    cost = inst.cost_matrix() * scale
    transfer = inst.transfer_s * scale
    var = np.arange(n * m).reshape(n, m)
    a_assign = coo_matrix((np.ones(n * m), (np.repeat(np.arange(n), m), var.ravel())), shape=(n, nv))
    rows = np.r_[np.tile(np.arange(m), n), np.arange(m)]
    cols = np.r_[var.ravel(), np.full(m, n * m)]
    a_load = coo_matrix((np.r_[cost.ravel(), -np.ones(m)], (rows, cols)), shape=(m, nv))
    links, start = _route_table(c)
    pair = (inst.bank[:, None] * m + np.arange(m)[None, :]).ravel()  # [n * m] route of each variable
    counts = start[pair + 1] - start[pair]
    offsets = np.repeat(start[pair], counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    l_rows = np.r_[links[offsets], np.arange(c.n_links)]
    l_cols = np.r_[np.repeat(np.arange(n * m), counts), np.full(c.n_links, n * m)]
    l_vals = np.r_[np.repeat(np.repeat(transfer, m), counts), -np.ones(c.n_links)]
    a_link = coo_matrix((l_vals, (l_rows, l_cols)), shape=(c.n_links, nv))
    objective = np.zeros(nv)
    objective[-1] = 1.0
    lower = np.zeros(nv)
    lower[-1] = float(inst.bank_read_s.max()) * scale
    upper = np.ones(nv)
    upper[-1] = np.inf
    constraints = [LinearConstraint(a_assign, 1.0, 1.0), LinearConstraint(a_load, -np.inf, 0.0), LinearConstraint(a_link, -np.inf, 0.0)]
    return objective, constraints, Bounds(lower, upper)


#: HiGHS's absolute feasibility tolerance (1e-7) is coarse in seconds: solve in nanoseconds.
_SCALE = 1e9


def lp_lower_bound(inst: BankBoundInstance, *, time_limit_s: float = 30.0) -> float:
    """The LP relaxation of :func:`schedule_exact_bank_bound`'s MILP: a valid lower bound on the
    makespan, never below :attr:`BankBoundInstance.lower_bound`'s bank term and usually tighter than
    it where moving tiles costs NoC time (it charges every moved fraction its transfer)."""
    check_positive("time_limit_s", time_limit_s)
    if inst.n_tiles == 0:
        return 0.0
    objective, constraints, bounds = _milp_problem(inst, _SCALE)
    result = milp(objective, constraints=constraints, integrality=np.zeros(objective.size), bounds=bounds,
                  options={"time_limit": time_limit_s})
    if result.status != 0 or result.x is None:
        raise RuntimeError(f"LP relaxation not solved within {time_limit_s} s: {result.message}")
    # the LP optimum, less the solver's feasibility tolerance, then the simple bound if that is larger
    return float(max(result.fun / _SCALE * (1 - 1e-6), inst.lower_bound))


def schedule_exact_bank_bound(inst: BankBoundInstance, *, time_limit_s: float = 20.0) -> ExactResult:
    """Minimum-makespan assignment by MILP (``scipy.optimize.milp``, HiGHS) on a small instance.

    Binary ``x[i, p]`` (tile ``i`` on PE ``p``) and a continuous makespan ``C``: minimise ``C`` with
    every tile on exactly one PE, ``C >= R_b`` for every bank, ``sum_i cost[i, p] x[i, p] <= C`` for
    every PE and ``sum_{i, p: l on route(bank_i, p)} bytes_i / link_bw x[i, p] <= C`` for every link.
    Every PE is a candidate for every tile, so the optimum is at most any heuristic's makespan.
    """
    check_positive("time_limit_s", time_limit_s)
    n, m = inst.n_tiles, inst.n_pe
    if n == 0:
        return ExactResult(inst.evaluate(np.zeros(0, dtype=np.int64), "exact"), True, 0.0, "empty")
    if n * m > MAX_EXACT_BINARIES:
        raise ParameterError("instance", f"{n} tiles x {m} PEs", f"at most {MAX_EXACT_BINARIES} tile-PE pairs for the exact solver")
    objective, constraints, bounds = _milp_problem(inst, _SCALE)
    integrality = np.ones(objective.size)
    integrality[-1] = 0
    result = milp(objective, constraints=constraints, integrality=integrality, bounds=bounds, options={"time_limit": time_limit_s})
    if result.x is None:
        raise RuntimeError(f"exact bank-bound scheduler found no solution within {time_limit_s} s: {result.message}")
    x = result.x[:-1].reshape(n, m)
    assignment = np.argmax(x, axis=1).astype(np.int64)
    dual = getattr(result, "mip_dual_bound", None)
    dual = float(dual) / _SCALE if dual is not None and np.isfinite(dual) else float("nan")
    return ExactResult(inst.evaluate(assignment, "exact"), result.status == 0, dual, str(result.message))
