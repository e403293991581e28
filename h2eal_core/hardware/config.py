"""HBConfig: the hybrid-bonding accelerator description, read from ``data/hardware/*.yaml``.

Every constant is a :class:`~h2eal_core.config.Quantity` (value, unit, source, confidence, band),
so provenance travels with the number (AttAcc's inline-citation habit, done as data). Only primary
quantities are stored; everything derived from them (bank count, aggregate bandwidth, peak MAC
rate, NoC link bandwidth, mesh distances) is a property computed on access, as in H2-LLM's
``Device`` dataclass, so a sweep that changes one constant cannot leave a stale derived value.

A bad file fails at load time with a :class:`~h2eal_core.validation.ParameterError` naming the file
and the field: a missing constant, a missing or wrong unit, a negative or zero value, a
non-integer count, or a mesh whose ``mesh_rows x mesh_cols`` is not the bank count.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import Quantity, load_yaml, parse_quantity, resolve_named_file
from ..io import data_dir
from ..validation import ParameterError, check_positive_int

#: Every constant an HB description must give: name -> (YAML section, dimension, must be an integer).
QUANTITY_FIELDS: dict[str, tuple[str, str, bool]] = {
    "n_channels": ("structure", "count", True),
    "banks_per_channel": ("structure", "count", True),
    "mesh_rows": ("structure", "count", True),
    "mesh_cols": ("structure", "count", True),
    "bank_capacity": ("structure", "bytes", False),
    "bank_bandwidth": ("memory", "bytes/s", False),
    "hb_dram_energy": ("memory", "J/bit", False),
    "external_bandwidth": ("memory", "bytes/s", False),
    "external_energy": ("memory", "J/bit", False),
    "external_capacity": ("memory", "bytes", False),
    "pe_fpus": ("compute", "count", True),
    "pe_simd_width": ("compute", "count", True),
    "pe_clock": ("compute", "Hz", False),
    "mac_energy": ("compute", "J/MAC", False),
    "sram_energy": ("compute", "J/bit", False),
    "sram_accesses_per_byte": ("compute", "count", False),
    "noc_link_width": ("noc", "bytes/cycle", False),
    "noc_clock": ("noc", "Hz", False),
    "noc_hop_latency": ("noc", "cycle", False),
    "noc_energy": ("noc", "J/bit/hop", False),
    "controller_clock": ("controller", "Hz", False),
    "topk_throughput": ("controller", "element/cycle", False),
    "topk_energy": ("controller", "J/op", False),
    "merge_ops_per_element": ("controller", "op/element", False),
    "static_power": ("static", "W", False),
    "row_size": ("dram_row", "bytes", False),
    "row_activate_delay": ("dram_row", "s", False),
    "row_precharge_time": ("dram_row", "s", False),
    "row_cycle_time": ("dram_row", "s", False),
    "four_activation_window": ("dram_row", "s", False),
    "activation_window_banks": ("dram_row", "count", True),
    "activation_energy": ("dram_row", "J", False),
    "weight_bytes": ("precision", "bytes/element", False),
    "kv_bytes": ("precision", "bytes/element", False),
    "partial_bytes": ("precision", "bytes/element", False),
    "score_bytes": ("precision", "bytes/element", False),
}

SECTIONS = tuple(dict.fromkeys(section for section, _, _ in QUANTITY_FIELDS.values()))
METADATA_KEYS = ("name", "display_name", "description")
POLICY_KEYS = (
    "baseline",
    "gqa_kv_sharing",
    "kv_interleave_width",
    "merge",
    "topk",
    "baseline_group_banks",
    "tile_size",
    "tiles_per_pe",
)
GROUP_POLICIES = ("per_kv_head",)
TILE_POLICIES = ("auto",)

#: Readings of the paper's "basic HB implementation with head parallelism" (Fig. 3a); see
#: :data:`BASELINE_READINGS_DOC` and :mod:`h2eal_core.hardware.layout`.
BASELINE_READINGS = ("head_parallel", "head_parallel_kv", "split_kv_groups")

BASELINE_READINGS_DOC = {
    "head_parallel": (
        "Fig. 3a 'basic LLM implementation on HB with head parallelism': one PE per query head, no "
        "intra-head tiling and no log-sum-exp merge (SPEC 1.4/2.3: both are H2EAL's contributions). A KV "
        "head's cache is written into the home bank of its first query head and spills into the following "
        "(neighbouring) banks when it outgrows it, then to the external tier; data in a bank other than the "
        "reading PE's crosses the mesh (XY routing, hop count, link contention). With GQA/MQA the query "
        "heads of a group share the KV through the NoC (Fig. 3c) or, with gqa_kv_sharing: replicate, each "
        "keeps its own copy."
    ),
    "head_parallel_kv": (
        "Fig. 3c reading for GQA/MQA: one PE per KV head computes all query heads of its group (no KV "
        "sharing traffic), still with no intra-head tiling and no merge; the same home-bank layout."
    ),
    "split_kv_groups": (
        "The generous reading (the first-generation model): the banks are split into one group per KV head, "
        "a head's pages round-robin over its group and its partials merged by log-sum-exp. It already "
        "contains H2EAL's parallel tiled attention, so it bounds the speedup from below."
    ),
}
GQA_SHARING = ("noc", "replicate")
MERGE_OPTIONS = ("tree", "pipelined")
TOPK_OPTIONS = ("central", "distributed")
INTERLEAVE_POLICIES = ("page",)


def hardware_dir() -> Path:
    """Folder of the hardware YAML files."""
    return data_dir() / "hardware"


def list_hardware() -> list[str]:
    """Names of every hardware description under ``data/hardware/``, sorted."""
    return sorted(p.stem for p in hardware_dir().glob("*.yaml"))


def _check_group_banks(value: Any, where: str) -> str | int:
    if value in GROUP_POLICIES:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(where, value, "'per_kv_head' or a positive integer number of banks per head group")
    return value


def _check_interleave(value: Any, where: str) -> str | int:
    if value in INTERLEAVE_POLICIES:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(where, value, "'page' or a positive integer number of tokens per bank chunk")
    return value


def _check_option(value: Any, where: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ParameterError(where, value, "one of " + ", ".join(allowed))
    return value


def _check_tile_size(value: Any, where: str) -> str | int:
    if value in TILE_POLICIES:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(where, value, "'auto' or a positive integer number of tokens per tile")
    return value


@dataclasses.dataclass(frozen=True)
class HBConfig:
    """An HB accelerator: primary constants (with provenance) plus mapping policies.

    Read constants in SI units through the properties (``bank_bandwidth`` in B/s, ``hb_dram_energy``
    in J/bit, ...); :attr:`quantities` keeps the original value, unit, source, confidence and band.
    """

    name: str
    quantities: Mapping[str, Quantity]
    baseline: str = "head_parallel"
    gqa_kv_sharing: str = "noc"
    kv_interleave_width: str | int = 1
    merge: str = "tree"
    topk: str = "central"
    baseline_group_banks: str | int = "per_kv_head"
    tile_size: str | int = "auto"
    tiles_per_pe: int = 1
    display_name: str = ""
    description: str = ""
    policy_sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
    path: str = ""

    def __post_init__(self):
        where = self.path or self.name
        for field, (section, dimension, integer) in QUANTITY_FIELDS.items():
            if field not in self.quantities:
                raise ParameterError(f"{where}:{section}.{field}", None, f"a quantity with a unit of {dimension} (missing)")
            q = self.quantities[field]
            if q.dimension != dimension:
                raise ParameterError(f"{where}:{section}.{field}.unit", q.unit, f"a unit of {dimension}")
            if not (q.value > 0 and math.isfinite(q.value)):
                raise ParameterError(f"{where}:{section}.{field}.value", q.value, "a finite number > 0")
            if integer and q.value != int(q.value):
                raise ParameterError(f"{where}:{section}.{field}.value", q.value, "a whole number")
        unknown = set(self.quantities) - set(QUANTITY_FIELDS)
        if unknown:
            key = sorted(unknown)[0]
            raise ParameterError(f"{where}:{key}", self.quantities[key].value, "one of " + ", ".join(QUANTITY_FIELDS))
        if self.mesh_rows * self.mesh_cols != self.n_banks:
            raise ParameterError(
                f"{where}:structure.mesh_rows x mesh_cols",
                f"{self.mesh_rows} x {self.mesh_cols} = {self.mesh_rows * self.mesh_cols}",
                f"the bank count n_channels x banks_per_channel = {self.n_banks}",
            )
        group = _check_group_banks(self.baseline_group_banks, f"{where}:mapping.baseline_group_banks")
        if isinstance(group, int) and group > self.n_banks:
            raise ParameterError(f"{where}:mapping.baseline_group_banks", group, f"at most n_banks = {self.n_banks}")
        _check_tile_size(self.tile_size, f"{where}:mapping.tile_size")
        _check_option(self.baseline, f"{where}:mapping.baseline", BASELINE_READINGS)
        _check_option(self.gqa_kv_sharing, f"{where}:mapping.gqa_kv_sharing", GQA_SHARING)
        _check_option(self.merge, f"{where}:mapping.merge", MERGE_OPTIONS)
        _check_option(self.topk, f"{where}:mapping.topk", TOPK_OPTIONS)
        _check_interleave(self.kv_interleave_width, f"{where}:mapping.kv_interleave_width")
        trcd, trp, trc = self.row_activate_delay, self.row_precharge_time, self.row_cycle_time
        if trc < trcd + trp - 1e-15:
            raise ParameterError(
                f"{where}:dram_row.row_cycle_time",
                f"{trc * 1e9:g} ns",
                f"at least row_activate_delay + row_precharge_time = {(trcd + trp) * 1e9:g} ns (tRC = tRAS + tRP, tRAS >= tRCD)",
            )
        if self.activation_window_banks > self.n_banks:
            raise ParameterError(f"{where}:dram_row.activation_window_banks", self.activation_window_banks, f"at most n_banks = {self.n_banks}")
        check_positive_int(f"{where}:mapping.tiles_per_pe", self.tiles_per_pe)

    # ---- access ---------------------------------------------------------------------------------
    def q(self, name: str) -> Quantity:
        """The :class:`Quantity` ``name`` (value, unit, source, confidence, band)."""
        if name not in self.quantities:
            raise ParameterError("quantity", name, "one of " + ", ".join(QUANTITY_FIELDS))
        return self.quantities[name]

    def si(self, name: str) -> float:
        """Value of constant ``name`` in SI base units."""
        return self.q(name).si

    def with_values(self, **values: float) -> HBConfig:
        """A validated copy with some constants changed (values in each constant's own unit)."""
        quantities = dict(self.quantities)
        for name, value in values.items():
            quantities[name] = self.q(name).with_value(value)
        return dataclasses.replace(self, quantities=quantities)

    def with_policies(self, **policies: Any) -> HBConfig:
        """A validated copy with mapping policies changed (any of :data:`POLICY_KEYS`, e.g. ``baseline``)."""
        for key in policies:
            if key not in POLICY_KEYS:
                raise ParameterError("policy", key, "one of " + ", ".join(POLICY_KEYS))
        return dataclasses.replace(self, **policies)

    def sweepable(self) -> list[str]:
        """Constants that carry a sensitivity band, in file order."""
        return [name for name in QUANTITY_FIELDS if self.quantities[name].band is not None]

    # ---- primary constants (SI) ------------------------------------------------------------------
    n_channels = property(lambda self: int(self.si("n_channels")))
    banks_per_channel = property(lambda self: int(self.si("banks_per_channel")))
    mesh_rows = property(lambda self: int(self.si("mesh_rows")))
    mesh_cols = property(lambda self: int(self.si("mesh_cols")))
    bank_capacity = property(lambda self: self.si("bank_capacity"))  # bytes
    bank_bandwidth = property(lambda self: self.si("bank_bandwidth"))  # B/s
    hb_dram_energy = property(lambda self: self.si("hb_dram_energy"))  # J/bit
    external_bandwidth = property(lambda self: self.si("external_bandwidth"))  # B/s
    external_energy = property(lambda self: self.si("external_energy"))  # J/bit
    external_capacity = property(lambda self: self.si("external_capacity"))  # bytes
    pe_clock = property(lambda self: self.si("pe_clock"))  # Hz
    mac_energy = property(lambda self: self.si("mac_energy"))  # J/MAC
    sram_energy = property(lambda self: self.si("sram_energy"))  # J/bit
    sram_accesses_per_byte = property(lambda self: self.si("sram_accesses_per_byte"))
    noc_hop_cycles = property(lambda self: self.si("noc_hop_latency"))  # cycles
    noc_energy = property(lambda self: self.si("noc_energy"))  # J/bit/hop
    controller_clock = property(lambda self: self.si("controller_clock"))  # Hz
    topk_energy = property(lambda self: self.si("topk_energy"))  # J/op
    merge_ops_per_element = property(lambda self: self.si("merge_ops_per_element"))
    static_power = property(lambda self: self.si("static_power"))  # W
    row_size = property(lambda self: self.si("row_size"))  # bytes per DRAM row (page)
    row_activate_delay = property(lambda self: self.si("row_activate_delay"))  # tRCD, s
    row_precharge_time = property(lambda self: self.si("row_precharge_time"))  # tRP, s
    row_cycle_time = property(lambda self: self.si("row_cycle_time"))  # tRC, s
    four_activation_window = property(lambda self: self.si("four_activation_window"))  # tFAW, s
    activation_window_banks = property(lambda self: int(self.si("activation_window_banks")))
    activation_energy = property(lambda self: self.si("activation_energy"))  # J per row activation
    weight_bytes = property(lambda self: self.si("weight_bytes"))  # B/element
    kv_bytes = property(lambda self: self.si("kv_bytes"))
    partial_bytes = property(lambda self: self.si("partial_bytes"))
    score_bytes = property(lambda self: self.si("score_bytes"))

    # ---- derived (computed, never stored) --------------------------------------------------------
    @property
    def n_banks(self) -> int:
        """Banks = near-bank PEs: ``n_channels * banks_per_channel``."""
        return self.n_channels * self.banks_per_channel

    @property
    def total_capacity(self) -> float:
        """HB capacity in bytes."""
        return self.n_banks * self.bank_capacity

    @property
    def aggregate_bandwidth(self) -> float:
        """Sum of all bank bandwidths (B/s): the bound only a perfectly balanced mapping reaches."""
        return self.n_banks * self.bank_bandwidth

    @property
    def pe_mac_rate(self) -> float:
        """MAC/s of one PE: FPUs x SIMD lanes x clock."""
        return self.si("pe_fpus") * self.si("pe_simd_width") * self.pe_clock

    @property
    def peak_mac_rate(self) -> float:
        """MAC/s of all PEs together."""
        return self.n_banks * self.pe_mac_rate

    @property
    def pe_ridge_mac_per_byte(self) -> float:
        """PE arithmetic intensity at the ridge (MAC per byte of its bank): above it a PE is compute-bound."""
        return self.pe_mac_rate / self.bank_bandwidth

    @property
    def noc_link_bandwidth(self) -> float:
        """B/s of one NoC link (and of a PE's or the controller's NoC port)."""
        return self.si("noc_link_width") * self.si("noc_clock")

    @property
    def noc_hop_latency(self) -> float:
        """Seconds per hop."""
        return self.noc_hop_cycles / self.si("noc_clock")

    @property
    def mesh_shape(self) -> tuple[int, int]:
        return (self.mesh_rows, self.mesh_cols)

    @property
    def mean_hops(self) -> float:
        """Mean Manhattan distance between two uniformly random mesh nodes (with repetition)."""
        r, c = self.mesh_rows, self.mesh_cols
        return (r * r - 1) / (3 * r) + (c * c - 1) / (3 * c)

    @property
    def mesh_diameter(self) -> int:
        return self.mesh_rows + self.mesh_cols - 2

    @property
    def topk_rate(self) -> float:
        """Page scores per second the top-k unit consumes."""
        return self.si("topk_throughput") * self.controller_clock

    def bank_position(self, bank):
        """(row, col) of a bank on the mesh: row-major, one row per ``mesh_cols`` banks."""
        return divmod(bank, self.mesh_cols)

    def group_banks_for(self, n_kv_heads: int) -> int:
        """Banks per head group of the head-parallel mapping for a model with ``n_kv_heads``."""
        if self.baseline_group_banks == "per_kv_head":
            return max(1, self.n_banks // n_kv_heads)
        return int(self.baseline_group_banks)

    def interleave_tokens(self, page_size: int) -> int:
        """Tokens per bank chunk of the interleaved layouts (``'page'`` = the page size)."""
        w = self.kv_interleave_width
        return int(page_size) if w == "page" else int(w)

    def derived(self) -> dict[str, float]:
        """Every derived quantity, for tables."""
        return {
            "n_banks": self.n_banks,
            "total_capacity_GB": self.total_capacity / 1e9,
            "aggregate_bandwidth_TB_s": self.aggregate_bandwidth / 1e12,
            "pe_mac_rate_GMAC_s": self.pe_mac_rate / 1e9,
            "peak_mac_rate_TMAC_s": self.peak_mac_rate / 1e12,
            "pe_ridge_MAC_per_B": self.pe_ridge_mac_per_byte,
            "noc_link_bandwidth_GB_s": self.noc_link_bandwidth / 1e9,
            "noc_hop_latency_ns": self.noc_hop_latency * 1e9,
            "mesh_mean_hops": self.mean_hops,
            "topk_rate_G_per_s": self.topk_rate / 1e9,
            "row_streaming_bandwidth_GB_s": self.row_size / self.row_cycle_time / 1e9,
        }

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "display_name": self.display_name, "description": self.description}
        for section in SECTIONS:
            out[section] = {
                name: self.quantities[name].to_dict() for name, (sec, _, _) in QUANTITY_FIELDS.items() if sec == section
            }
        out["mapping"] = {
            key: {"value": getattr(self, key), "source": self.policy_sources.get(key, "")} for key in POLICY_KEYS
        }
        return out


def hb_config_from_dict(data: Mapping[str, Any], *, where: str = "hardware") -> HBConfig:
    """Build an :class:`HBConfig` from the YAML mapping (sections of quantities plus ``mapping``)."""
    data = dict(data)
    quantities: dict[str, Quantity] = {}
    policies: dict[str, Any] = {}
    policy_sources: dict[str, str] = {}
    for key, value in data.items():
        if key in METADATA_KEYS:
            continue
        if key == "mapping":
            if not isinstance(value, Mapping):
                raise ParameterError(f"{where}:mapping", value, "a mapping of policies")
            for pkey, entry in value.items():
                if pkey not in POLICY_KEYS:
                    raise ParameterError(f"{where}:mapping.{pkey}", entry, "one of " + ", ".join(POLICY_KEYS))
                if not isinstance(entry, Mapping) or "value" not in entry or "source" not in entry:
                    raise ParameterError(f"{where}:mapping.{pkey}", entry, "a mapping with keys value and source")
                policies[pkey] = entry["value"]
                policy_sources[pkey] = str(entry["source"]).strip()
            continue
        if key not in SECTIONS:
            raise ParameterError(f"{where}:{key}", "<section>", "sections " + ", ".join(SECTIONS + ("mapping",)))
        if not isinstance(value, Mapping):
            raise ParameterError(f"{where}:{key}", value, "a mapping of quantities")
        for name, entry in value.items():
            if name not in QUANTITY_FIELDS:
                raise ParameterError(f"{where}:{key}.{name}", entry, "one of " + ", ".join(QUANTITY_FIELDS))
            section, dimension, _ = QUANTITY_FIELDS[name]
            if section != key:
                raise ParameterError(f"{where}:{key}.{name}", "<misplaced>", f"the section '{section}'")
            quantities[name] = parse_quantity(name, entry, expected_dimension=dimension, where=f"{where}:{key}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ParameterError(f"{where}:name", name, "a non-empty string")
    return HBConfig(
        name=name,
        quantities=quantities,
        display_name=str(data.get("display_name", name)),
        description=str(data.get("description", "")).strip(),
        policy_sources=policy_sources,
        path=where,
        **policies,
    )


@functools.lru_cache(maxsize=None)
def _load_cached(path: str, mtime: float) -> HBConfig:
    return hb_config_from_dict(load_yaml(path), where=Path(path).name)


def load_hardware(name_or_path: str | os.PathLike | HBConfig = "h2eal_hb") -> HBConfig:
    """Load an HB description by name (``data/hardware/<name>.yaml``) or from a YAML path."""
    if isinstance(name_or_path, HBConfig):
        return name_or_path
    path = resolve_named_file(name_or_path, hardware_dir(), "hardware")
    return _load_cached(str(path), path.stat().st_mtime)
