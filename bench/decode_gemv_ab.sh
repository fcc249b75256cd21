#!/usr/bin/env bash
# A/B of single-sequence decoding between two builds, the builds alternated REPS times:
#   1. BM_Gemv_q8_0 / BM_Gemv_q4_0 (one decode GEMV at the Qwen2-0.5B shapes, weights from DRAM) and
#      BM_GemvCached_q8_0 / _q4_0 (896x896 from L2: the kernel's arithmetic cost, which a busy machine's
#      memory traffic disturbs least), with GB/s recomputed from the CPU time column (the benchmark's own
#      GB/s counter uses wall time);
#   2. BM_LlmDecodeStep (one decode step at context 280, lm_head included) for each model, CPU ms;
# both with OMP_NUM_THREADS=1 by default, so that a busy machine disturbs the comparison least; then
#   3. with WHOLE=1: `fastvlm bench` decode ms/token on 2 threads (only meaningful on an idle machine).
#
# usage: bench/decode_gemv_ab.sh BUILD_A BUILD_B [MODEL_DIR...]
#   BUILD_A/B   build directories holding bin/bench_llm_kernels and bin/fastvlm
#   MODEL_DIR   default: /tmp/fastvlm-bench/fastvlm-0.5b-q8 /tmp/fastvlm-bench/fastvlm-0.5b-q4
#   env: REPS (default 3), OMP_NUM_THREADS (default 1), WHOLE (default 0), IMAGE (default
#        /tmp/fastvlm-bench/image-1024.png), GEMV_FILTER (benchmark regex, default all BM_Gemv_q and BM_GemvCached_q shapes;
#        each shape first quantises ~512 MB of weight copies, so '/(4864/896|151936/896)' saves minutes)
set -euo pipefail
source "$(dirname "$0")/ab_builds.sh"
ab_setup '2,15p' "$@"
# Weight bytes per call of each BM_Gemv shape: codes + one f16 scale per 32 weights.
gemv_gbs='/^BM_Gemv(Cached)?_q/ { split($1, f, "/"); rows = f[3]; cols = f[4]; perw = (f[1] ~ /q8_0/) ? 1 : 0.5;
  bytes = rows * cols * perw + rows * cols / 16; printf "%-40s cpu %9.1f us  %6.2f GB/s\n", $1, $4, bytes / ($4 * 1e3) }'
for rep in $(seq "${REPS:-3}"); do
  for build in "$build_a" "$build_b"; do
    echo "== $build rep $rep: BM_Gemv"
    "$build/bin/bench_llm_kernels" --benchmark_filter="BM_Gemv(Cached)?_q.*${GEMV_FILTER:-}" | awk "$gemv_gbs"
  done
done
ab_llm_kernels 'BM_LlmDecodeStep/'
if [[ ${WHOLE:-0} == 1 ]]; then
  for model in "${models[@]}"; do
    for rep in $(seq "${REPS:-3}"); do
      for build in "$build_a" "$build_b"; do
        echo "== $build rep $rep: fastvlm bench $model (2 threads)"
        OMP_NUM_THREADS=2 "$build/bin/fastvlm" bench -m "$model" --image "${IMAGE:-/tmp/fastvlm-bench/image-1024.png}" \
          --dtype int8 --no-accuracy --reps 3 -n 32 2>&1 | grep -iE 'decode|ms/token' || true
      done
    done
  done
fi
uptime
