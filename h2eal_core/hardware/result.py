"""DecodeResult: latency, energy, breakdowns and byte counts of one decode step."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

#: Categories of the time and energy breakdowns (SPEC 2.3 / issues 4, 9): ``dram_row`` is the time
#: DRAM row activations add beyond the bank bandwidth (tRC, tFAW, tRCD) and the activation energy.
BREAKDOWN_CATEGORIES = ("hb_dram", "dram_row", "external", "noc", "sram", "compute", "page_selection", "merge", "static")

#: Byte classes reported per step.
BYTE_CLASSES = ("weights", "kv_read", "kv_written", "metadata", "noc", "external")


@dataclasses.dataclass(frozen=True)
class DecodeResult:
    """One decode step (one token per request of the batch) of one model on one HB design.

    Times in seconds, energies in joules, bytes in bytes. ``attention_*`` covers the attention core
    only (KV and metadata access, page selection, remote/external KV traffic, merge, and static
    power during that time); the FC layers (QKV/O projections, FFN, LM head) make up the rest of
    the end-to-end numbers.
    """

    model: str
    hardware: str
    design: str
    context_len: int
    batch: int
    latency_s: float
    energy_j: float
    attention_latency_s: float
    attention_energy_j: float
    time_breakdown: dict[str, float]
    energy_breakdown: dict[str, float]
    attention_time_breakdown: dict[str, float]
    attention_energy_breakdown: dict[str, float]
    bytes: dict[str, float]
    per_bank_bytes: np.ndarray
    per_bank_busy_s: np.ndarray
    bank_utilization: float
    attention_layer_s: np.ndarray  # [L] attention time of each layer
    phase_s: dict[str, float]  # summed over layers: score, topk, kv, remote, external, merge
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.batch / self.latency_s

    @property
    def energy_per_token_j(self) -> float:
        return self.energy_j / self.batch

    def to_dict(self) -> dict[str, Any]:
        """A flat dict of scalars (one row of a results table)."""
        out: dict[str, Any] = {
            "model": self.model,
            "hardware": self.hardware,
            "design": self.design,
            "context_len": self.context_len,
            "batch": self.batch,
            "latency_s": self.latency_s,
            "energy_j": self.energy_j,
            "attention_latency_s": self.attention_latency_s,
            "attention_energy_j": self.attention_energy_j,
            "tokens_per_s": self.tokens_per_s,
            "bank_utilization": self.bank_utilization,
            "max_bank_busy_s": float(self.per_bank_busy_s.max()),
            "max_bank_bytes": float(self.per_bank_bytes.max()),
        }
        for key, value in self.time_breakdown.items():
            out[f"time_{key}_s"] = value
        for key, value in self.energy_breakdown.items():
            out[f"energy_{key}_j"] = value
        for key, value in self.attention_time_breakdown.items():
            out[f"attn_time_{key}_s"] = value
        for key, value in self.attention_energy_breakdown.items():
            out[f"attn_energy_{key}_j"] = value
        for key, value in self.bytes.items():
            out[f"bytes_{key}"] = value
        for key, value in self.phase_s.items():
            out[f"phase_{key}_s"] = value
        out.update(self.extras)
        return out
