#!/usr/bin/env bash
# Accuracy of the fast paths against the float32 reference on the tiny fixture (random weights): for each
# golden image with the goldens' prompt, `fastvlm bench --reference <fixture> --json` over N greedy steps,
# one line per configuration. q8 and q4 run with bf16 vision as in bench/workload_w.sh, so the lines match
# its speed figures. Logit error: rms(diff) / rms(f32) per teacher-forced step, mean and max; top-1: steps
# with the same argmax; prefix: identical leading tokens of free-running greedy; embeds: max|diff| / max|f32|.
#   bash bench/accuracy.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-16}
bin=${BIN:-build/bin/fastvlm}
fixture=${FASTVLM_SHARED_DIR:-../shared}/fixtures/tiny-fastvlm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for type in q8 q4; do "$bin" quantize -m "$fixture" -o "$work/$type" --type "$type" >/dev/null; done
summary() {
  python3 -c 'import json, sys
a = json.load(sys.stdin)["accuracy"]
print("%.2e  %.2e  %5s  %6s  %.2e" % (a["logit_rel_rms_mean"], a["logit_rel_rms_max"],
      "%d/%d" % (a["top1_agreement"], a["steps"]), "%d/%d" % (a["greedy_prefix"], a["steps"]), a["image_embeds_rel_err"]))'
}
printf '%-20s %-12s %-8s %-9s %-9s %5s  %6s  %s\n' image config dtype rms_mean rms_max top1 prefix embeds
for image in image_a_320x200.png image_b_97x131.jpg; do
  for run in "bf16 bf16 $fixture" "int8-vision int8 $fixture" "q8 bf16 $work/q8" "q4 bf16 $work/q4" "int8+q8 int8 $work/q8"; do
    set -- $run
    printf '%-20s %-12s %-8s %s\n' "$image" "$1" "$2" "$("$bin" bench -m "$3" --dtype "$2" --reference "$fixture" \
      --image "$fixture/golden/$image" -p "Describe the image." -n "$steps" --reps 1 --json | summary)"
  done
done
