#!/usr/bin/env bash
# The GGUF files llama.cpp runs beside fastvlm, on exactly the weights fastvlm runs: Q8_0 and Q4_0 written by
# bench/export_gguf.py straight from our quantised checkpoints (`fastvlm quantize --type q8|q4`: the same codes
# and half scales, only interleaved into ggml's blocks; every linear quantised, lm_head included, the token
# embedding bf16 as in the checkpoint), so neither a bf16 GGUF nor llama.cpp's llama-quantize is needed.
#
# Usage: bench/make_gguf.sh MODEL_DIR OUT_PREFIX [--bf16]
#   reads MODEL_DIR-q8 and MODEL_DIR-q4 (made from the bf16 MODEL_DIR with build/bin/fastvlm quantize when
#   missing) and writes OUT_PREFIX-q8_0.gguf and OUT_PREFIX-q4_0.gguf; --bf16 also writes OUT_PREFIX-bf16.gguf
#   from MODEL_DIR (the LLM half's size again in bf16). Existing files are kept.
#   e.g. bench/make_gguf.sh /tmp/fastvlm-bench/fastvlm-7b /tmp/fastvlm-bench/gguf/fastvlm-7b
# Python standard library only; llama.cpp is not needed to write them (bench/check_gguf.py checks it runs them).
set -euo pipefail
if [ $# -lt 2 ] || [ $# -gt 3 ] || { [ $# -eq 3 ] && [ "$3" != --bf16 ]; }; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
model_dir=${1%/} prefix=$2 bf16=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
fastvlm=$here/../build/bin/fastvlm
mkdir -p "$(dirname "$prefix")"
for type in q8 q4; do
  out=$prefix-${type}_0.gguf
  [ -f "$out" ] && continue
  if [ ! -f "$model_dir-$type/model.safetensors" ]; then
    [ -x "$fastvlm" ] || { echo "make_gguf: no $model_dir-$type and no $fastvlm to make it (build the fastvlm target)" >&2; exit 1; }
    "$fastvlm" quantize -m "$model_dir" -o "$model_dir-$type" --type "$type" >&2
  fi
  python3 "$here/export_gguf.py" "$model_dir-$type" "$out"
done
if [ -n "$bf16" ] && [ ! -f "$prefix-bf16.gguf" ]; then
  python3 "$here/export_gguf.py" "$model_dir" "$prefix-bf16.gguf" --outtype bf16
fi
ls -l "$prefix"-*.gguf
