"""Table I: the HB hardware configuration, every constant with its unit, band, confidence and source."""

from __future__ import annotations

import pandas as pd

from ...hardware import QUANTITY_FIELDS, load_hardware
from ...hardware.config import POLICY_KEYS


def hardware_table(hardware: str = "h2eal_hb", *, include_derived: bool = True) -> pd.DataFrame:
    """One row per constant (and per derived quantity and mapping policy)."""
    hw = load_hardware(hardware)
    rows = []
    for name, (section, _, _) in QUANTITY_FIELDS.items():
        q = hw.q(name)
        rows.append(
            {
                "section": section,
                "quantity": name,
                "value": f"{q.value:g}",
                "unit": q.unit,
                "band": f"{q.band[0]:g}-{q.band[1]:g}" if q.band else "",
                "confidence": q.confidence,
                "kind": "constant",
                "source": q.source,
            }
        )
    for key in POLICY_KEYS:
        rows.append(
            {
                "section": "mapping",
                "quantity": key,
                "value": str(getattr(hw, key)),
                "unit": "",
                "band": "",
                "confidence": "low",
                "kind": "policy",
                "source": hw.policy_sources.get(key, ""),
            }
        )
    if include_derived:
        units = {
            "n_banks": "count",
            "total_capacity_GB": "GB",
            "aggregate_bandwidth_TB_s": "TB/s",
            "pe_mac_rate_GMAC_s": "GMAC/s",
            "peak_mac_rate_TMAC_s": "TMAC/s",
            "pe_ridge_MAC_per_B": "MAC/B",
            "noc_link_bandwidth_GB_s": "GB/s",
            "noc_hop_latency_ns": "ns",
            "mesh_mean_hops": "hops",
            "topk_rate_G_per_s": "G scores/s",
        }
        for key, value in hw.derived().items():
            rows.append(
                {
                    "section": "derived",
                    "quantity": key,
                    "value": f"{value:.4g}",
                    "unit": units.get(key, ""),
                    "band": "",
                    "confidence": "",
                    "kind": "derived",
                    "source": "computed from the constants above (h2eal_core.hardware.HBConfig)",
                }
            )
    return pd.DataFrame(rows)
