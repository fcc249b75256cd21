#!/usr/bin/env bash
# Where a quantised prefill spends its time: perf samples (one thread) of BM_LlmPrefill280 (280 positions
# through the LLM), the self time of the busiest functions as shares of their sum, with model loading's
# functions (quantise-at-load, conversions, page faults) left out. Run it for two builds to compare the
# breakdown (absolute CPU times: bench/amx_prefill_ab.sh).
#
# usage: bench/prefill_profile.sh BUILD_DIR [MODEL_DIR...]
#   BUILD_DIR   a build directory holding bin/bench_llm_kernels
#   MODEL_DIR   default: /tmp/fastvlm-bench/fastvlm-0.5b-q8 /tmp/fastvlm-bench/fastvlm-0.5b-q4
#   needs perf (linux-perf) and kernel.perf_event_paranoid <= 2
set -euo pipefail
[[ $# -ge 1 ]] || { sed -n '2,10p' "$0"; exit 2; }
build=$1
shift
models=("$@")
[[ ${#models[@]} -gt 0 ]] || models=(/tmp/fastvlm-bench/fastvlm-0.5b-q8 /tmp/fastvlm-bench/fastvlm-0.5b-q4)
data=$(mktemp)
trap 'rm -f "$data"' EXIT
lscpu | grep 'Model name'
uptime
for model in "${models[@]}"; do
  echo "== $build $model"
  FASTVLM_BENCH_LLM_MODELS=$model:auto OMP_NUM_THREADS=1 perf record -q -o "$data" -F 2000 \
    "$build/bin/bench_llm_kernels" --benchmark_filter='BM_LlmPrefill280/' 2>&1 | grep '^BM_'
  perf report -i "$data" --no-children --sort symbol -n -F sample,sym 2>/dev/null | grep -v '^#' | grep -v '^$' |
    grep -vE 'convert_to_f32|quant_row_avx512|quantize_matrix|clear_page|page_fault|pte_offset|unmap_page|folio|memcg|_raw_spin|fold_layer_scale|0x0000' |
    sort -rn | head -14 | python3 -c '
import sys
rows = [(int(l.split()[0]), " ".join(l.split()[2:]).replace("fastvlm::(anonymous namespace)::", "").rstrip(" -"))
        for l in sys.stdin]
total = sum(n for n, _ in rows)
for n, name in rows: print(f"  {100 * n / total:5.1f}%  {name[:90]}")'
done
uptime
