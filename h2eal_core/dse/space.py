"""A declarative design space: knobs with grids over the workload, the algorithm, the mapping and the HB constants.

A space is a YAML file (``data/dse/*.yaml``)::

    name: quick
    description: ...
    hardware: h2eal_hb              # the base HB description (data/hardware/<name>.yaml)
    knobs:                          # sections in any order; inside a section, the order of the grid
      workload:                     # model, context_len, design, batch
        model: [llama-3.2-1b, qwen2.5-1.5b]
        context_len: [32768, 131072]
        design: [baseline, h2eal]
      algorithm:                    # fields of h2eal_core.attention.config.SparseAttentionConfig
        budget: [1024, 2048]
      mapping:                      # mapping options of the HB description (HBConfig.with_policies)
        baseline: [head_parallel]
      hardware:                     # constants of the HB description, in the unit of its YAML
        banks_per_channel: [8, 16]
        bank_bandwidth: {range: [6.4, 51.2], steps: 4, scale: log}
    objectives: [attention_latency_s, energy_per_token_j, area_mm2]   # the frontier's axes
    constraints:                    # metric: {max: x} and/or {min: x}
      hb_footprint_ratio: {max: 1.0}
      power_w: {max: 30}
    area: {}                        # overrides of h2eal_core.dse.objectives.AREA_CONSTANTS
    chunk_size: 2000                # points per task

A knob is a list of values, ``{values: [...]}``, or ``{range: [lo, hi], steps: n, scale: linear|log}``
(integer constants are rounded and de-duplicated). The knob names each section accepts come from
the code they configure (:data:`h2eal_core.hardware.config.QUANTITY_FIELDS`, ``POLICY_KEYS``, the
fields of :class:`SparseAttentionConfig`), so a new option of the HB model is a knob without a
change here. Every value is checked when the space is loaded (each through the constructor that
will use it), and every combination of hardware and mapping values is built once, so a bad space
fails before any evaluation with a :class:`ParameterError` naming the knob, the value and what is
allowed.

Points are the Cartesian product in the declared order (first knob slowest, sections in the order
workload, algorithm, mapping, hardware); point ``i`` is a mixed-radix index, so a chunk is an index
range and every process enumerates the same points. Put knobs that change the mapping (bank count,
capacity, budget) before those that only change the cost (bandwidths, energies): consecutive points
then share a cached placement (:mod:`h2eal_core.dse.evaluate`).

Assumption (labelled): when ``n_channels`` or ``banks_per_channel`` is a knob and the mesh is not,
the mesh follows the base file's reconstruction, one mesh row per channel and one column per bank
of a channel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..config import load_yaml, resolve_named_file
from ..io import data_dir
from ..validation import ParameterError, check_positive_int, suggest
from .objectives import METRICS, area_constants

SECTIONS = ("workload", "algorithm", "mapping", "hardware")
WORKLOAD_KNOBS = ("model", "context_len", "design", "batch")
WORKLOAD_DEFAULTS = {"design": ("h2eal",), "batch": (1,)}
TOP_KEYS = ("name", "description", "hardware", "knobs", "objectives", "constraints", "area", "chunk_size")
DEFAULT_OBJECTIVES = ("attention_latency_s", "energy_per_token_j", "area_mm2")
DEFAULT_CHUNK_SIZE = 2000


def spaces_dir() -> Path:
    """Folder of the design-space YAML files."""
    return data_dir() / "dse"


def list_spaces() -> list[str]:
    return sorted(p.stem for p in spaces_dir().glob("*.yaml"))


def _hardware_fields():
    from ..hardware import config as hwc

    return hwc.QUANTITY_FIELDS


def _policy_keys() -> tuple[str, ...]:
    from ..hardware import config as hwc

    return tuple(hwc.POLICY_KEYS)


def _algorithm_fields() -> tuple[str, ...]:
    from ..attention.config import SparseAttentionConfig

    return tuple(f.name for f in dataclasses.fields(SparseAttentionConfig))


def knob_names(section: str) -> tuple[str, ...]:
    """Knobs a section accepts (read from the code each section configures)."""
    if section == "workload":
        return WORKLOAD_KNOBS
    if section == "algorithm":
        return _algorithm_fields()
    if section == "mapping":
        return _policy_keys()
    if section == "hardware":
        return tuple(_hardware_fields())
    raise ParameterError("knobs", section, "sections " + ", ".join(SECTIONS))


@dataclasses.dataclass(frozen=True)
class Knob:
    section: str
    name: str
    values: tuple

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def column(self) -> str:
        """Column name in the result table (workload knobs keep their own name)."""
        return self.name if self.section == "workload" else f"{self.section}.{self.name}"


def _plain(value: Any) -> Any:
    """A YAML/JSON-able Python scalar (numpy scalars become int/float)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value


