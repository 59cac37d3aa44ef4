#pragma once
/// \file Group filters for dynamic sampling (DAPO): which prompt groups carry a learning signal.
/// The helper returns a keep flag per group and the counts; the resampling loop is the trainer's.
///
///   verl_zero_std       drop iff the group has more than one row and the population std of its
///                       scores is exactly 0 (verl algorithm.filter_groups, v1/replay_buffer.py)
///   ms_swift_zero_std   drop iff the group has one row or the unbiased std of its scores is 0
///                       (ms-swift dynamic_sample, compute_std)
///   openrlhf_range      keep iff lo < mean score < hi (OpenRLHF dynamic_filtering_reward_range,
///                       default (0, 1))
///
/// Scores are the rows' scalar rewards (ms-swift: the weighted nansum of the reward columns),
/// grouped consecutively. The statistics are taken over the deviations from the group's first
/// score (summed in row order), so equal scores always give exactly 0, as numpy's std does for
/// verl; a plain loop's mean of eight scores of 0.2 is not 0.2, and its std not 0.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "../core/error.hpp"
#include "../core/ranges.hpp"

namespace msrl::grpo {

enum class group_filter_rule : std::uint8_t { verl_zero_std, ms_swift_zero_std, openrlhf_range };

struct group_filter_options {
  group_filter_rule rule = group_filter_rule::verl_zero_std;
  double lo = 0.0; ///< openrlhf_range: exclusive lower bound of the mean score
  double hi = 1.0; ///< openrlhf_range: exclusive upper bound
};

struct group_filter_result {
  std::size_t kept = 0, dropped = 0;
};

/// Writes keep (1) or drop (0) per group into `keep` (one element per group).
template <class T, msrl::output_range R>
group_filter_result filter_groups(std::span<const T> scores, std::size_t group_size, const group_filter_options& opt,
                                  R&& keep) {
  constexpr const char* where = "msrl::grpo::filter_groups";
  auto k = msrl::as_span(keep);
  require(group_size >= 1, where, "group_size", "must be at least 1");
  require<shape_error>(scores.size() % group_size == 0, where, "group_size",
                       "must divide the number of rows (" + std::to_string(scores.size()) + ")");
  const std::size_t G = group_size, ngroups = scores.size() / G;
  require<shape_error>(k.size() == ngroups, where, "keep",
                       "must have one element per group (" + std::to_string(ngroups) + ")");
  require(!std::isnan(opt.lo) && !std::isnan(opt.hi), where, "options.lo/hi", "must not be NaN");
  group_filter_result res;
  for (std::size_t g = 0; g < ngroups; ++g) {
    const double first = static_cast<double>(scores[g * G]);
    double sum = 0.0; // of the deviations from the first score
    for (std::size_t j = g * G; j < (g + 1) * G; ++j) {
      const double v = static_cast<double>(scores[j]);
      require<value_error>(std::isfinite(v), where, "scores", "must be finite");
      sum += v - first;
    }
    const double shift = sum / static_cast<double>(G), mean = first + shift;
    double ss = 0.0;
    for (std::size_t j = g * G; j < (g + 1) * G; ++j) {
      const double d = static_cast<double>(scores[j]) - first - shift;
      ss += d * d;
    }
    bool kept = true;
    switch (opt.rule) {
    case group_filter_rule::verl_zero_std:
      kept = G == 1 || std::sqrt(ss / static_cast<double>(G)) != 0.0;
      break;
    case group_filter_rule::ms_swift_zero_std:
      kept = G > 1 && std::sqrt(ss / static_cast<double>(G - 1)) != 0.0;
      break;
    case group_filter_rule::openrlhf_range:
      kept = opt.lo < mean && mean < opt.hi;
      break;
    }
    k[g] = kept ? 1 : 0;
    (kept ? res.kept : res.dropped) += 1;
  }
  return res;
}

} // namespace msrl::grpo
