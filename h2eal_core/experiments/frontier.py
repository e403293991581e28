"""Accuracy study, second generation: the budget/accuracy frontier, Table III at one operating point, and where Quest's bound loses.

The first-generation Table III (:mod:`.accuracy`, ``tab3_accuracy``) measures six methods at one
budget with ``group_sum`` page sets. This study asks the question the paper's claim needs: **how
much KV must H2EAL read before its accuracy is within one point of full attention?** For each
sample it prefills the context once (dense, exact for every method) and then runs every *arm*, a
(method, budget, GQA mode) triple, on that shared prefill:

* the **frontier arms**: ``quest``, ``h2eal`` and the ``oracle`` page ranking at every budget of
  ``budgets`` below the prompt length (a budget that covers the context is dense by construction,
  so it is not measured), with ``gqa`` page sets (default ``per_query_head``, Quest's own);
* the **table arms** at the operating point ``table_budget``: ``streaming_llm``, ``duo`` and
  ``h2eal_random``, so that Table III's seven methods share the samples;
* the **variant arms**: ``quest`` and ``h2eal`` with the ``variant_gqa`` page sets (default
  ``group_sum``) at ``table_budget``, reported beside ``per_query_head`` with their read fractions;
* ``full`` once per sample (the reference of every drop).

Every arm's record carries its measured KV read and stored fractions (the policy's own
counters), so accuracy is reported against what was read, not against the nominal budget.

Outputs (:func:`frontier_tables`): the per-arm points (accuracy with a paired-bootstrap interval,
drop vs full with its interval, mean read fraction); the **smallest read fraction within one
point of full** per (model, method, GQA mode), both by the point estimate and *confirmed* (the
drop's upper 95% bound at most one point); and Table III, second generation. :func:`selection_gap`
probes, at the operating point, how much of the oracle's pages and attention mass Quest's bound
recovers, per layer and query head.

Records are appended to a JSONL file per model as soon as each batch is done (``--time-limit-min``
stops cleanly between batches; a rerun resumes). The committed records live in
``data/accuracy_records/frontier_<model>.jsonl``; the ``accuracy_frontier`` notebook rebuilds its
tables and figures from them in seconds.

    python -m h2eal_core.experiments.frontier --model smollm2-135m --export --time-limit-min 40
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import repo_root, resolve_repo_path, write_text_atomic
from ..tasks import TASKS, generate_sample, wilson_interval
from ..validation import ParameterError, check_choice, check_list, check_positive_int
from .accuracy import (
    METHOD_LABEL,
    METHODS,
    AccuracyStudyConfig,
    ResultCache,
    head_sets,
    paper_accuracy_drop,
    prefill_batch,
    run_method,
    study_identity,
)

logger = logging.getLogger(__name__)

FRONTIER_VERSION = 1
BUDGET_METHODS = ("quest", "h2eal", "oracle", "streaming_llm", "duo", "h2eal_random")
#: The point the paper's claim is judged at: a mean drop of at most this many accuracy points.
WITHIN_POINTS = 1.0

#: Per-model defaults of the committed CPU study (sized to fit the session: see the README of
#: ``data/accuracy_records``). ``gates_dir`` is the model's identified gates.
MODEL_PRESETS: dict[str, dict] = {
    "smollm2-135m": dict(
        gates_dir="data/head_patterns/smollm2-135m", lengths=(2048, 4096, 8192), n_samples=8, batch_tokens=32768,
    ),
    "qwen2.5-coder-0.5b": dict(
        gates_dir="data/head_patterns/qwen2.5-coder-0.5b", lengths=(4096, 8192, 16384), n_samples=5, batch_tokens=16384,
    ),
    "qwen2.5-coder-1.5b": dict(  # GPU profile (documented, not run on CPU)
        gates_dir="data/head_patterns/qwen2.5-coder-1.5b", lengths=(4096, 8192, 16384, 32768), n_samples=20,
        batch_tokens=65536, dtype="bfloat16", device="cuda",
    ),
}


@dataclasses.dataclass(frozen=True)
class Arm:
    """One measured configuration of a sample: a method at a budget with a GQA mode."""

    method: str
    budget: int  # 0 for full attention
    gqa: str  # "-" for full attention

    @property
    def key(self) -> str:
        return "full" if self.method == "full" else f"{self.method}@{self.budget}/{self.gqa}"


@dataclasses.dataclass(frozen=True)
class FrontierConfig:
    """The second-generation study (validated on construction).

    Attributes:
        model, gates_dir: the model and its identified gates.
        tasks, lengths, n_samples, seed: the samples (every arm sees the same ones; with the same
            seed they are the first ``n_samples`` samples of the first-generation table).
        budgets: the frontier's token budgets; ``table_budget``: Table III's operating point.
        frontier_methods, table_methods, variant_methods: the arms (see the module docstring).
        gqa: page sets of every arm; ``variant_gqa``: the named variants reported beside it.
        sink, local, page_size, dense_layers, retrieval_ratio, random_heads_seed, decode_tail,
        batch_tokens, haystack, chat, dtype, device: as :class:`~.accuracy.AccuracyStudyConfig`
        (``decode_tail=None``: each sample decodes its own question and answer prefix under the
        policy).
    """

    model: str = "smollm2-135m"
    gates_dir: str = "data/head_patterns/smollm2-135m"
    tasks: tuple[str, ...] = ("passkey", "multikey_niah")
    lengths: tuple[int, ...] = (2048, 4096, 8192)
    n_samples: int = 8
    seed: int = 0
    budgets: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    table_budget: int = 512
    frontier_methods: tuple[str, ...] = ("quest", "h2eal", "oracle")
    table_methods: tuple[str, ...] = ("streaming_llm", "duo", "h2eal_random")
    gqa: str = "per_query_head"
    variant_gqa: tuple[str, ...] = ("group_sum",)
    variant_methods: tuple[str, ...] = ("quest", "h2eal")
    sink: int = 64
    local: int = 256
    page_size: int = 16
    dense_layers: int = 0
    retrieval_ratio: float | None = None
    random_heads_seed: int = 0
    decode_tail: int | None = None
    batch_tokens: int = 32768
    haystack: str | None = None
    chat: bool | None = None
    dtype: str | None = None
    device: str | None = None
    allow_beyond_native: bool = False

    def __post_init__(self):
        def tup(name, check, min_length=1):
            object.__setattr__(self, name, tuple(check_list(name, getattr(self, name), check, min_length=min_length)))

        tup("tasks", lambda n, v: check_choice(n, v, TASKS))
        tup("lengths", check_positive_int)
        tup("budgets", check_positive_int)
        for name in ("frontier_methods", "table_methods", "variant_methods"):
            tup(name, lambda n, v: check_choice(n, v, BUDGET_METHODS), min_length=1 if name == "frontier_methods" else 0)
        tup("variant_gqa", lambda n, v: check_choice(n, v, ("group_sum", "group_max", "per_query_head")), min_length=0)
        check_positive_int("n_samples", self.n_samples)
        check_positive_int("table_budget", self.table_budget)
        for b in (*self.budgets, self.table_budget):
            if b <= self.sink:
                raise ParameterError("budgets", b, f"budgets > sink = {self.sink} (StreamingLLM's window is budget - sink)")
        self.study(self.table_budget, self.gqa)  # validates gqa, the attention knobs, haystack, dtype and the rest

    def study(self, budget: int, gqa: str) -> AccuracyStudyConfig:
        """The first-generation study configuration one arm runs with."""
        return AccuracyStudyConfig(
            model=self.model, gates_dir=self.gates_dir, tasks=self.tasks, lengths=self.lengths, n_samples=self.n_samples,
            seed=self.seed, methods=("full",), retrieval_ratio=self.retrieval_ratio, sink=self.sink, local=self.local,
            page_size=self.page_size, budget=budget, gqa=gqa if gqa != "-" else self.gqa, dense_layers=self.dense_layers,
            random_heads_seed=self.random_heads_seed, decode_tail=self.decode_tail, batch_tokens=self.batch_tokens,
            haystack=self.haystack, chat=self.chat, dtype=self.dtype, device=self.device,
            allow_beyond_native=self.allow_beyond_native,
        )

    def arms(self, length: int) -> list[Arm]:
        """The arms of a sample of ``length`` tokens (budgets that cover the context are dense: skipped)."""
        arms = [Arm("full", 0, "-")]
        arms += [Arm(m, b, self.gqa) for b in self.budgets if b < length for m in self.frontier_methods]
        if self.table_budget < length:
            arms += [Arm(m, self.table_budget, self.gqa) for m in self.table_methods]
            arms += [Arm(m, self.table_budget, g) for g in self.variant_gqa if g != self.gqa for m in self.variant_methods]
        seen, out = set(), []
        for a in arms:
            if a not in seen:
                seen.add(a)
                out.append(a)
        return out

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def frontier_config(model: str = "smollm2-135m", **overrides) -> FrontierConfig:
    """The committed study of ``model`` (:data:`MODEL_PRESETS`), with overrides."""
    preset = MODEL_PRESETS.get(model, {})
    return FrontierConfig(model=model, **{**preset, **overrides})


def frontier_identity(config: FrontierConfig, heads, model) -> dict:
    """What every record depends on (the arms, samples and head sets are in each record)."""
    d = study_identity(config.study(config.table_budget, config.gqa), heads, model)
    for k in ("budget", "gqa", "streaming_llm_local", "prefill", "prefill_chunk_size"):
        d.pop(k, None)
    d.update(study="frontier", frontier_version=FRONTIER_VERSION)
    return d


class FrontierCache(ResultCache):
    """:class:`~.accuracy.ResultCache` keyed by arm as well as by sample and head set."""

    @staticmethod
    def key(rec: dict) -> tuple:
        return (rec["task"], int(rec["length"]), rec["sample_id"], rec["method"], rec["heads"], int(rec["budget"]), rec["gqa"])

    def has_arm(self, sample, arm: Arm, heads: str) -> bool:
        return (sample.task, sample.length, sample.sample_id, arm.method, heads, arm.budget, arm.gqa) in self.records


def records_file(records_dir: str | os.PathLike, model: str) -> Path:
    slug = Path(str(model)).name.lower().replace(" ", "_")
    return resolve_repo_path(records_dir) / f"frontier_{slug}.jsonl"


def read_records(path: str | os.PathLike) -> tuple[dict, pd.DataFrame]:
    """(identity, records) of a frontier JSONL file (an unreadable, interrupted last line is skipped)."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError("records", str(path), "an existing frontier records file (run python -m h2eal_core.experiments.frontier)")
    identity, rows = None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "identity" in rec:
            identity = rec["identity"]
        else:
            rows.append(rec)
    return identity, pd.DataFrame(rows)


