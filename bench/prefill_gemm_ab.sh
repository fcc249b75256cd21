#!/usr/bin/env bash
# A/B of the int8 prefill GEMM (linear_quant) between two builds, the builds alternated REPS times:
#   1. BM_PrefillGemm_q8_0_int8 / _q4_0_int8 (280 rows, the Qwen2-0.5B shapes): GFLOP/s recomputed from the
#      CPU time column, median [min-max] per build, and the median as a share of bench_peak's int8 row of
#      this core (avx2_maddubs_int8 or vpdpbusd_int8, CPU time, measured in the same alternation);
#   2. BM_LlmPrefill280 (280 positions through the LLM) for each model: CPU ms median [min-max];
# both with OMP_NUM_THREADS=1 by default, so that a busy machine disturbs the comparison least; then
#   3. with WHOLE=1: `fastvlm bench` prefill_ms (the workload-W image prompt, 2 threads), median [min-max]
#      (only meaningful on an idle machine).
#
# usage: bench/prefill_gemm_ab.sh BUILD_A BUILD_B [MODEL_DIR...]
#   BUILD_A/B   build directories holding bin/bench_llm_kernels, bin/bench_peak and bin/fastvlm
#   MODEL_DIR   default: /tmp/fastvlm-bench/fastvlm-0.5b-q8 /tmp/fastvlm-bench/fastvlm-0.5b-q4
#   env: REPS (default 3), OMP_NUM_THREADS (default 1), WHOLE (default 0), IMAGE (default
#        /tmp/fastvlm-bench/image-1024.png)
set -euo pipefail
source "$(dirname "$0")/ab_builds.sh"
ab_setup '2,15p' "$@"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for rep in $(seq "${REPS:-3}"); do
  for build in "$build_a" "$build_b"; do
    "$build/bin/bench_peak" --benchmark_filter='(avx2_maddubs|vpdpbusd)_int8' 2>/dev/null | grep -v ERROR |
      awk -v b="$build" '/^BM_Peak/ { for (i = 1; i <= NF; ++i) if ($i ~ /^GFLOP\/s=/) { sub(/GFLOP\/s=/, "", $i);
        sub(/G\/s/, "", $i); print b, "peak", $i } }' >> "$out"
    "$build/bin/bench_llm_kernels" --benchmark_filter='BM_PrefillGemm_q[48]_0_int8' 2>/dev/null | grep '^BM_' |
      sed "s|^|$build gemm |" >> "$out"
    for model in "${models[@]}"; do
      FASTVLM_BENCH_LLM_MODELS=$model "$build/bin/bench_llm_kernels" --benchmark_filter='BM_LlmPrefill280/' \
        --benchmark_min_time=1 2>/dev/null | grep '^BM_' | sed "s|^|$build prefill $(basename "$model") |" >> "$out"
    done
    if [[ ${WHOLE:-0} == 1 ]]; then
      for model in "${models[@]}"; do
        OMP_NUM_THREADS=2 "$build/bin/fastvlm" bench -q -m "$model" --image "${IMAGE:-/tmp/fastvlm-bench/image-1024.png}" \
          -n 1 --reps 1 --no-accuracy --json |
          python3 -c 'import json,sys; print(json.load(sys.stdin)["timings"]["prefill_ms"])' |
          sed "s|^|$build whole $(basename "$model") |" >> "$out"
      done
    fi
  done
done
python3 - "$out" "$build_a" "$build_b" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    build, kind = f[0], f[1]
    if kind == "peak":
        rows[("bench_peak int8 GFLOP/s", build)].append(float(f[2]))
    elif kind == "gemm":  # name real unit cpu unit ...
        n, k, m = map(int, f[2].split("/")[1:4])
        seconds = float(f[5]) * {"ms": 1e-3, "us": 1e-6, "s": 1.0}[f[6]]
        rows[(f[2].split("/real")[0] + " GFLOP/s", build)].append(2 * n * k * m / seconds / 1e9)
    elif kind == "prefill":
        rows[(f"BM_LlmPrefill280 {f[2]} cpu ms", build)].append(float(f[6]))
    else:
        rows[(f"fastvlm bench {f[2]} prefill_ms", build)].append(float(f[3]))
peak = {b: statistics.median(rows[("bench_peak int8 GFLOP/s", b)]) for b in sys.argv[2:]
        if rows[("bench_peak int8 GFLOP/s", b)]}
names = list(dict.fromkeys(name for name, _ in rows))
for name in names:
    cells = []
    for b in sys.argv[2:]:
        v = sorted(rows[(name, b)])
        if not v: continue
        med = statistics.median(v)
        share = f" = {100 * med / peak[b]:.0f}% of peak" if name.startswith("BM_PrefillGemm") and b in peak else ""
        cells.append(f"{med:8.1f} [{v[0]:.1f}-{v[-1]:.1f}]{share}")
    print(f"{name:48s} " + "   ".join(cells))
PY
uptime
