#pragma once
/// \file The micro-batches of one optimizer step on several CPU threads at once
/// (train_options::micro_batch_workers). A small model's step is a few hundred small operations;
/// split over the cores each one waits on its threads more than it computes, while whole
/// micro-batches, one per core, keep every core busy. Each worker runs its micro-batches' forward
/// and backward with one intra-op thread and sums their gradients itself (autograd::grad: no
/// parameter's .grad is touched from a worker); the sums are then added to the parameters' .grad in
/// micro-batch order. So the gradient depends on the number of micro-batches and of workers, never
/// on which thread finished first, and with one micro-batch per worker it is the sequential
/// backward's sum, term for term.
///
///   detail::micro_batch_backward(params, micro.size(), 2, [&](std::size_t i) { return loss_of(micro[i]); });
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <vector>

#include <torch/torch.h>

#include "worker_threads_torch.hpp"

namespace msrl::trainer::detail {

/// Calls loss_of(i) for every i in [0, n) and adds d(sum of the losses) / d params to the params'
/// .grad (an undefined .grad becomes the sum; a parameter no loss reaches keeps its .grad). With
/// workers <= 1 or n <= 1: loss_of(i).backward() here, in order. Otherwise min(workers, n) threads,
/// worker w taking micro-batches [w n / W, (w + 1) n / W) in order with one intra-op thread and grad
/// mode on; loss_of must then be callable from several threads at once for different i (results
/// written by index). An undefined loss, or one that needs no gradient, contributes nothing. The
/// caller's intra-op thread count is restored; the first error of any worker is rethrown after
/// every worker has stopped (the parameters' .grad is then unchanged).
template <class LossOf>
void micro_batch_backward(const std::vector<at::Tensor>& params, std::size_t n, std::size_t workers, LossOf&& loss_of) {
  if (workers <= 1 || n <= 1) {
    for (std::size_t i = 0; i < n; ++i) {
      const at::Tensor loss = loss_of(i);
      if (loss.defined() && loss.requires_grad()) loss.backward();
    }
    return;
  }
  const std::size_t W = std::min(workers, n);
  std::vector<std::vector<at::Tensor>> sums(W); // per worker: one gradient per parameter (undefined: none yet)
  run_workers(W, [&](std::size_t w, const std::atomic<bool>& stop) {
    const at::AutoGradMode grad_on(true); // grad mode is per thread
    auto& acc = sums[w];
    acc.resize(params.size());
    for (std::size_t i = w * n / W; i < (w + 1) * n / W && !stop.load(); ++i) {
      const at::Tensor loss = loss_of(i);
      if (!loss.defined() || !loss.requires_grad()) continue;
      const auto g = torch::autograd::grad({loss}, params, {}, /*retain_graph=*/false, /*create_graph=*/false, /*allow_unused=*/true);
      for (std::size_t p = 0; p < params.size(); ++p) {
        if (!g[p].defined()) continue;
        if (acc[p].defined()) acc[p].add_(g[p]);
        else acc[p] = at::empty_like(params[p]).copy_(g[p]); // owned, laid out like the parameter (a gradient may be a view)
      }
    }
  });
  at::NoGradGuard ng;
  for (std::size_t p = 0; p < params.size(); ++p) {
    at::Tensor total;
    for (std::size_t w = 0; w < W; ++w)
      if (sums[w].size() > p && sums[w][p].defined()) total = total.defined() ? total.add_(sums[w][p]) : sums[w][p];
    if (!total.defined()) continue;
    auto& grad = const_cast<at::Tensor&>(params[p]).mutable_grad();
    if (grad.defined()) grad.add_(total);
    else grad = total;
  }
}

} // namespace msrl::trainer::detail
