"""Hybrid-bonding (HB) accelerator model: description, mapping, cost, simulation.

LLMCompass-style split: the hardware description (:class:`HBConfig`, ``data/hardware/*.yaml``),
the workload (:func:`decode_workload`, from model shapes and the sparsity accounting), the mapping
and schedule (:func:`place`, per design), and the cost model (:func:`evaluate`). The entry point is
:func:`simulate_decode`; :func:`simulate_events` is an independent event-level replay used to
cross-check the analytic latency.
"""

from .config import HBConfig, QUANTITY_FIELDS, hardware_dir, hb_config_from_dict, list_hardware, load_hardware
from .cost import evaluate
from .designs import DESIGN_LABELS, DESIGN_NAMES, DESIGNS, Design, get_design
from .events import simulate_events
from .mapping import Placement, place, rr_counts
from .result import BREAKDOWN_CATEGORIES, BYTE_CLASSES, DecodeResult
from .simulate import DEFAULT_CONTEXTS, simulate_decode, simulate_grid
from .workload import DecodeWorkload, decode_workload, default_retrieval_mask

__all__ = [
    "BREAKDOWN_CATEGORIES",
    "BYTE_CLASSES",
    "DEFAULT_CONTEXTS",
    "DESIGNS",
    "DESIGN_LABELS",
    "DESIGN_NAMES",
    "DecodeResult",
    "DecodeWorkload",
    "Design",
    "HBConfig",
    "Placement",
    "QUANTITY_FIELDS",
    "decode_workload",
    "default_retrieval_mask",
    "evaluate",
    "get_design",
    "hardware_dir",
    "hb_config_from_dict",
    "list_hardware",
    "load_hardware",
    "place",
    "rr_counts",
    "simulate_decode",
    "simulate_events",
    "simulate_grid",
]
