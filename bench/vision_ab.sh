#!/usr/bin/env bash
# A/B of the vision tower between two builds on a shared machine: runs bench_vision_tower of build A and
# of build B alternately, ROUNDS times each, and prints per precision and image side the median and range
# of the CPU ms per encode (process CPU time, so other load on the machine inflates it less than wall time),
# of the wall ms (only meaningful on an idle machine) and of each module kind. One thread by default (the
# work itself; OpenMP barrier spinning also counts as CPU time with more threads on a busy machine).
#   bash bench/vision_ab.sh BUILD_A_DIR BUILD_B_DIR [ROUNDS]
#   e.g. bash bench/vision_ab.sh build-base build 5          (THREADS=2 MODEL=... to change)
#        FILTER='precision:1/side:512/' bash bench/vision_ab.sh build-base build 3   (f32 at 512² only;
#        precision 1 f32, 2 bf16, 3 int8; default all of bench_vision_tower's runs)
set -euo pipefail
a=${1:?build dir A}; b=${2:?build dir B}; rounds=${3:-5}
model=${MODEL:-/tmp/fastvlm-bench/fastvlm-0.5b-q8}
threads=${THREADS:-1}
out=$(mktemp -d)
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'); uptime before: $(uptime)" >&2
for round in $(seq "$rounds"); do
  for side in a b; do
    dir=$a; [ "$side" = b ] && dir=$b
    FASTVLM_BENCH_MODEL=$model OMP_NUM_THREADS=$threads "$dir/bin/bench_vision_tower" --benchmark_format=json \
      --benchmark_filter="${FILTER:-.}" > "$out/$side-$round.json" 2>/dev/null
  done
done
echo "uptime after: $(uptime)" >&2
python3 - "$out" "$a" "$b" <<'PY'
import json, glob, statistics, sys, collections
out, names = sys.argv[1], {"a": sys.argv[2], "b": sys.argv[3]}
rows = collections.defaultdict(list)
for path in sorted(glob.glob(out + "/*.json")):
    side = path.split("/")[-1][0]
    for bench in json.load(open(path))["benchmarks"]:
        if bench.get("error_occurred"): continue
        precision = {"1": "f32", "2": "bf16", "3": "int8"}[bench["name"].split("precision:")[1][0]]
        run = f'{precision} {bench["name"].split("side:")[1].split("/")[0]}²'
        rows[(run, "encode_cpu_ms", side)].append(bench["cpu_time"])
        rows[(run, "encode_wall_ms", side)].append(bench["real_time"])
        for key, value in bench.items():
            if key.endswith("_ms"): rows[(run, key, side)].append(value)
for run in sorted({r for (r, k, s) in rows}):
    keys = sorted({k for (r, k, s) in rows if r == run}, key=lambda k: (not k.startswith("encode_"), k))
    for key in keys:
        cells = []
        for side in "ab":
            v = rows.get((run, key, side), [])
            cells.append(f"{names[side]}: {statistics.median(v):8.1f} [{min(v):.1f}-{max(v):.1f}]" if v else f"{names[side]}: -")
        print(f"{run:10} {key:18} " + "   ".join(cells))
PY
rm -r "$out"
