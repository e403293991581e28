"""Evaluation of design-space points with the HB model, with exact caching.

A point runs the same three steps as :func:`h2eal_core.hardware.simulate_decode` (workload ->
placement -> cost); a test checks that every metric equals ``simulate_decode`` on random points.
The placement (the mapping and the schedule) costs 2-30 ms; the cost model 0.3-3 ms. Most knobs of
a space (bandwidths, clocks, energies, NoC width) do not change the placement, so it is cached.

**The cache is exact by construction.** A placement is computed on a *traced* copy of the HB
description that records every constant (``si``/``q``) and every field (policies, ``quantities``)
the mapping code reads. The placement is reused for another point only if that point's description
has the same value for every recorded read. A deterministic function that reads the same inputs
takes the same path and returns the same result, so a cache hit cannot change a number; nothing
here lists which constants the mapping uses, so the cache follows the HB model as it changes. If a
placement ever held the description itself (so the cost model could read more from it), caching
is switched off for safety.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..attention.config import SparseAttentionConfig
from ..hardware import HBConfig, decode_workload, evaluate, get_design, load_hardware, place
from ..models.shape import load_model_shape
from ..validation import ParameterError
from .objectives import area_proxy
from .space import Space, make_hardware

logger = logging.getLogger(__name__)

_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(HBConfig))
_recording: list | None = None  # reads of the placement being traced: [(kind, name), ...]


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if hasattr(value, "value") and hasattr(value, "unit"):  # a Quantity
        return (value.value, value.unit)
    return value


class _TracedHBConfig(HBConfig):
    """An :class:`HBConfig` that records what is read from it while :data:`_recording` is a list."""

    def q(self, name):
        if _recording is not None:
            _recording.append(("q", name))
        quantities = object.__getattribute__(self, "quantities")
        if name not in quantities:
            return super().q(name)  # raises the ParameterError
        return quantities[name]

    def __getattribute__(self, name):
        if name in _FIELD_NAMES and _recording is not None:
            _recording.append(("field", name))
        return object.__getattribute__(self, name)


def _traced(hw: HBConfig) -> _TracedHBConfig:
    return _TracedHBConfig(**{f.name: getattr(hw, f.name) for f in dataclasses.fields(HBConfig) if f.init})


def _read(hw: HBConfig, kind: str, name: str) -> Any:
    if kind == "q":
        q = hw.q(name)
        return (q.value, q.unit)
    return _freeze(getattr(hw, name))


class PlacementCache:
    """Placements keyed by (workload, design, tile size) plus the values of every constant they read."""

    def __init__(self, max_entries: int = 512):
        self.max_entries = int(max_entries)
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self.enabled = True
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0

    def place(self, key: tuple, workload, hw: HBConfig, design, tile_size=None):
        global _recording
        if not self.enabled:
            return place(workload, hw, design, tile_size=tile_size)
        bucket = self._entries.get(key)
        if bucket is not None:
            self._entries.move_to_end(key)
            for reads, values, placement in bucket:
                if all(_read(hw, kind, name) == v for (kind, name), v in zip(reads, values)):
                    self.hits += 1
                    return placement
        self.misses += 1
        traced = _traced(hw)
        _recording = []
        try:
            placement = place(workload, traced, design, tile_size=tile_size)
            reads = tuple(dict.fromkeys(_recording))
        finally:
            _recording = None
        if any(isinstance(getattr(placement, f.name, None), HBConfig) for f in dataclasses.fields(placement)):
            logger.warning("a Placement holds the HB description: placement caching switched off")
            self.enabled = False
            return place(workload, hw, design, tile_size=tile_size)
        values = tuple(_read(hw, kind, name) for kind, name in reads)
        self._entries.setdefault(key, []).append((reads, values, placement))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return placement


def kv_footprint_bytes(workload, hw: HBConfig) -> float:
    """Weights plus stored KV (and page metadata) of the step's batch, in bytes."""
    att = workload.attention
    tb = 2 * att.head_dim * hw.kv_bytes
    return float(workload.model.n_parameters * hw.weight_bytes + (att.stored_tokens.sum() + att.meta_stored_pages.sum()) * tb)


def metrics_of(result, workload, hw: HBConfig, area_constants: Mapping[str, float]) -> dict[str, float]:
    """Every :data:`~h2eal_core.dse.objectives.METRICS` value of one evaluated point."""
    out = {
        "attention_latency_s": float(result.attention_latency_s),
        "latency_s": float(result.latency_s),
        "energy_per_token_j": float(result.energy_per_token_j),
        "attention_energy_j": float(result.attention_energy_j),
        "tokens_per_s": float(result.tokens_per_s),
        "power_w": float(result.energy_j / result.latency_s),
        "bank_utilization": float(result.bank_utilization),
        "external_bytes": float(result.bytes.get("external", 0.0)),
        "hb_footprint_ratio": kv_footprint_bytes(workload, hw) / hw.total_capacity,
    }
    out.update(area_proxy(hw, area_constants))
    return out


