"""Load-balancing scheduler: tiles of all heads spread over all PEs to minimise the makespan.

Second generation (issue 9), the scheduler with real work: :mod:`.bank_bound` (page-granular
tiles bound to the banks a write-time :class:`KVLayout` put their data in; moving one costs NoC
time and link load; locality-first LPT, owner-computes, round-robin, head-parallel, the lower
bound and an exact MILP), built by :func:`step_instances` from a model shape, real gates
(:mod:`.head_patterns`) and page selections (:mod:`.selection`: uniform or a recorded trace).

First generation (freely re-tiled tokens on identical PEs; still used by the HB model):

Tasks are tiles (head, unit range) from :mod:`.tiles`; :func:`schedule_lpt` is the fast greedy
(longest processing time first), :func:`makespan_lower_bound` the bound ``max(total/n_PE,
largest task)``, :func:`schedule_exact` an exact MILP for small instances that measures the greedy's
gap, and :func:`plot_schedule` draws an assignment.
"""

from .bank_bound import (
    SCHEDULERS,
    BankBoundInstance,
    MeshCosts,
    ScheduleCost,
    schedule,
    schedule_exact_bank_bound,
    schedule_lpt_bank_bound,
)
from .draw import plot_schedule
from .exact import schedule_exact
from .lpt import (
    Schedule,
    TiledLoads,
    lpt_tiled_loads,
    lpt_tiled_loads_reference,
    makespan_lower_bound,
    pes_per_head_of,
    schedule_lpt,
    schedule_round_robin,
    schedule_tiles,
)
from .head_patterns import HeadPattern, head_pattern
from .instances import StepInstances, step_instances
from .layout import KVLayout
from .tiles import PHASES, Tile, TileSet, auto_tile_size, make_tiles, resolve_tile_size, tiles_from_heads

__all__ = [
    "SCHEDULERS",
    "BankBoundInstance",
    "HeadPattern",
    "KVLayout",
    "MeshCosts",
    "ScheduleCost",
    "StepInstances",
    "head_pattern",
    "schedule",
    "schedule_exact_bank_bound",
    "schedule_lpt_bank_bound",
    "step_instances",
    "PHASES",
    "Schedule",
    "Tile",
    "TileSet",
    "TiledLoads",
    "auto_tile_size",
    "lpt_tiled_loads",
    "lpt_tiled_loads_reference",
    "make_tiles",
    "makespan_lower_bound",
    "pes_per_head_of",
    "plot_schedule",
    "resolve_tile_size",
    "schedule_exact",
    "schedule_lpt",
    "schedule_round_robin",
    "schedule_tiles",
    "tiles_from_heads",
]
