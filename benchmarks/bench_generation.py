"""Benchmark: real-model decode under each policy (what a user of the Hugging Face integration gets).

``--model smollm2-135m`` (default; the offline GGUF model, float32 on CPU) at contexts of 2K, 4K and
8K tokens, or ``--model qwen2.5-coder-0.5b`` (the Q4_K_M GGUF dequantised to float32) at 8K, 16K and
32K tokens (its native maximum), each with the gates identified on it. For each
context one dense prefill is shared by every policy: the prompt's first ``T - warmup - steps``
tokens are prefilled once (the largest context; shorter ones use its prefix, equal by causality)
and written into each policy's :class:`~h2eal_core.attention.hf.PolicyCache` with ``update``
(streaming heads trimmed, page metadata built). Then the next ``warmup + steps`` prompt tokens are
fed one at a time as decode steps (the decode-simulation protocol of DuoAttention and Quest: every
policy does the same work on the same tokens) and each step is timed. The policies take turns step by step
(rotating order), so that all of them see the same background load.

Policies: ``full`` (the model's own SDPA attention through the policy's cache), ``full_fused``
(``full`` with this package's fused dense kernel at decode, ``dense_decode_kernel="fused"``: the
fastest dense decode, see bench_attention.py), ``streaming_llm``, ``quest``, ``duo``, ``h2eal``.
Every policy but ``full`` runs its all-dense decode layers with that fused kernel too (a DuoAttention
layer whose KV heads are all retrieval heads, a Quest layer whose context fits the budget): with
the model's own ``enable_gqa`` SDPA there, such layers would cost a sparse policy what they cost
``full`` and not ``full_fused``, and the comparison would flatter H2EAL (on Qwen2.5-Coder-0.5B,
where each layer has 2 KV heads, DuoAttention at 32K measured 160.7 ms/token that way, slower than
``full_fused``'s 155.9). ``full`` alone keeps the model's own attention, as the unmodified reference.
Retrieval heads (duo, h2eal): the gates identified on the model
(``data/head_patterns/<model>``), binarised at the default 50% (GQA).

Per (context, policy) the CSV row gives:

* ``latency_ms_median`` and the spread (``p10``, ``p90``, ``min``, ``max``) of the per-token decode
  latency over ``steps`` (>= 32) steps, after ``warmup`` discarded steps;
* ``attention_ms_median`` / ``attention_share``: time inside the policy (every layer's cache
  ``update`` plus its attention function) per step, and its share of the step;
* ``kernel_ms_median``: the part of it spent in the torch kernels the policy calls (attention:
  the fused dense kernel, the model's SDPA, the streaming and selected-page attention; page
  scoring and top-k; the page-metadata refresh), and ``python_overhead_ms_median`` = policy time -
  kernel time (index bookkeeping, cache writes, counters, Python dispatch);
* ``kv_bytes`` / ``metadata_bytes``: measured bytes of the tokens the cache stores after the run
  (``PolicyCache.kv_bytes``), beside ``kv_bytes_allocated`` (its preallocated buffers) and
  ``dense_kv_bytes`` (what a dense cache holds); ``kv_bytes_read_per_step`` from the policy's counters;
* ``speedup_vs_full``: the fastest of ``full`` and ``full_fused`` / this policy (medians).

Outputs under ``benchmarks/results/`` (``build/benchmarks/`` with ``--quick``):
``bench_generation.csv``, ``bench_generation.md`` (the table of the README) and
``bench_generation.png`` (latency per token and its attention part, per context and policy) for
SmolLM2; ``bench_generation_<model>.*`` for another model.
Run: ``python benchmarks/bench_generation.py [--model M] [--quick] [--threads N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from h2eal_core.attention import SparseAttentionConfig
from h2eal_core.attention import hf, selectors
from h2eal_core.io import save_table

ROOT = Path(__file__).resolve().parents[1]
GATE_ROOT = ROOT / "data" / "head_patterns"
#: per benchmarked model: its display name and default contexts (the issue's lengths; Qwen up to its native 32K)
MODELS = {
    "smollm2-135m": ("SmolLM2-135M", (2048, 4096, 8192)),
    "qwen2.5-coder-0.5b": ("Qwen2.5-Coder-0.5B", (8192, 16384, 32768)),
}
POLICIES = ("full", "full_fused", "streaming_llm", "quest", "duo", "h2eal")
FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
    "A quiet river runs past the old mill, and the miller counts his sacks of flour twice a day. "
)


class Timers:
    """Accumulated wall time per category, filled by the wrappers installed by :func:`instrument`."""

    def __init__(self):
        self.policy = 0.0
        self.kernel = 0.0
        self._depth = 0

    def reset(self):
        self.policy = self.kernel = 0.0


TIMERS = Timers()


def _timed(fn, field: str):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        outer = field != "kernel" or TIMERS._depth == 0  # kernels nested in kernels count once
        if field == "kernel":
            TIMERS._depth += 1
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if outer:
                setattr(TIMERS, field, getattr(TIMERS, field) + time.perf_counter() - t0)
            if field == "kernel":
                TIMERS._depth -= 1

    return wrapper


@contextlib.contextmanager
def instrument():
    """Time the policy (cache update + attention function) and the kernels it calls, by wrapping
    the names the integration calls them through (restored on exit)."""
    saved = {}

    def patch(owner, name, field):
        saved[(owner, name)] = getattr(owner, name)
        setattr(owner, name, _timed(getattr(owner, name), field))

    patch(hf.PolicyHandle, "attention", "policy")
    patch(hf.PolicyCacheLayer, "update", "policy")
    for name in ("attend", "attend_selection", "streaming_prefill", "sdpa", "quest_page_metadata"):
        patch(hf, name, "kernel")
    patch(selectors, "select_pages", "kernel")  # page scoring + top-k, called through the page selector
    original = hf._original_function
    saved[(hf, "_original_function")] = original
    hf._original_function = lambda module, name: _timed(original(module, name), "kernel")
    try:
        yield TIMERS
    finally:
        for (owner, name), fn in saved.items():
            setattr(owner, name, fn)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def prompt_ids(tokenizer, n_tokens: int) -> torch.Tensor:
    """A deterministic plain-text prompt of exactly ``n_tokens`` tokens."""
    repeats = n_tokens // len(tokenizer(FILLER).input_ids) + 2
    while True:
        ids = tokenizer(FILLER * repeats, return_tensors="pt").input_ids
        if ids.shape[1] >= n_tokens:
            return ids[:, :n_tokens]
        repeats += repeats // 8 + 1


def retrieval_heads(model, name: str = "smollm2-135m") -> np.ndarray:
    """The gates identified on model ``name`` (``data/head_patterns/<name>``), binarised at the default ratio."""
    from h2eal_core.identify.gates import binarize, model_gate_shape, read_gates

    shape = model_gate_shape(model)
    return binarize(read_gates(GATE_ROOT / name, shape=shape), SparseAttentionConfig().retrieval_ratio_for("GQA"))


def display_name(model: str) -> str:
    """The model's name in tables and figures."""
    return MODELS.get(model, (model,))[0]


