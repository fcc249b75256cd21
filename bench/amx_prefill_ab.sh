#!/usr/bin/env bash
# A/B of quantised prefill between two builds on a CPU with AMX: whole-model prefill of 280 positions
# (BM_LlmPrefill280, the LLM only) for each model, then `fastvlm bench` end to end (prefill_ms of the
# workload-W image prompt, or a text-only prompt for models without one), the builds alternated REPS times.
# Single-threaded by default so that a busy machine disturbs the comparison least; read the CPU column
# and the user+sys seconds of /usr/bin/time. The kernels alone: bench_llm_kernels
# --benchmark_filter='BM_Prefill(Gemm|Rows)_q[48]_0_(vnni|amx)' (the amx route against the int8 one).
#
# usage: bench/amx_prefill_ab.sh BUILD_A BUILD_B [MODEL_DIR...]
#   BUILD_A/B   build directories holding bin/bench_llm_kernels and bin/fastvlm (e.g. /work/main/build, build)
#   MODEL_DIR   default: /tmp/fastvlm-bench/fastvlm-0.5b-q8 /tmp/fastvlm-bench/fastvlm-0.5b-q4
#   env: REPS (default 3), OMP_NUM_THREADS (default 1), IMAGE (default /tmp/fastvlm-bench/image-1024.png;
#        empty for a text-only prompt)
set -euo pipefail
source "$(dirname "$0")/ab_builds.sh"
ab_setup '2,14p' "$@"
image=${IMAGE-/tmp/fastvlm-bench/image-1024.png}
for model in "${models[@]}"; do
  for rep in $(seq "${REPS:-3}"); do
    for build in "$build_a" "$build_b"; do
      echo "== $build $model rep $rep"
      FASTVLM_BENCH_LLM_MODELS=$model "$build/bin/bench_llm_kernels" --benchmark_filter='BM_LlmPrefill280/' 2>&1 |
        grep '^BM_'
      /usr/bin/time -f 'user+sys %U+%S s' "$build/bin/fastvlm" bench -q -m "$model" ${image:+--image "$image"} \
        -n 8 --reps 3 --no-accuracy --json |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print("prefill_ms", round(d["timings"]["prefill_ms"], 1), d["timings_min_max"]["prefill_ms"], "prompt_tokens", d["prompt_tokens"])'
    done
  done
done
uptime
