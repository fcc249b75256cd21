#!/usr/bin/env bash
# Workload W of issue 5: FastVLM-0.5B dims (random weights), a 1024x1024 image (256 image tokens), the
# qwen_2 prompt "Describe the image." (280 positions), 64 new tokens, 2 threads; `fastvlm bench --json`
# for f32, bf16, q8 and q4 LLM weights, and the int8 vision path with q8 and q4. Writes its checkpoints under $WORK (default /tmp/fastvlm-bench).
#   bash bench/workload_w.sh [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
work=${WORK:-/tmp/fastvlm-bench}
bin=build/bin/fastvlm
shared=${FASTVLM_SHARED_DIR:-../shared}
mkdir -p "$work"
[ -f "$work/fastvlm-0.5b/model.safetensors" ] ||
  python3 bench/make_checkpoint.py --preset 0.5b --out "$work/fastvlm-0.5b" --tokenizer-from "$shared/fixtures/tiny-fastvlm"
for type in q8 q4; do
  [ -f "$work/fastvlm-0.5b-$type/model.safetensors" ] || "$bin" quantize -m "$work/fastvlm-0.5b" -o "$work/fastvlm-0.5b-$type" --type "$type"
done
# A 1024x1024 RGB gradient PNG, written with the standard library alone.
[ -f "$work/image-1024.png" ] || python3 - "$work/image-1024.png" <<'PY'
import struct, sys, zlib
w = h = 1024
rows = b"".join(b"\0" + bytes(v for x in range(w) for v in ((x * 255) // w, (y * 255) // h, (x ^ y) & 255)) for y in range(h))
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                              + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))
PY
echo "uptime before: $(uptime)" >&2
for run in "f32 fastvlm-0.5b" "bf16 fastvlm-0.5b" "bf16 fastvlm-0.5b-q8" "bf16 fastvlm-0.5b-q4" "int8 fastvlm-0.5b-q8" "int8 fastvlm-0.5b-q4"; do
  set -- $run
  # Each configuration also reports its logit error and greedy agreement against the f32 model.
  echo "{\"dtype\": \"$1\", \"model\": \"$2\", \"bench\": $("$bin" bench -m "$work/$2" --image "$work/image-1024.png" \
    -p "Describe the image." -n 64 --reps "$reps" --threads 2 --dtype "$1" --reference "$work/fastvlm-0.5b" --json)}"
done
echo "uptime after: $(uptime)" >&2
