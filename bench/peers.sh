#!/usr/bin/env bash
# fastvlm side by side with its peers on workload W (issue 16): a 1024x1024 image + "Describe the image." in
# the qwen_2 prompt (280 positions for the 0.5B shape), -n generated tokens, 2 threads. Every configuration
# runs once per round, in an order that reverses every round, so that load on a shared machine falls on all
# of them alike; each run is `--reps` repetitions in one process (median). Prints ONE table (median over rounds
# [min - max over every repetition]) and the ratios peer / fastvlm (above 1: fastvlm is faster).
#
#   bash bench/peers.sh [--model-size 0.5b|1.5b|7b] [--rounds 5] [--reps 3] [-n 32] [--threads 2]
#                       [--no-accuracy] [--no-torch] [--no-ort] [--only 'ROW|ROW...'] [--keep DIR]
# (--only: an extended regex matched against the row names below; --keep: leave the raw results in DIR)
#
# Rows (checkpoints under $WORK, default /tmp/fastvlm-bench, made on first use with bench/make_checkpoint.py
# and `fastvlm quantize`):
#   fastvlm default          no --dtype, bf16 weights as released (skipped when f32 weights would not fit)
#   fastvlm bf16             --dtype bf16, bf16 weights (1.5b, 7b)
#   fastvlm best             --dtype int8, q8 LLM (fastvlm-SIZE-q8)
#   fastvlm int8+q4          --dtype int8, q4 LLM (fastvlm-SIZE-q4)
#   fastvlm f32              --dtype f32, the reference path (0.5b only)
#   PyTorch bf16 / f32       bench/torch_reference (our PyTorch FastVLM, checked against the goldens by
#                            bench/check_peers.sh), torch.set_num_threads(T); f32 skipped where the f32 weights
#                            would not fit in memory (7b)
#                            ($TORCH_ARGS is passed on, e.g. TORCH_ARGS=--channels-last)
#   ONNX Runtime fp32        the tower exported by bench/torch_reference/export_onnx.py, onnxruntime-node
#                            (bench/peers-node), intra-op threads T; vision only
#   llama.cpp Q8_0 / Q4_0    the LLM half: llama-bench -p POSITIONS (prefill) and -n N -d POSITIONS (decode at
#                            the prompt's depth; a llama-bench without -d: llama-batched-bench -npp POSITIONS
#                            -ntg N -npl 1), when $LLAMA_CPP_DIR/build/bin/llama-bench exists, on
#                            $WORK/gguf/fastvlm-SIZE-q8_0.gguf / -q4_0.gguf: bench/export_gguf.py ($EXPORT_GGUF)
#                            writes them straight from fastvlm-SIZE-q8 / -q4, so llama.cpp runs exactly the codes
#                            and scales the fastvlm q8 / q4 rows run (no bf16 GGUF, no llama-quantize)
#   llama.cpp BF16           the same on fastvlm-SIZE-bf16.gguf (1.5b, 7b), only where that file exists or its
#                            export fits on $WORK's disk with 4 GB to spare
# Vision is timed at 1024² and, for fastvlm f32/default/best and ONNX Runtime, at 512² as well (0.5b).
# Peak RSS is /usr/bin/time's maximum resident set of the full-pipeline process (weights + KV cache + work).
# The accuracy columns (fastvlm rows: image-embedding and last-logit error, greedy agreement against f32) come
# from one extra `fastvlm bench --reference` run per row after the timed rounds. build/bin/bench_peak, run
# right before and right after the rounds, gives the last section: each fastvlm row's TTFT against the compute
# limit of its work and its decode against the read bandwidth on the same threads.
# Set up the peers first: sudo bash bench/setup_peers.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
size=0.5b rounds=5 reps=3 tokens=32 threads=2 accuracy=1 torch_peer=1 ort_peer=1 keep="" only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model-size) size=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    -n) tokens=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --no-accuracy) accuracy=0; shift ;;
    --no-torch) torch_peer=0; shift ;;
    --no-ort) ort_peer=0; shift ;;
    --keep) keep=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    -h|--help) sed -n '2,39p' "$0"; exit 0 ;;
    *) echo "peers.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$size" in 0.5b|1.5b|7b) ;; *) echo "peers.sh: --model-size $size: expected 0.5b, 1.5b or 7b" >&2; exit 2 ;; esac
