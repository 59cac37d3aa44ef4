#!/usr/bin/env bash
# Compiles every CUDA translation unit of msrl with nvcc for sm_80 and sm_90 (no GPU needed), and
# links the libtorch ops with the CUDA kernel set (test/torch/gpu_torch_ops) against the found libtorch.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
export PATH="$(dirname "$NVCC"):$PATH"
build=${MSRL_CUDA_BUILD_DIR:-build-cuda}
# CMake 3.25 does not know nvcc 13's C++20 flag ("requires the language dialect CUDA20"): name it.
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMSRL_ENABLE_CUDA=ON \
  -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="80;90" -DMSRL_ENABLE_TORCH=ON \
  -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 >/dev/null
cmake --build "$build" -j "${MSRL_JOBS:-$(nproc)}" --target msrl_cuda_targets
echo "cuda compile check: OK"
