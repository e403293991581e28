"""Benchmark: one hybrid decode step vs the fastest dense decode, Llama-3.2-1B-shaped layer (Hq 32, Hkv 8, D 64).

For each context length T (8K, 32K, 128K) and thread count (1 and 2), in the same run:

* every dense implementation of :data:`h2eal_core.attention.dense.DENSE_DECODE_KERNELS` (fused SDPA
  with grouped queries, SDPA ``enable_gqa``, grouped matmul + softmax in both operand orders,
  einsum), each through :func:`dense_decode`; speedups are reported against the **fastest** of them;
* ``hybrid_decode`` with 50% retrieval heads (alternating KV heads) and the default
  SparseAttentionConfig (sink 64, local 256, page 16, budget 2048, group_sum), given what a hybrid
  cache keeps (the retrieval heads' page metadata, the streaming heads' sink + window tokens) and
  a gather workspace;
* ``quest``: the same call with every head a retrieval head (Quest alone), for the comparison with
  Quest's published kernel speedup (7.03x self-attention at 32K, Tang et al. 2024).

Cache state: a real decode step reads each layer's KV once per token, after every other layer's KV
was read, so it comes from DRAM. The benchmark reproduces that: it allocates as many layers as
needed for ``--working-set-mb`` (default 512 MB, several times the last-level cache share of the
development VM) and every timed sweep runs one function over all layers in turn; a time is the
sweep time / layers. All functions see the same cold-cache state and, called in turn, the same
background load; each sparse sweep follows a dense one (hybrid and quest select the same pages for
the heads they share, so back to back the second would find them in cache).

Columns: ``speedup`` = fastest dense time / hybrid time; ``ideal_speedup`` = dense KV bytes / bytes
the hybrid step must read (selected pages + current page + streaming sink/window + page metadata,
from ``accounting.head_access``); ``efficiency`` = speedup / ideal (= achieved hybrid bandwidth /
achieved dense bandwidth). Each run reports the minimum over ``--repeats`` sweeps; the summary
gives the minimum and median over ``--runs`` runs (default 3).

Load check: the benchmark prints the load average and measures the copy bandwidth (a 256 MB
``dst.copy_(src)``, read + write bytes) at the start of every run. It refuses to report (exit code
3, with a message) when that is below half its idle value: ``--idle-copy-gbps`` or the reference
stored by ``--calibrate`` in ``benchmarks/results/idle_copy_bandwidth.json`` (per CPU model and
thread count). Run ``--calibrate`` once on a quiet machine.

Run: ``python benchmarks/bench_attention.py [--quick] [--threads 1 2]``; writes
``bench_attention.csv`` (summary), ``bench_attention_runs.csv`` (every run) and
``bench_attention.md`` (the summary as the README's table) under
``benchmarks/results/`` (``build/benchmarks/`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from h2eal_core.attention import (
    SparseAttentionConfig,
    dense_decode,
    head_access,
    hybrid_decode,
    hybrid_token_mask,
    masked_decode,
    quest_page_metadata,
    streaming_kv,
)
from h2eal_core.attention.dense import DEFAULT_DENSE_KERNEL, DENSE_DECODE_KERNELS
from h2eal_core.attention.retrieval import GatherWorkspace
from h2eal_core.io import save_table

HQ, HKV, D = 32, 8, 64  # Llama-3.2-1B attention shape
CONTEXTS = (8 * 1024, 32 * 1024, 128 * 1024)
QUICK_CONTEXTS = (8 * 1024, 32 * 1024)
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REFERENCE_FILE = RESULTS / "idle_copy_bandwidth.json"
COPY_BYTES = 256 * 2**20
TARGET_EFFICIENCY = 0.70


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


def synchronize(device: str):
    return (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)


def copy_bandwidth(device: str, repeats: int = 8) -> float:
    """Best ``dst.copy_(src)`` bandwidth of a 256 MB buffer, GB/s counting read + write bytes."""
    src = torch.ones(COPY_BYTES // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    sync = synchronize(device)
    best = math.inf
    for i in range(repeats + 2):
        sync()
        t0 = time.perf_counter()
        dst.copy_(src)
        sync()
        if i >= 2:
            best = min(best, time.perf_counter() - t0)
    return 2 * COPY_BYTES / best / 1e9


def reference_key(device: str, threads: int) -> str:
    return f"{device_name(device)} | {device.split(':')[0]} | threads={threads}"


def load_reference(device: str, threads: int, override: float | None) -> float | None:
    if override is not None:
        return override
    if REFERENCE_FILE.is_file():
        entry = json.loads(REFERENCE_FILE.read_text()).get(reference_key(device, threads))
        return None if entry is None else float(entry["copy_GBps"])
    return None


def calibrate(device: str, threads: list[int]) -> None:
    """Store the idle copy bandwidth (best of 5 rounds, 0.2 s apart) for every thread count."""
    data = json.loads(REFERENCE_FILE.read_text()) if REFERENCE_FILE.is_file() else {}
    for n in threads:
        if device == "cpu":
            torch.set_num_threads(n)
        bw = 0.0
        for _ in range(5):
            bw = max(bw, copy_bandwidth(device, repeats=10))
            time.sleep(0.2)
        load = os.getloadavg()
        data[reference_key(device, n)] = {
            "copy_GBps": round(bw, 2), "load_avg_1min": round(load[0], 2), "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        print(f"idle copy bandwidth, {n} thread(s): {bw:.1f} GB/s (load average {load[0]:.2f})")
    REFERENCE_FILE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE_FILE.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"written: {REFERENCE_FILE}")


def check_load(device: str, threads: int, reference: float | None) -> float:
    """Measure the copy bandwidth now; exit with a message when below half the idle reference."""
    bw = copy_bandwidth(device)
    load = os.getloadavg()
    ref = "no idle reference (run --calibrate on a quiet machine)" if reference is None else f"idle {reference:.1f} GB/s"
    print(f"[{threads} thread(s)] load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; copy {bw:.1f} GB/s ({ref})", flush=True)
    if reference is not None and bw < 0.5 * reference:
        print(
            f"refusing to report: the copy bandwidth {bw:.1f} GB/s is below half its idle value {reference:.1f} GB/s "
            f"(load average {load[0]:.2f}); the machine is too busy for a meaningful measurement. Rerun when it is quiet.",
            file=sys.stderr,
        )
        sys.exit(3)
    return bw


class Layers:
    """``n`` layers of random q, k, v at context ``T``, and what a hybrid cache keeps besides: the
    retrieval heads' page metadata and the streaming heads' sink + window tokens (own tensors)."""

    def __init__(self, T: int, n: int, heads: torch.Tensor, config: SparseAttentionConfig, dtype, device: str):
        self.q, self.k, self.v, self.meta, self.stream, self.meta_all = [], [], [], [], [], []
        for layer in range(n):
            gen = torch.Generator(device=device).manual_seed(1000 * T + layer)
            self.q.append(torch.randn(1, HQ, D, generator=gen, device=device, dtype=dtype))
            self.k.append(torch.randn(1, HKV, T, D, generator=gen, device=device, dtype=dtype))
            self.v.append(torch.randn(1, HKV, T, D, generator=gen, device=device, dtype=dtype))
            self.meta.append(quest_page_metadata(self.k[-1][:, heads], config.page_size))
            self.stream.append(streaming_kv(self.k[-1][:, ~heads], self.v[-1][:, ~heads], config.sink, config.local))
            self.meta_all.append(quest_page_metadata(self.k[-1], config.page_size))  # Quest: every head retrieval
        self.n = n


def sweep_times(fns: dict, layers: Layers, repeats: int, device: str, warmup: int = 1) -> dict[str, list[float]]:
    """Per function, ``repeats`` times (s per layer) of a sweep over all layers; functions in turn."""
    sync = synchronize(device)
    times = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            for layer in range(layers.n):
                fn(layer)
            sync()
            if i >= warmup:
                times[name].append((time.perf_counter() - t0) / layers.n)
    return times


def hot_times(fns: dict, repeats: int, device: str, calls: int = 20) -> dict[str, float]:
    """Per function, the best time (s) of one call on layer 0 called ``calls`` times in a row: every
    byte it reads is then in cache, so what remains is the step's compute and per-op cost. A hybrid
    step whose hot time already exceeds the target time cannot reach the target by any change of
    memory layout or access order; only fewer or fused operations can."""
    sync = synchronize(device)
    out = {}
    for name, fn in fns.items():
        fn(0)
        best = math.inf
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn(0)
            sync()
            best = min(best, (time.perf_counter() - t0) / calls)
        out[name] = best
    return out


def hybrid_bytes(T: int, heads: torch.Tensor, config: SparseAttentionConfig, elem: int) -> tuple[int, int]:
    """(KV bytes, KV + metadata bytes) one hybrid step must read (closed form, accounting.head_access)."""
    accesses = [head_access("retrieval" if r else "streaming", T, config, D, HQ // HKV) for r in heads.tolist()]
    kv = sum(a.kv_bytes_read(D, elem) for a in accesses)
    return int(kv), int(kv + sum(a.metadata_bytes_read(elem) for a in accesses))


def bench_context(T, layers, heads, config, dtype, device, repeats, run, threads, copy_gbps, check) -> dict:
    elem = torch.empty(0, dtype=dtype).element_size()
    dense_bytes = 2 * HKV * T * D * elem
    kv_bytes, sparse_bytes = hybrid_bytes(T, heads, config, elem)
    workspace = GatherWorkspace()
    L = layers
    dense = {f"dense_{name}": (lambda layer, name=name: dense_decode(L.q[layer], L.k[layer], L.v[layer], kernel=name))
             for name in DENSE_DECODE_KERNELS}
    all_heads = torch.ones(HKV, dtype=torch.bool)
    sparse = {
        "hybrid": lambda layer: hybrid_decode(
            L.q[layer], L.k[layer], L.v[layer], heads, config, metadata=L.meta[layer], streaming_kv=L.stream[layer], workspace=workspace
        ),
        "quest": lambda layer: hybrid_decode(
            L.q[layer], L.k[layer], L.v[layer], all_heads, config, metadata=L.meta_all[layer], workspace=workspace
        ),
    }
    # every sparse sweep follows a dense sweep (which evicts the caches): hybrid and quest select the
    # same pages for the shared heads, so back to back the second would read them from cache
    names = list(dense)
    order = [names[0], "hybrid", names[1], "quest", *names[2:]]
    fns = {name: {**dense, **sparse}[name] for name in order}
    _, quest_bytes = hybrid_bytes(T, all_heads, config, elem)
    errors = {}
    with torch.inference_mode():
        if check:
            q, k, v, meta = L.q[0], L.k[0], L.v[0], L.meta[0]
            ref = masked_decode(q, k, v, hybrid_token_mask(q, k, heads, config, metadata=meta)).float()
            errors["hybrid_max_abs_err"] = float((fns["hybrid"](0).float() - ref).abs().max())
            dense_ref = dense_decode(q, k, v, kernel="grouped_matmul").float()
            errors["dense_max_abs_err"] = max(float((fns[f"dense_{n}"](0).float() - dense_ref).abs().max()) for n in DENSE_DECODE_KERNELS)
        times = sweep_times(fns, L, repeats, device)
        best = {name: min(t) for name, t in times.items()}
        dense_names = [n for n in best if n.startswith("dense_")]
        fastest = min(dense_names, key=best.get)
        hot = hot_times({"hybrid": fns["hybrid"]}, repeats, device)  # only the hybrid step has a hot-cache bound
    t_dense, t_hybrid = best[fastest], best["hybrid"]
    ideal = dense_bytes / sparse_bytes
    speedup = t_dense / t_hybrid
    row = {
        "context_len": T,
        "threads": threads,
        "run": run,
        "layers_swept": L.n,
        "fastest_dense": fastest.removeprefix("dense_"),
        "dense_ms": 1e3 * t_dense,
        "dense_decode_ms": 1e3 * best[f"dense_{DEFAULT_DENSE_KERNEL}"],
        "hybrid_ms": 1e3 * t_hybrid,
        "speedup": speedup,
        "ideal_speedup": ideal,
        "efficiency": speedup / ideal,
        "ideal_speedup_kv_only": dense_bytes / kv_bytes,
        "dense_decode_vs_fastest": best[f"dense_{DEFAULT_DENSE_KERNEL}"] / t_dense,
        "quest_ms": 1e3 * best["quest"],
        "quest_speedup": t_dense / best["quest"],
        "quest_ideal_speedup": dense_bytes / quest_bytes,
        "quest_efficiency": t_dense / best["quest"] / (dense_bytes / quest_bytes),
        "dense_MB": dense_bytes / 1e6,
        "hybrid_MB": sparse_bytes / 1e6,
        "dense_GBps": dense_bytes / t_dense / 1e9,
        "hybrid_GBps": sparse_bytes / t_hybrid / 1e9,
        "copy_GBps": copy_gbps,
        "hybrid_ms_median": 1e3 * statistics.median(times["hybrid"]),
        # hot-cache floor: layer 0 called repeatedly (all its bytes in cache); the efficiency the
        # step would reach if its memory traffic were free, against the cold fastest dense
        "hybrid_hot_ms": 1e3 * hot["hybrid"],
        "efficiency_hot_bound": t_dense / hot["hybrid"] / ideal,
        "dense_ms_median": 1e3 * statistics.median(times[fastest]),
        **{f"{n}_ms": 1e3 * best[n] for n in dense_names},
        **errors,
        "load_avg_1min": os.getloadavg()[0],
    }
    return row


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (threads, T): minimum and median over runs of the efficiency and speedup, and the dense times."""
    rows = []
    for (threads, T), g in runs.groupby(["threads", "context_len"], sort=True):
        rows.append({
            "threads": threads,
            "context_len": T,
            "runs": len(g),
            "fastest_dense": g["fastest_dense"].mode().iloc[0],
            "dense_ms_median": g["dense_ms"].median(),
            "hybrid_ms_median": g["hybrid_ms"].median(),
            "ideal_speedup": g["ideal_speedup"].iloc[0],
            "speedup_min": g["speedup"].min(),
            "speedup_median": g["speedup"].median(),
            "efficiency_min": g["efficiency"].min(),
            "efficiency_median": g["efficiency"].median(),
            "hybrid_hot_ms_median": g["hybrid_hot_ms"].median(),
            "efficiency_hot_bound_median": g["efficiency_hot_bound"].median(),
            "dense_decode_vs_fastest_max": g["dense_decode_vs_fastest"].max(),
            "quest_speedup_median": g["quest_speedup"].median(),
            "quest_ideal_speedup": g["quest_ideal_speedup"].iloc[0],
            "quest_efficiency_median": g["quest_efficiency"].median(),
            "dense_GBps_median": g["dense_GBps"].median(),
            "hybrid_GBps_median": g["hybrid_GBps"].median(),
            "copy_GBps_median": g["copy_GBps"].median(),
            **{c: g[c].median() for c in g.columns if c.startswith("dense_") and c.endswith("_ms") and c not in ("dense_ms", "dense_decode_ms")},
            "load_avg_1min_max": g["load_avg_1min"].max(),
        })
    return pd.DataFrame(rows)


