#pragma once
/// \file Sampling G completions of one prompt with a KV cache: temperature, top-k, top-p, stop ids,
/// seeded (component msrl::torch); many prompts on worker threads (sample_many).
///
///   auto s = msrl::trainer::sample(model, prompt_ids, pixels, {.num_samples = 8, .max_new_tokens = 512,
///                                  .temperature = 1.0, .top_p = 1.0, .stop_ids = {im_end}, .seed = 7});
///   // s.tokens [G, L], s.logprobs [G, L] (log softmax(logits / T) of each sampled token), s.mask, s.lengths
///   auto all = msrl::trainer::sample_many(model, requests, opt, /*workers=*/2); // one result per request
///   auto fast = msrl::trainer::sample_many(model, requests, opt, 2, /*prompts_per_pass=*/4); // 4 prompts' rows per decoding step
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "../core/error.hpp"
#include "internvl_torch.hpp"
#include "worker_threads_torch.hpp"

namespace msrl::trainer {

struct sampling_options {
  std::int64_t num_samples = 1;     ///< G completions of the one prompt
  std::int64_t max_new_tokens = 64;
  double temperature = 1.0;         ///< 0: greedy
  double top_p = 1.0;               ///< nucleus; 1 disables
  std::int64_t top_k = 0;           ///< 0 disables
  std::vector<std::int64_t> stop_ids; ///< e.g. <|im_end|>; the stop token is kept (mask 1)
  std::int64_t pad_id = 0;          ///< written after a row stops (mask 0)
  std::uint64_t seed = 0;
};

struct sampling_result {
  at::Tensor tokens;   ///< [G, L] int64, pad_id after a row's stop token
  at::Tensor logprobs; ///< [G, L] fp32: log softmax(logits / temperature) of each sampled token
                       ///< (before top-k/top-p filtering; the distribution the trainer recomputes), 0 on padding
  at::Tensor mask;     ///< [G, L] uint8: 1 for generated tokens including the stop token
  std::vector<std::int64_t> lengths;
};

namespace detail {

/// Keeps the top-k logits and the smallest nucleus with mass >= top_p; others -> -inf. [G, V].
inline at::Tensor filter_logits(at::Tensor logits, std::int64_t top_k, double top_p) {
  const auto V = logits.size(-1);
  const auto ninf = -std::numeric_limits<float>::infinity();
  if (top_k > 0 && top_k < V) {
    auto kth = std::get<0>(logits.topk(top_k, -1)).narrow(-1, top_k - 1, 1);
    logits = logits.masked_fill(logits < kth, ninf);
  }
  if (top_p < 1.0) {
    auto [sorted, idx] = logits.sort(-1, true);
    auto probs = sorted.softmax(-1);
    auto before = probs.cumsum(-1) - probs; // mass strictly before each token
    auto drop = before >= top_p;             // the first token always stays
    logits = logits.scatter(-1, idx, sorted.masked_fill(drop, ninf));
  }
  return logits;
}

inline void check_sampling_options(const internvl& model, const sampling_options& opt, const char* where) {
  require(opt.num_samples >= 1, where, "num_samples", "must be >= 1");
  require(opt.max_new_tokens >= 1, where, "max_new_tokens", "must be >= 1");
  require(std::isfinite(opt.temperature) && opt.temperature >= 0.0, where, "temperature", "must be finite and >= 0");
  require(opt.top_p > 0.0 && opt.top_p <= 1.0, where, "top_p", "must lie in (0, 1]");
  require(opt.top_k >= 0, where, "top_k", "must be >= 0");
  require(opt.pad_id >= 0 && opt.pad_id < model->cfg.text.vocab_size, where, "pad_id", "must be a token id of the vocabulary");
}

/// The model in eval mode while it lives, then back in the mode it found (also when sampling throws).
struct eval_mode {
  internvl& model;
  bool was_training;
  explicit eval_mode(internvl& m) : model(m), was_training(m->is_training()) { model->eval(); }
  ~eval_mode() {
    if (was_training) model->train();
  }
  eval_mode(const eval_mode&) = delete;
  eval_mode& operator=(const eval_mode&) = delete;
};

/// One prompt of a decoding pass: its ids [1, T], its pixels (or undefined) and its seed.
struct pass_prompt {
  const at::Tensor* ids;
  const at::Tensor* pixels;
  std::uint64_t seed;
};

/// sample() for N prompts in one decoding pass, after validation, with the model in eval mode
/// and gradients off (the caller's). Each prompt is encoded once and its keys and values are the
/// shared prefix of its G rows (share_prefixes); the N x G rows then decode together, so each op
/// of a step (a weight matrix's packing above all) runs once for all of them. Prompt i's tokens
/// are drawn with its own seeded generator, G x V draws a step, as when it is sampled alone; its
/// result is cut to its own longest row.
inline std::vector<sampling_result> sample_pass(internvl& model, std::span<const pass_prompt> prompts, const sampling_options& opt) {
  const auto V = model->cfg.text.vocab_size;
  const auto dev = model->language_model->model->embed_tokens->weight.device();
  const auto G = opt.num_samples, L = opt.max_new_tokens, N = static_cast<std::int64_t>(prompts.size()), R = N * G;
  std::vector<at::Generator> gens;
  std::vector<kv_cache> caches(prompts.size());
  std::vector<at::Tensor> first;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    gens.push_back(at::detail::createCPUGenerator(prompts[i].seed));
    const auto& pix = *prompts[i].pixels;
    auto h = model->language_model->hidden(model->embed(prompts[i].ids->to(dev), pix.defined() ? pix.to(dev) : pix), &caches[i]);
    first.push_back(model->language_model->logits(h.narrow(1, h.size(1) - 1, 1)).squeeze(1).expand({G, V}));
  }
  kv_cache cache = share_prefixes(std::move(caches)); // the rows read each prompt's keys and values once per step
  auto logits = at::cat(first, 0);
  at::Tensor tokens = at::full({R, L}, opt.pad_id, at::kLong), logps = at::zeros({R, L}, at::kFloat), mask = at::zeros({R, L}, at::kByte);
  std::vector<std::int64_t> lengths(static_cast<std::size_t>(R), 0);
  std::vector<bool> done(static_cast<std::size_t>(R), false);
  for (std::int64_t t = 0; t < L; ++t) {
    const at::Tensor x = logits.to(at::kCPU, at::kFloat);
    // Sampling never picks the image-context token; the reported log-prob is still taken under
    // the full distribution, the one completion_logprobs / the GRPO step recompute.
    at::Tensor allowed = x.clone();
    if (model->cfg.image_token_id >= 0 && model->cfg.image_token_id < V)
      allowed.select(1, model->cfg.image_token_id).fill_(-std::numeric_limits<float>::infinity());
    at::Tensor next, lp;
    if (opt.temperature == 0.0) {
      next = allowed.argmax(-1);
      lp = x.log_softmax(-1).gather(1, next.unsqueeze(1)).squeeze(1);
    } else {
      const at::Tensor probs = detail::filter_logits(allowed / opt.temperature, opt.top_k, opt.top_p).softmax(-1);
      // each prompt draws from its own seeded CPU generator, so a seed gives the same tokens
      // whatever device holds the model and whichever prompts share the pass
      std::vector<at::Tensor> drawn;
      for (std::int64_t i = 0; i < N; ++i)
        drawn.push_back(at::multinomial(probs.narrow(0, i * G, G), 1, false, gens[static_cast<std::size_t>(i)]).squeeze(1));
      next = at::cat(drawn);
      lp = (x / opt.temperature).log_softmax(-1).gather(1, next.unsqueeze(1)).squeeze(1);
    }
    // Bookkeeping through CPU accessors: one copy per token, not one tensor op per element.
    at::Tensor next_cpu = next.contiguous();
    const at::Tensor lp_cpu = lp.contiguous();
    auto nx = next_cpu.accessor<std::int64_t, 1>();
    const auto lpa = lp_cpu.accessor<float, 1>();
    auto tok = tokens.accessor<std::int64_t, 2>();
    auto lpo = logps.accessor<float, 2>();
    auto msk = mask.accessor<std::uint8_t, 2>();
    bool all_done = true;
    for (std::int64_t g = 0; g < R; ++g) {
      const auto gi = static_cast<std::size_t>(g);
      if (done[gi]) {
        nx[g] = opt.pad_id;
        continue;
      }
      const auto id = nx[g];
      tok[g][t] = id;
      lpo[g][t] = lpa[g];
      msk[g][t] = 1;
      lengths[gi] = t + 1;
      if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), id) != opt.stop_ids.end()) done[gi] = true;
      all_done = all_done && done[gi];
    }
    if (all_done || t + 1 == L) break;
    logits = model->forward(next_cpu.unsqueeze(1).to(dev), {}, &cache).squeeze(1);
  }
  std::vector<sampling_result> out;
  for (std::int64_t i = 0; i < N; ++i) {
    const auto b = lengths.begin() + i * G;
    const auto used = *std::max_element(b, b + G);
    const auto rows = [&](const at::Tensor& a) { return a.narrow(0, i * G, G).narrow(1, 0, used).contiguous(); };
    out.push_back({rows(tokens), rows(logps), rows(mask), std::vector<std::int64_t>(b, b + G)});
  }
  return out;
}

