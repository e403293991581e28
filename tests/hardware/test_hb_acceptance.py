"""Acceptance tests of the second-generation HB model (issue 9): physical bounds, closed forms,
write-time placement, DRAM rows, page traces, baseline readings and bad inputs."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h2eal_core.attention.config import SparseAttentionConfig
from h2eal_core.hardware import DESIGN_NAMES, get_design, hb_config_from_dict, load_hardware, place, simulate_decode
from h2eal_core.hardware.config import BASELINE_READINGS
from h2eal_core.hardware.cost import phase_times
from h2eal_core.hardware.head_patterns import retrieval_mask_for
from h2eal_core.hardware.pages import uniform_selection
from h2eal_core.hardware.workload import decode_workload
from h2eal_core.models.shape import list_model_shapes, load_model_shape
from h2eal_core.traces import PageTrace
from h2eal_core.validation import ParameterError

HW = load_hardware()
MODELS = list_model_shapes()
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

points = st.tuples(
    st.sampled_from(MODELS),
    st.integers(min_value=512, max_value=131072),
    st.sampled_from(DESIGN_NAMES),
    st.sampled_from(BASELINE_READINGS),
    st.sampled_from(["noc", "replicate"]),
    st.sampled_from([1, 2, 4, 8, 16, "page", 32]),
    st.floats(min_value=6.4, max_value=51.2),  # bank bandwidth band, GB/s
    st.sampled_from([1024, 2048, 4096]),  # row size band, B
)


def _config(reading, sharing, width, bw, row):
    return HW.with_policies(baseline=reading, gqa_kv_sharing=sharing, kv_interleave_width=width).with_values(bank_bandwidth=bw, row_size=row)


@SETTINGS
@given(points)
def test_physical_bounds_hold_everywhere(point):
    model, T, design, reading, sharing, width, bw, row = point
    hw = _config(reading, sharing, width, bw, row)
    shape = load_model_shape(model)
    d = get_design(design)
    w = decode_workload(shape, T, sparse=d.sparse, retrieval_mask=retrieval_mask_for(shape)[0] if d.sparse else None)
    p = place(w, hw, d)
    r = simulate_decode(shape, hw, T, design, retrieval_mask=retrieval_mask_for(shape)[0])
    tb = 2 * shape.head_dim * hw.kv_bytes
    local_bytes = (p.score.bank_units + p.kv.bank_units) * tb  # [L, n]
    # no design reads faster than its total bytes spread over every bank
    assert r.attention_latency_s >= local_bytes.sum() / (hw.n_banks * hw.bank_bandwidth) * (1 - 1e-9)
    # ... nor faster than its busiest bank, layer by layer (H2EAL included)
    per_layer_floor = (p.score.bank_units.max(axis=1) + p.kv.bank_units.max(axis=1)) * tb / hw.bank_bandwidth
    assert np.all(r.attention_layer_s >= per_layer_floor * (1 - 1e-9))
    # energy: at least the HB bits at pJ/bit plus the row activations at their energy
    att = r.attention_energy_breakdown
    assert att["hb_dram"] >= 8 * hw.hb_dram_energy * local_bytes.sum() * (1 - 1e-9)
    assert r.attention_energy_j >= 8 * hw.hb_dram_energy * local_bytes.sum() + hw.activation_energy * r.extras["attention_row_activations"] * (1 - 1e-9)
    assert r.energy_j >= 8 * hw.hb_dram_energy * r.bytes["hb_dram"] + hw.activation_energy * r.extras["row_activations"] * (1 - 1e-9)
    # every activation reads at most one row
    acts = p.score.bank_acts + p.kv.bank_acts
    assert np.all(local_bytes <= acts * hw.row_size + 1e-6)
    # times by cause add up
    assert sum(r.attention_time_breakdown.values()) == pytest.approx(r.attention_latency_s, rel=1e-9)


@SETTINGS
@given(st.sampled_from(MODELS), st.integers(min_value=256, max_value=16384), st.sampled_from(["head_parallel", "head_parallel_kv"]), st.sampled_from(["noc", "replicate"]))
def test_head_parallel_utilisation_is_banks_touched_over_banks(model, T, reading, sharing):
    """Dense head-parallel baseline whose KV fits every home bank: U = (banks its heads touch) / n."""
    hw = HW.with_policies(baseline=reading, gqa_kv_sharing=sharing)
    shape = load_model_shape(model)
    free = hw.bank_capacity - shape.n_parameters * hw.weight_bytes / hw.n_banks
    replicate = reading == "head_parallel" and sharing == "replicate" and shape.group_size > 1
    per_copy = shape.n_layers * T * 2 * shape.head_dim * hw.kv_bytes
    copies = shape.n_q_heads if replicate else shape.n_kv_heads
    if per_copy > free or copies > hw.n_banks:
        return  # spills into neighbours: no simple closed form
    r = simulate_decode(shape, hw, T, "baseline")
    assert r.bank_utilization == pytest.approx(copies / hw.n_banks, rel=1e-12)
    assert r.extras["banks_touched_per_layer"] == copies


def test_home_bank_spills_into_neighbours_then_external():
    shape = load_model_shape("llama-3.1-8b")
    r = simulate_decode(shape, HW, 131072, "baseline")
    # 4 GiB of KV per KV head cannot stay in one bank: its neighbours serve it over the mesh
    assert r.extras["banks_touched_per_layer"] > shape.n_kv_heads  # layers straddle bank boundaries
    assert r.bytes["noc"] > r.bytes["kv_read"]  # multicast to the query heads' PEs
    phi = simulate_decode("phi-3.5-mini", HW, 131072, "baseline")
    assert phi.bytes["external"] > 0 and phi.attention_time_breakdown["external"] > 0


def test_split_reading_is_the_first_generation_mapping():
    r = simulate_decode("llama-3.2-1b", HW.with_policies(baseline="split_kv_groups"), 32768, "baseline")
    assert r.bank_utilization == pytest.approx(1.0)
    assert r.phase_s["merge"] > 0  # already tiles and merges: H2EAL's own contribution


def test_interleave_width_trades_parallelism_for_row_locality():
    rows = []
    for width in (1, 2, 4, 8, 16, 64):
        r = simulate_decode("llama-3.2-1b", HW.with_policies(kv_interleave_width=width), 32768, "h2eal")
        rows.append((width, r.extras["bytes_per_activation"], r.bank_utilization, r.attention_latency_s))
    per_act = [x[1] for x in rows]
    util = [x[2] for x in rows]
    assert per_act == sorted(per_act) and per_act[-1] > 4 * per_act[0]
    assert util[0] >= util[-1]
    assert min(x[3] for x in rows) < rows[0][3]  # token-granular interleave is not the fastest here


def test_pipelined_merge_and_distributed_topk_are_never_slower():
    for model in ("gemma-2b", "llama-3.2-1b"):
        base = simulate_decode(model, HW, 131072, "h2eal")
        piped = simulate_decode(model, HW.with_policies(merge="pipelined"), 131072, "h2eal")
        dist = simulate_decode(model, HW.with_policies(topk="distributed"), 131072, "h2eal")
        assert piped.phase_s["merge"] <= base.phase_s["merge"]
        assert dist.phase_s["topk"] <= base.phase_s["topk"]


def test_uniform_selection_matches_the_accounting_and_is_reproducible():
    shape = load_model_shape("llama-3.2-1b")
    w = decode_workload(shape, 65536, sparse=True, sparsity=SparseAttentionConfig(gqa="per_query_head"))
    att = w.attention
    selecting = (att.meta_read_pages > 0) & (att.read_tokens < att.stored_tokens)
    a = uniform_selection(selecting, att.read_tokens, 65536, 16, shape.group_size, True, seed=3)
    b = uniform_selection(selecting, att.read_tokens, 65536, 16, shape.group_size, True, seed=3)
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.pages, b.pages)
    assert np.array_equal(a.tokens_read()[selecting], att.read_tokens[selecting])
    r, p = a.unique()
    assert len(r) == len(a.rows)  # disjoint per-query-head draws plus one shared current page... per row
    assert p.max() == a.n_pages - 1 and p.min() >= 0


def _synthetic_trace(shape, T, steps=2, k=None, seed=0, per_query=True):
    rng = np.random.default_rng(seed)
    P, budget = 16, 2048
    mask = retrieval_mask_for(shape)[0]
    S = -(-T // P)
    k = k or (budget // P - 1)
    rows = shape.n_kv_heads * (shape.group_size if per_query else 1)
    pages = -np.ones((steps, shape.n_layers, rows, k), dtype=np.int32)
    for s in range(steps):
        for layer in range(shape.n_layers):
            for row in range(rows):
                if mask[layer, row // (shape.group_size if per_query else 1)]:
                    pages[s, layer, row] = np.sort(rng.choice(S - 1, k, replace=False))
    return PageTrace(
        model=shape.name, page_size=P, budget=budget, gqa="per_query_head" if per_query else "group_sum", group_size=shape.group_size,
        retrieval_mask=mask, context_lens=np.full(steps, T, dtype=np.int32), pages=pages, source={"synthetic": True},
    )


def test_a_page_trace_drives_the_reads():
    shape = load_model_shape("smollm2-135m")
    T = 8192
    trace = _synthetic_trace(shape, T)
    r = simulate_decode(shape, HW, T, "h2eal", page_trace=trace, trace_step=1)
    tb = 2 * shape.head_dim * HW.kv_bytes
    w = decode_workload(shape, T, sparse=True, retrieval_mask=trace.retrieval_mask, sparsity=SparseAttentionConfig(gqa="per_query_head"))
    selecting = w.attention.meta_read_pages > 0
    expected = np.where(selecting, trace.tokens_read(1), w.attention.read_tokens).sum() * tb
    assert r.bytes["kv_read"] == pytest.approx(expected)
    assert r.extras["page_selection_source"] == "trace"
    # a trace whose pages cluster (recent pages) reads fewer rows than a uniform one under page interleave
    hw = HW.with_policies(kv_interleave_width="page")
    clustered = _synthetic_trace(shape, T, steps=1)
    clustered.pages[0][clustered.pages[0] >= 0] = np.sort(clustered.pages[0], axis=-1)[clustered.pages[0] >= 0]
    assert simulate_decode(shape, hw, T, "sparse", page_trace=clustered).attention_latency_s > 0


def test_trace_for_another_shape_or_context_fails_naming_the_field():
    trace = _synthetic_trace(load_model_shape("smollm2-135m"), 8192, steps=1)
    with pytest.raises(ParameterError, match="page_trace.n_layers"):
        simulate_decode("llama-3.2-1b", HW, 8192, "h2eal", page_trace=trace)
    with pytest.raises(ParameterError, match="context_len"):
        simulate_decode("smollm2-135m", HW, 4096, "h2eal", page_trace=trace)
    with pytest.raises(ParameterError, match="trace_step"):
        simulate_decode("smollm2-135m", HW, 8192, "h2eal", page_trace=trace, trace_step=3)


def _raw():
    return HW.to_dict()


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda d: d["mapping"].__setitem__("baseline", {"value": "per_head", "source": "x"}), "mapping.baseline"),
        (lambda d: d["mapping"].__setitem__("gqa_kv_sharing", {"value": "bus", "source": "x"}), "mapping.gqa_kv_sharing"),
        (lambda d: d["mapping"].__setitem__("kv_interleave_width", {"value": 0, "source": "x"}), "mapping.kv_interleave_width"),
        (lambda d: d["mapping"].__setitem__("merge", {"value": "ring", "source": "x"}), "mapping.merge"),
        (lambda d: d["mapping"].__setitem__("topk", {"value": "gpu", "source": "x"}), "mapping.topk"),
        (lambda d: d["dram_row"]["row_size"].__setitem__("value", -2048), "dram_row:row_size"),
        (lambda d: d["dram_row"]["row_cycle_time"].update(value=20, band=None), "dram_row.row_cycle_time"),
        (lambda d: d["dram_row"]["four_activation_window"].__setitem__("unit", "B"), "four_activation_window.unit"),
        (lambda d: d["dram_row"].pop("activation_energy"), "dram_row.activation_energy"),
        (lambda d: d["dram_row"]["activation_window_banks"].update(value=1000, band=None), "dram_row.activation_window_banks"),
    ],
)
def test_bad_hardware_yaml_names_the_field(mutate, field):
    raw = _raw()
    for section in raw.values():
        if isinstance(section, dict):
            for entry in section.values():
                if isinstance(entry, dict) and entry.get("band") is None:
                    entry.pop("band", None)
    mutate(raw)
    with pytest.raises(ParameterError) as err:
        hb_config_from_dict(raw, where="bad.yaml")
    assert field in str(err.value)


def test_policy_overrides_are_validated():
    with pytest.raises(ParameterError, match="mapping.baseline"):
        HW.with_policies(baseline="one_bank")
    assert HW.with_policies(baseline="head_parallel_kv").baseline == "head_parallel_kv"
    assert HW.baseline == "head_parallel"
    with pytest.raises(ParameterError, match="kv_interleave_width"):
        simulate_decode("llama-3.2-1b", HW.with_policies(kv_interleave_width=3), 8192, "h2eal")


def test_head_patterns_are_labelled():
    mask, label = retrieval_mask_for("smollm2-135m")
    assert "identified" in label and mask.shape == (30, 3)
    mask, label = retrieval_mask_for("llama-3.1-8b")
    assert "fallback" in label and mask.mean() == pytest.approx(0.5)
    with pytest.raises(ParameterError, match="head_pattern"):
        retrieval_mask_for("llama-3.2-1b", pattern="identified")
