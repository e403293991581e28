"""Figures 3, 6 and 7: the HB stack and head-parallel mapping, KV overflow, MHA/GQA/MQA mappings,
the architecture overview, and memory-compute co-placement (bytes per bank).

All of it is computed from the hardware description and the model shapes through the same mapping
code the cost model uses (:func:`h2eal_core.hardware.place`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...attention.config import SparseAttentionConfig
from ...hardware import DESIGN_LABELS, DESIGN_NAMES, get_design, load_hardware, place, simulate_decode
from ...hardware.head_patterns import retrieval_mask_for
from ...hardware.workload import decode_workload
from ...models.shape import load_model_shape
from ...validation import ParameterError, check_list, check_nonnegative_int, check_positive_int

GB = 1e9


def bank_map(model: str, hardware: str = "h2eal_hb", *, hw=None) -> pd.DataFrame:
    """One row per bank: mesh position, channel, and the head-parallel group / KV heads it holds."""
    config = hw if hw is not None else load_hardware(hardware)
    shape = load_model_shape(model)
    G = min(config.group_banks_for(shape.n_kv_heads), config.n_banks)
    n_groups = config.n_banks // G
    rows = []
    for bank in range(config.n_banks):
        row, col = config.bank_position(bank)
        group = bank // G if bank < n_groups * G else -1
        heads = [h for h in range(shape.n_kv_heads) if h % n_groups == group] if group >= 0 else []
        rows.append(
            {
                "bank": bank,
                "row": row,
                "col": col,
                "channel": bank // config.banks_per_channel,
                "group": group,
                "kv_heads": ",".join(str(h) for h in heads),
                "n_kv_heads_held": len(heads),
                "banks_per_group": G,
            }
        )
    return pd.DataFrame(rows)


def kv_footprint_table(models, contexts, hardware: str = "h2eal_hb", *, hw=None) -> pd.DataFrame:
    """Per model and context: the busiest head group's KV footprint vs its capacity, dense and sparse.

    ``capacity_GB`` is what a head group holds after the weights (``banks_per_group x
    (bank_capacity - weights per bank)``); ``footprint_GB`` is the KV + metadata bytes of the KV
    heads mapped to the fullest group.
    """
    config = hw if hw is not None else load_hardware(hardware)
    models = check_list("models", models, lambda n, v: load_model_shape(v).name)
    contexts = check_list("contexts", contexts, check_positive_int)
    rows = []
    for name in models:
        shape = load_model_shape(name)
        G = min(config.group_banks_for(shape.n_kv_heads), config.n_banks)
        n_groups = config.n_banks // G
        free = max(0.0, config.bank_capacity - min(shape.n_parameters * config.weight_bytes, config.total_capacity) / config.n_banks)
        for T in contexts:
            for attention, sparse in (("full attention", False), ("hybrid sparse", True)):
                w = decode_workload(shape, T, sparse=sparse, retrieval_mask=retrieval_mask_for(shape)[0] if sparse else None)
                att = w.attention
                per_head = (att.stored_tokens + att.meta_stored_pages).sum(axis=0) * 2 * att.head_dim * config.kv_bytes
                groups = np.bincount(att.kv_head_index % n_groups, weights=per_head, minlength=n_groups)
                rows.append(
                    {
                        "model": name,
                        "model_display": shape.display_name,
                        "attention_type": shape.attention_type,
                        "context_len": T,
                        "attention": attention,
                        "banks_per_group": G,
                        "footprint_GB": groups.max() / GB,
                        "capacity_GB": G * free / GB,
                        "overflow_GB": max(0.0, groups.max() - G * free) / GB,
                        "total_kv_GB": per_head.sum() / GB,
                        "hb_free_GB": config.n_banks * free / GB,
                    }
                )
    return pd.DataFrame(rows)


def head_read_fractions(model: str, context_len: int, sparsity: SparseAttentionConfig | None = None) -> pd.DataFrame:
    """Per (layer, KV head): kind and the fraction of the context it reads and stores (decode step)."""
    shape = load_model_shape(model)
    mask, label = retrieval_mask_for(shape, sparsity)
    w = decode_workload(shape, context_len, sparse=True, sparsity=sparsity, retrieval_mask=mask)
    att = w.attention
    L, H = att.n_layers, shape.n_kv_heads
    layer, head = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    return pd.DataFrame(
        {
            "layer": layer.ravel(),
            "kv_head": head.ravel(),
            "kind": att.kinds[:, :H].ravel(),
            "read_fraction": (att.read_tokens[:, :H] + att.meta_read_pages[:, :H]).ravel() / context_len,
            "kv_read_fraction": att.read_tokens[:, :H].ravel() / context_len,
            "stored_fraction": att.stored_tokens[:, :H].ravel() / context_len,
        }
    )


def attention_type_table(models, context_len: int, designs=DESIGN_NAMES, hardware: str = "h2eal_hb", *, hw=None) -> pd.DataFrame:
    """MHA/GQA/MQA mappings: banks per group, groups in use, bank utilisation and latency per design."""
    config = hw if hw is not None else load_hardware(hardware)
    models = check_list("models", models, lambda n, v: load_model_shape(v).name)
    rows = []
    for name in models:
        shape = load_model_shape(name)
        G = min(config.group_banks_for(shape.n_kv_heads), config.n_banks)
        for design in designs:
            r = simulate_decode(shape, config, context_len, design, retrieval_mask=retrieval_mask_for(shape)[0])
            rows.append(
                {
                    "model": name,
                    "model_display": shape.display_name,
                    "attention_type": shape.attention_type,
                    "q_heads": shape.n_q_heads,
                    "kv_heads": shape.n_kv_heads,
                    "group_size": shape.group_size,
                    "banks_per_group": G,
                    "groups_in_use": min(shape.n_kv_heads, config.n_banks // G),
                    "design": design,
                    "design_label": DESIGN_LABELS.get(design, design),
                    "bank_utilization": r.bank_utilization,
                    "attention_latency_us": r.attention_latency_s * 1e6,
                    "memory_bound": r.extras["memory_bound_attention"],
                    "context_len": context_len,
                }
            )
    return pd.DataFrame(rows)


def architecture_summary(hardware: str = "h2eal_hb", *, hw=None) -> pd.DataFrame:
    """The numbers the architecture overview annotates, each with its unit and source."""
    config = hw if hw is not None else load_hardware(hardware)
    d = config.derived()
    q = config.q
    rows = [
        ("memory dies", "banks", f"{config.n_channels} channels x {config.banks_per_channel} banks = {config.n_banks}", q("banks_per_channel").source),
        ("memory dies", "bank capacity", f"{q('bank_capacity').value:g} {q('bank_capacity').unit} (total {d['total_capacity_GB']:.1f} GB)", q("bank_capacity").source),
        ("hybrid bond", "bank bandwidth", f"{q('bank_bandwidth').value:g} {q('bank_bandwidth').unit} (aggregate {d['aggregate_bandwidth_TB_s']:.2f} TB/s)", q("bank_bandwidth").source),
        ("hybrid bond", "HB DRAM energy", f"{q('hb_dram_energy').value:g} {q('hb_dram_energy').unit}", q("hb_dram_energy").source),
        ("memory dies", "DRAM rows", f"{q('row_size').value:g} {q('row_size').unit} rows, tRC {q('row_cycle_time').value:g} ns, tFAW {q('four_activation_window').value:g} ns per {config.activation_window_banks} banks, {q('activation_energy').value:g} pJ per activation", q("row_cycle_time").source),
        ("logic die", "PE per bank", f"{q('pe_fpus').value:g} FPUs x {q('pe_simd_width').value:g} lanes @ {q('pe_clock').value:g} MHz = {d['pe_mac_rate_GMAC_s']:.1f} GMAC/s", q("pe_fpus").source),
        ("logic die", "peak compute", f"{d['peak_mac_rate_TMAC_s']:.2f} TMAC/s; ridge {d['pe_ridge_MAC_per_B']:.1f} MAC/B per PE", "derived"),
        ("logic die", "NoC", f"{config.mesh_rows} x {config.mesh_cols} mesh, {d['noc_link_bandwidth_GB_s']:.0f} GB/s per link, {d['noc_hop_latency_ns']:.0f} ns/hop, mean {d['mesh_mean_hops']:.2f} hops", q("noc_link_width").source),
        ("logic die", "baseline reading", f"{config.baseline} (GQA KV sharing: {config.gqa_kv_sharing}); co-placement interleave {config.kv_interleave_width} token(s) per bank chunk", config.policy_sources.get("baseline", "")[:160]),
        ("logic die", "global controller", f"top-k unit {q('topk_throughput').value:g} scores/cycle @ {q('controller_clock').value:g} GHz; log-sum-exp merge on the PEs", q("topk_throughput").source),
        ("external", "LPDDR5X tier", f"{q('external_bandwidth').value:g} GB/s, {q('external_energy').value:g} pJ/bit, {q('external_capacity').value:g} GB", q("external_bandwidth").source),
    ]
    return pd.DataFrame(rows, columns=["part", "item", "value", "source"])


def per_bank_layer(
    model: str,
    context_len: int,
    designs=("sparse", "coplace", "h2eal"),
    layer: int = 0,
    hardware: str = "h2eal_hb",
    *,
    hw=None,
) -> pd.DataFrame:
    """Bytes each bank's PE waits for in one layer: local reads, remote (spilled) and external data.

    Local bytes are the (expected) KV and metadata a bank reads for that layer; remote and external
    bytes are the spilled part of the heads mapped to the bank's group, split evenly over its PEs.
    ``busiest_local_bytes`` is what sets the layer's local time: the busiest bank of the scoring phase
    plus the (expected) busiest bank of the KV phase, which with randomly selected pages is above any
    bank's expected load.
    """
    config = hw if hw is not None else load_hardware(hardware)
    shape = load_model_shape(model)
    check_nonnegative_int("layer", layer)
    if layer >= shape.n_layers:
        raise ParameterError("layer", layer, f"a layer index below {shape.n_layers}")
    rows = []
    for design in designs:
        d = get_design(design)
        w = decode_workload(shape, context_len, sparse=d.sparse, retrieval_mask=retrieval_mask_for(shape)[0] if d.sparse else None)
        p = place(w, config, d)
        att = w.attention
        tb = 2 * att.head_dim * config.kv_bytes
        local_kv = p.kv.bank_units[layer] * tb
        local_meta = p.score.bank_units[layer] * tb
        units = (att.read_tokens[layer] + att.meta_read_pages[layer]) * p.head_spill * tb
        remote = np.zeros(config.n_banks)
        external = np.zeros(config.n_banks)
        if p.layout == "home":
            remote = (p.kv.pe_in[layer] + p.score.pe_in[layer]).astype(float)  # bytes each PE receives over the mesh
            external += (p.kv.external_units[layer] + p.score.external_units[layer]) * tb / config.n_banks
        elif p.layout == "group":
            G = p.group_banks
            for j, g in enumerate(p.head_group):
                remote[g * G : (g + 1) * G] += units[j] * p.remote_share / G
                external[g * G : (g + 1) * G] += units[j] * (1 - p.remote_share) / G
        else:
            external += units.sum() / config.n_banks
        for bank in range(config.n_banks):
            rows.append(
                {
                    "model": model,
                    "context_len": context_len,
                    "layer": layer,
                    "design": d.name,
                    "design_label": DESIGN_LABELS.get(d.name, d.name),
                    "bank": bank,
                    "local_kv_bytes": local_kv[bank],
                    "local_metadata_bytes": local_meta[bank],
                    "remote_bytes": remote[bank],
                    "external_bytes": external[bank],
                    # what sets the layer's local time: busiest bank of the scoring phase + of the KV phase
                    "busiest_local_bytes": (p.score_max[layer] + p.kv_max[layer]) * tb,
                }
            )
    return pd.DataFrame(rows)


def coplacement_summary(models, contexts, designs=DESIGN_NAMES, hardware: str = "h2eal_hb", *, hw=None) -> pd.DataFrame:
    """Per point and design: bank utilisation, busiest-bank vs mean bytes, and the KV-phase time."""
    config = hw if hw is not None else load_hardware(hardware)
    models = check_list("models", models, lambda n, v: load_model_shape(v).name)
    contexts = check_list("contexts", contexts, check_positive_int)
    rows = []
    for name in models:
        for T in contexts:
            for design in designs:
                r = simulate_decode(name, config, T, design, retrieval_mask=retrieval_mask_for(name)[0])
                rows.append(
                    {
                        "model": name,
                        "context_len": T,
                        "design": design,
                        "design_label": DESIGN_LABELS.get(design, design),
                        "bank_utilization": r.bank_utilization,
                        "kv_phase_us": r.phase_s["kv"] * 1e6,
                        "score_phase_us": r.phase_s["score"] * 1e6,
                        "remote_us": r.phase_s["remote"] * 1e6,
                        "external_us": r.phase_s["external"] * 1e6,
                        "attention_latency_us": r.attention_latency_s * 1e6,
                        "external_GB_per_token": r.bytes["external"] / GB,
                    }
                )
    return pd.DataFrame(rows)
