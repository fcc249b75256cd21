#!/usr/bin/env bash
# Where a quantised checkpoint's codes live, A/B: two builds run alternately on the same checkpoints, e.g.
# one that multiplies the codes in the file mapping (4 KiB page-cache pages) and one that copies them onto
# huge pages at load (core/weight_arena.h): whole-model prefill of 280 positions and one decode step
# (BM_LlmPrefill, BM_LlmDecodeStep), single-thread CPU time (read the CPU column; median the rounds).
#
# usage: bench/weight_pages.sh BUILD_A BUILD_B [MODEL_DIR...]
#   BUILD_A/B   build directories holding bin/bench_llm_kernels
#   MODEL_DIR   default: /tmp/fastvlm-bench/fastvlm-0.5b-q8 /tmp/fastvlm-bench/fastvlm-0.5b-q4 (bench/workload_w.sh)
#   env: REPS (default 5), OMP_NUM_THREADS (default 1)
# Load time and peak RSS come from `/usr/bin/time -v BUILD/bin/fastvlm bench -m MODEL_DIR --image IMAGE
# --no-accuracy --reps 3 -n 32`, run alternately with the two builds.
set -euo pipefail
source "$(dirname "$0")/ab_builds.sh"
ab_setup '2,12p' "$@"
REPS=${REPS:-5} ab_llm_kernels 'BM_LlmPrefill|BM_LlmDecodeStep'
uptime
