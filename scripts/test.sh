#!/usr/bin/env bash
# Sets up a fresh Debian machine, builds everything (Release) and runs every test with ctest.
# Fixtures are read from ../shared beside the checkout (override with FASTVLM_SHARED_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
shared="${FASTVLM_SHARED_DIR:-$(cd .. && pwd)/shared}"
cmake -S . -B build -DFASTVLM_SHARED_DIR="$shared" -DFASTVLM_PYTHON=ON
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j1 --timeout 900
