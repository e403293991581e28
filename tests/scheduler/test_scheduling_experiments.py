"""Fig. 8 tables: per-layer and per-model scheduler comparison, per-PE loads, exact and LP bounds."""

import numpy as np
import pytest

from h2eal_core.experiments import hw_scheduler
from h2eal_core.experiments.hardware import scheduling as sc
from h2eal_core.scheduler import SCHEDULERS
from h2eal_core.validation import ParameterError


@pytest.fixture(scope="module")
def tables():
    layers = sc.scheduler_layer_table(["smollm2-135m", "gemma-2b"], [4096], ["token", "page:32"], traces="")
    return layers, sc.scheduler_model_table(layers)


def test_layer_and_model_tables_are_consistent(tables):
    layers, models = tables
    assert len(layers) == (30 + 18) * 2
    for name in SCHEDULERS:
        assert (layers[f"{name}_makespan_us"] >= layers["lower_bound_us"] * (1 - 1e-9)).all()
        assert np.allclose(layers[f"{name}_layer_us"], layers[f"{name}_makespan_us"] + layers[f"{name}_merge_us"])
    assert (layers["head_parallel_merge_us"] == 0).all() and (layers["head_parallel_fan_in_max"] == 1).all()
    assert len(models) == 4 and set(models["layout"]) == {"token-interleaved over all banks", "page-interleaved over 32 banks"}
    for r in models.itertuples():
        assert r.gain_over_owner >= 1 - 1e-9  # LPT never worse than every tile staying local
        sub = layers[(layers["model"] == r.model) & (layers["layout"] == r.layout)]
        assert r.lpt_step_us == pytest.approx(sub["lpt_layer_us"].sum())
        assert r.gain_over_round_robin == pytest.approx(sub["round_robin_layer_us"].sum() / sub["lpt_layer_us"].sum())
    smol = models[models["model"] == "smollm2-135m"]
    assert smol["gates_real"].all() and (smol["gap"] <= 0.05).all()
    assert (models[models["model"] == "gemma-2b"]["gates"].str.startswith("fallback")).all()


def test_trace_rows_pair_a_recorded_step_with_uniform_pages(tmp_path):
    from h2eal_core.models.shape import load_model_shape
    from h2eal_core.traces import PageTrace

    shape = load_model_shape("smollm2-135m")
    rng = np.random.default_rng(1)
    mask = np.zeros((shape.n_layers, shape.n_kv_heads), dtype=bool)
    mask[:, 1] = True
    pages = -np.ones((1, shape.n_layers, shape.n_kv_heads, 20), dtype=np.int64)
    for layer in range(shape.n_layers):
        pages[0, layer, 1] = np.sort(rng.choice(3000 // 16, size=20, replace=False))
    trace = PageTrace(model=shape.name, page_size=16, budget=16 * 21, gqa="group_sum", group_size=shape.group_size, retrieval_mask=mask,
                      context_lens=np.array([3000]), pages=pages, source={"task": "synthetic"})
    path = trace.save(tmp_path / "smollm2-135m_synthetic.npz")
    layers = sc.scheduler_layer_table(["smollm2-135m"], [4096], ["page"], traces=[str(path)])
    rows = layers[layers["source"] != "grid"]
    assert set(rows["context_len"]) == {3000}
    assert rows["selection"].str.startswith("recorded trace").sum() == 30
    assert rows["selection"].str.startswith("uniform").sum() == 30 and rows["gates_real"].all()
    with pytest.raises(ParameterError, match="traces"):
        sc.scheduler_layer_table(["smollm2-135m"], [4096], ["page"], traces=[str(tmp_path / "missing.npz")])


def test_pe_loads_exact_width_and_lp_tables():
    pe = sc.pe_load_table("smollm2-135m", 4096, "auto", "page")
    assert len(pe) == len(SCHEDULERS) * 128 and pe["layer"].nunique() == 1
    lpt = pe[pe["scheduler"] == "lpt"]
    assert lpt["busy_us"].max() == pytest.approx(lpt["makespan_us"].iloc[0])
    exact = sc.exact_table(["gemma-2b"], 2048, [1], ["page"], time_limit_s=10)
    assert len(exact) == 1 and exact["exact_optimal"].all()
    assert (exact["lpt_over_exact"] >= -1e-9).all() and (exact["exact_over_bound"] >= -1e-9).all()
    widths = sc.width_table("smollm2-135m", 4096, widths=(16, 128), granularities=("page",))
    assert list(widths["width"]) == [16, 128] and (widths["lpt_fan_in_max"] <= widths["width"]).all()
    layers = sc.scheduler_layer_table(["gemma-2b"], [8192], ["token"], traces="")
    lp = sc.lp_bound_table(layers, max_layers=1)
    assert len(lp) == 1
    r = lp.iloc[0]
    assert r.lower_bound_us <= r.lp_bound_us * (1 + 1e-9) <= r.lpt_makespan_us * (1 + 1e-6)


def test_old_module_path_still_works():
    assert hw_scheduler.scheduler_layer_table is sc.scheduler_layer_table
    assert callable(hw_scheduler.layer_loads) and callable(hw_scheduler.greedy_gap_table)
    with pytest.raises(ParameterError, match="layouts"):
        sc.scheduler_layer_table(["smollm2-135m"], [4096], [3], traces="")


def test_tables_are_reproducible():
    a = sc.scheduler_layer_table(["gemma-2b"], [8192], ["token"], traces="", pages=("uniform", "fitted"))
    b = sc.scheduler_layer_table(["gemma-2b"], [8192], ["token"], traces="", pages=("uniform", "fitted"))
    assert a.equals(b)
    assert set(a["pages"]) == {"uniform", "fitted"}


def test_compact_layer_table_joins_back_to_the_model_table(tables):
    layers, models = tables
    compact = sc.compact_layer_table(layers)
    keys = ["source", "pages", "model", "context_len", "layout_granularity", "layout_width"]
    joined = compact.merge(models[keys + ["gates"]], on=keys, how="left")
    assert len(joined) == len(layers) and joined["gates"].notna().all()
    assert "lpt_layer_us" not in compact and np.allclose(compact["lpt_makespan_us"], layers["lpt_makespan_us"], atol=1e-6)
