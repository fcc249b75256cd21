#!/usr/bin/env bash
# Two fastvlm builds on workload W with no --dtype (each build's default), run alternately PAIRS times:
# TTFT and decode ms/token (the bench's medians over its repetitions), and the CPU time (user + sys) of the
# whole run, which a busy machine inflates less than wall time. Checkpoints and image as bench/workload_w.sh
# makes them.
#   bash bench/default_ab.sh OLD_BIN NEW_BIN [PAIRS] [REPS]     (e.g. a build of main, then build/bin/fastvlm)
set -euo pipefail
old=$1 new=$2 pairs=${3:-3} reps=${4:-3}
work=${WORK:-/tmp/fastvlm-bench}
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'); $(nproc) cores"
echo "uptime before: $(uptime)"
printf '%-4s %-5s %10s %10s %12s %10s  %s\n' run build ttft_ms vision_ms decode_ms/t cpu_s precision
for pair in $(seq "$pairs"); do
  for build in old new; do
    bin=${!build}
    log=$(mktemp)
    /usr/bin/time -f '%U %S' -o "$log" "$bin" bench -m "$work/fastvlm-0.5b" --image "$work/image-1024.png" \
      -p "Describe the image." -n 64 --reps "$reps" --threads 2 --no-accuracy --json > "$log.json"
    python3 - "$log" "$log.json" "$pair" "$build" <<'PY'
import json, sys
user, sys_s = map(float, open(sys.argv[1]).read().split()[-2:])
out = json.load(open(sys.argv[2]))
t = out["timings"]
print("%-4s %-5s %10.0f %10.0f %12.2f %10.1f  %s" % (sys.argv[3], sys.argv[4], t["ttft_ms"], t["vision_ms"],
      t["decode_ms_per_token"], user + sys_s, out.get("precision", "(f32: no auto then)")))
PY
    rm -f "$log" "$log.json"
  done
done
echo "uptime after: $(uptime)"