# Whether --only keeps the row named $1 (every row without --only).
kept() { [ -z "$only" ] || [[ "$1" =~ ^($only)$ ]]; }

work=${WORK:-/tmp/fastvlm-bench}
shared=${FASTVLM_SHARED_DIR:-../shared}
bin=build/bin/fastvlm
py=/usr/bin/python3  # Debian's python3-torch lives in the system interpreter, not in a pyenv/venv one
image=$work/image-1024.png
model=$work/fastvlm-$size
prompt_ids=$shared/fixtures/tiny-fastvlm/golden/golden.json
out_dir=${keep:-$(mktemp -d)}
mkdir -p "$out_dir"
[ -n "$keep" ] || trap 'rm -rf "$out_dir"' EXIT
results=$out_dir/results.jsonl
: > "$results"

[ -x "$bin" ] || { echo "peers.sh: $bin is missing: build the fastvlm target first" >&2; exit 1; }
# Checkpoints and the image, as bench/workload_w.sh makes them.
[ -f "$image" ] || { echo "peers.sh: $image is missing (bash bench/workload_w.sh makes it)" >&2; exit 1; }
[ -f "$model/model.safetensors" ] ||
  python3 bench/make_checkpoint.py --preset "$size" --out "$model" --tokenizer-from "$shared/fixtures/tiny-fastvlm"
for type in q8 q4; do
  [ -f "$model-$type/model.safetensors" ] || "$bin" quantize -m "$model" -o "$model-$type" --type "$type" >&2
done

if [ "$torch_peer" = 1 ] && ! "$py" -c 'import torch' 2>/dev/null; then
  echo "peers.sh: PyTorch is not installed for $py (sudo bash bench/setup_peers.sh): PyTorch rows skipped" >&2
  torch_peer=0
fi
torch_f32=$torch_peer
if [ "$size" = 7b ] && [ "$torch_peer" = 1 ]; then
  echo "peers.sh: PyTorch f32 skipped at 7b: its f32 weights (~30 GB) do not fit in $(free -g | awk '/Mem:/{print $2}') GiB" >&2
  torch_f32=0
fi
onnx_sizes=""
if [ "$ort_peer" = 1 ]; then
  if [ ! -d bench/peers-node/node_modules/onnxruntime-node ] || [ "$torch_peer" = 0 ]; then
    echo "peers.sh: onnxruntime-node or PyTorch (for the export) missing (sudo bash bench/setup_peers.sh): ONNX Runtime rows skipped" >&2
  else
    onnx_sizes="1024"
    [ "$size" = 0.5b ] && onnx_sizes="1024 512"
    for s in $onnx_sizes; do
      onnx=$work/peers/fastvithd-$size-$s.onnx
      [ -f "$onnx" ] || "$py" bench/torch_reference/export_onnx.py -m "$model" --size "$s" -o "$onnx" >&2
    done
  fi
fi

# llama.cpp: the LLM half as GGUF, Q8_0 / Q4_0 exported from our own quantised checkpoints (same weights).
llama_types=""
llama_bin=${LLAMA_CPP_DIR:+$LLAMA_CPP_DIR/build/bin}
export_gguf=${EXPORT_GGUF:-bench/export_gguf.py}
gguf=$work/gguf/fastvlm-$size
if [ -z "${LLAMA_CPP_DIR:-}" ]; then
  echo "peers.sh: LLAMA_CPP_DIR is not set: llama.cpp rows skipped" >&2
