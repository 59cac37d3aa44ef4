#pragma once
/// \file Cross-modal knowledge distillation (CMKD) selection: from K rationales sampled by the
/// caption-trained reward model for one caption-based sample, pick one SFT target.
///
///   1. parse each rationale's label (label_format, default msrl A/B); majority vote -> pseudo-label
///      (tie_policy, default abstain: a tie drops the sample); optionally drop the sample when the
///      winner holds less than `min_agreement` of the parsable votes (default 0: never, the paper's
///      rule);
///   2. drop rationales whose label differs (or does not parse);
///   3. drop rationales that fail the format check (format_style, default msrl) or have an empty
///      `<think>`;
///   4. keep the one with the highest confidence (pluggable; default mean token log-prob;
///      ties -> lowest index; a non-finite confidence drops the rationale);
///   5. emit `<caption>C</caption><think>T</think><answer>X</answer>`, to be paired with the
///      original multimodal sample (MSRL paper, Stage 2 CMKD).
#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../reward/caption.hpp"
#include "../reward/format.hpp"
#include "../reward/labels.hpp"
#include "../reward/tags.hpp"
#include "vote.hpp"

namespace msrl::voting {

/// One sampled rationale and what its confidence may be computed from.
struct cmkd_candidate {
  std::string_view text;
  std::span<const double> token_logprobs = {}; ///< log-probs of the generated tokens
  double answer_token_prob = std::numeric_limits<double>::quiet_NaN(); ///< p of the answer label token
};

/// A confidence scorer: any copyable callable mapping a candidate to a number (higher = more
/// confident; NaN or infinite = no confidence, the candidate is dropped).
template <class F>
concept confidence_scorer = std::copy_constructible<F> && std::invocable<const F&, const cmkd_candidate&> &&
                            std::convertible_to<std::invoke_result_t<const F&, const cmkd_candidate&>, double>;

/// Mean token log-prob (the default; GRAM-R² sampling stores this per sample).
struct mean_token_logprob {
  double operator()(const cmkd_candidate& c) const noexcept {
    if (c.token_logprobs.empty()) return std::numeric_limits<double>::quiet_NaN();
    double s = 0.0;
    for (double v : c.token_logprobs) s += v;
    return s / static_cast<double>(c.token_logprobs.size());
  }
};

/// Sequence log-prob: the sum over tokens (favours short rationales).
struct sequence_logprob {
  double operator()(const cmkd_candidate& c) const noexcept {
    if (c.token_logprobs.empty()) return std::numeric_limits<double>::quiet_NaN();
    double s = 0.0;
    for (double v : c.token_logprobs) s += v;
    return s;
  }
};

/// Probability of the answer label token.
struct answer_token_probability {
  double operator()(const cmkd_candidate& c) const noexcept { return c.answer_token_prob; }
};

/// Every candidate equally confident: the first eligible one wins.
struct first_eligible {
  double operator()(const cmkd_candidate&) const noexcept { return 0.0; }
};

/// Why a candidate was not selected (or that it was eligible).
enum class candidate_status : std::uint8_t { eligible, unparsable, disagree, malformed, no_confidence };

/// What happened to the sample.
enum class sample_status : std::uint8_t {
  kept,
  no_votes,     ///< no candidate had a parsable label
  tie,          ///< the vote tied and the tie policy abstained
  none_eligible, ///< every candidate was dropped
  low_agreement  ///< the winner held less than cmkd_options::min_agreement of the parsable votes
};

struct cmkd_options {
  reward::label_format labels = reward::label_format::msrl;
  reward::format_style format = reward::format_style::msrl;
  tie_policy tie = tie_policy::abstain;
  /// Smallest share of the parsable votes the pseudo-label must hold to keep the sample, in [0, 1]
  /// (0: any majority, the paper's rule; 0.75 with K = 8: at least 6 of 8). A vote the caption model
  /// splits is a weak pseudo-label; this drops it instead of distilling it.
  double min_agreement = 0.0;
};

struct cmkd_selection {
  sample_status status = sample_status::no_votes;
  label pseudo_label = label::none;
  vote_result votes;
  std::size_t chosen = static_cast<std::size_t>(-1); ///< index of the selected candidate
  double confidence = std::numeric_limits<double>::quiet_NaN();
  std::string target; ///< the SFT target; empty unless kept
  std::vector<candidate_status> candidates;
};

namespace detail_cmkd {

inline std::string assemble(std::string_view caption, std::string_view think, label answer) {
  std::string t;
  t.reserve(caption.size() + think.size() + 64);
  t.append("<caption>").append(caption).append("</caption><think>").append(think).append("</think><answer>");
  t.push_back(reward::to_char(answer));
  t.append("</answer>");
  return t;
}

// A target is only useful if the parsers read back what was written: the label and the
// caption-first layout. Text that contains tags ('<answer>' in a caption, '</caption>', ...) breaks that.
inline bool round_trips(std::string_view target, label answer) {
  return reward::parse_label(target, reward::label_format::msrl) == answer && reward::caption_first(target);
}

inline bool caption_usable(std::string_view caption) {
  return reward::find(caption, "</caption>", 0, true) == std::string_view::npos &&
         round_trips(assemble(caption, "x", label::a), label::a);
}

} // namespace detail_cmkd

/// `<caption>C</caption><think>T</think><answer>X</answer>`. Throws value_error when the caption
/// or the think text contains tags that would make the target parse back differently.
inline std::string cmkd_target(std::string_view caption, std::string_view think, label answer) {
  constexpr const char* where = "msrl::voting::cmkd_target";
  require(answer != label::none, where, "answer", "must be A or B");
  require(!reward::trim(caption).empty(), where, "caption", "must not be empty");
  require<value_error>(detail_cmkd::caption_usable(caption), where, "caption",
                       "must not contain '</caption>' or '<answer>' (the target would not parse back)");
  std::string t = detail_cmkd::assemble(caption, think, answer);
  require<value_error>(detail_cmkd::round_trips(t, answer), where, "think",
                       "must not contain an unclosed '<answer>' (the target would not parse back)");
  return t;
}

/// Runs the selection for one sample (see the file comment).
template <confidence_scorer Confidence = mean_token_logprob>
cmkd_selection cmkd_select(std::span<const cmkd_candidate> candidates, std::string_view caption,
                           const cmkd_options& opt = {}, Confidence confidence = {}) {
  constexpr const char* where = "msrl::voting::cmkd_select";
  require(opt.min_agreement >= 0.0 && opt.min_agreement <= 1.0, where, "opt.min_agreement",
          "must be in [0, 1] (got " + std::to_string(opt.min_agreement) + ")");
  require(!reward::trim(caption).empty(), where, "caption", "must not be empty");
  require<value_error>(detail_cmkd::caption_usable(caption), where, "caption",
                       "must not contain '</caption>' or '<answer>' (the target would not parse back)");
  cmkd_selection s;
  s.candidates.assign(candidates.size(), candidate_status::eligible);
  std::vector<label> labels(candidates.size());
  for (std::size_t i = 0; i < candidates.size(); ++i) labels[i] = reward::parse_label(candidates[i].text, opt.labels);
  s.votes = majority_vote(labels, opt.tie);
  s.pseudo_label = s.votes.winner;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (labels[i] == label::none) s.candidates[i] = candidate_status::unparsable;
    else if (labels[i] != s.pseudo_label) s.candidates[i] = candidate_status::disagree;
  }
  if (s.votes.a + s.votes.b == 0) {
    s.status = sample_status::no_votes;
    return s;
  }
  if (s.pseudo_label == label::none) {
    s.status = sample_status::tie;
    return s;
  }
  if (opt.min_agreement > 0.0) {
    const std::size_t won = s.pseudo_label == label::a ? s.votes.a : s.votes.b;
    // won / (a + b) < min_agreement without the division: exact at shares such as 6 of 8 = 0.75
    if (static_cast<double>(won) < opt.min_agreement * static_cast<double>(s.votes.a + s.votes.b)) {
      s.status = sample_status::low_agreement;
      return s;
    }
  }
  std::string_view best_think;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (s.candidates[i] != candidate_status::eligible) continue;
    const std::string_view text = candidates[i].text;
    const std::string_view think = reward::extract_tag(text, "think");
    // malformed: the format check fails, the think is empty, or the think holds tags that would
    // make the distilled target parse back differently (model output is untrusted text)
    if (!reward::check_format(text, opt.format) || think.empty() ||
        !detail_cmkd::round_trips(detail_cmkd::assemble(caption, think, s.pseudo_label), s.pseudo_label)) {
      s.candidates[i] = candidate_status::malformed;
      continue;
    }
    const double c = static_cast<double>(confidence(candidates[i]));
    if (!std::isfinite(c)) {
      s.candidates[i] = candidate_status::no_confidence;
      continue;
    }
    if (s.chosen == static_cast<std::size_t>(-1) || c > s.confidence) {
      s.chosen = i;
      s.confidence = c;
      best_think = think;
    }
  }
  if (s.chosen == static_cast<std::size_t>(-1)) {
    s.status = sample_status::none_eligible;
    return s;
  }
  s.target = cmkd_target(caption, best_think, s.pseudo_label);
  s.status = sample_status::kept;
  return s;
}

