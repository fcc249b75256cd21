#!/usr/bin/env bash
# What each of the vision tower's GEMM shapes achieves (issue 16: the int8 GEMMs against the AMX peak, the
# f32 ones against the FMA peak): runs bench_vision_tower at one precision and image side, one
# thread, with oneDNN's verbose log, and sums the matmul
# executions of the last of its 4 encodes (1 warm-up + 3 timed) per operand type, oneDNN implementation
# (brg:avx512_core_amx_int8 is the AMX int8 kernel) and shape MxK:KxN: calls, ms, GOP/s (2 ops per
# multiply-accumulate) and the share of this machine's per-core peak. oneDNN's exec times are wall
# times: on a busy machine they include time the thread was not running, so the rates read low there.
#   bash bench/vision_gemm_rates.sh BUILD_DIR [PRECISION [SIDE]]   PRECISION 3 = int8 (default), 2 = bf16,
#                                                                   1 = f32; SIDE 1024 (default) or 512
#   e.g. PEAK_S8=6400 PEAK_BF16=3100 bash bench/vision_gemm_rates.sh build      (MODEL=... for another checkpoint)
#        MODEL=/tmp/fastvlm-bench/fastvlm-0.5b bash bench/vision_gemm_rates.sh build 1 512
# PEAK_S8 / PEAK_BF16 / PEAK_F32: the core's tdpbusd / tdpbf16ps / AVX-512 FMA peaks in GOP/s (defaults: the
# AMX Xeon of issue 16), the BM_Peak/amx_tdpbusd_int8 / amx_tdpbf16ps_bf16 / vfmadd231ps_f32 rows of
# `OMP_NUM_THREADS=1 build/bin/bench_peak`; where AVX-512 is absent (f32 only, PRECISION 1), PEAK_F32 is its
# BM_Peak/avx2_vfmadd231ps_f32 row.
set -euo pipefail
build=${1:?build dir}; precision=${2:-3}; side=${3:-1024}
model=${MODEL:-/tmp/fastvlm-bench/fastvlm-0.5b-q8}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'); uptime before: $(uptime)" >&2
FASTVLM_BENCH_MODEL=$model OMP_NUM_THREADS=1 ONEDNN_VERBOSE=1 \
  "$build/bin/bench_vision_tower" --benchmark_filter="precision:$precision/side:$side/" > "$log" 2>&1
echo "uptime after: $(uptime)" >&2
PEAK_S8=${PEAK_S8:-6400} PEAK_BF16=${PEAK_BF16:-3100} PEAK_F32=${PEAK_F32:-230} python3 - "$log" <<'PY'
import collections, os, sys
lines = [l.strip().split(",") for l in open(sys.argv[1]) if l.startswith("onednn_verbose,exec,cpu,matmul")]
lines = lines[-len(lines) // 4:]  # the last encode
peaks = {"s8": float(os.environ["PEAK_S8"]), "bf16": float(os.environ["PEAK_BF16"]), "f32": float(os.environ["PEAK_F32"])}
rows = collections.defaultdict(lambda: [0, 0.0, 0.0])
for fields in lines:
    implementation, shape, ms = fields[4], fields[-2], float(fields[-1])
    a, b, _ = shape.split(":")
    m, k = map(int, a.split("x"))
    n = int(b.split("x")[1])
    source = next(f for f in fields if f.startswith("src_"))
    kind = source[4:].split(":")[0]
    row = rows[(kind, implementation, shape)]
    row[0] += 1; row[1] += ms; row[2] += 2.0 * m * n * k
total = sum(r[1] for r in rows.values())
print(f"matmul total {total:.1f} ms per encode (wall, one thread)")
print(f"{'type':5s} {'implementation':26s} {'MxK:KxN':28s} {'calls':>6s} {'ms':>7s} {'GOP/s':>7s} {'% peak':>6s} {'us/call':>8s}")
for (kind, implementation, shape), (calls, ms, ops) in sorted(rows.items(), key=lambda item: -item[1][1]):
    rate = ops / ms / 1e6
    peak = f"{100 * rate / peaks[kind]:6.1f}" if kind in peaks else "     -"
    print(f"{kind:5s} {implementation:26s} {shape:28s} {calls:6d} {ms:7.1f} {rate:7.0f} {peak} {1000 * ms / calls:8.1f}")
PY
