#!/usr/bin/env bash
# Scaling figures for the README: TTFT and vision time by image size, decode time by context length,
# 1 vs 2 threads. Run bench/workload_w.sh first (it writes the checkpoints and the image).
#   bash bench/scaling.sh [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
work=${WORK:-/tmp/fastvlm-bench}
bin=build/bin/fastvlm
model="$work/fastvlm-0.5b-q4"
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(' '.join('%.1f' % d['timings'][k] for k in sys.argv[1:]))" "$@"; }
echo "uptime before: $(uptime)"
echo "## image size -> vision_ms ttft_ms (bf16 vision, q4 LLM, 2 threads)"
for size in 256 512 768 1024 1536; do
  echo "$size $("$bin" bench -m "$model" --image "$work/image-1024.png" --image-size "$size" -n 4 --reps "$reps" \
    --threads 2 --dtype bf16 --json | field vision_ms ttft_ms)"
done
echo "## context -> prefill_ms decode_ms_per_token (text-only prompt of about that many tokens, q4)"
for ctx in 512 2048 8192; do
  prompt=$(python3 -c "print('word ' * ($ctx - 40))")
  echo "$ctx $("$bin" bench -m "$model" -p "$prompt" -n 32 --reps "$reps" --ctx $((ctx + 64)) --threads 2 \
    --dtype bf16 --json | field prefill_ms decode_ms_per_token)"
done
echo "## threads -> vision_ms prefill_ms ttft_ms decode_ms_per_token (workload W, q4)"
for threads in 1 2; do
  echo "$threads $("$bin" bench -m "$model" --image "$work/image-1024.png" -n 32 --reps "$reps" --threads "$threads" \
    --dtype bf16 --json | field vision_ms prefill_ms ttft_ms decode_ms_per_token)"
done
echo "uptime after: $(uptime)"
