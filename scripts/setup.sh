#!/usr/bin/env bash
# Installs the Debian packages fastvlm.cpp builds and tests with. Idempotent and non-interactive.
set -euo pipefail
packages=(
  build-essential cmake pkg-config
  libdnnl-dev            # GEMMs (AMX / AVX-512 JIT)
  libjpeg62-turbo-dev libpng-dev libwebp-dev
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev
  libicu-dev             # Unicode normalisation and character classes for the tokenizer
  libcurl4-openssl-dev libssl-dev  # hub downloads, sha256
  libavformat-dev libavcodec-dev libswscale-dev libavutil-dev  # fastvlm video
  ffmpeg                 # the video tests make their test videos with it
  chromium               # the web UI test drives it headless (playwright-core, below)
  libgtest-dev libgmock-dev libbenchmark-dev
  curl python3
  # the Python package (python/) and its tests, for /usr/bin/python3
  python3-dev pybind11-dev python3-numpy python3-pil python3-pytest python3-distributed
  clang libclang-rt-14-dev libomp-dev  # the libFuzzer harnesses (tests/fuzz), built by test.sh
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Node.js and npm for the Node tests (the OpenAI SDK test, the web UI browser test).
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
# npm ci (the versions package-lock.json pins) for a test folder unless every dependency its package.json
# names is installed. A registry outage must not stop the build: the test then reports itself skipped (exit 77).
npm_install() {
  local dir="$1" what="$2"
  if ! (cd "$dir" && node -e 'const fs = require("fs");
      for (const d of Object.keys(require("./package.json").dependencies))
        if (!fs.existsSync("node_modules/" + d + "/package.json")) process.exit(1);'); then
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error ||
      echo "setup.sh: WARNING: npm ci failed; $what will be skipped" >&2
  fi
}
tests="$(dirname "$0")/../tests"
npm_install "$tests/server" "the OpenAI SDK test"
# playwright-core (no browser download: the test drives Debian's chromium) for tests/webui/webui.test.mjs.
npm_install "$tests/webui" "the web UI browser test"
