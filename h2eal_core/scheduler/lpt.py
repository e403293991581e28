"""Longest-processing-time-first (LPT) list scheduling and the makespan lower bound.

Tasks (tiles) are sorted by decreasing cost, ties by task index (stable); each goes to the PE with
the least load so far, ties to the lowest PE index. Graham's bound: the LPT makespan is at most
``4/3 - 1/(3m)`` times the optimum, and at most ``total/m + largest task``.

:func:`lpt_tiled_loads` is an exact fast path for the tile sets of :mod:`.tiles` (many equal full
tiles plus one shorter remainder per head): it returns the same loads and per-head PE counts as
:func:`schedule_lpt` on the explicit tiles (a test checks this), in ``O(n_pe + heads log n_pe)``
instead of ``O(tiles log n_pe)``, so that the analytic hardware model can schedule every layer of a
whole grid in milliseconds.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Sequence

import numpy as np

from ..validation import ParameterError, check_positive_int
from .tiles import TileSet, make_tiles


@dataclasses.dataclass(frozen=True)
class Schedule:
    """An assignment of tasks to PEs."""

    assignment: np.ndarray  # [n_tasks] PE index of each task
    costs: np.ndarray  # [n_tasks]
    n_pe: int
    order: np.ndarray  # the order in which tasks were placed (LPT) or argsort of assignment

    @property
    def loads(self) -> np.ndarray:
        """Total cost per PE."""
        return np.bincount(self.assignment, weights=self.costs, minlength=self.n_pe)

    @property
    def makespan(self) -> float:
        return float(self.loads.max()) if self.costs.size else 0.0

    @property
    def lower_bound(self) -> float:
        return makespan_lower_bound(self.costs, self.n_pe)

    @property
    def gap(self) -> float:
        """Relative excess of the makespan over the lower bound (0 = provably optimal)."""
        lb = self.lower_bound
        return self.makespan / lb - 1.0 if lb > 0 else 0.0

    @property
    def utilization(self) -> float:
        """Mean load / max load."""
        m = self.makespan
        return float(self.costs.sum() / (self.n_pe * m)) if m > 0 else 1.0

    def tasks_of(self, pe: int) -> np.ndarray:
        """Indices of the tasks on ``pe`` in placement order."""
        placed = self.order[self.assignment[self.order] == pe]
        return placed


def _check_costs(costs) -> np.ndarray:
    costs = np.asarray(costs, dtype=float)
    if costs.ndim != 1 or not np.isfinite(costs).all() or (costs < 0).any():
        raise ParameterError("costs", costs.tolist() if costs.size < 20 else f"array{costs.shape}", "a 1-D array of finite costs >= 0")
    return costs


def makespan_lower_bound(costs, n_pe: int) -> float:
    """``max(total / n_pe, largest task)``: no schedule of indivisible tasks can beat it."""
    costs = _check_costs(costs)
    check_positive_int("n_pe", n_pe)
    if costs.size == 0:
        return 0.0
    return float(max(costs.sum() / n_pe, costs.max()))


def schedule_lpt(costs, n_pe: int, initial_loads=None) -> Schedule:
    """LPT list scheduling of ``costs`` on ``n_pe`` identical PEs (optionally pre-loaded)."""
    costs = _check_costs(costs)
    check_positive_int("n_pe", n_pe)
    order = np.argsort(-costs, kind="stable")
    if initial_loads is None:
        heap = [(0.0, pe) for pe in range(n_pe)]
    else:
        initial = np.asarray(initial_loads, dtype=float)
        if initial.shape != (n_pe,):
            raise ParameterError("initial_loads", initial.shape, f"shape ({n_pe},)")
        heap = [(float(v), pe) for pe, v in enumerate(initial)]
        heapq.heapify(heap)
    assignment = np.empty(costs.size, dtype=np.int64)
    for task in order:
        load, pe = heap[0]
        assignment[task] = pe
        heapq.heapreplace(heap, (load + costs[task], pe))
    return Schedule(assignment=assignment, costs=costs, n_pe=n_pe, order=order)


def schedule_tiles(tiles: TileSet, n_pe: int) -> Schedule:
    """LPT schedule of a :class:`TileSet` (costs = tile lengths in units)."""
    return schedule_lpt(tiles.length, n_pe)


def schedule_round_robin(costs, n_pe: int) -> Schedule:
    """Task ``i`` on PE ``i mod n_pe`` (a naive reference, no balancing)."""
    costs = _check_costs(costs)
    check_positive_int("n_pe", n_pe)
    assignment = np.arange(costs.size) % n_pe
    return Schedule(assignment=assignment, costs=costs, n_pe=n_pe, order=np.arange(costs.size))


@dataclasses.dataclass(frozen=True)
class TiledLoads:
    """What the hardware model needs from an LPT schedule of tiles: loads and merge fan-in."""

    loads: np.ndarray  # [n_pe] units per PE
    pes_per_head: np.ndarray  # [n_heads] distinct PEs holding tiles of each head
    tile_size: int
    n_tiles: int
    largest_tile: int

    @property
    def makespan(self) -> int:
        return int(self.loads.max()) if self.loads.size else 0

    @property
    def lower_bound(self) -> float:
        """``max(total / n_pe, largest tile)`` of this tiling."""
        total = float(self.loads.sum())
        return max(total / self.loads.size, float(self.largest_tile)) if total > 0 else 0.0

    @property
    def gap(self) -> float:
        lb = self.lower_bound
        return self.makespan / lb - 1.0 if lb > 0 else 0.0


def lpt_tiled_loads(work: Sequence[int] | np.ndarray, tile_size: int, n_pe: int) -> TiledLoads:
    """Exact LPT result for ``make_tiles(work, tile_size)`` on ``n_pe`` PEs, without listing tiles.

    Full tiles (all of length ``t``) come first in LPT order, head-major, and go round-robin
    (PE ``k mod n_pe`` for the ``k``-th full tile); the remainders follow in decreasing length and
    are placed greedily, exactly as :func:`schedule_lpt` does.
    """
    work = np.asarray(work, dtype=np.int64)
    t = check_positive_int("tile_size", tile_size)
    check_positive_int("n_pe", n_pe)
    n_full = work // t
    rem = work - n_full * t
    n_total_full = int(n_full.sum())
    q, r = divmod(n_total_full, n_pe)
    loads = np.full(n_pe, q * t, dtype=np.int64)
    loads[:r] += t
    first = np.cumsum(n_full) - n_full
    pes_per_head = np.minimum(n_full, n_pe)
    heads_with_rem = np.flatnonzero(rem > 0)
    if heads_with_rem.size:
        # remainders in LPT order: decreasing length, ties by head index (the task index order)
        order = heads_with_rem[np.argsort(-rem[heads_with_rem], kind="stable")]
        heap = [(int(v), pe) for pe, v in enumerate(loads)]
        heapq.heapify(heap)
        for h in order:
            load, pe = heap[0]
            heapq.heapreplace(heap, (load + int(rem[h]), pe))
            loads[pe] += rem[h]
            n = int(n_full[h])
            if n < n_pe and (pe - int(first[h])) % n_pe >= n:
                pes_per_head[h] += 1
    n_tiles = n_total_full + int(heads_with_rem.size)
    largest = t if n_total_full else int(rem.max(initial=0))
    return TiledLoads(loads=loads, pes_per_head=pes_per_head, tile_size=t, n_tiles=n_tiles, largest_tile=largest)


def pes_per_head_of(schedule: Schedule, tiles: TileSet) -> np.ndarray:
    """Distinct PEs that hold tiles of each head in ``schedule``."""
    pairs = np.unique(np.stack([tiles.head, schedule.assignment]), axis=1)
    return np.bincount(pairs[0], minlength=tiles.n_heads)


def lpt_tiled_loads_reference(work, tile_size: int, n_pe: int) -> TiledLoads:
    """The same as :func:`lpt_tiled_loads`, computed from the explicit tiles (slow; for tests)."""
    tiles = make_tiles(work, tile_size)
    schedule = schedule_tiles(tiles, n_pe)
    loads = np.bincount(schedule.assignment, weights=tiles.length, minlength=n_pe).astype(np.int64)
    return TiledLoads(
        loads=loads,
        pes_per_head=pes_per_head_of(schedule, tiles),
        tile_size=tiles.tile_size,
        n_tiles=len(tiles),
        largest_tile=int(tiles.length.max(initial=0)),
    )