def markdown_table(summary: pd.DataFrame) -> str:
    """The README table of the summary (one row per threads x context)."""
    cols = [
        ("threads", "threads", "{:d}"), ("context_len", "T", "{:d}"), ("fastest_dense", "fastest dense", "{}"),
        ("dense_ms_median", "dense ms", "{:.3g}"), ("hybrid_ms_median", "hybrid ms", "{:.3g}"),
        ("ideal_speedup", "ideal", "{:.3g}"), ("speedup_min", "speedup min", "{:.3g}"), ("speedup_median", "speedup median", "{:.3g}"),
        ("efficiency_min", "efficiency min", "{:.2f}"), ("efficiency_median", "efficiency median", "{:.2f}"),
        ("hybrid_hot_ms_median", "hybrid hot ms", "{:.3g}"), ("efficiency_hot_bound_median", "hot-cache bound", "{:.2f}"),
        ("quest_speedup_median", "Quest speedup", "{:.3g}"), ("quest_ideal_speedup", "Quest ideal", "{:.3g}"),
        ("dense_decode_vs_fastest_max", "dense_decode / fastest", "{:.2f}"), ("dense_GBps_median", "dense GB/s", "{:.3g}"),
        ("hybrid_GBps_median", "hybrid GB/s", "{:.3g}"), ("copy_GBps_median", "copy GB/s", "{:.3g}"), ("load_avg_1min_max", "load avg", "{:.2f}"),
    ]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in summary.iterrows():
        lines.append("| " + " | ".join(f.format(int(r[c]) if f == "{:d}" else r[c]) for c, _, f in cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8K and 32K, 1 run of 3 sweeps, 1 thread (development)")
    parser.add_argument("--contexts", type=int, nargs="+", default=None, help="context lengths (default 8K 32K 128K)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None, help="default float32 (CPU), float16 (CUDA)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="CPU thread counts to measure (default 1 2)")
    parser.add_argument("--runs", type=int, default=None, help="independent runs per (T, threads) (default 3)")
    parser.add_argument("--repeats", type=int, default=None, help="timed sweeps per run (minimum reported; default 5)")
    parser.add_argument("--working-set-mb", type=float, default=512.0, help="KV bytes swept per timing (cold-cache decode)")
    parser.add_argument("--idle-copy-gbps", type=float, default=None, help="idle copy bandwidth reference (overrides the stored one)")
    parser.add_argument("--calibrate", action="store_true", help="measure and store the idle copy bandwidth, then exit")
    parser.add_argument("--no-check", action="store_true", help="skip the correctness checks")
    parser.add_argument("--out", default=None, help="output folder (default benchmarks/results, build/benchmarks with --quick)")
    args = parser.parse_args(argv)

    device = args.device
    threads = args.threads or ([1] if args.quick or device != "cpu" else [1, 2])
    if args.calibrate:
        calibrate(device, threads)
        return pd.DataFrame()
    dtype = getattr(torch, args.dtype or ("float16" if device.startswith("cuda") else "float32"))
    runs = args.runs or (1 if args.quick else 3)
    repeats = args.repeats or (3 if args.quick else 5)
    contexts = tuple(args.contexts) if args.contexts else (QUICK_CONTEXTS if args.quick else CONTEXTS)
    out_dir = Path(args.out) if args.out else (ROOT / "build" / "benchmarks" if args.quick else RESULTS)
    config = SparseAttentionConfig()
    heads = torch.tensor([h % 2 == 0 for h in range(HKV)])  # alternating: the general (non-contiguous) case
    load = os.getloadavg()
    print(f"{device_name(device)}; {device}, {dtype}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)

    rows = []
    for T in contexts:
        elem = torch.empty(0, dtype=dtype).element_size()
        n_layers = max(1, math.ceil(args.working_set_mb * 1e6 / (2 * HKV * T * D * elem)))
        layers = Layers(T, n_layers, heads, config, dtype, device)
        for n in threads:
            if device == "cpu":
                torch.set_num_threads(n)
            reference = load_reference(device, n, args.idle_copy_gbps)
            for run in range(runs):
                bw = check_load(device, n, reference)
                rows.append(bench_context(T, layers, heads, config, dtype, device, repeats, run, n, bw, check=not args.no_check and run == 0))
                r = rows[-1]
                print(f"  T={T} threads={n} run {run}: dense {r['dense_ms']:.3f} ms ({r['fastest_dense']}), hybrid {r['hybrid_ms']:.3f} ms, "
                      f"speedup {r['speedup']:.2f} of ideal {r['ideal_speedup']:.2f} -> efficiency {r['efficiency']:.2f}", flush=True)
        del layers
    per_run = pd.DataFrame(rows)
    for df in (per_run,):
        df.insert(0, "device", device)
        df.insert(1, "device_name", device_name(device))
        df.insert(2, "dtype", str(dtype).removeprefix("torch."))
    summary = summarize(per_run)
    summary.insert(0, "device", device)
    summary.insert(1, "device_name", device_name(device))
    summary.insert(2, "dtype", str(dtype).removeprefix("torch."))
    path_runs = save_table(per_run, "bench_attention_runs", out_dir)
    path = save_table(summary, "bench_attention", out_dir)
    (out_dir / "bench_attention.md").write_text(markdown_table(summary))

    print(f"\none decode step, Hq={HQ} Hkv={HKV} D={D}, 50% retrieval heads, {config}; {runs} run(s) x {repeats} sweeps")
    cols = ["threads", "context_len", "fastest_dense", "dense_ms_median", "hybrid_ms_median", "ideal_speedup", "speedup_min",
            "speedup_median", "efficiency_min", "efficiency_median", "efficiency_hot_bound_median", "dense_decode_vs_fastest_max", "dense_GBps_median",
            "hybrid_GBps_median", "copy_GBps_median", "load_avg_1min_max"]
    print(summary[cols].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    ok = bool((summary["efficiency_min"] >= TARGET_EFFICIENCY).all())
    print(f"efficiency >= {TARGET_EFFICIENCY} in every run at every (T, threads): {'yes' if ok else 'NO'}")
    print(f"written: {path}, {path_runs}, {out_dir / 'bench_attention.md'}")
    return summary


if __name__ == "__main__":
    main()
