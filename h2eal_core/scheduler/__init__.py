"""Load-balancing scheduler: tiles of all heads spread over all PEs to minimise the makespan.

Tasks are tiles (head, unit range) from :mod:`.tiles`; :func:`schedule_lpt` is the fast greedy
(longest processing time first), :func:`makespan_lower_bound` the bound ``max(total/n_PE,
largest task)``, :func:`schedule_exact` an exact MILP for small instances that measures the greedy's
gap, and :func:`plot_schedule` draws an assignment.
"""

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
from .tiles import PHASES, Tile, TileSet, auto_tile_size, make_tiles, resolve_tile_size, tiles_from_heads

__all__ = [
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
