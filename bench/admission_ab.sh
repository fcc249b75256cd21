#!/bin/bash
# A/B of issue 12's admission gap between two fastvlm builds: serve_bench.py's admission workload (K text
# streams running when a 1024x1024 image request is admitted; the longest gap between two of their tokens until
# the image's first token), the two binaries alternated run by run, `uptime` before each run.
#
# Usage: bench/admission_ab.sh BASE_FASTVLM NEW_FASTVLM [ROUNDS=3] [K=4] [MODEL=/tmp/fastvlm-bench/fastvlm-0.5b-q8]
#   e.g. bench/admission_ab.sh /work/main/build/bin/fastvlm build/bin/fastvlm 3 4
# Copy the binaries somewhere stable first if a build may run meanwhile. Prints one line per run; take the
# median and range of max_gap_ms per binary.
set -euo pipefail
base=$1 new=$2 rounds=${3:-3} k=${4:-4} model=${5:-/tmp/fastvlm-bench/fastvlm-0.5b-q8}
cd "$(dirname "$0")/.."
for round in $(seq 1 "$rounds"); do
  for label in base new; do
    binary=$base
    [ "$label" = new ] && binary=$new
    echo "=== $label round $round: $(uptime)"
    python3 bench/serve_bench.py --model "q8=$model" --workloads admission --clients "$k" --requests 1 --reps 1 \
      --fastvlm "$binary" | grep -E "admission N="
  done
done
echo "=== end: $(uptime)"
