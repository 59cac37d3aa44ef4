#pragma once
/// \file Item groups (a GRPO stage's `advantage_group: "item"`): the advantages of one item judged
/// in both orders, a row and its mirrored twin, normalised over both orders' completions together,
/// so that a judge right in one order and wrong in the other gets a signal where each order's own
/// group is flat.
#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include <msrl/core/error.hpp>
#include <msrl/grpo/advantages.hpp>

namespace msrl_pipeline {

struct item_advantages_result {
  std::vector<std::vector<double>> per_group; ///< one advantage per completion, group by group
  msrl::grpo::advantage_stats stats;          ///< the item as one group (zero_std_groups 1: every reward equal)
};

/// `groups`: the rewards of each order's group (any sizes, at least one completion in all); the
/// advantages follow `opt` (the stage preset's rule) with the item's completions as one group, and
/// are exactly 0 when the item's rewards are flat (std <= opt.zero_std_tol).
inline item_advantages_result item_advantages(const std::vector<std::vector<double>>& groups, const msrl::grpo::advantage_options& opt) {
  std::vector<double> all;
  for (const auto& g : groups) all.insert(all.end(), g.begin(), g.end());
  msrl::require(!all.empty(), "msrl_pipeline::item_advantages", "groups", "must hold at least one reward");
  std::vector<double> adv(all.size());
  item_advantages_result out;
  out.stats = msrl::grpo::advantages(std::span<const double>(all), all.size(), std::span<double>(adv), opt);
  // a flat item's advantages are exactly 0 (the mean of equal rewards may round off them by an ulp
  // when the preset does not divide by the std), so the trainer skips both of its groups
  if (out.stats.zero_std_groups != 0) std::fill(adv.begin(), adv.end(), 0.0);
  std::size_t o = 0;
  for (const auto& g : groups) {
    out.per_group.emplace_back(adv.begin() + static_cast<std::ptrdiff_t>(o), adv.begin() + static_cast<std::ptrdiff_t>(o + g.size()));
    o += g.size();
  }
  return out;
}

} // namespace msrl_pipeline
