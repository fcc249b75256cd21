#!/usr/bin/env bash
# A/B of batched decoding between two builds: BM_LlmDecodeBatch (one TextDecoder::forward_batch step of B
# sequences at depth 128; tokens/s over the batch) for B = 1, 2, 4, 8, 16, the builds alternated REPS times.
# Single-threaded by default so that a busy machine disturbs the comparison least; read the CPU column.
#
# usage: bench/batched_decode_ab.sh BUILD_A BUILD_B [MODEL_DIR...]
#   BUILD_A/B   build directories holding bin/bench_llm_kernels (e.g. a main checkout's build and this one's)
#   MODEL_DIR   default: /tmp/fastvlm-bench/fastvlm-0.5b-q8 /tmp/fastvlm-bench/fastvlm-0.5b-q4
#   env: REPS (default 3), OMP_NUM_THREADS (default 1)
set -euo pipefail
source "$(dirname "$0")/ab_builds.sh"
ab_setup '2,10p' "$@"
ab_llm_kernels 'BM_LlmDecodeBatch/'
uptime
