#pragma once
/// \file Benchmark scoring: accuracy per category, overall (micro) and macro average, with each
/// benchmark's convention for unparsable outputs and excluded items.
///
/// * VL-RewardBench: category = group from the id prefix (text before the first `_` or `-`):
///   RLAIF -> rlaif-v, RLHF -> rlhf-v, hallucination -> povid (the rule some copies miss),
///   mathverse / mmmu -> reasoning, wildvision -> wildvision-battle, anything else -> vlfeedback;
///   groups: general = vlfeedback + wildvision-battle, hallucination = povid + rlaif-v + rlhf-v,
///   reasoning = reasoning. Unparsable judgments leave the denominator (official cal.py); with k
///   judgments per item, the item is correct if agree > k/2, wrong if reject > k/2, else dropped.
/// * GenAI-Bench: gold from vote_type (leftvote -> A, rightvote -> B); tievote and bothbad_vote
///   items are excluded (any vote_type containing `tie` or `both`).
/// * Multimodal RewardBench: gold `Output1` -> A, `Output2` -> B; an unparsable judgment gets a
///   seeded random guess (the reference script guesses with seed 123 in Python's RNG; msrl's
///   guesses are deterministic but not the same draws).
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../data/random.hpp"
#include "../reward/labels.hpp"

namespace msrl::voting {

using reward::label;

/// What an unparsable prediction counts as.
enum class unparsable_policy : std::uint8_t {
  exclude,     ///< leaves the denominator (VL-RewardBench)
  wrong,       ///< counts as an error
  random_guess ///< seeded coin flip (Multimodal RewardBench)
};

struct category_accuracy {
  std::string category;
  std::size_t correct = 0, wrong = 0, unparsable = 0, excluded = 0;
  double accuracy() const noexcept {
    const std::size_t d = correct + wrong;
    return d ? static_cast<double>(correct) / static_cast<double>(d) : 0.0;
  }
};

struct accuracy_report {
  std::vector<category_accuracy> categories; ///< sorted by name
  double micro = 0.0; ///< sum correct / sum (correct + wrong) over all categories
  double macro = 0.0; ///< mean of the category accuracies (categories with a denominator)
  std::size_t correct = 0, wrong = 0, unparsable = 0, excluded = 0;
};

/// Accumulates (category, prediction, gold) items.
class accuracy_table {
public:
  explicit accuracy_table(unparsable_policy policy = unparsable_policy::exclude, std::uint64_t seed = 123)
      : policy_(policy), rng_(seed) {}

  /// gold label::none marks an excluded item (tie, both bad).
  void add(std::string_view category, label prediction, label gold) {
    category_accuracy& c = row(category);
    if (gold == label::none) {
      ++c.excluded;
      return;
    }
    if (prediction == label::none) {
      ++c.unparsable;
      if (policy_ == unparsable_policy::wrong) ++c.wrong;
      else if (policy_ == unparsable_policy::random_guess) {
        const label guess = rng_.below(2) == 0 ? label::a : label::b;
        ++(guess == gold ? c.correct : c.wrong);
      }
      return;
    }
    ++(prediction == gold ? c.correct : c.wrong);
  }

  /// An item judged k times (VL-RewardBench cal.py): correct if agree > k/2, wrong if reject > k/2,
  /// otherwise unparsable (handled by the policy).
  void add_votes(std::string_view category, std::span<const label> predictions, label gold) {
    if (gold == label::none) {
      add(category, label::none, gold);
      return;
    }
    std::size_t agree = 0, reject = 0;
    for (label p : predictions) {
      if (p == gold) ++agree;
      else if (p != label::none) ++reject;
    }
    const std::size_t k = predictions.size();
    const label verdict = 2 * agree > k ? gold : 2 * reject > k ? reward::swapped(gold) : label::none;
    add(category, verdict, gold);
  }

  accuracy_report report() const {
    accuracy_report r;
    double sum = 0.0;
    std::size_t n = 0;
    for (const auto& [name, c] : rows_) {
      r.categories.push_back(c);
      r.correct += c.correct;
      r.wrong += c.wrong;
      r.unparsable += c.unparsable;
      r.excluded += c.excluded;
      if (c.correct + c.wrong > 0) {
        sum += c.accuracy();
        ++n;
      }
    }
    const std::size_t d = r.correct + r.wrong;
    r.micro = d ? static_cast<double>(r.correct) / static_cast<double>(d) : 0.0;
    r.macro = n ? sum / static_cast<double>(n) : 0.0;
    return r;
  }

private:
  category_accuracy& row(std::string_view category) {
    auto it = rows_.find(std::string(category));
    if (it == rows_.end()) it = rows_.emplace(std::string(category), category_accuracy{std::string(category)}).first;
    return it->second;
  }
  unparsable_policy policy_;
  data::splitmix64 rng_;
  std::map<std::string, category_accuracy> rows_;
};

/// VL-RewardBench subset of an item id (see the file comment).
inline std::string_view vlrb_subset(std::string_view id) noexcept {
  const std::size_t cut = id.find_first_of("_-");
  const std::string_view p = id.substr(0, cut);
  if (p == "RLAIF") return "rlaif-v";
  if (p == "RLHF") return "rlhf-v";
  if (p == "hallucination") return "povid";
  if (p == "mathverse" || p == "mmmu") return "reasoning";
  if (p == "wildvision") return "wildvision-battle";
  return "vlfeedback";
}

/// VL-RewardBench group (general / hallucination / reasoning) of an item id.
inline std::string_view vlrb_group(std::string_view id) noexcept {
  const std::string_view s = vlrb_subset(id);
  if (s == "povid" || s == "rlaif-v" || s == "rlhf-v") return "hallucination";
  if (s == "reasoning") return "reasoning";
  return "general";
}

/// GenAI-Bench gold label: leftvote -> A, rightvote -> B, tie / both-bad -> none (excluded).
/// Throws msrl::value_error for any other vote_type.
inline label genai_gold(std::string_view vote_type) {
  if (vote_type.find("tie") != std::string_view::npos || vote_type.find("both") != std::string_view::npos)
    return label::none;
  if (vote_type == "leftvote") return label::a;
  if (vote_type == "rightvote") return label::b;
  throw value_error(detail::format_error("msrl::voting::genai_gold", "vote_type",
                                         "must be leftvote, rightvote, tievote or bothbad_vote (got '" +
                                             std::string(vote_type.substr(0, 64)) + "')"));
}

/// Multimodal RewardBench reporting category: `reasoning` splits into math (ID starting with
/// `math`) and coding, `safety` into bias (ID starting with `pairs`) and toxicity; others unchanged.
inline std::string mmrb_category(std::string_view id, std::string_view category) {
  if (category == "reasoning") return id.starts_with("math") ? "reasoning/math" : "reasoning/coding";
  if (category == "safety") return id.starts_with("pairs") ? "safety/bias" : "safety/toxicity";
  return std::string(category);
}

/// Multimodal RewardBench gold label: Output1 -> A, Output2 -> B; throws msrl::value_error otherwise.
inline label mmrb_gold(std::string_view better) {
  if (better == "Output1") return label::a;
  if (better == "Output2") return label::b;
  throw value_error(detail::format_error("msrl::voting::mmrb_gold", "better", "must be Output1 or Output2"));
}

} // namespace msrl::voting
