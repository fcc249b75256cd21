#!/usr/bin/env bash
# The vision tower's int8 GEMM shapes on both kernels (issue 16): bench_vision_kernels BM_PointwiseGemmInt8,
# one thread, REPS repetitions of each, interleaved by Google Benchmark's --benchmark_enable_random_interleaving
# so that a burst of load on a shared machine hits both kernels alike. Prints per shape and epilogue
# (0 product only, 1 + dequantise/GELU/requantise, 2 + dequantise/residual add) the median and best GOP/s
# of oneDNN's matmul_s8 (whole int32 product, then the epilogue) and of amx_s8_gemm (epilogue fused per
# 32 rows), in CPU time, and the best as a share of the per-core tdpbssd peak.
#   bash bench/int8_gemm_rates.sh BUILD_DIR [REPS]        e.g. PEAK_S8=6400 bash bench/int8_gemm_rates.sh build 5
#   FILTER='epilogue:0' restricts the runs (a regex on the benchmark name; 'kernel:1' the AMX kernel only).
# PEAK_S8: the core's tdpbusd peak in GOP/s (bench_peak; default: the AMX Xeon of issue 16).
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
    if b.get("run_type") != "iteration": continue
    args = dict(re.findall(r"(\w+):(\d+)", b["run_name"]))
    shape = f"{args['M']}x{args['K']}:{args['K']}x{args['N']} e{args['epilogue']}"
    rates[(shape, args["kernel"])].append(b["GOP/s"] / 1e9)
print(f"{'MxK:KxN epilogue':24s} {'oneDNN median [best]':>22s} {'amx median [best]':>20s} "
      f"{'amx best % peak':>15s} {'speed-up':>8s}")
for shape in dict.fromkeys(s for s, _ in rates):
    d, a = rates.get((shape, "0"), [float("nan")]), rates.get((shape, "1"), [float("nan")])
    md, ma = statistics.median(d), statistics.median(a)
    print(f"{shape:24s} {md:10.0f} [{max(d):6.0f}] {ma:10.0f} [{max(a):6.0f}] {100 * max(a) / peak:14.1f}% "
          f"{ma / md:7.2f}x")
PY
