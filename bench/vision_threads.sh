#!/usr/bin/env bash
# How the vision tower scales from one thread to several (issue 16: the f32 tower against ONNX Runtime at 2
# threads), module kind by module kind: runs bench_vision_tower at 1 and at THREADS threads alternately,
# ROUNDS times each, and prints per module kind the median [min - max] wall ms at 1 thread and at THREADS,
# their ratio (the speed-up; THREADS is ideal) and the CPU ms at THREADS (its excess over the 1-thread
# figure is work the threads add: copies, memory contention, spinning at barriers). Wall times need an idle
# machine: on a busy one, the lead's idle re-measurement is the one to read. GOMP_SPINCOUNT=1000 is the
# fastvlm CLI's default (tools/main.cpp), so the figures are those of `fastvlm bench` and bench/peers.sh.
#   bash bench/vision_threads.sh BUILD_DIR [ROUNDS] [PRECISION] [SIDE]   PRECISION 1 = f32 (default),
#                                                                        2 = bf16, 3 = int8; SIDE 1024 or 512
#   e.g. bash bench/vision_threads.sh build 5 1 512        (THREADS=2 MODEL=/tmp/fastvlm-bench/fastvlm-0.5b)
set -euo pipefail
build=${1:?build dir}; rounds=${2:-3}; precision=${3:-1}; side=${4:-1024}
model=${MODEL:-/tmp/fastvlm-bench/fastvlm-0.5b}
threads=${THREADS:-2}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'); uptime before: $(uptime)" >&2
for round in $(seq "$rounds"); do
  for t in 1 "$threads"; do
    GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-1000} FASTVLM_BENCH_MODEL=$model OMP_NUM_THREADS=$t \
      "$build/bin/bench_vision_tower" --benchmark_format=json \
      --benchmark_filter="precision:$precision/side:$side/" > "$out/$t-$round.json" 2>/dev/null
  done
done
echo "uptime after: $(uptime)" >&2
python3 - "$out" "$threads" <<'PY'
import json, glob, statistics, sys, collections
out, threads = sys.argv[1], sys.argv[2]
rows = collections.defaultdict(list)  # (kind, threads, "wall"|"cpu") -> values
for path in glob.glob(out + "/*.json"):
    t = path.split("/")[-1].split("-")[0]
    for bench in json.load(open(path))["benchmarks"]:
        rows[("encode", t, "wall")].append(bench["real_time"])
        rows[("encode", t, "cpu")].append(bench["cpu_time"])
        for key, value in bench.items():
            if key.endswith("_wall_ms"): rows[(key[:-len("_wall_ms")], t, "wall")].append(value)
            elif key.endswith("_ms"): rows[(key[:-len("_ms")], t, "cpu")].append(value)
fmt = lambda v: f"{statistics.median(v):7.1f} [{min(v):.0f}-{max(v):.0f}]"
print(f"{'module kind':14s} {'wall 1 thread':>20s} {'wall ' + threads + ' threads':>20s} {'speed-up':>8s} "
      f"{'cpu ' + threads + ' threads':>20s}")
kinds = sorted({k for (k, t, m) in rows}, key=lambda k: (k != "encode", k))
for kind in kinds:
    one, many, cpu = rows[(kind, "1", "wall")], rows[(kind, threads, "wall")], rows[(kind, threads, "cpu")]
    if not one or not many: continue
    print(f"{kind:14s} {fmt(one):>20s} {fmt(many):>20s} {statistics.median(one) / statistics.median(many):8.2f} "
          f"{fmt(cpu):>20s}")
PY
