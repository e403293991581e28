"""Write-time KV layouts and mesh routes: where a token's KV lies, fixed when it is written.

Three layouts, chosen per design and baseline reading (:func:`layout_of`):

* ``home`` (baseline and ``+sparse`` under the head-parallel readings, Fig. 3a): the KV of a head
  is written layer after layer into its *home bank* (the bank under the PE that computes it) and,
  when that bank is full, into the following banks of the mesh (its neighbours in row-major order)
  up to the next head's home bank; what still does not fit goes to the external tier. A decode
  step reads each head's pages where they lie: pages in a bank other than the computing PE's
  cross the mesh.
* ``group`` (``+coplace``; the baseline under ``split_kv_groups``): the banks are split into one
  group of ``G = n_banks // (batch x n_kv_heads)`` banks per KV head, and the tokens of each head
  are dealt round-robin over its group's banks in chunks of ``w`` tokens (``w = 1``:
  token-granular interleave, ``w = page_size``: page-granular). Each PE computes on the tokens in
  its own bank ("compute goes where data is"); the partials of a head are merged by log-sum-exp.
* ``global`` (H2EAL): the same interleave over *all* banks; each head starts at a bank chosen at
  write time so that the heads of a layer are dealt evenly (``start_j = j * n_banks // N``), the
  load-balancing placement of parallel tiled attention.

A contiguous run of a head's tokens in one bank costs ``ceil(bytes / row_size)`` DRAM row
activations (K and V of a token are stored side by side, an assumption); each piece of a scattered
selected page costs its own activations (merging of adjacent selected pieces is not modelled, a
conservative assumption for the sparse designs).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import sparse as sp

from ..validation import ParameterError
from .config import HBConfig
from .designs import Design

LAYOUTS = ("home", "group", "global")


def layout_of(design: Design, hw: HBConfig) -> str:
    """The layout a design uses on ``hw`` (the baseline reading decides the first two stages)."""
    if design.scope == "global":
        return "global"
    if design.name in ("baseline", "sparse") or design.kv_layout == "page":
        return "group" if hw.baseline == "split_kv_groups" else "home"
    return "group"


def interleave_width(design: Design, hw: HBConfig, page_size: int) -> int:
    """Tokens per bank chunk: a page under the split-KV reading's page layout, else the policy."""
    if layout_of(design, hw) == "group" and (design.name in ("baseline", "sparse") or design.kv_layout == "page"):
        return int(page_size)
    w = hw.interleave_tokens(page_size)
    if not (w % page_size == 0 or page_size % w == 0):
        raise ParameterError(
            "mapping.kv_interleave_width", w, f"a divisor or a multiple of the page size ({page_size} tokens)"
        )
    return w


