#!/usr/bin/env bash
# Checks that the peers of bench/peers.sh compute FastVLM: the PyTorch reference (bench/torch_reference)
# against every tiny-fastvlm golden (f32, 1e-4 of max |ref|, greedy tokens exact), then the same tower exported
# to ONNX and run by ONNX Runtime (bench/peers-node) against the golden image features. Not a ctest: CI has
# neither PyTorch nor onnxruntime-node (sudo bash bench/setup_peers.sh installs them).
#   bash bench/check_peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
fixture=${FASTVLM_SHARED_DIR:-../shared}/fixtures/tiny-fastvlm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 bench/torch_reference/check_goldens.py --fixture "$fixture"
/usr/bin/python3 bench/torch_reference/check_goldens.py --fixture "$fixture" --channels-last | tail -1
/usr/bin/python3 bench/torch_reference/export_onnx.py -m "$fixture" --size 256 -o "$tmp/tiny-256.onnx" >/dev/null
for golden in "$fixture"/golden/image_*[0-9].safetensors; do
  node bench/peers-node/ort_vision.mjs --model "$tmp/tiny-256.onnx" --check "$golden"
done
