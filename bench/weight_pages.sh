#!/bin/bash
# Where a quantised checkpoint's codes live, A/B: two builds run alternately on the same checkpoint, e.g.
# one that multiplies the codes in the file mapping (4 KiB page-cache pages) and one that copies them onto
# huge pages at load (core/weight_arena.h).
#
# usage: bench/weight_pages.sh BENCH_LLM_KERNELS_A BENCH_LLM_KERNELS_B [MODEL_DIR] [ROUNDS]
#   MODEL_DIR defaults to /tmp/fastvlm-bench/fastvlm-0.5b-q8 (bench/workload_w.sh), ROUNDS to 5.
# Prints one line per run: build, round, benchmark, single-thread CPU time (OMP_NUM_THREADS=1, so a busy
# machine's time slicing does not count; median the rounds). Load time and peak RSS come from
#   /usr/bin/time -v fastvlm bench -m MODEL_DIR --image IMAGE --no-accuracy --reps 3 -n 32
# run alternately with the two builds' fastvlm.
set -euo pipefail
a=$1 b=$2 model=${3:-/tmp/fastvlm-bench/fastvlm-0.5b-q8} rounds=${4:-5}
for round in $(seq "$rounds"); do
  for build in "$a" "$b"; do
    OMP_NUM_THREADS=1 FASTVLM_BENCH_LLM_MODELS="$model" "$build" \
      --benchmark_filter='BM_LlmPrefill|BM_LlmDecodeStep' 2>/dev/null |
      awk -v build="$build" -v round="$round" '/^BM_/ {print build, round, $1, $4, $5}'
  done
done