elif [ ! -x "$llama_bin/llama-bench" ]; then
  echo "peers.sh: $llama_bin has no llama-bench (build llama.cpp there): llama.cpp rows skipped" >&2
elif { [ ! -f "$gguf-q8_0.gguf" ] || [ ! -f "$gguf-q4_0.gguf" ]; } && [ ! -f "$export_gguf" ]; then
  echo "peers.sh: no $export_gguf to write the GGUFs (the llama.cpp peer's exporter): llama.cpp rows skipped" >&2
else
  # Decode at the prompt's depth: llama-bench -d where it has it (2025 on), else llama-batched-bench.
  llama_depth_decode=""
  if "$llama_bin/llama-bench" --help 2>&1 | grep -q -- '--n-depth'; then
    llama_depth_decode=bench
  elif [ -x "$llama_bin/llama-batched-bench" ]; then
    llama_depth_decode=batched
  else
    echo "peers.sh: $llama_bin/llama-bench has no -d and there is no llama-batched-bench: llama.cpp decode rows skipped" >&2
  fi
  # Only the GGUFs of rows that --only keeps are written.
  wanted() { kept "llama.cpp ${1^^}"; }
  mkdir -p "$work/gguf"
  for type in q8 q4; do
    wanted "${type}_0" || continue
    [ -f "$gguf-${type}_0.gguf" ] || python3 "$export_gguf" "$model-$type" "$gguf-${type}_0.gguf" >&2
    llama_types+=" ${type}_0"
  done
  if [ "$size" != 0.5b ] && wanted bf16; then
    # The bf16 LLM half is most of the bf16 checkpoint: count all of it, and keep 4 GB of the disk free.
    need_kb=$(($(stat -c %s "$model/model.safetensors") / 1024 + 4 * 1024 * 1024))
    free_kb=$(df --output=avail -k "$work/gguf" | tail -1)
    if [ ! -f "$gguf-bf16.gguf" ] && [ "$need_kb" -gt "$free_kb" ]; then
      echo "peers.sh: llama.cpp BF16 skipped: no $gguf-bf16.gguf, and exporting it (~$((need_kb >> 20)) GiB with the 4 GiB to spare) does not fit in $((free_kb >> 20)) GiB free" >&2
    else
      [ -f "$gguf-bf16.gguf" ] || python3 "$export_gguf" "$model" "$gguf-bf16.gguf" --outtype bf16 >&2
      llama_types="bf16$llama_types"
    fi
  fi
fi

# fastvlm's default holds about the bf16 file (int8 vision codes, widened to 16 bits on AVX2, and a Q8_0 LLM
# made at load: every AVX2 CPU) or widens it to f32 (twice the bf16 file, CPUs without AVX2): run it only where
# that fits in the memory available now, so that a 7B default cannot push the machine into the OOM killer
# (FORCE_DEFAULT=1 runs it).
default_row=1
default_factor=22  # tenths of the bf16 file
grep -qw avx2 /proc/cpuinfo && default_factor=11
need_kb=$(($(stat -c %s "$model/model.safetensors") / 1024 * default_factor / 10))
avail_kb=$(awk '/MemAvailable/{print $2}' /proc/meminfo)
if [ "${FORCE_DEFAULT:-0}" != 1 ] && [ "$need_kb" -gt "$avail_kb" ]; then
  echo "peers.sh: fastvlm default skipped: it could need ~$((need_kb >> 20)) GiB, $((avail_kb >> 20)) GiB are available (FORCE_DEFAULT=1 runs it)" >&2
  default_row=0
fi

