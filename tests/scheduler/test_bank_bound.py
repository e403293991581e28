"""Bank-bound scheduling: page-granular tiles fixed to their banks, NoC cost of moving, LPT, MILP, bound."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2eal_core.attention.config import SparseAttentionConfig
from h2eal_core.hardware import load_hardware
from h2eal_core.models.shape import load_model_shape
from h2eal_core.scheduler.bank_bound import (
    SCHEDULERS,
    BankBoundInstance,
    MeshCosts,
    layer_instance,
    schedule,
    schedule_exact_bank_bound,
    schedule_lpt_bank_bound,
    tiles_of_head,
)
from h2eal_core.scheduler.head_patterns import head_pattern
from h2eal_core.scheduler.instances import step_instances
from h2eal_core.scheduler.layout import KVLayout
from h2eal_core.scheduler.selection import HeadRead, selection_from_trace, uniform_selection
from h2eal_core.traces import PageTrace
from h2eal_core.validation import ParameterError


@st.composite
def instances(draw, max_tiles=12, max_rows=3, max_cols=4):
    rows, cols = draw(st.integers(1, max_rows)), draw(st.integers(1, max_cols))
    n_pe = rows * cols
    costs = MeshCosts(
        n_pe=n_pe, rows=rows, cols=cols,
        bank_bw=draw(st.floats(5e9, 60e9)), pe_rate=draw(st.floats(2e10, 2e11)), link_bw=draw(st.floats(8e9, 64e9)),
        hop_s=draw(st.floats(0.0, 5e-9)), kv_bytes=2.0, partial_bytes=2.0, merge_ops=4.0, mean_hops=1.0,
    )
    n = draw(st.integers(0, max_tiles))
    n_heads = draw(st.integers(1, 4))
    head = np.array(draw(st.lists(st.integers(0, n_heads - 1), min_size=n, max_size=n)), dtype=np.int64)
    bank = np.array(draw(st.lists(st.integers(0, n_pe - 1), min_size=n, max_size=n)), dtype=np.int64)
    tokens = np.array(draw(st.lists(st.integers(1, 64), min_size=n, max_size=n)), dtype=np.int64)
    queries = np.array(draw(st.lists(st.integers(1, 8), min_size=n, max_size=n)), dtype=np.int64)
    d = draw(st.sampled_from([64, 128, 256]))
    return BankBoundInstance(
        label="random", layer=0, costs=costs, head=head, bank=bank, tokens=tokens, bytes=tokens * 2.0 * d * 2.0,
        macs=tokens * queries * 2.0 * d, head_kinds=("retrieval",) * n_heads,
        head_home=np.array(draw(st.lists(st.integers(0, n_pe - 1), min_size=n_heads, max_size=n_heads)), dtype=np.int64),
        partial_elements=d + 2,
    )


@settings(max_examples=200, deadline=None)
@given(inst=instances())
def test_every_scheduler_assigns_each_tile_once_and_respects_the_bound(inst):
    for name in SCHEDULERS:
        cost = schedule(inst, name)
        assert cost.assignment.shape == (inst.n_tiles,)
        assert ((cost.assignment >= 0) & (cost.assignment < inst.n_pe)).all()
        assert cost.makespan >= inst.lower_bound * (1 - 1e-12)
        assert cost.makespan >= inst.bank_read_s.max(initial=0) * (1 - 1e-12)  # nobody reads a bank faster
        assert cost.fan_in.sum() >= len(np.unique(inst.head))
    assert (schedule(inst, "head_parallel").fan_in <= 1).all() and schedule(inst, "head_parallel").merge_s == 0.0


def _brute_force(inst):
    best = np.inf
    for a in itertools.product(range(inst.n_pe), repeat=inst.n_tiles):
        best = min(best, inst.evaluate(np.array(a, dtype=np.int64)).makespan)
    return best


@settings(max_examples=40, deadline=None)
@given(inst=instances(max_tiles=4, max_rows=2, max_cols=2))
def test_exact_milp_is_the_optimum(inst):
    ex = schedule_exact_bank_bound(inst, time_limit_s=10)
    assert ex.optimal
    assert ex.cost.makespan == pytest.approx(_brute_force(inst), rel=1e-6, abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(inst=instances(max_tiles=9, max_rows=2, max_cols=3))
def test_milp_between_lower_bound_and_every_heuristic(inst):
    ex = schedule_exact_bank_bound(inst, time_limit_s=10)
    assert ex.cost.makespan >= inst.lower_bound * (1 - 1e-9)
    for name in SCHEDULERS:
        assert ex.cost.makespan <= schedule(inst, name).makespan * (1 + 1e-6) + 1e-15


@settings(max_examples=150, deadline=None)
@given(inst=instances(max_tiles=10), data=st.data())
def test_a_bank_bound_tile_costs_noc_time_when_moved(inst, data):
    if inst.n_tiles == 0:
        return
    c = inst.costs
    matrix = inst.cost_matrix()
    owner = inst.evaluate(inst.bank)
    assert owner.moved_tiles == 0 and owner.noc_byte_hops == 0 and (owner.link_s == 0).all()
    i = data.draw(st.integers(0, inst.n_tiles - 1))
    p = data.draw(st.integers(0, inst.n_pe - 1))
    b = int(inst.bank[i])
    hops = int(c.hops[b, p])
    if p == b:
        assert matrix[i, p] == pytest.approx(inst.compute_s[i])
        return
    assert matrix[i, p] == pytest.approx(inst.compute_s[i] + inst.transfer_s[i] + hops * c.hop_s)
    assert matrix[i, p] > inst.compute_s[i]
    moved = inst.bank.copy()
    moved[i] = p
    after = inst.evaluate(moved)
    assert after.pe_s[p] - owner.pe_s[p] == pytest.approx(matrix[i, p])
    assert after.pe_s[b] == pytest.approx(owner.pe_s[b] - inst.compute_s[i], abs=1e-18)
    assert (after.bank_s == owner.bank_s).all()  # the data is read where it lies, whoever computes it
    # XY routing: exactly `hops` links carry the tile, each for bytes / link_bw
    assert np.count_nonzero(after.link_s) == hops
    assert after.link_s.sum() == pytest.approx(hops * inst.transfer_s[i])
    assert len(c.route(b, p)) == hops


@settings(max_examples=100, deadline=None)
@given(rows=st.integers(1, 4), cols=st.integers(1, 5), data=st.data())
def test_link_loads_follow_xy_routes(rows, cols, data):
    c = MeshCosts(rows * cols, rows, cols, 1.0, 1.0, 1.0, 0.0, 2.0, 2.0, 1.0, 1.0)
    n = data.draw(st.integers(0, 8))
    src = np.array(data.draw(st.lists(st.integers(0, rows * cols - 1), min_size=n, max_size=n)), dtype=np.int64)
    dst = np.array(data.draw(st.lists(st.integers(0, rows * cols - 1), min_size=n, max_size=n)), dtype=np.int64)
    vol = np.array(data.draw(st.lists(st.floats(0.0, 10.0), min_size=n, max_size=n)))
    loads = c.link_loads(src, dst, vol)
    expected = np.zeros(c.n_links)
    for s, d, v in zip(src, dst, vol):
        for link in c.route(s, d):
            expected[link] += v
    assert np.allclose(loads, expected)


@settings(max_examples=80, deadline=None)
@given(gran=st.sampled_from(["page", "token"]), width=st.integers(1, 16), n_pages=st.integers(1, 40), last=st.integers(1, 16),
       tile_tokens=st.integers(1, 64), origin=st.integers(0, 15), data=st.data())
def test_tiles_are_whole_page_chunks_in_the_banks_the_layout_fixed(gran, width, n_pages, last, tile_tokens, origin, data):
    P, n_banks = 16, 16
    pages = np.array(sorted(data.draw(st.sets(st.integers(0, 200), min_size=n_pages, max_size=n_pages))), dtype=np.int64)
    tokens = np.full(pages.size, P, dtype=np.int64)
    tokens[-1] = last
    queries = np.array(data.draw(st.lists(st.integers(1, 4), min_size=pages.size, max_size=pages.size)), dtype=np.int64)
    read = HeadRead("retrieval", pages, tokens, queries)
    layout = KVLayout(gran, width)
    bank, t_tokens, t_q = tiles_of_head(read, origin=origin, layout=layout, page_size=P, n_banks=n_banks, tile_tokens=tile_tokens)
    assert t_tokens.sum() == tokens.sum() and t_q.sum() == (tokens * queries).sum()
    # every token's bank as the layout wrote it: per-bank totals agree with the tiles
    all_tokens = np.concatenate([np.arange(p * P, p * P + t) for p, t in zip(pages, tokens)])
    want = np.bincount(layout.banks_of_tokens(all_tokens, P, origin, n_banks), minlength=n_banks)
    assert np.array_equal(np.bincount(bank, weights=t_tokens, minlength=n_banks).astype(int), want)
    assert set(np.unique(bank)) <= {(origin + k) % n_banks for k in range(width)}
    if gran == "page":  # a page chunk is a whole page: tiles hold whole pages
        assert t_tokens.max() <= max(tile_tokens, P) + P


def test_layout_errors_and_origins():
    with pytest.raises(ParameterError, match="layout.granularity"):
        KVLayout("row")
    with pytest.raises(ParameterError, match="layout.width"):
        KVLayout("page", 0)
    with pytest.raises(ParameterError, match="layout.width"):
        KVLayout("page", 256).width_for(128)
    lay = KVLayout("page", 8)
    assert [lay.origin(0, h, 4, 128) for h in range(4)] == [0, 32, 64, 96]  # heads of a layer evenly spaced


def _trace(shape, steps=2, k=5, T=1000, gqa="per_query_head", seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros((shape.n_layers, shape.n_kv_heads), dtype=bool)
    mask[::2, 0] = True
    rows = shape.n_kv_heads * (shape.group_size if gqa == "per_query_head" else 1)
    n_pages = -(-T // 16)
    pages = -np.ones((steps, shape.n_layers, rows, k), dtype=np.int64)
    r = shape.group_size if gqa == "per_query_head" else 1
    for s in range(steps):
        for layer in range(shape.n_layers):
            if mask[layer, 0]:
                for j in range(r):
                    pages[s, layer, j] = np.sort(rng.choice(n_pages - 1, size=k, replace=False))
    return PageTrace(model=shape.name, page_size=16, budget=16 * (k + 1), gqa=gqa, group_size=shape.group_size, retrieval_mask=mask,
                     context_lens=np.full(steps, T, dtype=np.int64), pages=pages, source={"task": "synthetic"})


def test_trace_selection_reads_the_recorded_pages():
    shape = load_model_shape("smollm2-135m")
    trace = _trace(shape)
    config = SparseAttentionConfig(page_size=16, budget=trace.budget, gqa=trace.gqa)
    sel = selection_from_trace(shape, trace, 1, config)
    assert "recorded trace" in sel.source and sel.context_len == 1000
    for layer in range(shape.n_layers):
        read = sel.reads[layer][0]
        if trace.retrieval_mask[layer, 0]:
            union = np.unique(trace.pages[1, layer, : shape.group_size])
            n = -(-1000 // 16)
            assert np.array_equal(read.pages, np.r_[union, n - 1])
            counts = np.array([(trace.pages[1, layer, : shape.group_size] == p).any(axis=1).sum() for p in union])
            assert np.array_equal(read.queries[:-1], counts) and read.queries[-1] == shape.group_size
            assert read.tokens[-1] == 1000 - (n - 1) * 16
        else:
            assert read.kind == "streaming" and read.n_tokens == 320
    # the per-token trace numbers agree with the trace's own accounting
    assert np.array_equal(sel.tokens_read()[trace.retrieval_mask], trace.tokens_read(1)[trace.retrieval_mask])
    step = step_instances(shape, load_hardware(), trace=trace, trace_step=0, layout=KVLayout("page"))
    assert step.gates_real and "recorded trace" in step.selection and len(step.layers) == shape.n_layers


def test_a_trace_of_another_shape_is_refused():
    trace = _trace(load_model_shape("smollm2-135m"))
    with pytest.raises(ParameterError, match="trace.n_layers"):
        selection_from_trace(load_model_shape("llama-3.2-1b"), trace, 0, SparseAttentionConfig())


def test_uniform_selection_counts():
    shape = load_model_shape("llama-3.2-1b")
    mask = np.ones((shape.n_layers, shape.n_kv_heads), dtype=bool)
    config = SparseAttentionConfig(gqa="per_query_head", budget=512)
    sel = uniform_selection(shape, 8192, mask, config, seed=3)
    read = sel.reads[5][2]
    assert read.kind == "retrieval" and read.pages[-1] == 8192 // 16 - 1
    assert 32 <= read.pages.size <= 4 * 31 + 1 and read.queries.max() <= shape.group_size
    assert (read.queries * read.tokens).sum() == shape.group_size * 512  # every query head reads exactly its budget
    again = uniform_selection(shape, 8192, mask, config, seed=3)
    assert np.array_equal(again.reads[5][2].pages, read.pages)  # seeded
    assert uniform_selection(shape, 400, mask, config).reads[0][0].kind == "dense"  # T <= budget reads densely


def test_head_patterns_real_gates_first_then_a_labelled_fallback():
    smol = head_pattern("smollm2-135m")
    assert smol.source == "identified" and smol.real and smol.mask.mean() == pytest.approx(0.5, abs=0.01)
    fallback = head_pattern("qwen2.5-3b")
    assert fallback.source == "fallback" and not fallback.real and "assumption" in fallback.label
    with pytest.raises(ParameterError, match="gates"):
        head_pattern("qwen2.5-3b", allow_fallback=False)
    with pytest.raises(ParameterError, match="gates"):
        head_pattern("qwen2.5-3b", source="duo_attention")  # DuoAttention published no gates for it
    from h2eal_core.scheduler.head_patterns import duo_attention_models

    for name in duo_attention_models():  # only where ../shared/third_party is present
        duo = head_pattern(name, source="duo_attention")
        assert duo.source == "duo_attention" and duo.real and "DuoAttention" in duo.label


def test_instance_validation():
    costs = MeshCosts.from_hw(load_hardware())
    read = HeadRead("streaming", np.arange(3), np.array([16, 16, 5]), np.array([3, 3, 3]))
    inst = layer_instance([read], 0, head_dim=64, group_size=3, costs=costs, layout=KVLayout("token"), page_size=16)
    assert inst.tokens.sum() == 37 and inst.macs.sum() == 37 * 3 * 2 * 64
    with pytest.raises(ParameterError, match="assignment"):
        inst.evaluate(np.zeros(inst.n_tiles + 1, dtype=np.int64))
    with pytest.raises(ParameterError, match="assignment"):
        inst.evaluate(np.full(inst.n_tiles, 128))
    with pytest.raises(ParameterError, match="radius"):
        schedule_lpt_bank_bound(inst, -1)
    with pytest.raises(ParameterError, match="scheduler"):
        schedule(inst, "fifo")


@pytest.mark.parametrize("context", [4096, 32768])
def test_lpt_within_five_percent_of_the_bound_on_real_gates(context):
    """Acceptance (issue 9): SmolLM2-135M with its identified gates, both layouts."""
    hw = load_hardware()
    for layout in (KVLayout("token"), KVLayout("page")):
        step = step_instances("smollm2-135m", hw, context, layout=layout)
        assert step.gates_real
        lpt = sum(schedule(i, "lpt").makespan for i in step.layers)
        bound = sum(i.lower_bound for i in step.layers)
        assert lpt <= 1.05 * bound
        assert all(schedule(i, "lpt").gap <= 0.05 for i in step.layers)


@settings(max_examples=25, deadline=None)
@given(model=st.sampled_from(["smollm2-135m", "llama-3.2-1b", "gemma-2b", "phi-3.5-mini", "qwen2.5-1.5b"]),
       context=st.integers(300, 40000), gran=st.sampled_from(["page", "token"]), width=st.sampled_from([None, 4, 32]),
       gqa=st.sampled_from(["group_sum", "per_query_head"]), seed=st.integers(0, 3))
def test_step_instances_conserve_the_selected_tokens(model, context, gran, width, gqa, seed):
    hw = load_hardware()
    shape = load_model_shape(model)
    config = SparseAttentionConfig(gqa=gqa)
    layers = [0, shape.n_layers - 1]
    step = step_instances(model, hw, context, sparsity=config, seed=seed, layout=KVLayout(gran, width), layers=layers)
    sel = uniform_selection(shape, context, head_pattern(shape, config).mask, config, seed)
    for inst in step.layers:
        per_head = np.bincount(inst.head, weights=inst.tokens, minlength=shape.n_kv_heads)
        assert np.array_equal(per_head.astype(int), sel.tokens_read()[inst.layer])
        assert inst.bytes.sum() == pytest.approx(per_head.sum() * 2 * shape.head_dim * hw.kv_bytes)
        lpt = schedule(inst, "lpt")
        assert lpt.makespan >= inst.lower_bound * (1 - 1e-12)
        assert lpt.makespan <= schedule(inst, "owner").makespan * (1 + 1e-12)  # LPT never does worse than staying local


def test_fitted_pages_are_labelled_and_read_the_budget():
    hw = load_hardware()
    step = step_instances("llama-3.2-1b", hw, 16384, pages="fitted", layers=[3])
    assert step.selection.startswith("fitted generator")
    inst = step.layers[0]
    per_head = np.bincount(inst.head, weights=inst.tokens, minlength=8)
    kinds = np.array(inst.head_kinds)
    assert (per_head[kinds == "retrieval"] == 2048).all()  # group_sum: one page set of exactly the budget per KV head
    assert (per_head[kinds == "streaming"] == 320).all()
    with pytest.raises(ParameterError, match="pages"):
        step_instances("llama-3.2-1b", hw, 16384, pages="zipf")
