#!/usr/bin/env bash
# A/B of the vision tower's encode between two builds on a busy machine: runs bench_vision_tower of build A
# and build B alternately, ROUNDS times each, at one precision and image side, and prints each run's
# per-encode process CPU time and wall time (3 timed encodes after a warm-up, checkpoint loading left out),
# then the medians and min-max per build. CPU time is the figure to compare while other work shares the
# cores; wall time only means something on an idle machine.
#   bash bench/vision_tower_ab.sh A_BIN_DIR B_BIN_DIR [PRECISION] [SIDE] [ROUNDS] [THREADS]
#   e.g. bash bench/vision_tower_ab.sh /tmp/base/bin build/bin 1 512 3 2    (PRECISION 1 f32, 2 bf16, 3 int8)
# MODEL=... picks the checkpoint (default /tmp/fastvlm-bench/fastvlm-0.5b, bench/workload_w.sh makes it).
set -euo pipefail
a=${1:?A bin dir}; b=${2:?B bin dir}; precision=${3:-1}; side=${4:-1024}; rounds=${5:-3}; threads=${6:-2}
model=${MODEL:-/tmp/fastvlm-bench/fastvlm-0.5b}
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'); uptime before: $(uptime)"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in $(seq "$rounds"); do
  for side_name in A B; do
    dir=$a; [ "$side_name" = B ] && dir=$b
    FASTVLM_BENCH_MODEL=$model OMP_NUM_THREADS=$threads "$dir/bench_vision_tower" \
      --benchmark_filter="precision:$precision/side:$side/" --benchmark_format=json 2>/dev/null |
      python3 -c 'import json,sys; r=json.load(sys.stdin)["benchmarks"][0]; print(sys.argv[1], r["cpu_time"], r["real_time"])' \
        "$side_name" | tee -a "$results"
  done
done
echo "uptime after: $(uptime)"
python3 - "$results" <<'PY'
import sys, statistics
runs = {}
for line in open(sys.argv[1]):
    name, cpu, wall = line.split()
    runs.setdefault(name, []).append((float(cpu), float(wall)))
for name, values in sorted(runs.items()):
    cpu = [v[0] for v in values]; wall = [v[1] for v in values]
    print(f"{name}: CPU ms/encode median {statistics.median(cpu):.0f} (min {min(cpu):.0f}, max {max(cpu):.0f}); "
          f"wall median {statistics.median(wall):.0f} (min {min(wall):.0f}, max {max(wall):.0f})")
if "A" in runs and "B" in runs:
    print(f"B/A CPU time: {statistics.median(v[0] for v in runs['B']) / statistics.median(v[0] for v in runs['A']):.3f}")
PY
