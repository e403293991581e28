"""Expected load of the busiest bank when Quest-selected pages are "read where they lie".

With page-granular placement (a head's pages round-robin over the banks of its group), the banks a
retrieval head reads depend on which pages the query selects. The model treats the selection as
**uniformly random** among the head's pages, the current page always included (a labelled
assumption: the paper's selection statistics are not available). Bank ``b`` then reads
``X_b`` of the ``k - 1`` randomly selected pages, ``(X_b)`` multivariate hypergeometric over the
pages each bank holds, and the busiest bank reads ``max_b (page_size * X_b + fixed_b)`` tokens,
where ``fixed_b`` counts the always-read current page and any deterministic reads (streaming or
dense heads sharing the group).

The distribution of that maximum is exact, by the conditioning identity (independent binomials
conditioned on their sum are multivariate hypergeometric)::

    P(X_b <= t_b for all b | sum X = k) = prod_b F_b(t_b) * P(sum_b Y_b = k) / P(S = k)

with ``X_b ~ Binomial(c_b, p)`` independent, ``Y_b`` the same truncated at ``t_b``, ``S`` their
untruncated sum and any ``p`` (``k / sum c`` keeps the numbers well scaled). The event-level
simulation samples selections explicitly and checks this expectation.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import signal, stats


def _convolve(a: np.ndarray, b: np.ndarray, size: int) -> np.ndarray:
    if a.size * b.size > 4096:
        out = signal.fftconvolve(a, b)[:size]
        np.clip(out, 0.0, None, out=out)
    else:
        out = np.convolve(a, b)[:size]
    return out


def _power(q: np.ndarray, n: int, size: int) -> np.ndarray:
    """pmf of the sum of ``n`` iid variables with pmf ``q``, truncated to ``size`` entries."""
    result = np.zeros(size)
    result[0] = 1.0
    base = q[:size]
    while n:
        if n & 1:
            result = _convolve(result, base, size)
        n >>= 1
        if n:
            base = _convolve(base, base, size)
    return result


@functools.lru_cache(maxsize=8192)
def group_max_distribution(
    bin_classes: tuple[tuple[int, int, int], ...], draws: int, page_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distribution of ``M = max_b (page_size * X_b + fixed_b)`` over the banks of one group.

    ``bin_classes``: ``(count, pages_available, fixed_tokens)`` triples (``count`` banks alike).
    Returns ``(values, cdf)``: the sorted possible values of ``M`` (tokens) and ``P(M <= value)``.
    """
    counts = np.array([c for c, _, _ in bin_classes], dtype=np.int64)
    avail = np.array([a for _, a, _ in bin_classes], dtype=np.int64)
    fixed = np.array([f for _, _, f in bin_classes], dtype=np.int64)
    total = int((counts * avail).sum())
    if draws < 0 or draws > total:
        raise ValueError(f"cannot draw {draws} pages out of {total}")
    if draws == 0:
        value = int(fixed.max())
        return np.array([value]), np.array([1.0])
    p = draws / total
    size = draws + 1
    p_sum = stats.binom.pmf(draws, total, p)
    pmfs = [stats.binom.pmf(np.arange(a + 1), a, p) for a in avail]
    # candidate values: fixed + page_size * m for every class and m
    candidates = np.unique(np.concatenate([f + page_size * np.arange(min(a, draws) + 1) for a, f in zip(avail, fixed)]))
    candidates = candidates[candidates >= fixed.max()]
    cdf = np.empty(candidates.size)
    for i, v in enumerate(candidates):
        t = (v - fixed) // page_size  # per class: X_b <= t
        log_f = 0.0
        conv = np.zeros(size)
        conv[0] = 1.0
        feasible = True
        for c, a, pmf, tb in zip(counts, avail, pmfs, t):
            tb = int(min(tb, a))
            if tb < 0:
                feasible = False
                break
            trunc = pmf[: tb + 1]
            f = float(trunc.sum())
            if f <= 0.0:
                feasible = False
                break
            log_f += int(c) * math.log(f)
            conv = _convolve(conv, _power(trunc / f, int(c), size), size)
        if not feasible:
            cdf[i] = 0.0
            continue
        cdf[i] = min(1.0, math.exp(log_f) * conv[draws] / p_sum) if conv.size > draws else 0.0
        if cdf[i] >= 1.0 - 1e-12:
            cdf = cdf[: i + 1]
            cdf[i] = 1.0
            candidates = candidates[: i + 1]
            break
    cdf = np.maximum.accumulate(cdf)  # monotone despite rounding
    return candidates, cdf


def expected_max(groups: list[tuple[np.ndarray, np.ndarray, int]], deterministic_max: float = 0.0) -> float:
    """``E[max(deterministic_max, M_1, ..., M_r)]`` for independent group maxima.

    ``groups``: ``(values, cdf, multiplicity)`` with ``multiplicity`` independent copies.
    """
    if not groups:
        return float(deterministic_max)
    grid = np.unique(np.concatenate([v for v, _, _ in groups] + [np.array([deterministic_max])]))
    grid = grid[grid >= deterministic_max]
    joint = np.ones(grid.size)
    for values, cdf, mult in groups:
        idx = np.searchsorted(values, grid, side="right") - 1
        f = np.where(idx >= 0, cdf[np.clip(idx, 0, None)], 0.0)
        joint *= f**mult
    # E[M] = grid[0] + sum over steps of P(M > grid[i]) * (grid[i+1] - grid[i])
    return float(grid[0] + np.sum((1.0 - joint[:-1]) * np.diff(grid)))


def expected_group_max(bin_classes: tuple[tuple[int, int, int], ...], draws: int, page_size: int) -> float:
    """``E[M]`` of one group (see :func:`group_max_distribution`)."""
    values, cdf = group_max_distribution(bin_classes, draws, page_size)
    return expected_max([(values, cdf, 1)])
