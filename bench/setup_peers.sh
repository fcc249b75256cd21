#!/usr/bin/env bash
# Installs what bench/peers.sh runs beside fastvlm (not needed to build or test fastvlm; CI does not run it):
#   PyTorch 1.13 (Debian python3-torch) for bench/torch_reference/, python3-onnx for the export check,
#   python3-pil for the reference preprocessing, OpenBLAS (OpenMP build, the threading PyTorch uses) because
#   Debian's PyTorch calls the system libblas.so.3 for f32 matrix products and the reference BLAS that apt
#   picks by default runs them at ~1 GFLOP/s; and onnxruntime-node from bench/peers-node/package-lock.json.
# llama.cpp is not installed here: build it from a fetched tree outside the repository and point
# LLAMA_CPP_DIR at it (bench/peers.sh skips it otherwise).
#   sudo bash bench/setup_peers.sh
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends python3-torch python3-onnx python3-pil python3-numpy libopenblas0-openmp
(cd peers-node && ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm ci --no-audit --no-fund)
/usr/bin/python3 -c 'import torch; print("PyTorch", torch.__version__)'
