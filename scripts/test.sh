#!/usr/bin/env bash
# Sets up a fresh Debian machine, builds everything (Release) and runs every test with ctest, then builds
# the libFuzzer harnesses with clang, ASan and UBSan in build-fuzz and runs each for FASTVLM_FUZZ_SECONDS
# (default 30; 0 skips fuzzing). Fixtures are read from ../shared beside the checkout (override with
# FASTVLM_SHARED_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
shared="${FASTVLM_SHARED_DIR:-$(cd .. && pwd)/shared}"
cmake -S . -B build -DFASTVLM_SHARED_DIR="$shared" -DFASTVLM_PYTHON=ON
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j1 --timeout 900

fuzz_seconds="${FASTVLM_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" -gt 0 ]; then
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFASTVLM_FUZZ=ON \
    -DFASTVLM_SANITIZE=ON -DFASTVLM_BUILD_BENCH=OFF -DFASTVLM_FUZZ_SECONDS="$fuzz_seconds" \
    -DFASTVLM_SHARED_DIR="$shared"
  cmake --build build-fuzz -j"$(nproc)" --target fuzzers
  ctest --test-dir build-fuzz --output-on-failure -j1 -L fuzz
fi
