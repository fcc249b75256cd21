#!/usr/bin/env bash
# The vision tower's int8 GEMM shapes on every kernel this CPU runs (issue 16): bench_vision_kernels
# BM_PointwiseGemmInt8, one thread, REPS repetitions of each, interleaved by Google Benchmark's
# --benchmark_enable_random_interleaving so that a burst of load on a shared machine hits all kernels alike.
# Prints per shape and epilogue (0 product only, 1 + dequantise/GELU/requantise, 2 + dequantise/residual add)
# the median and best GOP/s, in CPU time, of oneDNN's matmul_s8 (whole int32 product, then the epilogue; needs
# VNNI), amx_s8_gemm (epilogue fused per 32 rows; AMX) and avx2_s8_gemm (16-bit pairs, fused per 48 rows; the
# path without VNNI), and the best kernel's best as a share of the per-core peak of its instruction.
#   bash bench/int8_gemm_rates.sh BUILD_DIR [REPS]        e.g. PEAK_S8=6400 bash bench/int8_gemm_rates.sh build 5
#   FILTER='epilogue:0' restricts the runs (a regex on the benchmark name; 'kernel:1' the AMX kernel only).
# PEAK_S8: the core's peak in GOP/s from bench_peak: amx_tdpbusd_int8 on AMX, vpdpbusd_int8 with VNNI,
# avx2_maddwd_int16 on AVX2 (default: the AMX Xeon of issue 16).
set -euo pipefail
build=${1:?build dir}; reps=${2:-5}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'); uptime before: $(uptime)" >&2
OMP_NUM_THREADS=1 "$build/bin/bench_vision_kernels" --benchmark_filter="PointwiseGemmInt8.*${FILTER:-}" \
  --benchmark_repetitions="$reps" --benchmark_enable_random_interleaving=true --benchmark_min_time=0.1 \
  --benchmark_format=json > "$out" 2>/dev/null
echo "uptime after: $(uptime)" >&2
PEAK_S8=${PEAK_S8:-6400} python3 - "$out" <<'PY'
import collections, json, os, re, statistics, sys
peak = float(os.environ["PEAK_S8"])
rates = collections.defaultdict(list)
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    if b.get("run_type") != "iteration" or b.get("error_occurred"): continue
    args = dict(re.findall(r"(\w+):(\d+)", b["run_name"]))
    shape = f"{args['M']}x{args['K']}:{args['K']}x{args['N']} e{args['epilogue']}"
    rates[(shape, args["kernel"])].append(b["GOP/s"] / 1e9)
names = {"0": "oneDNN", "1": "amx", "2": "avx2"}
kernels = [k for k in names if any(kernel == k for _, kernel in rates)]
print(f"{'MxK:KxN epilogue':24s} " + " ".join(f"{names[k] + ' median [best]':>22s}" for k in kernels) +
      f" {'best % peak':>12s}")
for shape in dict.fromkeys(s for s, _ in rates):
    cells = [rates.get((shape, k), [float("nan")]) for k in kernels]
    best = max(max(c) for c in cells)
    print(f"{shape:24s} " + " ".join(f"{statistics.median(c):13.0f} [{max(c):6.0f}]" for c in cells) +
          f" {100 * best / peak:11.1f}%")
PY
