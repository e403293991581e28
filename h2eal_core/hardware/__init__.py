"""Hybrid-bonding (HB) accelerator model: description, mapping, cost, simulation (second generation).

LLMCompass-style split: the hardware description (:class:`HBConfig`, ``data/hardware/*.yaml``, with
the DRAM row constants and the named baseline reading ``mapping.baseline``), the workload
(:func:`decode_workload`, from model shapes and the sparsity accounting), the write-time layouts
(:mod:`.layout`: home bank for the head-parallel baseline, group or global interleave), the page
selections (:mod:`.pages`: uniform, or a recorded :class:`~h2eal_core.traces.PageTrace`), the
retrieval-head patterns (:mod:`.head_patterns`), the placement (:func:`place`: per-bank bytes, row
activations, PE MACs, NoC ports and links per layer) and the cost model (:func:`evaluate`). The
entry point is :func:`simulate_decode`; :func:`simulate_events` replays the DRAM commands, top-k
messages and merge trees event by event on the same placement to cross-check the analytic latency.
"""

from .config import BASELINE_READINGS, HBConfig, QUANTITY_FIELDS, hardware_dir, hb_config_from_dict, list_hardware, load_hardware
from .cost import evaluate
from .designs import DESIGN_LABELS, DESIGN_NAMES, DESIGNS, Design, get_design
from .events import simulate_events
from .head_patterns import HEAD_PATTERNS, retrieval_mask_for
from .mapping import PhaseLoad, Placement, place, rr_counts
from .pages import PageSelection, trace_selection, uniform_selection
from .result import BREAKDOWN_CATEGORIES, BYTE_CLASSES, DecodeResult
from .simulate import DEFAULT_CONTEXTS, simulate_decode, simulate_grid
from .workload import DecodeWorkload, decode_workload, default_retrieval_mask

__all__ = [
    "BASELINE_READINGS",
    "BREAKDOWN_CATEGORIES",
    "HEAD_PATTERNS",
    "PageSelection",
    "PhaseLoad",
    "retrieval_mask_for",
    "trace_selection",
    "uniform_selection",
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