def _expand(path: str, spec: Any, *, integer: bool = False) -> list:
    """The values of one knob spec (a list, ``{values}`` or ``{range, steps, scale}``)."""
    if isinstance(spec, Mapping):
        keys = set(spec)
        if "values" in keys:
            extra = keys - {"values"}
            if extra:
                raise ParameterError(f"{path}.{sorted(extra)[0]}", spec[sorted(extra)[0]], "only 'values' beside 'values'")
            spec = spec["values"]
        elif "range" in keys:
            extra = keys - {"range", "steps", "scale"}
            if extra:
                raise ParameterError(f"{path}.{sorted(extra)[0]}", spec[sorted(extra)[0]], "keys range, steps, scale")
            rng = spec["range"]
            if not (isinstance(rng, (list, tuple)) and len(rng) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)):
                raise ParameterError(f"{path}.range", rng, "[low, high], two numbers")
            lo, hi = float(rng[0]), float(rng[1])
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise ParameterError(f"{path}.range", list(rng), "[low, high] with finite low <= high (an empty range has no points)")
            steps = spec.get("steps", 2 if hi > lo else 1)
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ParameterError(f"{path}.steps", steps, "an integer >= 1 (an empty range has no points)")
            if steps > 1 and lo == hi:
                raise ParameterError(f"{path}.steps", steps, f"1 for the single-value range [{lo:g}, {hi:g}]")
            scale = spec.get("scale", "linear")
            if scale not in ("linear", "log"):
                raise ParameterError(f"{path}.scale", scale, "'linear' or 'log'")
            if scale == "log":
                if lo <= 0:
                    raise ParameterError(f"{path}.range", list(rng), "a range with low > 0 for scale: log")
                values = np.geomspace(lo, hi, steps)
            else:
                values = np.linspace(lo, hi, steps)
            if integer:
                values = np.unique(np.round(values).astype(np.int64))
                return [int(v) for v in values]
            return [float(f"{v:.12g}") for v in values]
        else:
            raise ParameterError(path, dict(spec), "a list of values, {values: [...]} or {range: [low, high], steps: n, scale: linear|log}")
    if not isinstance(spec, (list, tuple)):
        raise ParameterError(path, spec, "a list of values, {values: [...]} or {range: [low, high], steps: n, scale: linear|log}")
    if len(spec) == 0:
        raise ParameterError(path, list(spec), "at least one value (an empty grid has no points)")
    values = [_plain(v) for v in spec]
    seen = set()
    for v in values:
        key = json.dumps(v)
        if key in seen:
            raise ParameterError(path, v, "distinct values (this one is listed twice)")
        seen.add(key)
    return values