def output_stem(model: str) -> str:
    """``bench_generation`` for SmolLM2 (the committed name), ``bench_generation_<model>`` otherwise."""
    return "bench_generation" if model == "smollm2-135m" else f"bench_generation_{model}"


def dense_prefill(model, ids: torch.Tensor, chunk: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (K, V) of a dense prefill of ``ids`` (the model's own attention, a DynamicCache)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.inference_mode():
        hf.chunked_prefill(model, ids, cache, chunk)
    return [(layer.keys, layer.values) for layer in cache.layers]


def decode_policies(model, policies, prefix_kv, tokens, config, heads, warmup, device) -> list[dict]:
    """Write the shared prefix into a fresh cache per policy, then time ``len(tokens)`` decode steps.

    The policies take turns step by step (the order rotates every step), so all of them see the
    same background load and none always runs right after the same other one.
    """
    sync = (lambda: torch.cuda.synchronize(device)) if str(device).startswith("cuda") else (lambda: None)
    handles, caches, steps = {}, {}, {p: [] for p in policies}
    with torch.inference_mode():
        for policy in policies:
            name = "full" if policy == "full_fused" else policy
            kernel = "model" if policy == "full" else "fused"  # the fastest dense kernel wherever a policy leaves a layer dense
            handles[policy] = hf.apply_policy(model, name, config, heads, dense_decode_kernel=kernel)
            with handles[policy] as handle:
                caches[policy] = handle.new_cache()
                for layer, (k, v) in enumerate(prefix_kv):
                    caches[policy].update(k, v, layer)
                handle.reset_stats()
        with instrument() as timers:
            for i in range(tokens.shape[1]):
                shift = i % len(policies)
                for policy in policies[shift:] + policies[:shift]:
                    with handles[policy]:
                        timers.reset()
                        sync()
                        t0 = time.perf_counter()
                        hf.forward_last_logits(model, tokens[:, i : i + 1], caches[policy])
                        sync()
                        wall = time.perf_counter() - t0
                    if i >= warmup:
                        steps[policy].append((wall, timers.policy, timers.kernel))
    rows = []
    for policy in policies:
        stats, kv = handles[policy].stats(), caches[policy].kv_bytes()
        arr = np.array(steps[policy]) * 1e3  # ms
        lat, pol, ker = arr[:, 0], arr[:, 1], arr[:, 2]
        rows.append({
            "policy": policy,
            "steps": len(lat),
            "latency_ms_median": float(np.median(lat)),
            "latency_ms_p10": float(np.percentile(lat, 10)),
            "latency_ms_p90": float(np.percentile(lat, 90)),
            "latency_ms_min": float(lat.min()),
            "latency_ms_max": float(lat.max()),
            "attention_ms_median": float(np.median(pol)),
            "attention_share": float(np.median(pol / lat)),
            "kernel_ms_median": float(np.median(ker)),
            "python_overhead_ms_median": float(np.median(pol - ker)),
            "kv_bytes": kv["kv"],
            "metadata_bytes": kv["metadata"],
            "kv_bytes_allocated": kv["kv_allocated"] + kv["metadata_allocated"],
            "dense_kv_bytes": kv["dense"],
            "kv_bytes_read_per_step": stats["kv_bytes_read"] / max(1, stats["decode_steps"]),
            "read_fraction": stats["read_fraction"],
            "cache": stats["cache"],
        })
    return rows


def markdown_table(df: pd.DataFrame) -> str:
    cols = [
        ("context_len", "T", "{:d}"), ("policy", "policy", "{}"), ("latency_ms_median", "ms/token (median)", "{:.1f}"),
        ("latency_ms_p10", "p10", "{:.1f}"), ("latency_ms_p90", "p90", "{:.1f}"), ("speedup_vs_full", "vs full", "{:.2f}"),
        ("attention_ms_median", "attention ms", "{:.1f}"), ("attention_share", "attention share", "{:.0%}"),
        ("kernel_ms_median", "kernel ms", "{:.1f}"), ("python_overhead_ms_median", "Python overhead ms", "{:.1f}"),
        ("kv_MB", "KV MB", "{:.1f}"), ("kv_vs_full", "KV vs full", "{:.2f}"),
    ]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(fmt.format(int(r[c]) if fmt == "{:d}" else r[c]) for c, _, fmt in cols) + " |")
    r = df.iloc[0]
    lines.append("")
    lines.append(f"{display_name(r['model'])}, {r['device']} ({r['device_name']}), {r['dtype']}, {int(r['threads'])} thread(s), {int(r['steps'])} timed "
                 f"steps per policy; load average {df['load_avg_1min'].min():.2f}-{df['load_avg_1min'].max():.2f} during the run.")
    return "\n".join(lines) + "\n"


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    contexts = sorted(df["context_len"].unique())
    fig, axes = plt.subplots(1, len(contexts), figsize=(4.2 * len(contexts), 3.6), sharey=False, squeeze=False)
    for ax, T in zip(axes[0], contexts):
        d = df[df["context_len"] == T]
        x = np.arange(len(d))
        lat, att = d["latency_ms_median"].to_numpy(), d["attention_ms_median"].to_numpy()
        err = np.vstack((lat - d["latency_ms_p10"].to_numpy(), d["latency_ms_p90"].to_numpy() - lat))
        ax.bar(x, lat - att, color="0.75", label="rest of the model")
        ax.bar(x, att, bottom=lat - att, color="tab:blue", label="attention (policy)")
        ax.errorbar(x, lat, yerr=err, fmt="none", ecolor="k", capsize=3, lw=1)
        ax.set_xticks(x, d["policy"], rotation=35, ha="right")
        ax.set_title(f"T = {T // 1024}K")
        ax.set_ylabel("decode latency per token (ms)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{display_name(df['model'].iloc[0])} decode per policy ({df['device'].iloc[0]}, {df['dtype'].iloc[0]}, {df['threads'].iloc[0]} thread(s), "
                 f"load average {df['load_avg_1min'].max():.1f}; bars p10-p90)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", choices=tuple(MODELS), help="the real model (default smollm2-135m)")
    parser.add_argument("--quick", action="store_true", help="the smallest default context only, 8 timed steps (development; under the 32-step spec)")
    parser.add_argument("--contexts", type=int, nargs="+", default=None,
                        help="context lengths (default 2048 4096 8192 for SmolLM2, 8192 16384 32768 for Qwen)")
    parser.add_argument("--steps", type=int, default=None, help="timed decode steps per policy (default 32)")
    parser.add_argument("--warmup", type=int, default=4, help="decode steps run before timing")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the machine is shared)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prefill-chunk", type=int, default=1024, help="tokens per prefill chunk")
    parser.add_argument("--out", default=None, help="output folder (default benchmarks/results, build/benchmarks with --quick)")
    args = parser.parse_args(argv)

    from h2eal_core.models.loading import load_model

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    steps = args.steps or (8 if args.quick else 32)
    default_contexts = MODELS[args.model][1]
    contexts = sorted(args.contexts or (default_contexts[:1] if args.quick else default_contexts))
    out_dir = Path(args.out) if args.out else (ROOT / "build" / "benchmarks" if args.quick else ROOT / "benchmarks" / "results")
    load = os.getloadavg()
    model, tokenizer = load_model(args.model, device=args.device)
    hf.check_context_length(model, max(contexts), name="contexts")  # refused beyond the native maximum
    dtype = next(model.parameters()).dtype
    config = SparseAttentionConfig()
    heads = retrieval_heads(model, args.model)
    n_decode = args.warmup + steps
    ids = prompt_ids(tokenizer, max(contexts)).to(args.device)
    print(f"{display_name(args.model)} on {args.device} ({dtype}), {torch.get_num_threads()} thread(s), load average {load[0]:.2f}; "
          f"prefill {max(contexts) - n_decode} tokens...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    kv_all = dense_prefill(model, ids[:, : max(contexts) - n_decode], args.prefill_chunk)
    print(f"prefill {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    rows = []
    for T in contexts:
        prefix = T - n_decode
        prefix_kv = [(k[:, :, :prefix].contiguous(), v[:, :, :prefix].contiguous()) for k, v in kv_all]
        tokens = ids[:, prefix:T]
        for row in decode_policies(model, list(args.policies), prefix_kv, tokens, config, heads, args.warmup, args.device):
            row.update(context_len=T, prefill_tokens=prefix, load_avg_1min=os.getloadavg()[0])
            rows.append(row)
            print(f"T={T} {row['policy']:13s} {row['latency_ms_median']:7.2f} ms/token (p10 {row['latency_ms_p10']:.2f}, p90 "
                  f"{row['latency_ms_p90']:.2f}); attention {row['attention_ms_median']:.2f} ms ({row['attention_share']:.0%}), "
                  f"kernels {row['kernel_ms_median']:.2f}, overhead {row['python_overhead_ms_median']:.2f}; KV {row['kv_bytes'] / 1e6:.1f} MB",
                  file=sys.stderr, flush=True)
        del prefix_kv
    df = pd.DataFrame(rows)
    full = df[df["policy"].isin(["full", "full_fused"])].groupby("context_len")["latency_ms_median"].min()
    full_kv = df[df["policy"] == "full"].set_index("context_len")["kv_bytes"] if "full" in args.policies else None
    df["speedup_vs_full"] = df["context_len"].map(full) / df["latency_ms_median"] if len(full) else np.nan
    df["kv_MB"] = df["kv_bytes"] / 1e6
    df["kv_vs_full"] = df["kv_bytes"] / df["context_len"].map(full_kv) if full_kv is not None else np.nan
    meta = {"model": args.model, "device": args.device, "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_model(),
            "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads()}
    for i, (k, v) in enumerate(meta.items()):
        df.insert(i, k, v)
    order = ["model", "device", "device_name", "dtype", "threads", "context_len", "policy"]
    df = df[order + [c for c in df.columns if c not in order]]
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = output_stem(args.model)
    path = save_table(df, stem, out_dir)
    (out_dir / f"{stem}.md").write_text(markdown_table(df))
    plot(df, out_dir / f"{stem}.png")
    print(markdown_table(df))
    if {"h2eal", "full"} <= set(args.policies):
        T = max(contexts)
        h = df[(df["context_len"] == T) & (df["policy"] == "h2eal")].iloc[0]
        print(f"at T={T}: h2eal / fastest full decode latency = {1 / h['speedup_vs_full']:.3f}; KV bytes h2eal / full = {h['kv_vs_full']:.3f}")
    print(f"written: {path}, {out_dir / f'{stem}.md'}, {out_dir / f'{stem}.png'}")
    return df


if __name__ == "__main__":
    main()
