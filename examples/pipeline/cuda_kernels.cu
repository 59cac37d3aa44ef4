// Built into msrl-train when msrl is configured with MSRL_ENABLE_CUDA=ON: the libtorch ops then run
// msrl's CUDA kernels on a model held on a GPU (docs/kernels.md, "libtorch ops on CPU and CUDA tensors").
#include <msrl/torch/cuda_kernel_set.cuh>

void msrl_install_cuda_kernels() { msrl::torch_ops::install_cuda_kernels(); }
