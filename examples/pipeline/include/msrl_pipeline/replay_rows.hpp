#pragma once
/// \file Rows of another file mixed into a stage's rows at a fresh:replay ratio.
#include "run_context.hpp"

namespace msrl_pipeline {

/// The fresh rows with rows of `replay_file` mixed in at the fresh:replay `ratio`
/// (msrl::data::mix_plan; the order is seeded by (seed, stage)). `targets`, when not empty, holds
/// the fresh rows' SFT targets and is rewritten to match (a replayed row keeps its own).
inline std::vector<record> mix_replay(const run_context& ctx, const std::string& stage, std::vector<record> fresh,
                                      const std::string& replay_file, const std::string& ratio,
                                      std::vector<std::string>* targets = nullptr) {
  if (replay_file.empty()) return fresh;
  const auto pool = read_jsonl(ctx.data_file(replay_file), ctx.rows());
  const auto [f, r] = parse_ratio(ratio, stage + ".replay_ratio");
  const std::size_t n_replay = fresh.size() * r / f;
  const auto plan = msrl::data::mix_plan(fresh.size(), n_replay, {.ratio = {f, r}, .seed = derive_seed(ctx.cfg.seed, stage, 0, 3)});
  std::vector<record> out;
  std::vector<std::string> tg;
  out.reserve(plan.size());
  for (const auto& slot : plan) {
    out.push_back(slot.replay ? pool[slot.index % pool.size()] : fresh[slot.index]);
    if (targets && !targets->empty()) tg.push_back(slot.replay ? assistant_target(out.back()) : (*targets)[slot.index]);
  }
  if (targets && !targets->empty()) *targets = std::move(tg);
  if (n_replay) ctx.say(stage + ": " + std::to_string(fresh.size()) + " rows + " + std::to_string(n_replay) + " replayed (" + ratio + ")");
  return out;
}

/// Rows of a stage: its file, plus rows of `replay_file` (mix_replay).
inline std::vector<record> mixed_rows(const run_context& ctx, const std::string& stage, const std::string& file, const std::string& replay_file,
                                      const std::string& ratio) {
  return mix_replay(ctx, stage, read_jsonl(ctx.data_file(file), ctx.rows()), replay_file, ratio);
}

} // namespace msrl_pipeline