@dataclasses.dataclass(frozen=True)
class Space:
    """A validated design space (see the module docstring); build it with :func:`load_space`."""

    name: str
    description: str
    hardware: str
    knobs: tuple[Knob, ...]
    objectives: tuple[str, ...]
    constraints: tuple[tuple[str, float | None, float | None], ...]  # (metric, min, max)
    area: tuple[tuple[str, float], ...]
    chunk_size: int
    source: str = ""

    # ---- enumeration --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(k.values) for k in self.knobs)

    @property
    def n_points(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def n_chunks(self) -> int:
        return -(-self.n_points // self.chunk_size)

    def chunk_bounds(self, chunk: int) -> tuple[int, int]:
        if not 0 <= chunk < self.n_chunks:
            raise ParameterError("chunk", chunk, f"an index in [0, {self.n_chunks})")
        start = chunk * self.chunk_size
        return start, min(self.n_points, start + self.chunk_size)

    def knob(self, path: str) -> Knob:
        for k in self.knobs:
            if path in (k.path, k.column, k.name):
                return k
        raise ParameterError("knob", path, "one of " + ", ".join(k.path for k in self.knobs))

    def indices(self, start: int, stop: int) -> np.ndarray:
        """``[stop - start, n_knobs]`` value indices of points ``start..stop-1`` (mixed radix)."""
        idx = np.arange(start, stop, dtype=np.int64)
        return np.stack(np.unravel_index(idx, self.shape), axis=1) if self.knobs else np.zeros((len(idx), 0), np.int64)

    def point(self, i: int) -> dict[str, Any]:
        """``{knob path: value}`` of point ``i``."""
        row = self.indices(int(i), int(i) + 1)[0]
        return {k.path: k.values[j] for k, j in zip(self.knobs, row)}

    def section_values(self, point: Mapping[str, Any], section: str) -> dict[str, Any]:
        return {k.name: point[k.path] for k in self.knobs if k.section == section}

    @property
    def workload_paths(self) -> tuple[str, ...]:
        return tuple(k.path for k in self.knobs if k.section == "workload")

    @property
    def config_paths(self) -> tuple[str, ...]:
        """Knobs that define a configuration (everything but the workload)."""
        return tuple(k.path for k in self.knobs if k.section != "workload")

    def area_constants(self) -> dict[str, float]:
        return area_constants(dict(self.area))

    # ---- identity -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        knobs: dict[str, dict[str, list]] = {}
        for k in self.knobs:
            knobs.setdefault(k.section, {})[k.name] = list(k.values)
        constraints = {}
        for metric, lo, hi in self.constraints:
            c = {}
            if lo is not None:
                c["min"] = lo
            if hi is not None:
                c["max"] = hi
            constraints[metric] = c
        return {
            "name": self.name,
            "description": self.description,
            "hardware": self.hardware,
            "knobs": knobs,
            "objectives": list(self.objectives),
            "constraints": constraints,
            "area": dict(self.area),
            "chunk_size": self.chunk_size,
        }

    def fingerprint(self) -> str:
        """SHA-256 of what decides the results: the space, the base hardware and model files, the model code.

        A results folder written under another fingerprint is not resumed (see :mod:`.sweep`).
        """
        h = hashlib.sha256()
        h.update(json.dumps(self.to_dict(), sort_keys=True, default=str).encode())
        from ..hardware import hardware_dir

        hw_path = resolve_named_file(self.hardware, hardware_dir(), "hardware")
        h.update(hw_path.read_bytes())
        from ..models.shape import models_dir

        models = self.knob("workload.model").values
        for m in models:
            p = Path(m) if str(m).endswith((".yaml", ".yml")) else models_dir() / f"{m}.yaml"
            h.update(p.read_bytes())
        for path in _code_files():
            h.update(path.name.encode())
            h.update(path.read_bytes())
        return h.hexdigest()


#: Modules of this package whose code decides a point's numbers or the partition format (the study,
#: the explorer and the command line do not, so editing them keeps a sweep resumable).
DSE_RESULT_MODULES = ("space.py", "evaluate.py", "objectives.py", "sweep.py")


def _code_files() -> list[Path]:
    root = Path(__file__).resolve().parent.parent
    files = []
    for sub in ("hardware", "scheduler", "models"):  # the HB model and what it imports
        files += sorted((root / sub).rglob("*.py"))
    files += [root / "attention" / "config.py", root / "attention" / "accounting.py"]
    files += [root / "dse" / name for name in DSE_RESULT_MODULES]
    files += [root / "config.py", root / "validation.py"]
    return files


def make_hardware(base, hardware_values: Mapping[str, Any], mapping_values: Mapping[str, Any], *, where: str = "knobs"):
    """The HB description of one point: ``base`` with constants and mapping options replaced (validated)."""
    values = dict(hardware_values)
    if ("n_channels" in values or "banks_per_channel" in values) and not ("mesh_rows" in values or "mesh_cols" in values):
        # assumption (module docstring): the mesh follows the channels, as in the base file
        if base.mesh_rows == base.n_channels and base.mesh_cols == base.banks_per_channel:
            values["mesh_rows"] = values.get("n_channels", base.n_channels)
            values["mesh_cols"] = values.get("banks_per_channel", base.banks_per_channel)
    combo = ", ".join(f"{k}={v}" for k, v in [*hardware_values.items(), *mapping_values.items()]) or "(the base values)"
    try:
        hw = base.with_values(**values) if values else base
        return hw.with_policies(**mapping_values) if mapping_values else hw
    except ParameterError as err:
        raise ParameterError(f"{where} combination {combo}", err.value, f"{err.allowed} (from {err.name})") from None


def _describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "(defaults)"


def _check_workload_value(path: str, name: str, value: Any) -> Any:
    from ..hardware import DESIGN_NAMES
    from ..models.shape import list_model_shapes, load_model_shape

    if name == "model":
        try:
            load_model_shape(value)
        except (ParameterError, FileNotFoundError):
            known = list_model_shapes()
            raise ParameterError(path, value, "one of " + ", ".join(known), suggest(str(value), known)) from None
        return value
    if name == "design":
        if value not in DESIGN_NAMES:
            raise ParameterError(path, value, "one of " + ", ".join(DESIGN_NAMES), suggest(str(value), DESIGN_NAMES))
        return value
    return check_positive_int(path, value)


def _check_algorithm_value(path: str, name: str, value: Any) -> Any:
    from ..attention.config import SparseAttentionConfig

    try:
        SparseAttentionConfig(**{name: value})
    except ParameterError as err:
        raise ParameterError(path, value, err.allowed) from None
    except TypeError:
        raise ParameterError(path, value, "a value of the field's type") from None
    return value


def _check_hardware_value(path: str, name: str, value: Any, base) -> Any:
    section, dimension, integer = _hardware_fields()[name]
    unit = base.q(name).unit
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(path, value, f"a number in {unit}")
    if not (math.isfinite(value) and value > 0):
        raise ParameterError(path, value, f"a finite number > 0 {unit} (the physical sign of a {dimension} constant; the HB model needs every constant > 0)")
    if integer and value != int(value):
        raise ParameterError(path, value, f"a whole number ({name} is a count)")
    try:
        base.with_values(**{name: value})
    except ParameterError as err:
        if "mesh" not in err.name:  # the mesh is coupled in make_hardware, checked per combination
            raise ParameterError(path, value, f"{err.allowed} (from {err.name})") from None
    return int(value) if integer else float(value)


def _check_mapping_value(path: str, name: str, value: Any, base) -> Any:
    try:
        base.with_policies(**{name: value})
    except ParameterError as err:
        raise ParameterError(path, value, err.allowed) from None
    return value


def space_from_dict(data: Mapping[str, Any], *, where: str = "space") -> Space:
    """Validate a space mapping (the YAML's content) into a :class:`Space`."""
    from ..hardware import load_hardware

    if not isinstance(data, Mapping):
        raise ParameterError(where, type(data).__name__, "a mapping with keys " + ", ".join(TOP_KEYS))
    for key in data:
        if key not in TOP_KEYS:
            raise ParameterError(f"{where}:{key}", data[key], "top-level keys " + ", ".join(TOP_KEYS), suggest(str(key), TOP_KEYS))
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ParameterError(f"{where}:name", name, "a non-empty string")
    hardware = data.get("hardware", "h2eal_hb")
    try:
        base = load_hardware(hardware)
    except ParameterError as err:
        raise ParameterError(f"{where}:hardware", hardware, err.allowed) from None
    knobs_in = data.get("knobs")
    if not isinstance(knobs_in, Mapping) or not knobs_in:
        raise ParameterError(f"{where}:knobs", knobs_in, "a mapping of sections " + ", ".join(SECTIONS))
    for section in knobs_in:
        if section not in SECTIONS:
            raise ParameterError(f"{where}:knobs.{section}", knobs_in[section], "sections " + ", ".join(SECTIONS), suggest(str(section), SECTIONS))
    knobs: list[Knob] = []
    for section in SECTIONS:
        entries = knobs_in.get(section) or {}
        if not isinstance(entries, Mapping):
            raise ParameterError(f"{where}:knobs.{section}", entries, "a mapping of knob: values")
        allowed = knob_names(section)
        if section == "workload":
            for required in ("model", "context_len"):
                if required not in entries:
                    raise ParameterError(f"{where}:knobs.workload.{required}", None, "a list of values (required)")
            entries = {**entries, **{k: list(v) for k, v in WORKLOAD_DEFAULTS.items() if k not in entries}}
        for kname, spec in entries.items():
            path = f"{where}:knobs.{section}.{kname}"
            if kname not in allowed:
                raise ParameterError(path, spec, f"a knob of section {section}: " + ", ".join(allowed), suggest(str(kname), allowed))
            integer = section == "hardware" and _hardware_fields()[kname][2]
            if section == "hardware" and isinstance(spec, Mapping) and isinstance(spec.get("range"), (list, tuple)):
                lo = spec["range"][0] if spec["range"] else None
                if isinstance(lo, (int, float)) and not isinstance(lo, bool) and not lo > 0:
                    dimension = _hardware_fields()[kname][1]
                    raise ParameterError(f"{path}.range", list(spec["range"]),
                                         f"a range of numbers > 0 {base.q(kname).unit} (the physical sign of a {dimension} constant; the HB model needs every constant > 0)")
            values = _expand(path, spec, integer=integer)
            checked = []
            for i, v in enumerate(values):
                vpath = f"{path}[{i}]"
                if section == "workload":
                    checked.append(_check_workload_value(vpath, kname, v))
                elif section == "algorithm":
                    checked.append(_check_algorithm_value(vpath, kname, v))
                elif section == "hardware":
                    checked.append(_check_hardware_value(vpath, kname, v, base))
                else:
                    checked.append(_check_mapping_value(vpath, kname, v, base))
            knobs.append(Knob(section, kname, tuple(checked)))
    # every hardware x mapping combination builds (coupled checks: mesh, group banks, tFAW banks, ...)
    hw_knobs = [k for k in knobs if k.section in ("hardware", "mapping")]
    combos = math.prod(len(k.values) for k in hw_knobs) if hw_knobs else 1
    if combos <= 50_000:
        for combo in itertools.product(*(k.values for k in hw_knobs)):
            hv = {k.name: v for k, v in zip(hw_knobs, combo) if k.section == "hardware"}
            mv = {k.name: v for k, v in zip(hw_knobs, combo) if k.section == "mapping"}
            make_hardware(base, hv, mv, where=f"{where}:knobs")
    objectives = data.get("objectives", list(DEFAULT_OBJECTIVES))
    if not isinstance(objectives, (list, tuple)) or not objectives:
        raise ParameterError(f"{where}:objectives", objectives, "a non-empty list of metrics: " + ", ".join(METRICS))
    for i, obj in enumerate(objectives):
        if obj not in METRICS:
            raise ParameterError(f"{where}:objectives[{i}]", obj, "one of " + ", ".join(METRICS), suggest(str(obj), METRICS))
    if len(set(objectives)) != len(objectives):
        raise ParameterError(f"{where}:objectives", list(objectives), "distinct metrics")
    constraints_in = data.get("constraints") or {}
    if not isinstance(constraints_in, Mapping):
        raise ParameterError(f"{where}:constraints", constraints_in, "a mapping metric: {min: x, max: y}")
    constraints = []
    for metric, bound in constraints_in.items():
        path = f"{where}:constraints.{metric}"
        if metric not in METRICS:
            raise ParameterError(path, bound, "a constraint on a metric: " + ", ".join(METRICS), suggest(str(metric), METRICS))
        if not isinstance(bound, Mapping) or not bound or set(bound) - {"min", "max"}:
            raise ParameterError(path, bound, "a mapping with min and/or max")
        lo, hi = bound.get("min"), bound.get("max")
        for key, v in (("min", lo), ("max", hi)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ParameterError(f"{path}.{key}", v, f"a finite number in {METRICS[metric].unit}")
        if lo is not None and hi is not None and lo > hi:
            raise ParameterError(path, dict(bound), "min <= max (an empty feasible range)")
        constraints.append((metric, None if lo is None else float(lo), None if hi is None else float(hi)))
    area = data.get("area") or {}
    if not isinstance(area, Mapping):
        raise ParameterError(f"{where}:area", area, "a mapping of area constants")
    area_constants(area, where=f"{where}:area")
    chunk = data.get("chunk_size", DEFAULT_CHUNK_SIZE)
    check_positive_int(f"{where}:chunk_size", chunk)
    space = Space(
        name=name,
        description=str(data.get("description", "")).strip(),
        hardware=str(hardware),
        knobs=tuple(knobs),
        objectives=tuple(objectives),
        constraints=tuple(constraints),
        area=tuple(sorted((k, float(v)) for k, v in area.items())),
        chunk_size=int(chunk),
        source=where,
    )
    return space


def load_space(name_or_path: str | os.PathLike | Space) -> Space:
    """Load and validate a space by name (``data/dse/<name>.yaml``) or from a YAML path."""
    if isinstance(name_or_path, Space):
        return name_or_path
    if isinstance(name_or_path, (str, os.PathLike)) and str(name_or_path).endswith((".yaml", ".yml")):
        from ..io import resolve_repo_path

        name_or_path = resolve_repo_path(name_or_path)  # notebooks' '../data/...' wherever the notebook runs
    path = resolve_named_file(name_or_path, spaces_dir(), "space")
    return space_from_dict(load_yaml(path), where=path.name)
