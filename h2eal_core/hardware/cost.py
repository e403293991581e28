"""Cost model: latency and energy of one decode step from its workload and placement.

Per layer (SPEC 2.3), phases separated by barriers:

``t_attn = t_score + t_topk + t_kv + t_remote + t_external + t_merge``.

``t_score`` and ``t_kv`` are bottleneck times over every resource the phase uses
(:class:`~.mapping.PhaseLoad`): each bank ``max(bytes / bank_bw, (activations - 1) x tRC + row bytes / bank_bw)``; each
window of ``activation_window_banks`` banks ``activations x tFAW / 4``; each PE ``MACs / PE rate``;
each PE's and bank's NoC port ``bytes / link_bw``; the busiest directed mesh link ``bytes /
link_bw`` (XY routes, so contention counts); plus ``tRCD`` once when rows are opened and the
longest route's hop latency when the NoC is used. The busiest resource, not the average, sets the
time. The breakdown splits a phase by cause in a fixed order: bank bandwidth (``hb_dram``), then
what row activations add (``dram_row``), then compute, then the NoC.

* ``t_topk``: ``central`` = every score through the controller's port into one top-k unit,
  ``max(scores * score_bytes / link_bw, scores / top-k rate) + 2 * mean_hops * hop``;
  ``distributed`` = each head ranked at its own site, heads in parallel (no port when the scores
  are already at the head's PE, as in the head-parallel baseline).
* ``t_remote`` (group layout: spilled data held by other groups' banks): the slowest of the
  receiving group's NoC ports, the serving banks and the receiving PEs' MACs, plus one
  mean-distance message latency.
* ``t_external = external bytes / external bandwidth``.
* ``t_merge``: log-sum-exp partials of each head merged by a pairwise tree (SPEC 1.4),
  ``ceil(log2 fan-in)`` levels of ``partial / link_bw + mean_hops * hop + partial * ops / PE
  rate``; ``pipelined`` leaves only one level plus the remaining hop latencies exposed. The
  head-parallel layout computes each head on one PE: no merge.

FC layers: weights spread evenly over all banks, identical for every design (see :func:`fc_costs`).

Energy: HB DRAM bits x pJ/bit plus row activations x activation energy (``dram_row``), external
bits x pJ/bit, NoC byte-hops x 8 x pJ/bit/hop, SRAM bits x pJ/bit, MACs x pJ/MAC (attention MACs
count each query head over its own pages), top-k ops, merge ops, static power x latency.
"""

from __future__ import annotations

import numpy as np

from .config import HBConfig
from .mapping import PhaseLoad, Placement
from .result import BREAKDOWN_CATEGORIES, DecodeResult
from .workload import DecodeWorkload, ceil_log2

CAUSES = ("hb_dram", "dram_row", "compute", "noc")


def _zero_breakdown() -> dict[str, float]:
    return {key: 0.0 for key in BREAKDOWN_CATEGORIES}


