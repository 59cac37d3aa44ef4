#pragma once
/// \file Caption-first reward for stage 3 (an msrl addition; the MSRL release rewards only
/// think/answer presence). Stage 3 asks for `<type>` (optional) -> `<caption>` -> `<think>` -> `<answer>`.
///
/// `value` when: the first `<caption>…</caption>` (case-insensitive, DOTALL) has non-empty stripped
/// content; a `<think>…</think>` opens after the caption closes; an `<answer>…</answer>` opens
/// after that think closes; and, with require_type, a non-empty `<type>…</type>` closes before
/// the caption opens. Otherwise 0. Linear time.
#include <string_view>

#include "sample.hpp"
#include "tags.hpp"

namespace msrl::reward {

/// True when `text` follows the caption-first layout described above.
inline bool caption_first(std::string_view text, bool require_type = false) {
  const auto c = find_tag(text, "caption");
  if (!c || trim(text.substr(c->content_begin, c->content_end - c->content_begin)).empty()) return false;
  if (require_type) {
    const auto t = find_tag(text, "type");
    if (!t || t->close_end > c->open || trim(text.substr(t->content_begin, t->content_end - t->content_begin)).empty())
      return false;
  }
  const auto th = find_tag(text, "think", {}, c->close_end);
  if (!th) return false;
  return find_tag(text, "answer", {}, th->close_end).has_value();
}

struct caption_first_reward {
  double value = 1.0;
  bool require_type = false;
  double operator()(const sample& s) const { return caption_first(s.completion, require_type) ? value : 0.0; }
};

} // namespace msrl::reward