# One configuration per line: ROW|SIZE|KIND|COMMAND. SIZE 1024 is the full pipeline, 512 the tower alone.
configs=$out_dir/configs
{
  fv="$bin bench --image $image -n $tokens --reps $reps --threads $threads --json --no-accuracy"
  [ "$default_row" = 1 ] && echo "fastvlm default|1024|fastvlm|$fv -m $model"
  [ "$size" != 0.5b ] && echo "fastvlm bf16|1024|fastvlm|$fv -m $model --dtype bf16"
  echo "fastvlm best (int8, q8)|1024|fastvlm|$fv -m $model-q8 --dtype int8"
  echo "fastvlm int8, q4|1024|fastvlm|$fv -m $model-q4 --dtype int8"
  if [ "$size" = 0.5b ]; then
    echo "fastvlm f32|1024|fastvlm|$fv -m $model --dtype f32"
    fv512="$bin bench --image $image --image-size 512 -n 2 --reps $reps --threads $threads --json --no-accuracy"
    echo "fastvlm default|512|fastvlm|$fv512 -m $model"
    echo "fastvlm best (int8, q8)|512|fastvlm|$fv512 -m $model-q8 --dtype int8"
    echo "fastvlm f32|512|fastvlm|$fv512 -m $model --dtype f32"
  fi
  tb="$py bench/torch_reference/bench_torch.py ${TORCH_ARGS:-} -m $model --image $image -n $tokens --reps $reps --threads $threads --prompt-ids-from $prompt_ids"
  if [ "$torch_peer" = 1 ]; then
    echo "PyTorch bf16|1024|torch|$tb --dtype bf16"
  fi
  if [ "$torch_f32" = 1 ]; then
    echo "PyTorch f32|1024|torch|$tb --dtype f32"
  fi
  for s in $onnx_sizes; do
    echo "ONNX Runtime fp32|$s|ort|node bench/peers-node/ort_vision.mjs --model $work/peers/fastvithd-$size-$s.onnx --reps $reps --threads $threads"
  done
  for t in $llama_types; do
    label="llama.cpp ${t^^}"
    echo "$label|prefill|llama|$llama_bin/llama-bench -m $work/gguf/fastvlm-$size-$t.gguf -t $threads -r $reps -o json -p @POSITIONS@ -n 0"
    case "$llama_depth_decode" in
      bench) echo "$label|decode|llama|$llama_bin/llama-bench -m $work/gguf/fastvlm-$size-$t.gguf -t $threads -r $reps -o json -p 0 -n $tokens -d @POSITIONS@" ;;
      # One prompt of POSITIONS, then N tokens one at a time: ms per token at the prompt's depth.
      batched) echo "$label|decode|llama-batched|$llama_bin/llama-batched-bench -m $work/gguf/fastvlm-$size-$t.gguf -t $threads -c 4096 -npp @POSITIONS@ -ntg $tokens -npl 1 --output-format jsonl" ;;
    esac
  done
} > "$configs"
if [ -n "$only" ]; then
  grep -E "^($only)\|" "$configs" > "$configs.only" || { echo "peers.sh: --only '$only' matches no row" >&2; exit 2; }
  mv "$configs.only" "$configs"
fi

# llama.cpp prefills as many positions as fastvlm's prompt has (image embeddings + text): ask fastvlm once.
positions=280
if [ -n "$llama_types" ]; then
  positions=$("$bin" bench -m "$model-q8" --image "$image" -n 2 --reps 1 --threads "$threads" --json --no-accuracy |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["prompt_tokens"])')
fi

