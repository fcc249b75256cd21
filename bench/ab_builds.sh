# Sourced (not run) by the A/B scripts that alternate two builds over model directories: batched_decode_ab.sh,
# decode_gemv_ab.sh, amx_prefill_ab.sh, weight_pages.sh.

# ab_setup USAGE_LINES "$@": reads BUILD_A BUILD_B [MODEL_DIR...] (else prints the calling script's header
# lines USAGE_LINES, e.g. '2,10p', and exits 2); sets build_a, build_b, models (default: workload W's q8 and q4
# checkpoints, bench/workload_w.sh) and OMP_NUM_THREADS (default 1, so that a busy machine disturbs the
# comparison least); names the machine and its load.
ab_setup() {
  local usage_lines=$1
  shift
  [[ $# -ge 2 ]] || { sed -n "$usage_lines" "$0"; exit 2; }
  build_a=$1 build_b=$2
  shift 2
  models=("$@")
  [[ ${#models[@]} -gt 0 ]] || models=(/tmp/fastvlm-bench/fastvlm-0.5b-q8 /tmp/fastvlm-bench/fastvlm-0.5b-q4)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  lscpu | grep 'Model name'
  uptime
}

# ab_llm_kernels FILTER: bench_llm_kernels --benchmark_filter=FILTER of both builds on each model, the builds
# alternated REPS times (default 3); prints the benchmark lines (read the CPU column).
ab_llm_kernels() {
  local filter=$1 model rep build
  for model in "${models[@]}"; do
    for rep in $(seq "${REPS:-3}"); do
      for build in "$build_a" "$build_b"; do
        echo "== $build $model rep $rep"
        FASTVLM_BENCH_LLM_MODELS=$model "$build/bin/bench_llm_kernels" --benchmark_filter="$filter" | grep '^BM_'
      done
    done
  done
}
