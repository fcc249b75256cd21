#!/usr/bin/env bash
# A/B of workload W (bench/workload_w.sh makes the checkpoints) between two builds: `fastvlm bench` of
# build A and of build B alternately, ROUNDS times each per --dtype, 2 threads; prints per dtype and build
# the medians [min-max] of vision_ms, prefill_ms and ttft_ms (wall, each the median of REPS encodes) and
# of the whole process's CPU seconds (user + sys, which includes the load), then each build's accuracy
# against the f32 model (one --reference run each).
#   bash bench/workload_ab.sh BUILD_A_DIR BUILD_B_DIR [ROUNDS] [REPS]
#   e.g. bash bench/workload_ab.sh build-base build 5 3       (DTYPES="int8 bf16" WORK=/tmp/fastvlm-bench)
set -euo pipefail
a=${1:?build dir A}; b=${2:?build dir B}; rounds=${3:-5}; reps=${4:-3}
work=${WORK:-/tmp/fastvlm-bench}
dtypes=${DTYPES:-int8 bf16}
out=$(mktemp -d)
common=(-m "$work/fastvlm-0.5b-q8" --image "$work/image-1024.png" -p "Describe the image." -n 8 --threads 2 --json)
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'); uptime before: $(uptime)" >&2
for round in $(seq "$rounds"); do
  for dtype in $dtypes; do
    for side in a b; do
      dir=$a; [ "$side" = b ] && dir=$b
      /usr/bin/time -f "%U %S" -o "$out/$dtype-$side-$round.time" \
        "$dir/bin/fastvlm" bench "${common[@]}" --reps "$reps" --dtype "$dtype" --no-accuracy \
        > "$out/$dtype-$side-$round.json" 2>/dev/null
    done
  done
done
for dtype in $dtypes; do
  for side in a b; do
    dir=$a; [ "$side" = b ] && dir=$b
    "$dir/bin/fastvlm" bench "${common[@]}" --reps 1 --dtype "$dtype" --reference "$work/fastvlm-0.5b" \
      > "$out/$dtype-$side-accuracy.json" 2>/dev/null
  done
done
echo "uptime after: $(uptime)" >&2
python3 - "$out" "$a" "$b" "$dtypes" <<'PY'
import json, glob, statistics, sys
out, names, dtypes = sys.argv[1], {"a": sys.argv[2], "b": sys.argv[3]}, sys.argv[4].split()
def fmt(v): return f"{statistics.median(v):8.1f} [{min(v):.1f}-{max(v):.1f}]"
for dtype in dtypes:
    for side in "ab":
        runs = sorted(glob.glob(f"{out}/{dtype}-{side}-[0-9]*.json"))
        timings = [json.load(open(r))["timings"] for r in runs]
        cpu = [sum(map(float, open(r[:-5] + ".time").read().split())) for r in runs]
        accuracy = json.load(open(f"{out}/{dtype}-{side}-accuracy.json"))["accuracy"]
        print(f"{dtype:5} {names[side]:12} vision_ms {fmt([t['vision_ms'] for t in timings])}  "
              f"prefill_ms {fmt([t['prefill_ms'] for t in timings])}  ttft_ms {fmt([t['ttft_ms'] for t in timings])}  "
              f"process_cpu_s {fmt(cpu)}")
        print(f"{'':18} accuracy: image_embeds_rel_err {accuracy['image_embeds_rel_err']:.2e}, "
              f"logit_rel_rms_max {accuracy['logit_rel_rms_max']:.4f}, "
              f"top1 {accuracy['top1_agreement']}/{accuracy['steps']}, greedy_prefix {accuracy['greedy_prefix']}")
PY
rm -r "$out"
