"""Cost model: latency and energy of one decode step from its workload and placement.

Per layer (SPEC 2.3), phases separated by barriers:

``t_attn = t_score + t_topk + t_kv + t_remote + t_external + t_merge`` with

* ``t_score = max over PEs of max(metadata bytes / bank_bw, score MACs / PE rate)`` (retrieval
  heads score the metadata of every page; empty below the budget and for dense attention);
* ``t_topk = max(scores * score_bytes / link_bw, scores / top-k rate) + 2 * mean_hops * hop`` (the
  controller's streaming top-k unit behind one NoC port; scores in, selection out);
* ``t_kv = max over PEs of max(KV bytes / bank_bw, attention MACs / PE rate)``: the busiest PE,
  not the average, sets the time;
* ``t_remote`` (spilled data held by other banks): the slowest of the receiving group's NoC ports,
  the serving banks and the receiving PEs' MACs, plus one mean-distance message latency;
* ``t_external = external bytes / external bandwidth``;
* ``t_merge = max over heads of ceil(log2 fan-in) * (partial / link_bw + mean_hops * hop +
  partial * merge ops / PE rate)``: a log-sum-exp reduction tree per head (SPEC 1.4), trees of
  different heads in parallel.

FC layers (weights spread evenly over all banks, identical for every design):
``t_op = max(W / (n * bank_bw), MACs / (n * PE rate)) + W_ext / ext_bw + broadcast(in) + gather(out)``
with a pipelined broadcast tree (``in / link_bw + ceil(log2 n) * hop``) and a gather through the
controller's port (``out / link_bw + mean_hops * hop``).

Energy: HB DRAM bits x pJ/bit, external bits x pJ/bit, NoC bits x mean hops x pJ/bit/hop, SRAM
bits (``sram_accesses_per_byte`` per DRAM byte plus partials and scores) x pJ/bit, MACs x pJ/MAC
(FC + attention = compute; scoring + top-k = page selection; merge ops = merge), static power x
latency. The NoC is modelled without link contention (an assumption; mean-distance latency).
"""

from __future__ import annotations

import numpy as np

from .config import HBConfig
from .mapping import Placement
from .result import BREAKDOWN_CATEGORIES, DecodeResult
from .workload import DecodeWorkload, ceil_log2


def _zero_breakdown() -> dict[str, float]:
    return {key: 0.0 for key in BREAKDOWN_CATEGORIES}


def fc_costs(workload: DecodeWorkload, hw: HBConfig, weight_hb_fraction: float) -> dict[str, float]:
    """Time (split by bound) and traffic of the FC layers of one step."""
    n = hw.n_banks
    B = workload.batch
    ab = hw.kv_bytes  # activations in the KV element size (FP16 by default)
    link = hw.noc_link_bandwidth
    hop = hw.noc_hop_latency
    depth = float(ceil_log2(np.array([n]))[0])
    mem = comp = ext = noc = 0.0
    noc_bytes = noc_bit_hops = 0.0
    per_bank_time = 0.0
    ops = [(op, workload.model.n_layers) for op in workload.layer_ops] + [(op, 1) for op in workload.head_ops]
    for op, count in ops:
        w = op.params * hw.weight_bytes
        t_mem = w * weight_hb_fraction / (n * hw.bank_bandwidth)
        t_mac = op.params * B / (n * hw.pe_mac_rate)
        out_elems = op.out_dim if op.name != "lm_head" else 2 * n  # distributed argmax: (value, index) per PE
        bcast = op.in_dim * B * ab
        gather = out_elems * B * ab
        t_noc = bcast / link + depth * hop + gather / link + hw.mean_hops * hop
        if t_mem >= t_mac:
            mem += count * t_mem
        else:
            comp += count * t_mac
        per_bank_time += count * max(t_mem, t_mac)
        ext += count * w * (1.0 - weight_hb_fraction) / hw.external_bandwidth
        noc += count * t_noc
        noc_bytes += count * (bcast * (n - 1) + gather)
        noc_bit_hops += count * 8 * (bcast * (n - 1) + gather * hw.mean_hops)
    embed = workload.embedding_row_params * hw.weight_bytes / hw.bank_bandwidth
    mem += embed
    return {
        "hb_dram": mem,
        "compute": comp,
        "external": ext,
        "noc": noc,
        "noc_bytes": noc_bytes,
        "noc_bit_hops": noc_bit_hops,
        "per_bank_time": per_bank_time + embed / n,
    }


