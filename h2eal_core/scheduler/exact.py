"""Exact minimum-makespan assignment for small instances (``scipy.optimize.milp``).

Used only to measure how far LPT is from the optimum on small tile sets (the hardware model itself
uses LPT). Formulation: binary ``x[i, p]`` (task ``i`` on PE ``p``) and a continuous makespan
``C``; minimise ``C`` subject to every task on exactly one PE and every PE's load ``<= C``.
Symmetric PEs are broken by forcing task ``i`` onto PEs ``0..i`` only (tasks sorted by cost first).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from ..validation import ParameterError, check_positive, check_positive_int
from .lpt import Schedule, _check_costs

#: Above this many binary variables the MILP is refused (it is for small instances only).
MAX_BINARIES = 2000


def schedule_exact(costs, n_pe: int, *, time_limit_s: float = 20.0) -> Schedule:
    """The optimal schedule (raises if the solver does not prove optimality within the limit)."""
    costs = _check_costs(costs)
    check_positive_int("n_pe", n_pe)
    check_positive("time_limit_s", time_limit_s)
    n = costs.size
    if n == 0:
        return Schedule(np.zeros(0, dtype=np.int64), costs, n_pe, np.zeros(0, dtype=np.int64))
    m = min(n_pe, n)  # more PEs than tasks never helps
    if n * m > MAX_BINARIES:
        raise ParameterError("costs", f"{n} tasks x {m} PEs", f"at most {MAX_BINARIES} task-PE pairs for the exact solver")
    order = np.argsort(-costs, kind="stable")
    c = costs[order]
    n_var = n * m + 1  # x (row-major by task) then C
    objective = np.zeros(n_var)
    objective[-1] = 1.0
    # each task on exactly one PE
    a_assign = np.zeros((n, n_var))
    for i in range(n):
        a_assign[i, i * m : (i + 1) * m] = 1.0
    # each PE's load <= C
    a_load = np.zeros((m, n_var))
    for p in range(m):
        a_load[p, p : n * m : m] = c
        a_load[p, -1] = -1.0
    upper = np.ones(n_var)
    upper[-1] = np.inf
    for i in range(n):  # symmetry breaking: the i-th largest task uses one of the first i+1 PEs
        upper[i * m + min(i + 1, m) : (i + 1) * m] = 0.0
    integrality = np.ones(n_var)
    integrality[-1] = 0
    result = milp(
        objective,
        constraints=[LinearConstraint(a_assign, 1.0, 1.0), LinearConstraint(a_load, -np.inf, 0.0)],
        integrality=integrality,
        bounds=Bounds(np.zeros(n_var), upper),
        options={"time_limit": time_limit_s},
    )
    if result.status != 0 or result.x is None:
        raise RuntimeError(f"exact scheduler did not prove optimality: {result.message}")
    x = result.x[:-1].reshape(n, m)
    assignment = np.empty(n, dtype=np.int64)
    assignment[order] = np.argmax(x, axis=1)
    return Schedule(assignment=assignment, costs=costs, n_pe=n_pe, order=order)
