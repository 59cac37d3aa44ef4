// The one CUDA translation unit a libtorch program adds to run msrl_torch ops on CUDA tensors.
#include <msrl/torch/cuda_kernel_set.cuh>

void msrl_install_cuda_kernels() { msrl::torch_ops::install_cuda_kernels(); }
