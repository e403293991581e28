"""What a design-space point is scored on: objectives, constraint metrics and the area proxy.

Every metric is a column of the sweep's result table. Each has a unit, a sense (``min`` or
``max``: the Pareto frontier minimises ``min`` metrics and maximises ``max`` ones) and a source:
either the HB model (:mod:`h2eal_core.hardware`, whose constants carry their own citations in
``data/hardware/*.yaml``) or the area proxy below.

The area proxy (:data:`AREA_CONSTANTS`) is **a reconstructed assumption throughout**: the paper
publishes no area, and no open HB artifact releases an area model for this stack. It is a cost
proxy in mm^2 of silicon, summed over the DRAM dies and the logic die:

* DRAM: ``n_banks x bank_capacity / dram_density`` (bit density of a DRAM die);
* PE datapath: ``n_banks x pe_fpus x pe_simd_width x mac_lane_area``;
* PE buffers: ``n_banks x pe_sram_bytes x sram_area_per_byte``;
* NoC routers: ``n_banks x noc_link_width x router_area_per_link_byte`` (a router's crossbar and
  buffers grow with the link width; linear is the proxy's assumption);
* bank interfaces: ``n_banks x bank_bandwidth x bank_io_area_per_bandwidth`` (a wider bank
  datapath: more column I/O, sense amplifiers and bonding pads per bank).

DRAM silicon dominates it at every realistic point, so the proxy ranks designs by capacity first;
``logic_area_mm2`` (the logic die alone) is reported beside it for the compute and NoC choices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..validation import ParameterError, check_positive


@dataclasses.dataclass(frozen=True)
class Metric:
    """One column of the result table that objectives and constraints may name."""

    name: str
    unit: str
    sense: str  # "min" or "max"
    description: str
    source: str


_HB = "HB model, h2eal_core.hardware.simulate_decode (constants cited in data/hardware/*.yaml)"
_AREA = "area proxy, h2eal_core.dse.objectives (reconstructed assumption: see AREA_CONSTANTS)"

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("attention_latency_s", "s", "min", "attention-core time of one decode step", _HB),
        Metric("latency_s", "s", "min", "end-to-end time of one decode step (attention + FC layers)", _HB),
        Metric("energy_per_token_j", "J", "min", "energy of one decode step per generated token (batch averaged)", _HB),
        Metric("attention_energy_j", "J", "min", "attention-core energy of one decode step", _HB),
        Metric("tokens_per_s", "token/s", "max", "decode throughput: batch / latency", _HB),
        Metric("power_w", "W", "min", "mean power while decoding: energy / latency of the step", _HB),
        Metric("bank_utilization", "ratio", "max", "attention bank utilisation (mean busy / busiest bank)", _HB),
        Metric("external_bytes", "B", "min", "bytes read from the external tier per step (KV that does not fit)", _HB),
        Metric(
            "hb_footprint_ratio", "ratio", "min",
            "(weights + KV cache of the batch) / HB capacity: <= 1 means the KV fits in HB",
            "model shape (data/models/*.yaml) x precision constants / (n_banks x bank_capacity)",
        ),
        Metric("area_mm2", "mm^2", "min", "silicon area proxy: DRAM dies + logic die", _AREA),
        Metric("logic_area_mm2", "mm^2", "min", "logic-die part of the area proxy (PEs, buffers, NoC, bank I/O)", _AREA),
        Metric("dram_area_mm2", "mm^2", "min", "DRAM part of the area proxy", _AREA),
    )
}


@dataclasses.dataclass(frozen=True)
class AreaConstant:
    value: float
    unit: str
    band: tuple[float, float]
    source: str


#: Constants of the area proxy. All are ASSUMPTIONS (labelled as such); the sources say what they
#: are reconstructed from. A space YAML may override any of them in its ``area`` section.
AREA_CONSTANTS: dict[str, AreaConstant] = {
    "dram_density": AreaConstant(
        0.2, "Gbit/mm^2", (0.15, 0.3),
        "ASSUMPTION: 16 Gb DDR5/LPDDR5 dies of 1z/1-alpha nodes are about 55-75 mm^2 (0.21-0.29 Gbit/mm^2, public "
        "die-size teardowns); hybrid-bonded DRAM gives up some density to per-bank I/O and bonding pads (SeDRAM), so 0.2",
    ),
    "mac_lane_area": AreaConstant(
        300.0, "um^2", (150.0, 600.0),
        "ASSUMPTION: FP16 multiply 1640 um^2 + FP16 add 1360 um^2 at 45 nm (Horowitz, ISSCC 2014) = 3000 um^2, "
        "scaled by ~0.1 to a 12-16 nm logic die (Stillmaker-Baas scaling, rounded)",
    ),
    "pe_sram_bytes": AreaConstant(
        64.0, "KiB", (32.0, 256.0),
        "ASSUMPTION: no published PE buffer size; 64 KiB holds K and V of a 256-token tile at head_dim 64 in FP16",
    ),
    "sram_area_per_byte": AreaConstant(
        1.2, "mm^2/MB", (0.8, 2.5),
        "ASSUMPTION: 16 nm high-density SRAM bitcell ~0.07 um^2 x 8.4 Mbit = 0.59 mm^2 of cells per MB, at ~50% "
        "array efficiency",
    ),
    "router_area_per_link_byte": AreaConstant(
        0.0005, "mm^2/(B/cycle)", (0.00025, 0.001),
        "ASSUMPTION: a 5-port mesh router of 32 B links ~0.016 mm^2 at 12-16 nm, area taken linear in link width",
    ),
    "bank_io_area_per_bandwidth": AreaConstant(
        0.0005, "mm^2/(GB/s)", (0.0001, 0.002),
        "ASSUMPTION: a wider bank datapath (column I/O, sense amplifiers, bonding pads) costs ~0.013 mm^2 per bank "
        "at 25.6 GB/s; hybrid-bonding pitch itself makes the pads nearly free",
    ),
}


def area_constants(overrides: Mapping[str, float] | None = None, *, where: str = "area") -> dict[str, float]:
    """The area constants (in :data:`AREA_CONSTANTS` units) with ``overrides`` applied and checked (> 0)."""
    values = {name: c.value for name, c in AREA_CONSTANTS.items()}
    for name, value in dict(overrides or {}).items():
        if name not in AREA_CONSTANTS:
            raise ParameterError(f"{where}.{name}", value, "one of " + ", ".join(AREA_CONSTANTS))
        values[name] = float(check_positive(f"{where}.{name} ({AREA_CONSTANTS[name].unit})", value))
    return values


def area_proxy(hw, constants: Mapping[str, float]) -> dict[str, float]:
    """``area_mm2``, ``logic_area_mm2`` and ``dram_area_mm2`` of an :class:`~h2eal_core.hardware.HBConfig`."""
    n = hw.n_banks
    dram = hw.total_capacity * 8 / 1e9 / constants["dram_density"]
    pe = n * hw.si("pe_fpus") * hw.si("pe_simd_width") * constants["mac_lane_area"] * 1e-6
    sram = n * constants["pe_sram_bytes"] * 1024 / 1e6 * constants["sram_area_per_byte"]
    noc = n * hw.si("noc_link_width") * constants["router_area_per_link_byte"]
    io = n * hw.bank_bandwidth / 1e9 * constants["bank_io_area_per_bandwidth"]
    logic = pe + sram + noc + io
    return {"area_mm2": dram + logic, "logic_area_mm2": logic, "dram_area_mm2": dram}