/// Counts of samples and candidates by outcome, summed over many selections.
struct cmkd_counts {
  std::size_t samples = 0, kept = 0, dropped_no_votes = 0, dropped_tie = 0, dropped_none_eligible = 0, dropped_low_agreement = 0;
  std::size_t candidates = 0, eligible = 0, unparsable = 0, disagree = 0, malformed = 0, no_confidence = 0;

  /// The drop reasons by report name, in a fixed order ("no_votes", "tie", "none_eligible",
  /// "low_agreement"): what the `dropped` object of a stats report lists.
  std::array<std::pair<std::string_view, std::size_t>, 4> dropped_by_reason() const noexcept {
    return {{{"no_votes", dropped_no_votes}, {"tie", dropped_tie}, {"none_eligible", dropped_none_eligible},
             {"low_agreement", dropped_low_agreement}}};
  }
  /// The candidate outcomes by report name, in a fixed order ("total" first, then by status).
  std::array<std::pair<std::string_view, std::size_t>, 6> candidates_by_outcome() const noexcept {
    return {{{"total", candidates}, {"eligible", eligible}, {"unparsable", unparsable}, {"disagree", disagree},
             {"malformed", malformed}, {"no_confidence", no_confidence}}};
  }

  void add(const cmkd_selection& s) noexcept {
    ++samples;
    switch (s.status) {
    case sample_status::kept: ++kept; break;
    case sample_status::no_votes: ++dropped_no_votes; break;
    case sample_status::tie: ++dropped_tie; break;
    case sample_status::none_eligible: ++dropped_none_eligible; break;
    case sample_status::low_agreement: ++dropped_low_agreement; break;
    }
    for (candidate_status c : s.candidates) {
      ++candidates;
      switch (c) {
      case candidate_status::eligible: ++eligible; break;
      case candidate_status::unparsable: ++unparsable; break;
      case candidate_status::disagree: ++disagree; break;
      case candidate_status::malformed: ++malformed; break;
      case candidate_status::no_confidence: ++no_confidence; break;
      }
    }
  }
};

} // namespace msrl::voting
