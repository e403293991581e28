"""Moved to :mod:`h2eal_core.experiments.hardware.scheduling`; this module re-exports it for old imports."""

from .hardware.scheduling import *  # noqa: F401,F403
from .hardware.scheduling import (  # noqa: F401
    PHASE_INDEX,
    exact_table,
    exact_vs_greedy,
    gain_summary,
    greedy_gap_table,
    layer_loads,
    pe_load_table,
    scheduler_layer_table,
    scheduler_model_table,
    small_schedule,
    width_table,
)