def run_frontier_study(
    config: FrontierConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    records_dir: str | os.PathLike | None = None,
    export_records: bool = False,
    time_limit_s: float | None = None,
    model=None,
    tokenizer=None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run (or resume) the study; returns one record per (sample, arm) measured so far.

    ``records_dir``: the committed records (``frontier_<model>.jsonl``) are reused when their
    identity matches this run's, and, with ``export_records``, new records are appended there
    directly. ``time_limit_s`` stops between batches, after the first one (what is done is kept; a
    rerun resumes).
    """
    import torch
    from tqdm.auto import tqdm

    if export_records and not records_dir:
        raise ParameterError("records_dir", records_dir, "a folder when export_records is set")
    if time_limit_s is not None and not time_limit_s > 0:
        raise ParameterError("time_limit_s", time_limit_s, "a positive number of seconds or None")
    if model is None:
        from ..models.loading import load_model

        dtype = getattr(torch, config.dtype) if config.dtype else None
        model, tokenizer = load_model(config.model, dtype=dtype, device=config.device)
    if tokenizer is None:
        raise ParameterError("tokenizer", None, "the model's tokenizer when a model object is given")
    base = config.study(config.table_budget, config.gqa)
    heads = head_sets(base, model)
    identity = frontier_identity(config, heads, model)
    committed = records_file(records_dir, config.model) if records_dir else None
    if export_records:
        target, readonly = committed, ()
    else:
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
        cache_dir = resolve_repo_path(cache_dir) if cache_dir is not None else repo_root() / "build" / "accuracy_cache"
        target = Path(cache_dir) / f"frontier_{Path(str(config.model)).name.lower()}_{digest}.jsonl"
        readonly = ()
        if committed is not None and committed.is_file() and read_records(committed)[0] == identity:
            readonly = (committed,)
    if target.is_file() and read_records(target)[0] not in (None, identity):
        raise ParameterError(
            "records", str(target), "a file of the same study identity (model, gates, versions, knobs); move it or use another folder"
        )
    cache = FrontierCache(target, identity, readonly=readonly)
    todo = []
    for length in config.lengths:
        for task in config.tasks:
            for i in range(config.n_samples):
                sample = generate_sample(task, tokenizer, length, config.seed, i, haystack=config.haystack, chat=config.chat)
                missing = [a for a in config.arms(length) if not cache.has_arm(sample, a, heads.digest(a.method))]
                if missing:
                    todo.append((sample, tuple(missing)))
    # balanced partial results: sample index first, then length; one batch = equal length and tail
    from .accuracy import decode_tail_of

    batches: dict = {}
    for sample, missing in todo:
        size = max(1, config.batch_tokens // sample.length)
        key = (sample.index // size, sample.length, sample.task, decode_tail_of(sample, base), missing)
        batches.setdefault(key, []).append(sample)
    order = sorted(batches, key=lambda k: (k[0], k[1], k[2], k[3]))
    logger.info("frontier study %s: %d records cached, %d samples to measure in %d batches", config.model, len(cache.records), len(todo), len(order))
    t_start = time.perf_counter()
    bar = tqdm(total=sum(len(batches[k]) * len(k[4]) for k in order), disable=not progress, desc="frontier arms", dynamic_ncols=True)
    stopped = False
    for n_done, key in enumerate(order):
        if n_done and time_limit_s is not None and time.perf_counter() - t_start > time_limit_s:
            stopped = True  # at least one batch per call, so that every call makes progress
            break
        samples, arms = batches[key], key[4]
        batch = prefill_batch(model, samples, base)
        for j, arm in enumerate(arms):
            study = config.study(arm.budget if arm.budget else config.table_budget, arm.gqa)
            recs = run_method(model, tokenizer, batch, study, heads, arm.method)
            for r in recs:
                r.update(budget=arm.budget, gqa=arm.gqa, arm=arm.key)
                if j == 0:
                    r["seconds"] = round(r["seconds"] + batch.prefill_seconds / len(samples), 3)
            cache.add(recs)  # appended as soon as known: an interruption loses at most one arm
            bar.update(len(samples))
            bar.set_postfix(L=key[1], task=key[2], arm=arm.key)
    bar.close()
    if stopped:
        logger.warning("frontier study %s: stopped at the time limit after %.0f s; rerun to resume", config.model, time.perf_counter() - t_start)
    df = pd.DataFrame(list(cache.records.values()))
    df.attrs.update(cache_path=str(cache.path), heads=heads, identity=identity, complete=not stopped)
    return df


# ---------------------------------------------------------------------------------------------------
# tables


def _paired_cells(records: pd.DataFrame, arm_keys: list[str]) -> list[np.ndarray]:
    """Per (task, length) cell: correctness ``[n_samples, n_arms]`` on the samples every arm has."""
    mats = []
    for (_task, _length), g in records.groupby(["task", "length"], sort=True):
        piv = g.pivot_table(index="sample_id", columns="arm", values="correct", aggfunc="first")
        cols = [a for a in arm_keys if a in piv.columns]
        if len(cols) < len(arm_keys):
            continue
        piv = piv[arm_keys].dropna()
        if len(piv):
            mats.append(piv.to_numpy(dtype=float))
    return mats


def paired_drop(records: pd.DataFrame, arm: str, *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Macro mean accuracy of ``arm`` and of full on their shared samples, and the drop with a paired bootstrap CI."""
    mats = _paired_cells(records, ["full", arm])
    if not mats:
        return dict(n_samples=0, n_cells=0, accuracy=math.nan, full_accuracy=math.nan, samples_lost=0, loss_upper_pp=math.nan,
                    drop_pp=math.nan, drop_ci_low_pp=math.nan,
                    drop_ci_high_pp=math.nan, accuracy_ci_low=math.nan, accuracy_ci_high=math.nan)
    rng = np.random.default_rng(seed)
    boot = np.zeros((n_boot, 2))
    for b in range(n_boot):
        boot[b] = np.mean([m[rng.integers(len(m), size=len(m))].mean(axis=0) for m in mats], axis=0)
    point = np.mean([m.mean(axis=0) for m in mats], axis=0)
    a = (1 - confidence) / 2
    drops = boot[:, 0] - boot[:, 1]
    # samples that full attention answers and the arm misses: a Wilson bound on their share is an
    # upper bound on the drop that stays honest when no loss is observed (where the bootstrap
    # interval collapses to 0): with n samples and none lost it is about 3.8/n, not 0
    n = int(sum(len(m) for m in mats))
    lost = int(sum(((m[:, 0] == 1) & (m[:, 1] == 0)).sum() for m in mats))
    return dict(
        n_samples=n, n_cells=len(mats), accuracy=point[1], full_accuracy=point[0],
        samples_lost=lost, loss_upper_pp=100 * wilson_interval(lost, n, confidence)[1],
        accuracy_ci_low=np.quantile(boot[:, 1], a), accuracy_ci_high=np.quantile(boot[:, 1], 1 - a),
        drop_pp=100 * (point[0] - point[1]), drop_ci_low_pp=100 * np.quantile(drops, a), drop_ci_high_pp=100 * np.quantile(drops, 1 - a),
    )


def frontier_points(records: pd.DataFrame, *, by_length: bool = False) -> pd.DataFrame:
    """Per arm (and per prompt length with ``by_length``): accuracy, drop vs full with CIs, measured KV fractions."""
    rows = []
    groups = [(None, records)] if not by_length else list(records.groupby("length", sort=True))
    for length, recs in groups:
        for arm, g in recs[recs.method != "full"].groupby("arm", sort=True):
            first = g.iloc[0]
            stats = paired_drop(recs, arm)
            rows.append(
                {
                    **({"length": int(length)} if by_length else {}),
                    "method": first["method"], "label": METHOD_LABEL[first["method"]], "gqa": first["gqa"],
                    "budget": int(first["budget"]), "arm": arm, **stats,
                    "kv_read_fraction": g["read_fraction"].mean(), "kv_stored_fraction": g["stored_fraction"].mean(),
                }
            )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    order = {m: i for i, m in enumerate(METHODS)}
    keys = (["length"] if by_length else []) + ["method", "gqa", "budget"]
    return out.sort_values(keys, key=lambda s: s.map(order) if s.name == "method" else s).reset_index(drop=True)


def within_one_point(points: pd.DataFrame, methods=("h2eal", "quest", "oracle"), *, points_allowed: float = WITHIN_POINTS) -> pd.DataFrame:
    """Per (method, GQA mode) on the frontier: the smallest read fraction whose drop is within ``points_allowed``.

    ``estimate``: the point estimate of the drop is at most ``points_allowed``; ``confirmed``: the
    upper 95% bound is, taking the larger of the paired bootstrap's bound and the Wilson bound on the
    share of samples lost (full right, the method wrong), so that an arm with no observed loss on a
    few samples is not "confirmed": confirming one point needs a few hundred paired samples. NaN
    where no budget measured reaches it.
    """
    rows = []
    for (method, gqa), g in points[points.method.isin(methods)].groupby(["method", "gqa"], sort=True):
        g = g.sort_values("kv_read_fraction")
        row = {"method": method, "label": METHOD_LABEL[method], "gqa": gqa, "budgets_measured": len(g),
               "largest_read_fraction_measured": g["kv_read_fraction"].max()}
        upper = np.maximum(g["drop_ci_high_pp"], g["loss_upper_pp"])
        for name, ok in (("estimate", g["drop_pp"] <= points_allowed), ("confirmed", upper <= points_allowed)):
            hit = g[ok]
            if len(hit):
                r = hit.iloc[0]
                row.update({f"{name}_read_fraction": r["kv_read_fraction"], f"{name}_budget": int(r["budget"]),
                            f"{name}_drop_pp": r["drop_pp"], f"{name}_drop_ci_low_pp": r["drop_ci_low_pp"],
                            f"{name}_drop_ci_high_pp": r["drop_ci_high_pp"]})
            else:
                row.update({f"{name}_read_fraction": math.nan, f"{name}_budget": -1, f"{name}_drop_pp": math.nan,
                            f"{name}_drop_ci_low_pp": math.nan, f"{name}_drop_ci_high_pp": math.nan})
        rows.append(row)
    return pd.DataFrame(rows)


def table3(records: pd.DataFrame, budget: int) -> pd.DataFrame:
    """Table III, second generation: every method at the operating point, each with n and CIs."""
    pts = frontier_points(records)
    full = records[records.method == "full"]
    at = pts[pts.budget == budget].copy()
    rows = [{"method": "full", "label": METHOD_LABEL["full"], "gqa": "-", "budget": 0, "arm": "full",
             "n_samples": len(full), "accuracy": float(full.correct.mean()) if len(full) else math.nan,
             "drop_pp": 0.0, "kv_read_fraction": 1.0, "kv_stored_fraction": 1.0}]
    out = pd.concat([pd.DataFrame(rows), at], ignore_index=True)
    paper = paper_accuracy_drop()
    out["paper_mean_drop_pct"] = [paper if m == "h2eal" else math.nan for m in out.method]
    return out


def frontier_tables(records: pd.DataFrame, table_budget: int) -> dict[str, pd.DataFrame]:
    """``{"points", "points_by_length", "within_one_point", "table3"}`` of one model's records."""
    points = frontier_points(records)
    return {
        "points": points,
        "points_by_length": frontier_points(records, by_length=True),
        "within_one_point": within_one_point(points),
        "table3": table3(records, table_budget),
    }


# ---------------------------------------------------------------------------------------------------
# where Quest's bound loses: per layer and query head


def selection_gap(model, tokenizer, config: FrontierConfig, *, n_samples: int = 2, length: int | None = None,
                  progress: bool = True) -> pd.DataFrame:
    """Quest's bound vs the exact ranking at ``table_budget``, per layer and query head.

    Every head runs Quest (``per_query_head``); at each decode step the oracle's ranking is computed
    on the same query and keys. Per (layer, query head): the share of the oracle's pages Quest also
    selects (``recall``), and the share of the softmax attention mass inside Quest's pages vs inside
    the pages of the exact mass ranking (``mass_quest``, ``mass_oracle``; their difference is the
    mass the bound loses). Samples: the first ``n_samples`` of every task at ``length`` (default:
    the longest length).
    """
    import torch
    from tqdm.auto import tqdm

    from ..attention.hf import apply_policy
    from .accuracy import _greedy_decode

    check_positive_int("n_samples", n_samples)
    length = int(length or max(config.lengths))
    study = config.study(config.table_budget, "per_query_head")
    probe = _GapProbe(study.page_size)
    rows = []
    samples = [generate_sample(t, tokenizer, length, config.seed, i, haystack=config.haystack, chat=config.chat)
               for t in config.tasks for i in range(n_samples)]
    for sample in tqdm(samples, disable=not progress, desc="selection gap", dynamic_ncols=True):
        batch = prefill_batch(model, [sample], study)
        probe.events.clear()
        with torch.inference_mode(), apply_policy(model, "quest", study.method_config("quest"), None, selector=probe) as handle:
            layers: list[int] = []
            handle.add_selection_observer(lambda layer, kv_heads, sel: layers.append(layer))
            cache = handle.new_cache()
            for layer, (k, v) in enumerate(batch.prefix_kv):
                cache.update(k, v, layer)
            _greedy_decode(model, cache, batch.ids[:, batch.length - batch.tail :], batch.max_new, batch.eos)
        if len(layers) != len(probe.events):
            raise RuntimeError("selection observer and probe out of step")
        for step, (layer, ev) in enumerate(zip(layers, probe.events)):
            recall, mq, mo = ev
            for h in range(recall.shape[-1]):
                rows.append({"task": sample.task, "sample_id": sample.sample_id, "event": step, "layer": layer, "query_head": h,
                             "recall": float(recall[h]), "mass_quest": float(mq[h]), "mass_oracle": float(mo[h])})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    out = df.groupby(["layer", "query_head"], sort=True).agg(
        recall=("recall", "mean"), mass_quest=("mass_quest", "mean"), mass_oracle=("mass_oracle", "mean"), n_steps=("recall", "size"),
    ).reset_index()
    out["mass_gap"] = out["mass_oracle"] - out["mass_quest"]
    out.insert(0, "length", length)
    out.insert(0, "model", config.model)
    return out


@dataclasses.dataclass
class _GapProbe:
    """A selector that selects with Quest's bound and measures, on the same step, what the oracle would take."""

    page_size: int
    gqa: str = "per_query_head"
    name: str = "quest_bound_probe"
    needs_keys: bool = True
    events: list = dataclasses.field(default_factory=list)

    def select(self, qg, keys, metadata, context_len, page_size, budget):
        from ..attention.quest import PageSelection, select_from_scores
        from ..attention.selectors import OraclePageSelector, QuestBoundSelector

        sel = QuestBoundSelector(gqa=self.gqa).select(qg, keys, metadata, context_len, page_size, budget)
        if sel.dense or keys is None:
            return sel
        g = qg.shape[2]
        oracle = OraclePageSelector(gqa=self.gqa, rank="max_qk").select(qg, keys, metadata, context_len, page_size, budget)
        mass = OraclePageSelector(gqa=self.gqa, rank="attention_mass").page_scores(qg, keys[..., :context_len, :], page_size)
        mass = mass.flatten(1, 2)  # [B, Hq, P]: softmax mass of each page
        best = PageSelection(select_from_scores(mass, context_len, page_size, budget), context_len, page_size, g, True, dense=False)
        quest_mask, oracle_mask, best_mask = sel.page_mask(), oracle.page_mask(), best.page_mask()
        recall = (quest_mask & oracle_mask).sum(-1).float() / oracle_mask.sum(-1).clamp(min=1).float()
        mass_quest = (mass * quest_mask).sum(-1)
        mass_oracle = (mass * best_mask).sum(-1)
        self.events.append((recall[0].cpu().numpy(), mass_quest[0].cpu().numpy(), mass_oracle[0].cpu().numpy()))
        return sel


# ---------------------------------------------------------------------------------------------------
# what the notebook calls


@dataclasses.dataclass
class ModelFrontier:
    """One model's records, tables and (when measured) per-layer/head selection gap."""

    model: str
    config: FrontierConfig
    records: pd.DataFrame
    tables: dict
    gap: pd.DataFrame | None
    identity: dict | None
    source: str  # where the records came from


def model_frontier(model: str, *, records_dir: str | os.PathLike | None, measure: bool = False, gap_samples: int = 0,
                   cache_dir: str | os.PathLike | None = None, progress: bool = True, **overrides) -> ModelFrontier:
    """A model's frontier: the committed records (``measure=False``), or measured (missing arms only).

    ``measure=False`` reads ``records_dir/frontier_<model>.jsonl`` and its selection gap, whatever
    the machine (the identity is reported, not required); the study configuration comes from the
    file's records, the arms actually measured. ``measure=True`` runs :func:`run_frontier_study`
    with ``overrides`` (reusing the committed records when the identity matches) and, with
    ``gap_samples > 0``, :func:`selection_gap`.
    """
    config = frontier_config(model, **overrides)
    gap = None
    slug = Path(str(model)).name.lower()
    if not measure:
        if not records_dir:
            raise ParameterError("records_dir", records_dir, "the folder of the committed records when measure is False")
        path = records_file(records_dir, model)
        identity, records = read_records(path)
        if records.empty:
            raise ParameterError("records", str(path), "a records file with at least one measured arm")
        gap_path = resolve_repo_path(records_dir) / f"selection_gap_{slug}.csv"
        gap = pd.read_csv(gap_path) if gap_path.is_file() else None
        source = str(path)
    else:
        import torch

        from ..models.loading import load_model

        m, tok = load_model(config.model, dtype=getattr(torch, config.dtype) if config.dtype else None, device=config.device)
        records = run_frontier_study(config, cache_dir=cache_dir, records_dir=records_dir or None, model=m, tokenizer=tok,
                                     progress=progress)
        identity = records.attrs["identity"]
        source = records.attrs["cache_path"]
        if gap_samples:
            gap = selection_gap(m, tok, config, n_samples=gap_samples, progress=progress)
    return ModelFrontier(model, config, records, frontier_tables(records, config.table_budget), gap, identity, source)


def combined_tables(frontiers: list[ModelFrontier]) -> dict[str, pd.DataFrame]:
    """Every model's tables stacked with a ``model`` column (what the notebook saves)."""
    out: dict[str, list] = {}
    for f in frontiers:
        for name, table in f.tables.items():
            out.setdefault(name, []).append(table.assign(model=f.model)[["model", *table.columns]])
        if f.gap is not None:
            out.setdefault("gap", []).append(f.gap)
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items()}