run_config() {  # ROW SIZE KIND COMMAND -> one line of $results
  local row=$1 sz=$2 kind=$3 cmd=${4//@POSITIONS@/$positions}
  if /usr/bin/time -f '%M' -o "$out_dir/rss" $cmd > "$out_dir/out" 2> "$out_dir/err"; then
    python3 - "$row" "$sz" "$kind" "$(tail -1 "$out_dir/rss")" "$out_dir/out" >> "$results" <<'PY'
import json, sys
row, size, kind, rss_kb, out = sys.argv[1:]
text = open(out).read()
if kind == "llama-batched":  # JSON lines after its log: the last one is the measurement
    parsed = json.loads([line for line in text.splitlines() if line.startswith("{")][-1])
else:
    parsed = json.loads(text[text.find("[" if kind == "llama" else "{"):])
print(json.dumps({"row": row, "size": size, "kind": kind, "rss_mb": int(rss_kb) / 1024, "out": parsed}))
PY
  else
    echo "peers.sh: $row ($sz) failed: $cmd" >&2
    tail -5 "$out_dir/err" >&2
  fi
}

# This machine's ceilings right before and right after the rounds (a shared VM's move between runs minutes
# apart): bench_peak's per-core compute rates and its read bandwidth on one and on $threads threads, from which
# peers_table.py states TTFT against the compute limit and decode against the read bandwidth.
peak=$(dirname "$bin")/bench_peak
machine_limits() {  # WHEN -> one line of $results
  [ -x "$peak" ] || return 0
  OMP_NUM_THREADS=$threads "$peak" --benchmark_format=json > "$out_dir/peak" 2> "$out_dir/err" &&
    python3 - "$1" "$threads" "$out_dir/peak" >> "$results" <<'PY' || echo "peers.sh: bench_peak failed or its output could not be read: no limits section" >&2
import json, sys
when, threads, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rates, bandwidth = {}, {}
for b in json.load(open(path))["benchmarks"]:
    if b.get("error_occurred"):
        continue
    name = b["name"]
    if name.startswith("BM_Peak/"):
        rates[name.split("/")[1]] = b["GFLOP/s"] / 1e9
    elif name.startswith("BM_ReadBandwidth/"):
        bandwidth[int(name.split("threads:")[1].split("/")[0])] = b["GB/s"]
print(json.dumps({"row": "machine", "size": when, "kind": "machine", "rss_mb": 0,
                  "out": {"threads": threads, "peak_gops_per_core": rates, "read_gbps": bandwidth}}))
PY
}

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p')"
echo "uptime before: $(uptime)"
machine_limits before
mapfile -t lines < "$configs"
for ((round = 1; round <= rounds; ++round)); do
  order=$(seq 0 $((${#lines[@]} - 1)))
  ((round % 2 == 0)) && order=$(seq $((${#lines[@]} - 1)) -1 0)
  for i in $order; do
    IFS='|' read -r row sz kind cmd <<< "${lines[$i]}"
    echo "round $round/$rounds: $row ($sz)" >&2
    run_config "$row" "$sz" "$kind" "$cmd"
  done
done
machine_limits after
echo "uptime after: $(uptime)"

# The accuracy runs hold the f32 reference (twice the bf16 file) beside the configuration under test.
reference_kb=$(($(stat -c %s "$model/model.safetensors") / 1024 * 33 / 10))
if [ "$accuracy" = 1 ] && [ "$reference_kb" -gt "$avail_kb" ]; then
  echo "peers.sh: accuracy skipped: its f32 reference would need ~$((reference_kb >> 20)) GiB, $((avail_kb >> 20)) GiB are available" >&2
elif [ "$accuracy" = 1 ]; then
  fa="$bin bench --image $image -n $tokens --reps 1 --threads $threads --json --reference $model"
  rows=("fastvlm best (int8, q8)|$fa -m $model-q8 --dtype int8" "fastvlm int8, q4|$fa -m $model-q4 --dtype int8")
  [ "$default_row" = 1 ] && rows=("fastvlm default|$fa -m $model" "${rows[@]}")
  [ "$size" != 0.5b ] && rows+=("fastvlm bf16|$fa -m $model --dtype bf16")
  for line in "${rows[@]}"; do
    kept "${line%%|*}" || continue
    echo "accuracy: ${line%%|*}" >&2
    run_config "${line%%|*}" accuracy fastvlm "${line#*|}"
  done
fi

echo "workload W: fastvlm-$size, $image, \"Describe the image.\", $positions positions, $tokens generated tokens, $threads threads; $rounds rounds x $reps repetitions"
python3 bench/peers_table.py "$results"
