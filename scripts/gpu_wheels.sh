#!/usr/bin/env bash
# Downloads the Python wheels scripts/gpu_check.sh needs on a GPU machine that has no network into
# .whl/ (ignored by git): Liger-Kernel, the baseline of the GPU GRPO rows (benchmarks/liger_gpu.py).
# Pure Python (py3-none-any), without dependencies: the GPU image already has torch and triton.
# Carry .whl with the working tree; gpu_check.sh installs what it finds there.
#   scripts/gpu_wheels.sh            (MSRL_LIGER_VERSION overrides the pinned version)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${MSRL_LIGER_VERSION:-0.8.5}
py=${MSRL_WHEELS_PYTHON:-python3}
mkdir -p .whl
"$py" -m pip download -q --no-deps --only-binary=:all: -d .whl "liger-kernel==$version"
ls -l .whl
