#!/usr/bin/env bash
# Where the vision tower's CPU time goes, by kind of work (issue 16: the memory-bound parts against the
# GEMMs): perf samples of bench_vision_tower at one precision, one thread, grouped into oneDNN GEMMs (its
# JIT code), the spatial convs, the epilogues and other element-wise passes, as shares of the encode's
# samples (loading the checkpoint, page faults and allocation are left out of the total), then the
# element-wise symbols one by one, each also as CPU ms per encode. oneDNN names its JIT code for perf (DNNL_JIT_PROFILE=2), so its
# copies of operands into its blocked layouts (brgemm's copy_a/copy_b) show apart from the products; its
# reorders only pack weights at load, so they count as loading, as do AmxS8Weights' packing and PackedWeights'
# own VNNI packing (pack_vnni_s8_blocks); amx_s8_gemm's tile products (the int8 GEMMs where the CPU has
# AMX-INT8) show as a kind of their own, as do avx2_f32_gemm's (the float32 products at the AVX2 level; its
# packing at load counts as loading).
# Needs perf; one run of the benchmark (1 warm-up + 3 timed encodes).
#   bash bench/vision_profile.sh BUILD_DIR [PRECISION] [SIDE]   PRECISION 3 = int8 (default), 2 = bf16,
#                                                               1 = f32; SIDE 1024 (default) or 512 (f32)
#   e.g. bash bench/vision_profile.sh build                     (MODEL=... for another checkpoint)
#        MODEL=/tmp/fastvlm-bench/fastvlm-0.5b bash bench/vision_profile.sh build 1 512
set -euo pipefail
build=${1:?build dir}; precision=${2:-3}; side=${3:-1024}
model=${MODEL:-/tmp/fastvlm-bench/fastvlm-0.5b-q8}
data=$(mktemp --suffix=.perf)
trap 'rm -f "$data"' EXIT
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'); uptime before: $(uptime)" >&2
FASTVLM_BENCH_MODEL=$model OMP_NUM_THREADS=1 DNNL_JIT_PROFILE=2 perf record -F 1999 -o "$data" \
  "$build/bin/bench_vision_tower" --benchmark_filter="precision:$precision/side:$side" >/dev/null 2>&1
echo "uptime after: $(uptime)" >&2
perf report -i "$data" -n --no-children --sort dso,sym --stdio -g none 2>/dev/null | python3 -c '
import re, sys, collections
setup = ("convert_to_f32", "fold_layer_scale", "load_grouped_conv", "scale_outputs", "malloc", "free", "unlink_chunk",
         "AmxS8Weights::AmxS8Weights", "Avx2F32Weights::Avx2F32Weights", "pack_vnni_s8_blocks")
spatial = ("depthwise_", "dense_block", "dense_rows", "generic_conv")
elementwise = ("quantize", "row_abs_max", "row_max", "softmax", "gelu", "memmove", "memcpy", "memset", "split_heads", "layer_norm",
               "f32_to_bf16", "store_row", "squeeze_excite")
kinds, symbols = collections.Counter(), collections.Counter()
for line in sys.stdin:
    m = re.match(r"\s+[\d.]+%\s+(\d+)\s+(\S.*?)\s+\[(.)\]\s+(.*\S)", line)
    if not m: continue
    samples, dso, level, symbol = int(m[1]), m[2], m[3], m[4]
    if "reorder" in symbol: continue
    if "copy_" in symbol: kind = "oneDNN operand copies"
    elif "JIT" in dso or "libdnnl" in dso or "perf-" in dso or "matmul_s8" in symbol: kind = "GEMM (oneDNN)"
    elif level == "k" or any(s in symbol for s in setup): continue
    elif "multiply_strips" in symbol or "amx_s8_gemm" in symbol: kind = "GEMM (amx_s8_gemm)"
    elif "avx2_f32::" in symbol: kind = "GEMM (avx2_f32_gemm)"
    elif any(s in symbol for s in spatial): kind = "spatial convs"
    elif any(s in symbol for s in elementwise): kind = "epilogues and element-wise passes"
    else: kind = "other"
    kinds[kind] += samples
    if kind in ("spatial convs", "epilogues and element-wise passes", "other"):
        symbols[re.sub(r"<.*|\(.*", "", symbol.replace("(anonymous namespace)::", ""))] += samples
total = sum(kinds.values())
# CPU ms per encode from the sample count (1999 Hz over 4 encodes): shares move when one part gets faster,
# these only when that part does.
ms = lambda samples: 1000.0 * samples / 1999 / 4
label = "total"
print(f"{label:36s} {100.0:5.1f}%  {ms(total):7.1f} ms/encode")
for kind, samples in kinds.most_common(): print(f"{kind:36s} {100 * samples / total:5.1f}%  {ms(samples):7.1f} ms/encode")
for symbol, samples in symbols.most_common(20): print(f"  {symbol:34s} {100 * samples / total:5.1f}%  {ms(samples):7.1f}")
'
