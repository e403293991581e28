"""Design-space exploration (DSE) of the HB model: declarative spaces, exact cached evaluation,
Pareto frontiers, sweeps on Dask with resumable Parquet partitions, and an interactive explorer.

Entry points: :func:`load_space` (``data/dse/*.yaml``), :func:`run_sweep` (serial or on
``dask.distributed``), :func:`read_results`, :func:`pareto_mask`; the command line is
``python -m h2eal_core.dse run SPACE.yaml``.
"""

from .evaluate import Evaluator, PlacementCache, feasible_mask, metrics_of
from .objectives import AREA_CONSTANTS, METRICS, area_proxy
from .pareto import pareto_mask
from .space import Knob, Space, knob_names, list_spaces, load_space, make_hardware, space_from_dict, spaces_dir
from .sweep import SweepReport, read_results, result_digest, run_sweep

__all__ = [
    "AREA_CONSTANTS",
    "Evaluator",
    "Knob",
    "METRICS",
    "PlacementCache",
    "Space",
    "SweepReport",
    "area_proxy",
    "feasible_mask",
    "knob_names",
    "list_spaces",
    "load_space",
    "make_hardware",
    "metrics_of",
    "pareto_mask",
    "read_results",
    "result_digest",
    "run_sweep",
    "space_from_dict",
    "spaces_dir",
]
