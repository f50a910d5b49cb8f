#!/bin/bash
# Builds otoroshictl and runs the whole test suite: the cmocka unit tests and
# the integration tests that run the real binary against the stand-in
# gateway (tests/gateway), all on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/deps.sh
ensure_deps
ensure_build build
meson test -C build --print-errorlogs -v "$@"
