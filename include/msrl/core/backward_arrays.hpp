#pragma once
/// \file What the backward of the selective log-softmax reads besides the logits, as pointers into
/// one memory space (one entry per row): the forward's lse (required) and entropy (required with
/// grad_entropy), and the upstream gradients. A null grad_logp is 0; a null grad_entropy means no
/// entropy term. The CUDA kernels (msrl::cuda) and the libtorch ops' kernel sets
/// (msrl::torch_ops) take this struct; the host kernels take it as checked spans
/// (kernels::logprob_backward_inputs).
namespace msrl {

struct backward_arrays {
  const double* lse = nullptr;
  const float* grad_logp = nullptr;
  const float* entropy = nullptr;
  const float* grad_entropy = nullptr;
};

} // namespace msrl
