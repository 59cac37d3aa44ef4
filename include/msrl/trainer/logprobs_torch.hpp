#pragma once
/// \file Per-token log-probs (and entropy) of sampled completions under the model, differentiable:
/// msrl's fused ops (msrl::torch_ops) where a kernel set serves the model's device, else libtorch's
/// log_softmax + gather (component msrl::torch).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "../core/error.hpp"
#include "../torch/logprob_ops.hpp"
#include "internvl_torch.hpp"

namespace msrl::trainer {

namespace detail {
/// The logits [G, L, V] (the model's dtype) of every position of `completions` [G, L] following
/// one prompt [T]/[1, T] with its image. The prompt runs through the model once, as one row: its
/// keys and values are the G completion rows' shared prefix (kv_cache::share_prefix: held once
/// and read once per layer for all rows; autograd sums their gradients over the rows), the
/// logits of completion token 0 come from the prompt's last position, and the last completion
/// token, which predicts nothing, is not run. For a prompt of
/// T tokens and completions of L that is T + G (L - 1) positions instead of G (T + L).
inline at::Tensor completion_logits(internvl& model, const at::Tensor& prompt_ids, const at::Tensor& pixel_values,
                                    const at::Tensor& completions, double temperature, const char* where) {
  const at::Tensor prompt = one_prompt(prompt_ids, where, "prompt_ids");
  require<shape_error>(completions.dim() == 2 && completions.size(1) >= 1 && completions.scalar_type() == at::kLong, where, "completions",
                       "must be int64 [G, L] with L >= 1");
  require(temperature > 0.0 && std::isfinite(temperature), where, "temperature", "must be finite and > 0");
  const auto dev = model->language_model->model->embed_tokens->weight.device();
  const auto G = completions.size(0), L = completions.size(1), Tp = prompt.size(1);
  auto& lm = model->language_model;
  kv_cache cache;
  const auto hp = lm->hidden(model->embed(prompt.to(dev), pixel_values.defined() ? pixel_values.to(dev) : pixel_values), &cache);
  auto h = hp.narrow(1, Tp - 1, 1).expand({G, 1, hp.size(2)}); // position Tp-1 predicts completion token 0
  if (L > 1) {
    cache.share_prefix(); // the G rows read the prompt's keys and values once
    // completion position t-1 (absolute Tp+t-1) predicts completion token t
    h = at::cat({h, lm->hidden(model->embed(completions.narrow(1, 0, L - 1).to(dev)), &cache)}, 1);
  }
  return lm->logits(h);
}

/// log softmax(logits / T)[targets] (fp32, differentiable): msrl's fused op when `fused` and a
/// kernel set serves the device (torch_ops::kernels_for: always the CPU, CUDA once installed; no
/// [.., V] fp32 copy, one read forward, one read + write backward), else libtorch's log_softmax +
/// gather.
inline at::Tensor token_logprobs(const at::Tensor& logits, const at::Tensor& targets, double temperature, bool fused) {
  if (fused && torch_ops::kernels_for(logits)) return torch_ops::selective_log_softmax(logits, targets, temperature);
  auto z = logits.to(at::kFloat);
  if (temperature != 1.0) z = z / temperature;
  return z.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1);
}
} // namespace detail

/// Log-probs [G, L] (fp32, differentiable) of `completions` [G, L] following one prompt:
/// log pi(completion token t | prompt, tokens < t) at temperature T. `fused`: msrl's fused
/// kernels where they serve the model's device (see detail::token_logprobs), else libtorch's.
inline at::Tensor completion_logprobs(internvl& model, const at::Tensor& prompt_ids, const at::Tensor& pixel_values,
                                      const at::Tensor& completions, double temperature = 1.0, bool fused = true) {
  const auto z = detail::completion_logits(model, prompt_ids, pixel_values, completions, temperature, "msrl::trainer::completion_logprobs");
  return detail::token_logprobs(z, completions.to(z.device()), temperature, fused);
}

/// The log-probs above and the entropy of each position's distribution at temperature T,
/// H_t = -sum_v p_v log p_v, both [G, L] fp32 and differentiable.
inline std::pair<at::Tensor, at::Tensor> completion_logprobs_entropy(internvl& model, const at::Tensor& prompt_ids, const at::Tensor& pixel_values,
                                                                     const at::Tensor& completions, double temperature = 1.0,
                                                                     bool fused = true) {
  const auto z = detail::completion_logits(model, prompt_ids, pixel_values, completions, temperature,
                                           "msrl::trainer::completion_logprobs_entropy");
  const auto y = completions.to(z.device());
  if (fused && torch_ops::kernels_for(z)) {
    auto [logp, entropy] = torch_ops::selective_log_softmax_with_entropy(z, y, temperature);
    return {logp, entropy};
  }
  const auto ls = (z.to(at::kFloat) / temperature).log_softmax(-1);
  // p log p -> 0 where p = 0 (a -inf logit): clamp log p to the lowest finite float first
  return {ls.gather(2, y.unsqueeze(2)).squeeze(2), -(ls.exp() * ls.clamp_min(std::numeric_limits<float>::lowest())).sum(-1)};
}

} // namespace msrl::trainer
