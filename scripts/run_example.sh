#!/usr/bin/env bash
# Builds and runs the example on the bundled data: GRPO steps that print losses and metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --minimal
build=${MSRL_BUILD_DIR:-build-example}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMSRL_BUILD_TESTS=OFF -DMSRL_BUILD_BENCHMARKS=OFF \
  -DMSRL_ENABLE_TORCH=OFF >/dev/null
cmake --build "$build" --target grpo_steps -j "$(nproc)"
"$build/examples/grpo_steps" --data examples/data/toy_judgments.tsv "$@"
