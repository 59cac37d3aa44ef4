#!/usr/bin/env bash
# Builds msrl with every backend found and runs the whole test suite (CTest).
#   scripts/test.sh [extra cmake args]     build dir: build/  (MSRL_BUILD_DIR overrides)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
build=${MSRL_BUILD_DIR:-build}
jobs=${MSRL_JOBS:-$(nproc)}
# MSRL_NATIVE: tests and benchmarks are compiled with -march=native (the GRPO passes pick their
# vector lanes at run time either way); the sanitizer run in .ci/run builds without it and with the
# scalar GRPO lanes only (-DMSRL_VECTOR_LANES=OFF), so both lane paths are tested.
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${MSRL_BUILD_TYPE:-Release} -DMSRL_NATIVE=ON "$@" >/dev/null
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs" ${MSRL_CTEST_ARGS:-}
