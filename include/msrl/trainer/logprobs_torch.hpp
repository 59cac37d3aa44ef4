#pragma once
/// \file Per-token log-probs (and entropy) of sampled completions under the model, differentiable:
/// msrl's fused ops (msrl::torch_ops) where a kernel set serves the model's device, else libtorch's
/// log_softmax + gather (component msrl::torch).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "../core/error.hpp"
#include "../torch/logprob_ops.hpp"
#include "internvl_torch.hpp"

namespace msrl::trainer {

/// One group of completion_logits over several groups: a prompt [T] / [1, T], its image (or
/// undefined) and G completions [G, L].
struct completion_group {
  at::Tensor prompt_ids, pixel_values, completions;
};

namespace detail {
/// The logits of every position of each group's completions following its prompt, for N groups
/// of the same G rows in one pass: entry i is group i's [G, L_i, V] (the model's dtype).
///
/// The prompts run through the model once, as N rows of one right-padded batch (causal attention:
/// the padding after a prompt changes none of its positions); their keys and values become the
/// N x G completion rows' shared prefixes (share_padded_prefixes: each prompt's held once, its
/// padding masked, each row's positions going on from its own prompt's length; autograd sums the
/// prefix gradients over the rows). The logits of completion token 0 come from the prompt's last
/// position; the completions, right-padded to the longest, run as one batch, and the last token,
/// which predicts nothing, is not run. For one group of a prompt of T tokens and completions of L
/// that is T + G (L - 1) positions instead of G (T + L); for N groups the model's operations run
/// once for all N instead of N times (the same values up to rounding).
inline std::vector<at::Tensor> completion_logits(internvl& model, std::span<const completion_group> groups, double temperature,
                                                 const char* where) {
  require<shape_error>(!groups.empty(), where, "groups", "must hold at least one group");
  require(temperature > 0.0 && std::isfinite(temperature), where, "temperature", "must be finite and > 0");
  const auto dev = model->language_model->model->embed_tokens->weight.device();
  const auto N = static_cast<std::int64_t>(groups.size());
  const auto G = groups[0].completions.defined() && groups[0].completions.dim() == 2 ? groups[0].completions.size(0) : 0;
  std::vector<at::Tensor> prompts, pixels;
  std::vector<std::int64_t> len;
  std::int64_t Lmax = 0;
  for (const auto& g : groups) {
    prompts.push_back(one_prompt(g.prompt_ids, where, "prompt_ids"));
    require<shape_error>(prompts.back().scalar_type() == at::kLong, where, "prompt_ids", "must be int64");
    len.push_back(prompts.back().size(1));
    require<shape_error>(g.completions.defined() && g.completions.dim() == 2 && g.completions.size(1) >= 1 && g.completions.scalar_type() == at::kLong,
                         where, "completions", "must be int64 [G, L] with L >= 1");
    require<shape_error>(g.completions.size(0) == G && G >= 1, where, "completions", "must hold the same number of rows G >= 1 in every group");
    Lmax = std::max(Lmax, g.completions.size(1));
    const bool image = g.pixel_values.defined() && g.pixel_values.numel() > 0;
    if (N > 1) { // one batch splices the images in order: each prompt must hold its own images' tokens (internvl::embed checks one prompt)
      const auto want = image ? g.pixel_values.size(0) * model->cfg.tokens_per_tile() : 0;
      const auto have = model->cfg.image_token_id >= 0 ? prompts.back().eq(model->cfg.image_token_id).sum().item<std::int64_t>() : 0;
      require<shape_error>(have == want, where, "prompt_ids",
                           "must hold tiles x tokens_per_tile = " + std::to_string(want) + " image-context tokens for its pixel_values (found " +
                               std::to_string(have) + ")");
    }
    if (image) pixels.push_back(g.pixel_values.to(dev));
  }
  const auto Tmax = *std::max_element(len.begin(), len.end());
  // padding token: any id but the image-context one (its positions are masked and never read)
  const std::int64_t pad = model->cfg.image_token_id == 0 ? 1 : 0;
  at::Tensor ids = N == 1 ? prompts[0] : at::full({N, Tmax}, pad, at::kLong);
  if (N > 1)
    for (std::int64_t i = 0; i < N; ++i) ids.narrow(0, i, 1).narrow(1, 0, len[static_cast<std::size_t>(i)]).copy_(prompts[static_cast<std::size_t>(i)]);
  auto& lm = model->language_model;
  kv_cache cache;
  const auto hp = lm->hidden(model->embed(ids.to(dev), pixels.empty() ? at::Tensor() : pixels.size() == 1 ? pixels[0] : at::cat(pixels, 0)), &cache);
  // row i's position len_i - 1 predicts its completion token 0; [N G, 1, H]
  const auto last = N == 1 ? at::Tensor() : at::tensor(len, at::kLong).to(dev) - 1;
  auto h = N == 1 ? hp.narrow(1, len[0] - 1, 1).expand({G, 1, hp.size(2)})
                  : hp.gather(1, last.view({N, 1, 1}).expand({N, 1, hp.size(2)})).repeat_interleave(G, 0);
  if (Lmax > 1) {
    share_padded_prefixes(cache, len); // the N G rows read their prompt's keys and values once
    at::Tensor rest = at::full({N * G, Lmax - 1}, pad, at::kLong);
    for (std::int64_t i = 0; i < N; ++i) {
      const auto& c = groups[static_cast<std::size_t>(i)].completions;
      if (c.size(1) > 1) rest.narrow(0, i * G, G).narrow(1, 0, c.size(1) - 1).copy_(c.narrow(1, 0, c.size(1) - 1));
    }
    // completion position t-1 (absolute len_i + t - 1) predicts completion token t
    h = at::cat({h, lm->hidden(model->embed(rest.to(dev)), &cache)}, 1);
  }
  const auto z = lm->logits(h);
  if (N == 1) return {z};
  std::vector<at::Tensor> out;
  for (std::int64_t i = 0; i < N; ++i) out.push_back(z.narrow(0, i * G, G).narrow(1, 0, groups[static_cast<std::size_t>(i)].completions.size(1)));
  return out;
}

/// The logits [G, L, V] of `completions` [G, L] following one prompt [T] / [1, T] with its image:
/// completion_logits over one group.
inline at::Tensor completion_logits(internvl& model, const at::Tensor& prompt_ids, const at::Tensor& pixel_values,
                                    const at::Tensor& completions, double temperature, const char* where) {
  const completion_group g{prompt_ids, pixel_values, completions};
  return completion_logits(model, std::span<const completion_group>(&g, 1), temperature, where)[0];
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