/// sample() after validation, with the model in eval mode and gradients off (the caller's).
inline sampling_result sample_one(internvl& model, const at::Tensor& prompt, const at::Tensor& pixel_values, const sampling_options& opt,
                                  std::uint64_t seed) {
  const pass_prompt one{&prompt, &pixel_values, seed};
  return std::move(sample_pass(model, std::span<const pass_prompt>(&one, 1), opt).front());
}

} // namespace detail

/// Samples G completions of one prompt ([T] or [1, T] int64) with a KV cache. The image-context
/// token is never sampled. Seeded: the same seed gives the same tokens on the same build.
inline sampling_result sample(internvl& model, const at::Tensor& prompt_ids, const at::Tensor& pixel_values, const sampling_options& opt) {
  constexpr const char* where = "msrl::trainer::sample";
  detail::check_sampling_options(model, opt, where);
  const auto prompt = detail::one_prompt(prompt_ids, where, "prompt_ids");
  at::NoGradGuard ng;
  const detail::eval_mode em(model);
  return detail::sample_one(model, prompt, pixel_values, opt, opt.seed);
}

/// One prompt of sample_many: its ids ([T] or [1, T] int64), its pixels (or undefined) and the
/// seed of its G completions (sampling_options::seed is not used).
struct sample_request {
  at::Tensor prompt_ids;
  at::Tensor pixel_values;
  std::uint64_t seed = 0;
};

