#pragma once
/// \file Sampling for the GRPO, CMKD and evaluation stages: many prompts at once on the
/// sampling workers (msrl::trainer::sample_many), texts cut at <|im_end|>, in chunks.
#include "run_context.hpp"

namespace msrl_pipeline {

struct sampled_group {
  msrl::trainer::sampling_result s;
  std::vector<std::string> texts;
};

/// Prompts that sample_in_chunks encodes and samples in one call (the workers share them).
inline constexpr std::size_t sampling_chunk = 32;

/// Threads that sample prompts at once (sampling_workers).
inline int sampling_workers(const run_context& ctx) { return worker_count(ctx, ctx.cfg.sampling_workers); }

/// n completions of each prompt (prompt i with seeds[i]) and their texts up to <|im_end|>, on
/// sampling_workers threads; the BLAS runs one thread meanwhile (its own pool would compete with
/// the workers for the cores, on matrices this small).
inline std::vector<sampled_group> sample_texts(const run_context& ctx, internvl& m, const std::vector<encoded_prompt>& prompts,
                                               const std::vector<std::uint64_t>& seeds, std::int64_t n, double temperature, double top_p,
                                               std::int64_t top_k, std::int64_t max_new) {
  std::vector<msrl::trainer::sample_request> req;
  req.reserve(prompts.size());
  for (std::size_t i = 0; i < prompts.size(); ++i) req.push_back({torch::tensor(prompts[i].ids, at::kLong), prompts[i].pixel_values, seeds.at(i)});
  const std::size_t per = static_cast<std::size_t>(ctx.cfg.prompts_per_pass), passes = (req.size() + per - 1) / per;
  const int workers = std::min<int>(sampling_workers(ctx), static_cast<int>(std::max<std::size_t>(1, passes)));
  std::vector<msrl::trainer::sampling_result> res;
  {
    const scoped_blas_threads one(workers > 1 ? 1 : 0);
    res = msrl::trainer::sample_many(m, req,
                                     {.num_samples = n, .max_new_tokens = max_new, .temperature = temperature, .top_p = top_p, .top_k = top_k,
                                      .stop_ids = {ctx.im_end}, .pad_id = ctx.pad},
                                     workers, ctx.cfg.prompts_per_pass);
  }
  std::vector<sampled_group> out(res.size());
  for (std::size_t p = 0; p < res.size(); ++p) {
    auto& g = out[p];
    g.s = std::move(res[p]);
    const at::Tensor tokens = g.s.tokens.to(at::kCPU).contiguous();
    const auto tok = tokens.accessor<std::int64_t, 2>();
    for (std::int64_t i = 0; i < n; ++i) {
      std::vector<std::int64_t> ids;
      for (std::int64_t k = 0; k < g.s.lengths[static_cast<std::size_t>(i)]; ++k) {
        const auto id = tok[i][k];
        if (id == ctx.im_end) break;
        ids.push_back(id);
      }
      g.texts.push_back(ctx.tok.decode(ids));
    }
  }
  return out;
}

/// sample_texts over `count` items, sampling_chunk prompts per call: item(k) gives item k's
/// prompt and seed, each(k, group) receives its n completions, in order.
template <class Item, class Each>
void sample_in_chunks(const run_context& ctx, internvl& m, std::size_t count, std::int64_t n, double temperature, double top_p,
                      std::int64_t top_k, std::int64_t max_new, Item item, Each each) {
  for (std::size_t k0 = 0; k0 < count; k0 += sampling_chunk) {
    const std::size_t k1 = std::min(count, k0 + sampling_chunk);
    std::vector<encoded_prompt> ps;
    std::vector<std::uint64_t> seeds;
    for (std::size_t k = k0; k < k1; ++k) {
      auto [p, seed] = item(k);
      ps.push_back(std::move(p));
      seeds.push_back(seed);
    }
    const auto groups = sample_texts(ctx, m, ps, seeds, n, temperature, top_p, top_k, max_new);
    for (std::size_t k = k0; k < k1; ++k) each(k, groups[k - k0]);
  }
}

} // namespace msrl_pipeline