def phase_times(load: PhaseLoad, hw: HBConfig, tb: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-layer time of one phase and its split by cause (``CAUSES``), see the module docstring."""
    L, n = load.bank_units.shape
    t_bw = (load.bank_units * (tb / hw.bank_bandwidth)).max(axis=1)
    # one bank: activations spaced by tRC, the last row's data after it (exact for equal rows)
    acts = np.asarray(load.bank_acts, dtype=float)
    row_bytes = np.divide(load.bank_units * tb, acts, out=np.zeros_like(acts), where=acts > 0)
    t_act_bank = np.where(acts > 0, (acts - 1) * hw.row_cycle_time + row_bytes / hw.bank_bandwidth, 0.0).max(axis=1)
    k = hw.activation_window_banks
    pad = (-n) % k
    acts = np.pad(load.bank_acts, ((0, 0), (0, pad))) if pad else load.bank_acts
    t_faw = acts.reshape(L, -1, k).sum(axis=2).max(axis=1) * hw.four_activation_window / 4.0
    t_row = np.maximum(t_act_bank, t_faw)
    t_mac = load.pe_macs.max(axis=1) / hw.pe_mac_rate
    link = hw.noc_link_bandwidth
    t_noc = np.maximum(np.maximum(load.pe_in.max(axis=1), load.bank_out.max(axis=1)), load.link_max) / link
    opened = load.bank_acts.sum(axis=1) > 0
    lat_row = np.where(opened, hw.row_activate_delay, 0.0)
    lat_noc = np.where(load.noc_bytes > 0, load.max_hops * hw.noc_hop_latency, 0.0)
    parts = {}
    level = np.zeros(L)
    for cause, t in zip(CAUSES, (t_bw, t_row, t_mac, t_noc)):
        new = np.maximum(level, t)
        parts[cause] = new - level
        level = new
    parts["dram_row"] = parts["dram_row"] + lat_row
    parts["noc"] = parts["noc"] + lat_noc
    return level + lat_row + lat_noc, parts


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
        # weights stream whole rows: bank bandwidth or the activation rate, whichever binds
        t_mem = max(w * weight_hb_fraction / (n * hw.bank_bandwidth), w * weight_hb_fraction / (n * hw.row_size) * hw.row_cycle_time)
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


def remote_times(workload: DecodeWorkload, p: Placement, hw: HBConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per layer: time and bytes of the group layout's spilled data held by other groups' banks."""
    att = workload.attention
    L = att.n_layers
    tb = 2 * att.head_dim * hw.kv_bytes
    read_units = (p.read_tokens + att.meta_read_pages).astype(float)
    remote_units = np.zeros_like(read_units)
    if p.layout == "group":
        remote_units = read_units * p.head_spill[None, :] * p.remote_share
    remote_bytes_layer = remote_units.sum(axis=1) * tb
    if p.layout == "group" and remote_bytes_layer.any():
        link = hw.noc_link_bandwidth
        onehot = (p.head_group[:, None] == np.arange(p.n_groups)[None, :]).astype(float)
        remote_group = remote_units @ onehot * tb
        recv = remote_group.max(axis=1) / (p.group_banks * link)
        serve = remote_bytes_layer * p.remote_bank_share.max() / hw.bank_bandwidth
        mac = remote_group.max(axis=1) / tb * att.macs_per_unit / (p.group_banks * hw.pe_mac_rate)
        t_remote = np.maximum(np.maximum(recv, serve), mac) + np.where(remote_bytes_layer > 0, hw.mean_hops * hw.noc_hop_latency, 0.0)
    else:
        t_remote = np.zeros(L)
    return t_remote, remote_bytes_layer


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
    hd2 = 2 * att.head_dim

    # ---- local phases: the busiest resource sets the time ----------------------------------------
    t_score, score_parts = phase_times(p.score, hw, tb)
    t_kv, kv_parts = phase_times(p.kv, hw, tb)

    # ---- spilled data (group layout): remote HB banks, then external ---------------------------
    t_remote, remote_bytes_layer = remote_times(workload, p, hw)
    external_units = p.score.external_units + p.kv.external_units
    external_bytes_layer = external_units * tb
    t_external = external_bytes_layer / hw.external_bandwidth

    # ---- page selection: top-k ---------------------------------------------------------------------
    scores = att.scores.sum(axis=1).astype(float)  # [L]
    if hw.topk == "central":
        t_topk = np.where(scores > 0, np.maximum(scores * hw.score_bytes / link, scores / hw.topk_rate) + 2 * mean_hops * hop, 0.0)
    elif p.scores_local:
        t_topk = np.where(scores > 0, p.scores_topk_max / hw.topk_rate, 0.0)
    else:
        s = p.scores_topk_max
        t_topk = np.where(scores > 0, np.maximum(s * hw.score_bytes / link, s / hw.topk_rate) + 2 * mean_hops * hop, 0.0)

    # ---- merge of tiled-attention partials -------------------------------------------------------
    partial_elements = att.partial_elements
    partial_bytes = partial_elements * hw.partial_bytes
    level = partial_bytes / link + mean_hops * hop + partial_elements * hw.merge_ops_per_element / pe
    depth = ceil_log2(p.pes_per_head).max(axis=1)  # [L]
    if hw.merge == "pipelined":
        t_merge = np.where(depth > 0, level + (depth - 1) * mean_hops * hop, 0.0)
    else:
        t_merge = depth * level
    merges = np.maximum(p.pes_per_head - 1, 0).sum()

    attention_layer = t_score + t_topk + t_kv + t_remote + t_external + t_merge
    attention_latency = float(attention_layer.sum())

    # ---- FC layers --------------------------------------------------------------------------------
    fc = fc_costs(workload, hw, p.weight_hb_fraction)
    fc_latency = fc["hb_dram"] + fc["compute"] + fc["external"] + fc["noc"]
    latency = attention_latency + fc_latency

    # ---- time breakdowns --------------------------------------------------------------------------
    att_time = _zero_breakdown()
    for cause in CAUSES:
        att_time[cause] += float(kv_parts[cause].sum())
    att_time["page_selection"] = float(t_score.sum() + t_topk.sum())
    att_time["noc"] += float(t_remote.sum())
    att_time["external"] = float(t_external.sum())
    att_time["merge"] = float(t_merge.sum())
    time = dict(att_time)
    for key in ("hb_dram", "compute", "external", "noc"):
        time[key] += fc[key]

    # ---- bytes ------------------------------------------------------------------------------------
    kv_read = float(p.read_tokens.sum() * tb)
    meta_read = float(att.meta_read_pages.sum() * tb)
    kv_written = float(att.n_layers * att.n_heads * tb)
    meta_written = float(att.retrieval.sum() * tb)
    weights_read = workload.weights_read_params * hw.weight_bytes
    weights_ext = weights_read * (1.0 - p.weight_hb_fraction)
    local_units = float(p.score.bank_units.sum() + p.kv.bank_units.sum())
    remote_bytes = float(remote_bytes_layer.sum())
    external_bytes_att = float(external_bytes_layer.sum())
    score_bytes = float(scores.sum() * hw.score_bytes)
    partial_total = float(merges * partial_bytes)
    mesh_bytes = float(p.score.noc_bytes.sum() + p.kv.noc_bytes.sum())
    att_noc_bytes = mesh_bytes + remote_bytes + external_bytes_att + score_bytes + partial_total
    att_hb_read = local_units * tb + remote_bytes
    hb_bytes = att_hb_read + (weights_read - weights_ext) + kv_written + meta_written
    acts_read = float(p.score.bank_acts.sum() + p.kv.bank_acts.sum())
    acts_remote = float(np.ceil(remote_bytes / hw.row_size)) if remote_bytes > 0 else 0.0
    acts_written = float(att.n_layers * att.n_heads + att.retrieval.sum())  # one row opened per write
    acts_weights = float(np.ceil((weights_read - weights_ext) / hw.row_size))
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
    byte_hops = float(p.score.byte_hops.sum() + p.kv.byte_hops.sum())
    attention_macs = float(hd2 * p.attended_tokens.sum())
    att_energy = _zero_breakdown()
    att_energy["hb_dram"] = e_hb * (att_hb_read + kv_written + meta_written)
    att_energy["dram_row"] = hw.activation_energy * (acts_read + acts_remote + acts_written)
    att_energy["external"] = e_ext * external_bytes_att
    att_energy["noc"] = 8 * hw.noc_energy * (byte_hops + mean_hops * (remote_bytes + external_bytes_att + score_bytes + partial_total))
    att_energy["sram"] = e_sram * (kv_read + meta_read + score_bytes + partial_total)
    att_energy["compute"] = hw.mac_energy * attention_macs
    att_energy["page_selection"] = hw.mac_energy * float(att.score_macs.sum()) + hw.topk_energy * float(scores.sum())
    att_energy["merge"] = hw.mac_energy * float(merges * partial_elements * hw.merge_ops_per_element)
    att_energy["static"] = hw.static_power * attention_latency
    energy = dict(att_energy)
    energy["hb_dram"] += e_hb * (weights_read - weights_ext)
    energy["dram_row"] += hw.activation_energy * acts_weights
    energy["external"] += e_ext * weights_ext
    energy["noc"] += hw.noc_energy * fc["noc_bit_hops"]
    energy["sram"] += e_sram * weights_read
    energy["compute"] += hw.mac_energy * workload.fc_macs
    energy["static"] = hw.static_power * latency

    # ---- per bank ---------------------------------------------------------------------------------
    local = p.score.bank_units + p.kv.bank_units  # [L, n]
    remote_served = p.remote_bank_share * remote_bytes
    per_bank_bytes = local.sum(axis=0) * tb + (weights_read - weights_ext) / n + remote_served
    per_bank_busy = (
        np.maximum(local * tb / bw, (p.score.bank_acts + p.kv.bank_acts) * hw.row_cycle_time).sum(axis=0)
        + fc["per_bank_time"]
        + remote_served / bw
    )
    phase_max = p.score.bank_units.max(axis=1).sum() + p.kv.bank_units.max(axis=1).sum()
    utilization = float(local.sum() / (n * phase_max)) if phase_max > 0 else 1.0
    banks_touched = float(((p.kv.bank_units > 0).sum(axis=1)).mean())

    dense_tokens = p.read_tokens.size * att.context_len
    t_unit_mem = tb / bw
    t_unit_mac = att.macs_per_unit / pe
    extras = {
        "model_display": model.display_name,
        "attention_type": model.attention_type,
        "n_layers": model.n_layers,
        "n_kv_heads": model.n_kv_heads,
        "baseline_reading": hw.baseline,
        "layout": p.layout,
        "interleave_tokens": p.interleave_tokens,
        "page_selection_source": p.selection.source if p.selection is not None else "none",
        "group_banks": p.group_banks,
        "banks_touched_per_layer": banks_touched,
        "retrieval_ratio": workload.retrieval_ratio,
        "kv_read_fraction": float(p.read_tokens.sum() / dense_tokens),
        "kv_stored_bytes": p.kv_bytes_stored,
        "weight_bytes_stored": p.weight_bytes_stored,
        "hb_free_bytes": p.hb_free_bytes,
        "external_bytes_stored": p.external_bytes_stored,
        "spilled_fraction": float((p.head_spill * att.stored_tokens.sum(axis=0)).sum() / max(1, att.stored_tokens.sum())),
        "fits": bool(p.external_bytes_stored <= hw.external_capacity),
        "beyond_native_context": bool(att.context_len > model.max_context),
        "memory_bound_attention": bool(t_unit_mem >= t_unit_mac),
        "fc_latency_s": fc_latency,
        "row_activations": acts_read + acts_remote + acts_written + acts_weights,
        "attention_row_activations": acts_read + acts_remote + acts_written,
        "bytes_per_activation": float(local_units * tb / acts_read) if acts_read > 0 else 0.0,
        "attention_macs": attention_macs,
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
