#!/usr/bin/env bash
# The GGUF files llama.cpp runs beside fastvlm, all from one bf16 checkpoint: bf16 (bench/export_gguf.py), then
# Q8_0 and pure Q4_0 (every matrix Q4_0, token embedding and output included) with llama.cpp's llama-quantize.
#
# Usage: LLAMA_CPP_DIR=/path/to/llama.cpp bench/make_gguf.sh MODEL_DIR OUT_PREFIX
#   writes OUT_PREFIX-bf16.gguf, OUT_PREFIX-q8_0.gguf, OUT_PREFIX-q4_0-pure.gguf (existing ones are kept).
#   e.g. bench/make_gguf.sh /tmp/fastvlm-bench/fastvlm-0.5b /work/peers/gguf/fastvlm-0.5b
# llama.cpp is built outside this repository (nothing of it is committed); without $LLAMA_CPP_DIR this says so
# and exits 0 having written only the bf16 file.
set -euo pipefail
if [ $# -ne 2 ]; then
  sed -n '2,9p' "$0" >&2
  exit 2
fi
model_dir=$1 prefix=$2
here=$(cd "$(dirname "$0")" && pwd)
[ -f "$prefix-bf16.gguf" ] || python3 "$here/export_gguf.py" "$model_dir" "$prefix-bf16.gguf"
quantize=${LLAMA_CPP_DIR:-}/build/bin/llama-quantize
if [ -z "${LLAMA_CPP_DIR:-}" ] || [ ! -x "$quantize" ]; then
  echo "make_gguf: no llama-quantize at '$quantize' (set LLAMA_CPP_DIR): Q8_0 and Q4_0 skipped"
  exit 0
fi
[ -f "$prefix-q8_0.gguf" ] || "$quantize" "$prefix-bf16.gguf" "$prefix-q8_0.gguf" Q8_0 2
[ -f "$prefix-q4_0-pure.gguf" ] || "$quantize" --pure "$prefix-bf16.gguf" "$prefix-q4_0-pure.gguf" Q4_0 2
ls -l "$prefix"-*.gguf