/// sample() for every request, result i for request i, on `workers` threads (at most one per
/// pass; 1 runs them here, in order). Each worker runs libtorch with one intra-op thread: a
/// decoding step of a small model is a few dozen small ops, and several prompts at once use the
/// cores better than one prompt's ops split over them. `prompts_per_pass` consecutive requests
/// decode together (detail::sample_pass), which divides the per-op cost of a small model's steps
/// among their rows. Each request draws from its own seeded generator exactly as sample() does;
/// with one prompt per pass its tokens and log-probs are sample()'s, with more the log-probs may
/// differ from sample()'s in the last bits (the rows share the matrix products; a shorter prompt
/// is padded), which could change a token only where a draw falls within that rounding of a
/// boundary. The results depend on the requests and `prompts_per_pass`, never on `workers`. The
/// caller's intra-op thread count is restored; so is the model's training mode. The first error
/// of any request is rethrown after every worker has stopped.
inline std::vector<sampling_result> sample_many(internvl& model, std::span<const sample_request> requests, const sampling_options& opt,
                                                int workers = 1, std::int64_t prompts_per_pass = 1) {
  constexpr const char* where = "msrl::trainer::sample_many";
  detail::check_sampling_options(model, opt, where);
  require(workers >= 1, where, "workers", "must be >= 1");
  require(prompts_per_pass >= 1, where, "prompts_per_pass", "must be >= 1");
  std::vector<at::Tensor> prompts;
  prompts.reserve(requests.size());
  for (std::size_t i = 0; i < requests.size(); ++i)
    prompts.push_back(detail::one_prompt(requests[i].prompt_ids, where, "requests[" + std::to_string(i) + "].prompt_ids"));
  std::vector<sampling_result> out(requests.size());
  const detail::eval_mode em(model);
  const auto per = static_cast<std::size_t>(prompts_per_pass);
  const std::size_t passes = (requests.size() + per - 1) / per;
  const auto run = [&](std::size_t pass) {
    const std::size_t i0 = pass * per, i1 = std::min(requests.size(), i0 + per);
    std::vector<detail::pass_prompt> ps;
    for (std::size_t i = i0; i < i1; ++i) ps.push_back({&prompts[i], &requests[i].pixel_values, requests[i].seed});
    auto res = detail::sample_pass(model, ps, opt);
    for (std::size_t i = i0; i < i1; ++i) out[i] = std::move(res[i - i0]);
  };
  const auto n_workers = std::min<std::size_t>(static_cast<std::size_t>(workers), passes);
  if (n_workers <= 1) {
    at::NoGradGuard ng;
    for (std::size_t i = 0; i < passes; ++i) run(i);
    return out;
  }
  std::atomic<std::size_t> next{0};
  detail::run_workers(n_workers, [&](std::size_t, const std::atomic<bool>& stop) {
    at::NoGradGuard ng; // grad mode is per thread
    for (std::size_t i; !stop.load() && (i = next.fetch_add(1)) < passes;) run(i);
  });
  return out;
}

} // namespace msrl::trainer