def evaluate(workload: DecodeWorkload, placement: Placement, hw: HBConfig, *, hardware_name: str | None = None) -> DecodeResult:
    """Latency, energy, breakdowns and byte counts of one decode step."""
    att = workload.attention
    model = workload.model
    p = placement
    n = hw.n_banks
    L = att.n_layers
    bw = hw.bank_bandwidth
    pe = hw.pe_mac_rate
    link = hw.noc_link_bandwidth
    hop = hw.noc_hop_latency
    mean_hops = hw.mean_hops
    tb = 2 * att.head_dim * hw.kv_bytes  # bytes per token-equivalent
    mpu = att.macs_per_unit  # MACs per token-equivalent
    t_unit_mem = tb / bw
    t_unit_mac = mpu / pe
    t_unit = max(t_unit_mem, t_unit_mac)
    memory_bound = t_unit_mem >= t_unit_mac

    # ---- local phases: the busiest PE sets the time ---------------------------------------------
    score_local = p.score_units * p.keep  # [L, n] token-equivalents actually read locally
    kv_local = p.kv_tokens * p.keep
    t_score = t_unit * p.score_max
    t_kv = t_unit * p.kv_max

    # ---- spilled data: remote HB banks, then external -------------------------------------------
    head_units = (att.read_tokens + att.meta_read_pages).astype(float)  # [L, N]
    spilled_units = head_units * p.head_spill  # [L, N]
    remote_units = spilled_units * p.remote_share
    external_units = spilled_units - remote_units
    remote_bytes_layer = remote_units.sum(axis=1) * tb  # [L]
    external_bytes_layer = external_units.sum(axis=1) * tb
    if p.design.scope == "group" and remote_bytes_layer.any():
        onehot = (p.head_group[:, None] == np.arange(p.n_groups)[None, :]).astype(float)
        remote_group = remote_units @ onehot * tb  # [L, groups]
        recv = remote_group.max(axis=1) / (p.group_banks * link)
        serve = remote_bytes_layer * p.remote_bank_share.max() / bw
        mac = remote_group.max(axis=1) / tb * mpu / (p.group_banks * pe)
        t_remote = np.maximum(np.maximum(recv, serve), mac) + np.where(remote_bytes_layer > 0, mean_hops * hop, 0.0)
    else:
        t_remote = np.zeros(L)
    t_external = external_bytes_layer / hw.external_bandwidth

    # ---- page selection at the controller's top-k unit -----------------------------------------
    scores = att.scores.sum(axis=1).astype(float)  # [L]
    t_topk = np.where(
        scores > 0,
        np.maximum(scores * hw.score_bytes / link, scores / hw.topk_rate) + 2 * mean_hops * hop,
        0.0,
    )

    # ---- merge of tiled-attention partials -------------------------------------------------------
    partial_elements = att.partial_elements
    partial_bytes = partial_elements * hw.partial_bytes
    level = partial_bytes / link + mean_hops * hop + partial_elements * hw.merge_ops_per_element / pe
    depth = ceil_log2(p.pes_per_head)  # [L, N]
    t_merge = depth.max(axis=1) * level
    merges = np.maximum(p.pes_per_head - 1, 0).sum()  # partial messages (tree edges)

    attention_layer = t_score + t_topk + t_kv + t_remote + t_external + t_merge
    attention_latency = float(attention_layer.sum())

    # ---- FC layers --------------------------------------------------------------------------------
    fc = fc_costs(workload, hw, p.weight_hb_fraction)
    fc_latency = fc["hb_dram"] + fc["compute"] + fc["external"] + fc["noc"]
    latency = attention_latency + fc_latency

    # ---- time breakdowns --------------------------------------------------------------------------
    att_time = _zero_breakdown()
    att_time["hb_dram" if memory_bound else "compute"] = float(t_kv.sum())
    att_time["page_selection"] = float(t_score.sum() + t_topk.sum())
    att_time["noc"] = float(t_remote.sum())
    att_time["external"] = float(t_external.sum())
    att_time["merge"] = float(t_merge.sum())
    time = dict(att_time)
    for key in ("hb_dram", "compute", "external", "noc"):
        time[key] += fc[key]

    # ---- bytes ------------------------------------------------------------------------------------
    kv_read_units = att.read_tokens.sum()
    meta_read_units = att.meta_read_pages.sum()
    kv_read = float(kv_read_units * tb)
    meta_read = float(meta_read_units * tb)
    kv_written = float(att.n_layers * att.n_heads * tb)  # one new token per head per layer
    meta_written = float(att.retrieval.sum() * tb)  # min/max of the current page updated
    weights_read = workload.weights_read_params * hw.weight_bytes
    weights_ext = weights_read * (1.0 - p.weight_hb_fraction)
    remote_bytes = float(remote_bytes_layer.sum())
    external_bytes_att = float(external_bytes_layer.sum())
    score_bytes = float(scores.sum() * hw.score_bytes)
    partial_total = float(merges * partial_bytes)
    att_noc_bytes = remote_bytes + external_bytes_att + score_bytes + partial_total
    att_hb_read = kv_read + meta_read - external_bytes_att  # local + remote are HB reads
    hb_bytes = att_hb_read + (weights_read - weights_ext) + kv_written + meta_written
    bytes_ = {
        "weights": weights_read,
        "kv_read": kv_read,
        "kv_written": kv_written,
        "metadata": meta_read + meta_written,
        "noc": att_noc_bytes + fc["noc_bytes"],
        "external": external_bytes_att + weights_ext,
        "hb_dram": hb_bytes,
    }

    # ---- energy -----------------------------------------------------------------------------------
    e_hb = 8 * hw.hb_dram_energy
    e_ext = 8 * hw.external_energy
    e_sram = 8 * hw.sram_energy * hw.sram_accesses_per_byte
    att_energy = _zero_breakdown()
    att_energy["hb_dram"] = e_hb * (att_hb_read + kv_written + meta_written)
    att_energy["external"] = e_ext * external_bytes_att
    att_energy["noc"] = 8 * hw.noc_energy * mean_hops * att_noc_bytes
    att_energy["sram"] = e_sram * (kv_read + meta_read + score_bytes + partial_total)
    att_energy["compute"] = hw.mac_energy * float(att.attention_macs.sum())
    att_energy["page_selection"] = hw.mac_energy * float(att.score_macs.sum()) + hw.topk_energy * float(scores.sum())
    att_energy["merge"] = hw.mac_energy * float(merges * partial_elements * hw.merge_ops_per_element)
    att_energy["static"] = hw.static_power * attention_latency
    energy = dict(att_energy)
    energy["hb_dram"] += e_hb * (weights_read - weights_ext)
    energy["external"] += e_ext * weights_ext
    energy["noc"] += hw.noc_energy * fc["noc_bit_hops"]
    energy["sram"] += e_sram * weights_read
    energy["compute"] += hw.mac_energy * workload.fc_macs
    energy["static"] = hw.static_power * latency

    # ---- per bank ---------------------------------------------------------------------------------
    remote_served = p.remote_bank_share * remote_bytes
    per_bank_bytes = (score_local + kv_local).sum(axis=0) * tb + (weights_read - weights_ext) / n + remote_served
    per_bank_busy = (score_local + kv_local).sum(axis=0) * t_unit + fc["per_bank_time"] + remote_served / bw
    phase_max = p.score_max.sum() + p.kv_max.sum()
    phase_total = score_local.sum() + kv_local.sum()
    utilization = float(phase_total / (n * phase_max)) if phase_max > 0 else 1.0

    att_reads = att.read_tokens
    dense_tokens = att_reads.size * att.context_len
    extras = {
        "model_display": model.display_name,
        "attention_type": model.attention_type,
        "n_layers": model.n_layers,
        "n_kv_heads": model.n_kv_heads,
        "group_banks": p.group_banks,
        "retrieval_ratio": workload.retrieval_ratio,
        "kv_read_fraction": float(att_reads.sum() / dense_tokens),
        "kv_stored_bytes": p.kv_bytes_stored,
        "weight_bytes_stored": p.weight_bytes_stored,
        "hb_free_bytes": p.hb_free_bytes,
        "external_bytes_stored": p.external_bytes_stored,
        "spilled_fraction": float((p.head_spill * att.stored_tokens.sum(axis=0)).sum() / max(1, att.stored_tokens.sum())),
        "fits": bool(p.external_bytes_stored <= hw.external_capacity),
        "beyond_native_context": bool(att.context_len > model.max_context),
        "memory_bound_attention": bool(memory_bound),
        "fc_latency_s": fc_latency,
        "max_tile_size": int(p.tile_sizes.max()) if p.tile_sizes.size else 0,
        "lpt_gap_max": float(p.lpt_gap.max()) if p.lpt_gap.size else 0.0,
    }
    return DecodeResult(
        model=model.name,
        hardware=hardware_name or hw.name,
        design=p.design.name,
        context_len=att.context_len,
        batch=workload.batch,
        latency_s=latency,
        energy_j=float(sum(energy.values())),
        attention_latency_s=attention_latency,
        attention_energy_j=float(sum(att_energy.values())),
        time_breakdown=time,
        energy_breakdown=energy,
        attention_time_breakdown=att_time,
        attention_energy_breakdown=att_energy,
        bytes=bytes_,
        per_bank_bytes=per_bank_bytes,
        per_bank_busy_s=per_bank_busy,
        bank_utilization=utilization,
        attention_layer_s=attention_layer,
        phase_s={
            "score": float(t_score.sum()),
            "topk": float(t_topk.sum()),
            "kv": float(t_kv.sum()),
            "remote": float(t_remote.sum()),
            "external": float(t_external.sum()),
            "merge": float(t_merge.sum()),
        },
        extras=extras,
    )
