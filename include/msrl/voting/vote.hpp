#pragma once
/// \file Majority voting over pairwise judgments (voting@k) with an explicit tie policy, and
/// position-debiased voting over judgments made on both A/B orders.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "../core/error.hpp"
#include "../reward/labels.hpp"

namespace msrl::voting {

using reward::label;
using reward::label_format;

/// What a tie (equal, non-zero A and B counts) resolves to.
enum class tie_policy : std::uint8_t {
  abstain,    ///< no label (the item counts as undecided)
  first_vote, ///< the label of the earliest valid vote
  prefer_a,   ///< always A
  prefer_b,   ///< always B
};

/// Parses "abstain", "first", "a", "b"; throws msrl::invalid_argument otherwise.
inline tie_policy tie_policy_from_name(std::string_view n) {
  if (n == "abstain") return tie_policy::abstain;
  if (n == "first") return tie_policy::first_vote;
  if (n == "a") return tie_policy::prefer_a;
  if (n == "b") return tie_policy::prefer_b;
  throw invalid_argument(detail::format_error("msrl::voting::tie_policy_from_name", "name",
                                              "must be one of abstain, first, a, b"));
}

struct vote_result {
  label winner = label::none;
  std::size_t a = 0;       ///< votes for A
  std::size_t b = 0;       ///< votes for B
  std::size_t invalid = 0; ///< unparsable judgments (label::none), ignored by the vote
  bool tie = false;        ///< a == b > 0
};

namespace detail_vote {
// Accumulates votes and applies the majority rule with the tie policy.
struct tally {
  vote_result r;
  label first = label::none;
  void add(label v) noexcept {
    if (v == label::a) ++r.a;
    else if (v == label::b) ++r.b;
    else ++r.invalid;
    if (first == label::none && v != label::none) first = v;
  }
  vote_result decide(tie_policy tie) const noexcept {
    vote_result out = r;
    if (r.a > r.b) out.winner = label::a;
    else if (r.b > r.a) out.winner = label::b;
    else if (r.a > 0) {
      out.tie = true;
      out.winner = tie == tie_policy::abstain    ? label::none
                   : tie == tie_policy::prefer_a ? label::a
                   : tie == tie_policy::prefer_b ? label::b
                                                 : first;
    }
    return out;
  }
};
} // namespace detail_vote

/// Plain majority over the valid votes; label::none votes are counted as invalid and ignored.
inline vote_result majority_vote(std::span<const label> votes, tie_policy tie = tie_policy::abstain) {
  detail_vote::tally t;
  for (label v : votes) t.add(v);
  return t.decide(tie);
}

/// voting@k: parses the first k judgments with `format` and votes. k = 0 means all of them.
inline vote_result vote_at_k(std::span<const std::string_view> judgments, std::size_t k = 0,
                             label_format format = label_format::msrl, tie_policy tie = tie_policy::abstain) {
  require<shape_error>(k <= judgments.size(), "msrl::voting::vote_at_k", "k",
                       "must not exceed the number of judgments (" + std::to_string(judgments.size()) + ")");
  const std::size_t n = k == 0 ? judgments.size() : k;
  detail_vote::tally t;
  for (std::size_t i = 0; i < n; ++i) t.add(reward::parse_label(judgments[i], format));
  return t.decide(tie);
}

/// Position-debiased vote. `original` holds judgments made with the candidates in their original
/// order (A = first); `swapped` holds judgments made with the two candidates exchanged. Each
/// swapped judgment is mapped back (A <-> B) and all votes count equally; the result is in the
/// original order. Tie policy first_vote takes the earliest valid vote of `original`, then of `swapped`.
inline vote_result debiased_vote(std::span<const label> original, std::span<const label> swapped,
                                 tie_policy tie = tie_policy::abstain) {
  detail_vote::tally t;
  for (label v : original) t.add(v);
  for (label v : swapped) t.add(reward::swapped(v));
  return t.decide(tie);
}

/// Probability form of the two-order debiasing (GRAM v1 evaluation): the judge gives
/// p(first is better) in the original order and in the swapped order; the original A was shown
/// second in the swapped order, so p(A) = (p_first_original + (1 - p_first_swapped)) / 2.
inline double debiased_probability(double p_first_original, double p_first_swapped) {
  constexpr const char* where = "msrl::voting::debiased_probability";
  require<value_error>(p_first_original >= 0.0 && p_first_original <= 1.0, where, "p_first_original",
                       "must be a probability in [0, 1]");
  require<value_error>(p_first_swapped >= 0.0 && p_first_swapped <= 1.0, where, "p_first_swapped",
                       "must be a probability in [0, 1]");
  return 0.5 * (p_first_original + (1.0 - p_first_swapped));
}

} // namespace msrl::voting
