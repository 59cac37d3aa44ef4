#pragma once
/// \file Accuracy rewards: the prediction against the gold label.
///
/// * msrl (MSRL plugin `msrl_accuracy_reward`): both sides through normalize_msrl (strip, the
///   `<answer>` content if non-empty else the whole text, strip, upper); `value` iff equal and
///   non-empty. So `a` matches `A`; `Response A` does not; a bare `A` completion scores.
/// * exact (UnifiedReward-Think): the first `<answer>(.*?)</answer>` (case-sensitive, no DOTALL:
///   Python re.search without flags), stripped, or the whole stripped text when absent, compared
///   byte for byte with the gold treated the same way. A missing (empty) gold scores 0.
/// * label: prediction parsed with `format`, gold parsed with label_format::any; `value` iff both
///   parse and agree (R1-Reward `1`/`2`, MM-RewardBench `[[A]]`, `Image 1 is better`, ...).
#include <cstdint>
#include <string_view>

#include "labels.hpp"
#include "sample.hpp"
#include "tags.hpp"

namespace msrl::reward {

enum class accuracy_style : std::uint8_t { msrl, exact, label };

namespace detail_accuracy {
inline std::string_view exact_answer(std::string_view text) {
  const auto m = find_tag(text, "answer", tag_options{.ignore_case = false, .dot_all = false});
  return m ? trim(text.substr(m->content_begin, m->content_end - m->content_begin)) : trim(text);
}
} // namespace detail_accuracy

struct accuracy_reward {
  accuracy_style style = accuracy_style::msrl;
  label_format format = label_format::msrl; ///< used by accuracy_style::label
  double value = 1.0;

  double operator()(const sample& s) const {
    switch (style) {
    case accuracy_style::msrl: {
      // upper(a) == upper(b) is ASCII case-insensitive equality: no copies of long texts.
      const std::string_view g = msrl_answer_view(s.solution);
      if (g.empty()) return 0.0;
      return iequals(msrl_answer_view(s.completion), g) ? value : 0.0;
    }
    case accuracy_style::exact: {
      const std::string_view g = detail_accuracy::exact_answer(s.solution);
      if (g.empty()) return 0.0;
      return detail_accuracy::exact_answer(s.completion) == g ? value : 0.0;
    }
    case accuracy_style::label: {
      const label g = parse_label(s.solution, label_format::any);
      return g != label::none && parse_label(s.completion, format) == g ? value : 0.0;
    }
    }
    return 0.0;
  }
};

} // namespace msrl::reward
