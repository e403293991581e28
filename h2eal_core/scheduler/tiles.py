"""Tiles: the scheduler's tasks, cut from each head's work of one decode step.

A head's work in a phase is a count of *units*: tokens of KV to read and attend to (attention
phase) or pages of metadata to score (scoring phase; one page of metadata is ``2 * head_dim``
elements, the size of one token's K and V, so both count as token-equivalents). A tile is a
contiguous range ``[start, start + length)`` of one head's units; its cost is its length (times a
per-unit cost, the same for every unit of a phase on this hardware).

Tiles are enumerated head-major (all tiles of head 0, then head 1, ...), which fixes the
tie-breaking of every scheduler in :mod:`h2eal_core.scheduler.lpt`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from ..validation import ParameterError, check_positive_int

PHASES = ("score", "attention")


@dataclasses.dataclass(frozen=True)
class Tile:
    """One task: units ``[start, start + length)`` of head ``head``."""

    task: int
    head: int
    start: int
    length: int
    kind: str = ""


@dataclasses.dataclass(frozen=True)
class TileSet:
    """All tiles of one phase of one layer, as parallel arrays (head-major order)."""

    head: np.ndarray  # [n_tiles] int
    start: np.ndarray  # [n_tiles] int
    length: np.ndarray  # [n_tiles] int
    tile_size: int
    n_heads: int
    kinds: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.length.size)

    @property
    def total(self) -> int:
        return int(self.length.sum())

    def tiles(self) -> Iterator[Tile]:
        for i in range(len(self)):
            h = int(self.head[i])
            yield Tile(i, h, int(self.start[i]), int(self.length[i]), self.kinds[h] if self.kinds else "")


def adaptive_tiles(work: Sequence[int] | np.ndarray, n_pe: int, tiles_per_pe: int = 1, kinds: Sequence[str] = ()) -> TileSet:
    """Adaptive tiling: every head cut into near-equal tiles, at most ``n_pe * tiles_per_pe`` in all.

    The tile bound ``s`` is the smallest integer with ``sum_h ceil(work[h] / s) <= n_pe *
    tiles_per_pe`` (or the largest head when there are more heads than that: a tile never spans
    two heads); head ``h`` gets ``k_h = ceil(work[h] / s)`` tiles of ``floor`` or ``ceil`` of
    ``work[h] / k_h`` units, and the largest tile is exactly ``s``. Few, large tiles per head keep the merge fan-in (partials per head)
    small; ``tiles_per_pe`` trades it against balance.
    """
    work = np.asarray(work, dtype=np.int64)
    if work.ndim != 1 or (work < 0).any():
        raise ParameterError("work", work.tolist(), "a 1-D sequence of non-negative unit counts per head")
    check_positive_int("n_pe", n_pe)
    check_positive_int("tiles_per_pe", tiles_per_pe)
    if kinds and len(kinds) != work.size:
        raise ParameterError("kinds", len(kinds), f"one kind per head ({work.size})")
    budget = n_pe * tiles_per_pe
    total = int(work.sum())
    if total == 0:
        empty = np.zeros(0, dtype=np.int64)
        return TileSet(head=empty, start=empty, length=empty, tile_size=1, n_heads=int(work.size), kinds=tuple(kinds))
    lo, hi = max(1, -(-total // budget)), max(1, int(work.max()))
    while lo < hi:  # smallest s with sum ceil(work / s) <= budget
        mid = (lo + hi) // 2
        if int((-(-work // mid)).sum()) <= budget:
            hi = mid
        else:
            lo = mid + 1
    s = lo
    k = -(-work // s)  # tiles per head (0 for heads without work)
    head = np.repeat(np.arange(work.size), k)
    first = np.cumsum(k) - k
    idx = np.arange(head.size) - np.repeat(first, k)
    base = np.where(k > 0, work // np.maximum(k, 1), 0)
    extra = np.where(k > 0, work - base * k, 0)
    length = base[head] + (idx < extra[head])
    start = idx * base[head] + np.minimum(idx, extra[head])
    return TileSet(head=head, start=start, length=length, tile_size=int(length.max()), n_heads=int(work.size), kinds=tuple(kinds))


def auto_tile_size(total_units: int, n_pe: int, tiles_per_pe: int) -> int:
    """Adaptive tile size: ``max(1, floor(total / (n_pe * tiles_per_pe)))`` units.

    List scheduling is within one tile of the mean load, so about ``tiles_per_pe`` tiles per PE keep
    the makespan within ``1 / tiles_per_pe`` of ``total / n_pe`` whenever the work allows it.
    """
    check_positive_int("n_pe", n_pe)
    check_positive_int("tiles_per_pe", tiles_per_pe)
    return max(1, int(total_units) // (n_pe * tiles_per_pe))


def resolve_tile_size(tile_size: int | str, total_units: int, n_pe: int, tiles_per_pe: int) -> int:
    """``tile_size`` if it is an integer, else the adaptive size for this phase."""
    if tile_size == "auto":
        return auto_tile_size(total_units, n_pe, tiles_per_pe)
    return check_positive_int("tile_size", tile_size)


def make_tiles(work: Sequence[int] | np.ndarray, tile_size: int, kinds: Sequence[str] = ()) -> TileSet:
    """Cut each head's ``work[h]`` units into tiles of ``tile_size`` units (the last one shorter).

    Heads with no work give no tile.
    """
    work = np.asarray(work, dtype=np.int64)
    if work.ndim != 1 or (work < 0).any():
        raise ParameterError("work", work.tolist(), "a 1-D sequence of non-negative unit counts per head")
    t = check_positive_int("tile_size", tile_size)
    if kinds and len(kinds) != work.size:
        raise ParameterError("kinds", len(kinds), f"one kind per head ({work.size})")
    n_tiles = -(-work // t)  # ceil
    head = np.repeat(np.arange(work.size), n_tiles)
    first = np.cumsum(n_tiles) - n_tiles
    index_in_head = np.arange(head.size) - np.repeat(first, n_tiles)
    start = index_in_head * t
    length = np.minimum(t, work[head] - start)
    return TileSet(head=head, start=start, length=length, tile_size=t, n_heads=int(work.size), kinds=tuple(kinds))


def tiles_from_heads(
    kinds: Sequence[str], tokens: Sequence[int], tile_size: int | str = "auto", n_pe: int = 128, tiles_per_pe: int = 1
) -> TileSet:
    """Tiles of one phase from head kinds and sizes: adaptive (``"auto"``) or fixed ``tile_size`` units."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if tile_size == "auto":
        return adaptive_tiles(tokens, n_pe, tiles_per_pe, kinds)
    return make_tiles(tokens, check_positive_int("tile_size", tile_size), kinds)