class Evaluator:
    """Evaluates the points of one :class:`Space` (caches its descriptions, sparsity configs, placements)."""

    def __init__(self, space: Space, *, cache: bool = True, base: HBConfig | None = None):
        self.space = space
        self.base = load_hardware(space.hardware) if base is None else base
        self.area = space.area_constants()
        self.placements = PlacementCache()
        self.placements.enabled = bool(cache)
        self._hardware: dict[tuple, HBConfig] = {}
        self._sparsity: dict[tuple, SparseAttentionConfig] = {}
        self._shapes: dict[str, Any] = {}
        self._workloads: collections.OrderedDict = collections.OrderedDict()

    def hardware_for(self, point: Mapping[str, Any]) -> HBConfig:
        hv = self.space.section_values(point, "hardware")
        mv = self.space.section_values(point, "mapping")
        key = (tuple(hv.items()), tuple(mv.items()))
        hw = self._hardware.get(key)
        if hw is None:
            hw = make_hardware(self.base, hv, mv)
            self._hardware[key] = hw
        return hw

    def sparsity_for(self, point: Mapping[str, Any]) -> SparseAttentionConfig:
        av = self.space.section_values(point, "algorithm")
        key = tuple(av.items())
        cfg = self._sparsity.get(key)
        if cfg is None:
            cfg = SparseAttentionConfig(**av)
            self._sparsity[key] = cfg
        return cfg

    def simulate(self, point: Mapping[str, Any]):
        """``(DecodeResult, workload, hw)`` of one point (the path of ``simulate_decode``)."""
        wl = self.space.section_values(point, "workload")
        shape = self._shapes.get(wl["model"])
        if shape is None:
            shape = self._shapes[wl["model"]] = load_model_shape(wl["model"])
        design = get_design(wl["design"])
        hw = self.hardware_for(point)
        sparsity = self.sparsity_for(point)
        context, batch = int(wl["context_len"]), int(wl["batch"])
        key = (shape.name, context, batch, design.name, sparsity)
        workload = self._workloads.get(key)
        if workload is None:  # decode_workload is a pure function of the key
            workload = decode_workload(shape, context, sparse=design.sparse, sparsity=sparsity, retrieval_mask=None, batch=batch)
            self._workloads[key] = workload
            while len(self._workloads) > 256:
                self._workloads.popitem(last=False)
        placement = self.placements.place(key, workload, hw, design)
        return evaluate(workload, placement, hw), workload, hw

    def evaluate_point(self, point: Mapping[str, Any]) -> dict[str, float]:
        result, workload, hw = self.simulate(point)
        return metrics_of(result, workload, hw, self.area)

    def evaluate_range(self, start: int, stop: int) -> pd.DataFrame:
        """The result table of points ``start..stop-1``: ``point``, one column per knob, every metric, ``feasible``."""
        space = self.space
        if not 0 <= start <= stop <= space.n_points:
            raise ParameterError("points", (start, stop), f"a range inside [0, {space.n_points}]")
        idx = space.indices(start, stop)
        rows = []
        for row in idx:
            point = {k.path: k.values[j] for k, j in zip(space.knobs, row)}
            rows.append(self.evaluate_point(point))
        metrics = pd.DataFrame(rows, columns=list(_metric_columns()))
        table = pd.DataFrame({"point": np.arange(start, stop, dtype=np.int64)})
        for col, (k, values) in enumerate(zip(space.knobs, knob_columns(space))):
            table[k.column] = values[idx[:, col]] if len(idx) else values[:0]
        table = pd.concat([table, metrics.astype("float64")], axis=1)
        table["feasible"] = feasible_mask(table, space)
        return table


def _metric_columns():
    from .objectives import METRICS

    return tuple(METRICS)


def knob_columns(space: Space) -> list[np.ndarray]:
    """Per knob, its values as a typed numpy array (int64, float64 or str when mixed)."""
    out = []
    for k in space.knobs:
        vals = list(k.values)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
            out.append(np.asarray(vals, dtype=np.int64))
        elif all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in vals):
            out.append(np.asarray(vals, dtype=np.float64))
        else:
            out.append(np.asarray([str(v) for v in vals], dtype=object))
    return out


def feasible_mask(table: pd.DataFrame, space: Space) -> np.ndarray:
    """Points that meet every constraint of the space."""
    ok = np.ones(len(table), dtype=bool)
    for metric, lo, hi in space.constraints:
        v = table[metric].to_numpy()
        if lo is not None:
            ok &= v >= lo
        if hi is not None:
            ok &= v <= hi
    return ok


#: One evaluator per (space fingerprint, cache flag) in each process (a Dask worker keeps its cache
#: across the tasks it runs).
_EVALUATORS: dict[tuple[str, bool], Evaluator] = {}


def evaluator_for(space: Space, fingerprint: str, *, cache: bool = True) -> Evaluator:
    key = (fingerprint, bool(cache))
    ev = _EVALUATORS.get(key)
    if ev is None:
        if len(_EVALUATORS) > 4:
            _EVALUATORS.clear()
        ev = _EVALUATORS[key] = Evaluator(space, cache=cache)
    return ev
