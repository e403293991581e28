#!/usr/bin/env bash
# The one prepared run for a lent CUDA GPU (issue 12): the CUDA test cases and the kernel benchmark
# in float16 and bfloat16 at 8K, 32K and 128K, against every dense kernel torch offers (SDPA
# dispatches to flash attention there). Run it from the repository root; on the device tool:
#
#     run(command="COMMIT=<commit> bash benchmarks/device_check.sh", timeout_s=560)
#
# with the commit (`git rev-parse --short HEAD` here) written out: the copy of the tree sent there
# may have no .git. The steps' own limits add up to 540 s; on an H200 the whole run should take a
# few minutes.
#
# It needs only the image's python3 (torch, pandas, pyyaml, pytest, hypothesis, transformers) and
# this working tree, and writes at most 7 files into $OUT (the device tool returns 8 at most):
#
#     device.txt                                    GPU, driver, versions, then the CUDA test log
#     float16/bench_attention{.csv,_runs.csv,.md}   kernel benchmark, float16 (3 runs)
#     bfloat16/bench_attention{.csv,_runs.csv,.md}  the same in bfloat16
#
# Commit them under benchmarks/results/cuda/ with the date. Each step has its own time limit, so
# one that hangs does not take the others' results with it.
# The real-model decode benchmark is not run: the GGUF weights (SmolLM2-135M's is 98 MB, Qwen's larger)
# are over the 64 MiB the device tool carries, and that machine reaches no package index.
#
# Test the script without a GPU (tests/attention/test_attention_benchmarks.py runs a shorter form):
#     DEVICE=cpu CONTEXTS=8192 RUNS=1 TESTS=cpu PYTHON=.venv/bin/python OUT=build/device_check bash benchmarks/device_check.sh
# TESTS= (empty) skips the tests; BENCH_ARGS passes more options to bench_attention.py.
set -uo pipefail
OUT=${OUT:-build/device_check}
DEVICE=${DEVICE:-cuda}
CONTEXTS=${CONTEXTS:-8192 32768 131072}
RUNS=${RUNS:-3}
TESTS=${TESTS-cuda}   # pytest -k expression: the CUDA-parametrised cases
BENCH_ARGS=${BENCH_ARGS:-}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
LOG="$OUT/device.txt"

{
    echo "# device_check.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), commit ${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
    "$PY" - <<'EOF'
import platform
import torch
print(f"python {platform.python_version()}; torch {torch.__version__}; CUDA {torch.version.cuda}; cuDNN {torch.backends.cudnn.version()}")
try:
    import transformers
    print(f"transformers {transformers.__version__}")
except ImportError:
    print("transformers: not installed")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}; {p.total_memory / 2**30:.0f} GiB; {p.multi_processor_count} SMs; compute capability {p.major}.{p.minor}")
else:
    print("no CUDA GPU visible to torch")
EOF
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    if [ -n "$TESTS" ]; then
        echo
        echo "## pytest -k '$TESTS' (kernel and HF-cache tests)"
        timeout 240 "$PY" -m pytest -q -p no:cacheprovider -k "$TESTS" \
            tests/attention/test_attention_kernels.py tests/attention/test_attention_hf_cache.py
        echo "pytest exit code: $?"
    fi
} >"$LOG" 2>&1

for dtype in float16 bfloat16; do
    echo "## bench_attention.py --device $DEVICE --dtype $dtype" >>"$LOG"
    # shellcheck disable=SC2086  # CONTEXTS and BENCH_ARGS are lists of words
    timeout 150 "$PY" benchmarks/bench_attention.py --device "$DEVICE" --dtype "$dtype" --runs "$RUNS" \
        --contexts $CONTEXTS --out "$OUT/$dtype" $BENCH_ARGS >>"$LOG" 2>&1
    echo "exit code: $?" >>"$LOG"
done
tail -n 40 "$LOG"