@functools.lru_cache(maxsize=16)
def mesh_routes(rows: int, cols: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """XY (dimension-ordered) routes of every (source, destination) pair of a ``rows x cols`` mesh.

    Returns ``(route, hops)``: ``route`` is a sparse ``[n*n, n_links]`` 0/1 matrix (row
    ``src * n + dst``; directed links: ``east, west`` links of node ``(r, c)`` to ``(r, c +- 1)``
    and ``south, north`` links to ``(r +- 1, c)``), ``hops`` the ``[n*n]`` Manhattan distances.
    A route goes along the source's row first (X), then along the destination's column (Y).
    """
    n = rows * cols
    src, dst = np.divmod(np.arange(n * n), n)
    r0, c0 = np.divmod(src, cols)
    r1, c1 = np.divmod(dst, cols)
    # link ids: east (r, c)->(r, c+1): r*cols + c; west (r, c+1)->(r, c): E + r*cols + c;
    # south (r, c)->(r+1, c): 2E + r*cols + c; north (r+1, c)->(r, c): 2E + S + r*cols + c
    E = rows * cols  # upper bound per family (ids stay unique)
    pair_idx, link_idx = [], []
    for step in range(1, cols):  # X segment: columns strictly between c0 and c1
        east = c1 - c0 >= step
        west = c0 - c1 >= step
        c = np.where(east, c0 + step - 1, c0 - step)
        pair_idx.append(np.flatnonzero(east))
        link_idx.append((r0 * cols + c)[east])
        pair_idx.append(np.flatnonzero(west))
        link_idx.append(E + (r0 * cols + c)[west])
    for step in range(1, rows):  # Y segment, in the destination column
        south = r1 - r0 >= step
        north = r0 - r1 >= step
        r = np.where(south, r0 + step - 1, r0 - step)
        pair_idx.append(np.flatnonzero(south))
        link_idx.append(2 * E + (r * cols + c1)[south])
        pair_idx.append(np.flatnonzero(north))
        link_idx.append(3 * E + (r * cols + c1)[north])
    pi = np.concatenate(pair_idx) if pair_idx else np.zeros(0, dtype=np.int64)
    li = np.concatenate(link_idx) if link_idx else np.zeros(0, dtype=np.int64)
    route = sp.csr_matrix((np.ones(pi.size), (pi, li)), shape=(n * n, 4 * E))
    hops = np.abs(r1 - r0) + np.abs(c1 - c0)
    return route, hops


def split_at_banks(pos: np.ndarray, length: np.ndarray, per_bank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut ranges ``[pos, pos + length)`` of a region filled bank after bank (``per_bank`` units each).

    Returns ``(piece, bank_index, units)``: one row per (range, bank it touches).
    """
    pos = np.asarray(pos, dtype=np.int64)
    length = np.asarray(length, dtype=np.int64)
    live = np.flatnonzero(length > 0)
    if per_bank <= 0:
        big = np.iinfo(np.int64).max // 4
        return live, np.full(live.size, big), length[live]
    a, e = pos[live], pos[live] + length[live]
    k0, k1 = a // per_bank, (e - 1) // per_bank
    span = k1 - k0 + 1
    piece = np.repeat(live, span)
    offset = np.arange(piece.size) - np.repeat(np.cumsum(span) - span, span)
    k = np.repeat(k0, span) + offset
    lo = np.maximum(np.repeat(a, span), k * per_bank)
    hi = np.minimum(np.repeat(e, span), (k + 1) * per_bank)
    return piece, k, hi - lo


def chunk_counts(x: np.ndarray, start: np.ndarray, width: int, G: int) -> np.ndarray:
    """Units ``[0, x)`` of each row on each of ``G`` banks, chunks of ``width`` units dealt
    round-robin from slot ``start``: shape ``x.shape + (G,)``."""
    x = np.asarray(x, dtype=np.int64)
    s = np.asarray(start, dtype=np.int64)
    full, rem = x // width, x % width
    b = np.arange(G)
    ss = s[..., None]
    e = ss + full[..., None]
    out = ((e - 1 - b) // G - (ss - 1 - b) // G) * width
    last_slot = (s + full) % G
    out += (b == last_slot[..., None]) * rem[..., None]
    return out


def cyclic_add(rows: np.ndarray, start: np.ndarray, count: np.ndarray, weights: np.ndarray, n_rows: int, G: int) -> np.ndarray:
    """``[n_rows, G]``: add ``weights`` to ``count`` consecutive slots from ``start`` (cyclic, any count)."""
    out = np.zeros((n_rows, G))
    if rows.size == 0:
        return out
    full, rem = count // G, count % G
    out += np.bincount(rows, weights=weights * full, minlength=n_rows)[:, None]
    end = start + rem
    wrap = end > G
    base = rows * (G + 1)
    idx = np.concatenate([base + start, base + np.minimum(end, G), base[wrap], (base + end - G)[wrap]])
    val = np.concatenate([weights, -weights, weights[wrap], -weights[wrap]])
    diff = np.bincount(idx, weights=val, minlength=n_rows * (G + 1))
    out += np.cumsum(diff.reshape(n_rows, G + 1), axis=1)[:, :G]
    return out


__all__ = ["LAYOUTS", "chunk_counts", "cyclic_add", "interleave_width", "layout_of", "mesh_routes", "split_at_banks"]