METHOD_STYLE = {"quest": ("tab:blue", "o"), "h2eal": ("tab:red", "s"), "oracle": ("tab:green", "^"),
                "streaming_llm": ("tab:grey", "v"), "duo": ("tab:purple", "D"), "h2eal_random": ("tab:orange", "x")}


def draw_frontier(frontiers: list[ModelFrontier]):
    """Accuracy vs full (points, paired) against the measured KV read fraction per model (top), and
    the attention mass Quest's bound loses vs the exact ranking per layer and query head (bottom).

    The top panel plots each arm's paired difference to full attention on the samples it shares
    with full (arms at large budgets exist only for the longer prompts, so raw accuracies of
    different arms would compare different samples).
    """
    import matplotlib.pyplot as plt

    n = len(frontiers)
    fig, axes = plt.subplots(2, n, figsize=(6.4 * n, 8.4), squeeze=False, gridspec_kw={"height_ratios": [1.25, 1]})
    for j, f in enumerate(frontiers):
        ax = axes[0, j]
        pts = f.tables["points"]
        ax.axhline(0, color="black", linewidth=1, label="full attention")
        ax.axhspan(-WITHIN_POINTS, 0, color="black", alpha=0.12, label=f"within {WITHIN_POINTS:g} point")
        for (method, gqa), g in pts.groupby(["method", "gqa"], sort=True):
            color, marker = METHOD_STYLE[method]
            g = g.sort_values("kv_read_fraction")
            delta = -g["drop_pp"]
            err = [g["drop_ci_high_pp"] - g["drop_pp"], g["drop_pp"] - g["drop_ci_low_pp"]]
            ls = "-" if gqa == f.config.gqa and len(g) > 1 else "none"
            ax.errorbar(g["kv_read_fraction"], delta, yerr=err, color=color, marker=marker, linestyle=ls,
                        mfc="white" if gqa != f.config.gqa else color, capsize=2, label=f"{METHOD_LABEL[method]} ({gqa})")
        ax.set_xscale("log")
        ax.set_xlabel("measured KV read fraction (log)")
        ax.set_ylabel("accuracy - full attention (points, paired 95% CI)")
        full = pts["full_accuracy"].dropna()
        n_s = int(pts["n_samples"].max()) if len(pts) else 0
        ax.set_title(f"{f.model}: full attention {100 * full.iloc[0]:.0f}% on {n_s} samples" if len(full) else f.model, fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
        ax = axes[1, j]
        if f.gap is not None and len(f.gap):
            piv = f.gap.pivot(index="layer", columns="query_head", values="mass_gap")
            im = ax.imshow(piv.to_numpy(), aspect="auto", cmap="magma_r", vmin=0, interpolation="nearest")
            ax.grid(False)
            fig.colorbar(im, ax=ax, label="attention mass lost by Quest's bound vs exact ranking")
            ax.set_xlabel("query head")
            ax.set_ylabel("layer")
            ax.set_title(f"mass gap at budget {f.config.table_budget}, {int(f.gap['length'].iloc[0])} tokens "
                         f"(mean recall of oracle pages {f.gap['recall'].mean():.2f})", fontsize=9)
        else:
            ax.axis("off")
            ax.text(0.5, 0.5, "selection gap not measured", ha="center", va="center")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    """``python -m h2eal_core.experiments.frontier --model NAME [--export] [--time-limit-min M] [--gap]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Run (or resume) the budget/accuracy frontier study of one model.")
    parser.add_argument("--model", default="smollm2-135m", help=f"one of {', '.join(MODEL_PRESETS)} or a local HF folder")
    parser.add_argument("--records-dir", default="data/accuracy_records")
    parser.add_argument("--export", action="store_true", help="append new records to the committed records file")
    parser.add_argument("--time-limit-min", type=float, default=None, help="stop cleanly between batches after this long")
    parser.add_argument("--n-samples", type=int, default=None)
    parser.add_argument("--gap", action="store_true", help="also measure the per-layer/head Quest-vs-oracle gap")
    parser.add_argument("--gap-samples", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"n_samples": args.n_samples} if args.n_samples else {}
    try:
        config = frontier_config(args.model, **overrides)
    except ParameterError as exc:
        print(f"error: {exc}")
        return 2
    import torch

    from ..models.loading import load_model

    model, tokenizer = load_model(config.model, dtype=getattr(torch, config.dtype) if config.dtype else None, device=config.device)
    records = run_frontier_study(
        config, records_dir=args.records_dir, export_records=args.export, model=model, tokenizer=tokenizer,
        time_limit_s=60 * args.time_limit_min if args.time_limit_min else None,
    )
    tables = frontier_tables(records, config.table_budget)
    print(tables["table3"].round(3).to_string(index=False))
    print(tables["within_one_point"].round(3).to_string(index=False))
    if args.gap:
        gap = selection_gap(model, tokenizer, config, n_samples=args.gap_samples)
        slug = Path(str(config.model)).name.lower()
        path = resolve_repo_path(args.records_dir) / f"selection_gap_{slug}.csv"
        write_text_atomic(path, gap.round(6).to_csv(index=False, lineterminator="\n"))
        print(f"selection gap: {path}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
