"""Benchmark: one hybrid decode step vs dense on a Llama-3.2-1B-shaped layer (Hq 32, Hkv 8, D 64).

For each context length T it times ``dense_decode`` and ``hybrid_decode`` (50% retrieval heads,
default SparseAttentionConfig: sink 64, local 256, page 16, budget 2048, group_sum) and reports:

* ``speedup``: dense time / hybrid time, beside ``ideal_speedup`` = dense KV bytes / hybrid bytes
  read (selected KV + streaming KV + page metadata, from accounting.head_access) and
  ``ideal_speedup_kv_only`` (metadata left out); ``efficiency`` = speedup / ideal_speedup.
* achieved bandwidth (bytes read / time) of both, beside a plain tensor-copy bandwidth measured in
  the same run on a buffer of the dense KV size (copy counts bytes read + written, STREAM style).

Times are the minimum over interleaved repeats (dense, hybrid and copy called in turn, so all see
the same background load); medians are in the CSV. Single-threaded by default (``--threads``).
Run: ``python benchmarks/bench_attention.py [--quick]``; writes ``build/benchmarks/bench_attention.csv``.
Timings depend on the machine and its load: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
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
)
from h2eal_core.io import save_table

HQ, HKV, D = 32, 8, 64  # Llama-3.2-1B attention shape
CONTEXTS = (8 * 1024, 32 * 1024, 128 * 1024)
QUICK_CONTEXTS = (8 * 1024, 32 * 1024)


def interleaved_times(fns: dict, repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Wall times (s) of each function, called in turn ``repeats`` times (CUDA synchronised).

    Interleaving exposes every function to the same background load; the minimum of each list is
    the least-disturbed run, the median the typical one.
    """
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def bench_context(T: int, config: SparseAttentionConfig, dtype: torch.dtype, device: str, repeats: int, check: bool) -> dict:
    gen = torch.Generator(device=device).manual_seed(T)
    q = torch.randn(1, HQ, D, generator=gen, device=device, dtype=dtype)
    k = torch.randn(1, HKV, T, D, generator=gen, device=device, dtype=dtype)
    v = torch.randn(1, HKV, T, D, generator=gen, device=device, dtype=dtype)
    heads = torch.tensor([h % 2 == 0 for h in range(HKV)])  # alternating: the general (non-contiguous) case
    meta = quest_page_metadata(k[:, heads], config.page_size)  # what the cache keeps for retrieval heads
    g, elem = HQ // HKV, k.element_size()

    accesses = [head_access("retrieval" if r else "streaming", T, config, D, g) for r in heads.tolist()]
    dense_bytes = 2 * HKV * T * D * elem
    kv_bytes = sum(a.kv_bytes_read(D, elem) for a in accesses)
    hybrid_bytes = kv_bytes + sum(a.metadata_bytes_read(elem) for a in accesses)

    with torch.inference_mode():
        err = float("nan")
        if check:
            ref = masked_decode(q, k, v, hybrid_token_mask(q, k, heads, config, metadata=meta))
            err = float((hybrid_decode(q, k, v, heads, config, metadata=meta) - ref).abs().max())
        src = torch.empty(dense_bytes // elem, dtype=dtype, device=device).normal_(generator=gen)
        dst = torch.empty_like(src)
        times = interleaved_times(
            {
                "dense": lambda: dense_decode(q, k, v),
                "hybrid": lambda: hybrid_decode(q, k, v, heads, config, metadata=meta),
                "copy": lambda: dst.copy_(src),
            },
            repeats,
        )
    t_dense, t_hybrid, t_copy = (min(times[n]) for n in ("dense", "hybrid", "copy"))
    median = {n: statistics.median(t) for n, t in times.items()}
    ideal = dense_bytes / hybrid_bytes
    speedup = t_dense / t_hybrid
    return {
        "context_len": T,
        "dense_ms": 1e3 * t_dense,
        "hybrid_ms": 1e3 * t_hybrid,
        "speedup": speedup,
        "ideal_speedup": ideal,
        "ideal_speedup_kv_only": dense_bytes / kv_bytes,
        "efficiency": speedup / ideal,
        "dense_MB": dense_bytes / 1e6,
        "hybrid_MB": hybrid_bytes / 1e6,
        "dense_GBps": dense_bytes / t_dense / 1e9,
        "hybrid_GBps": hybrid_bytes / t_hybrid / 1e9,
        "copy_GBps": 2 * dense_bytes / t_copy / 1e9,
        "speedup_median": median["dense"] / median["hybrid"],
        "dense_ms_median": 1e3 * median["dense"],
        "hybrid_ms_median": 1e3 * median["hybrid"],
        "max_abs_err": err,
    }


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8K and 32K only, 5 repeats")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (median)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: on a shared machine, multi-threaded small ops wait for descheduled threads)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the correctness check against masked attention")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "build" / "benchmarks"))
    args = parser.parse_args(argv)

    dtype = getattr(torch, args.dtype)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (5 if args.quick else 15)
    config = SparseAttentionConfig()
    contexts = QUICK_CONTEXTS if args.quick else CONTEXTS
    load = os.getloadavg()
    rows = []
    for T in contexts:
        rows.append(bench_context(T, config, dtype, args.device, repeats, check=not args.no_check))
        print(f"T={T}: done", file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    df.insert(0, "device", args.device)
    df.insert(1, "dtype", args.dtype)
    df["threads"] = torch.get_num_threads()
    df["load_avg_1min"] = load[0]
    path = save_table(df, "bench_attention", args.out)
    cols = ["context_len", "dense_ms", "hybrid_ms", "speedup", "ideal_speedup", "efficiency", "ideal_speedup_kv_only",
            "dense_GBps", "hybrid_GBps", "copy_GBps", "speedup_median", "max_abs_err"]
    print(f"one decode step, Hq={HQ} Hkv={HKV} D={D}, 50% retrieval heads, {config}")
    print(f"device {args.device}, {args.dtype}, {torch.get_num_threads()} threads, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(df[cols].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"written: {path}")
    return df


if __name__ == "__main__":
    main()
