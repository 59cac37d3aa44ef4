#pragma once
/// \file Format rewards in the four recorded styles. Each check is linear in the text length.
///
/// | style          | recorded rule (Python `re`)                                                        |
/// |----------------|------------------------------------------------------------------------------------|
/// | msrl           | re.search `<think>.*?</think>` and re.search `<answer>.*?</answer>`, DOTALL+IGNORECASE, any order |
/// | swift          | re.match `^<think>.*?</think>\s*<answer>.*?</answer>` then end of text, DOTALL      |
/// | unifiedreward  | re.match `<think>.*?</think>\s*<answer>.*?</answer>`, DOTALL (trailing text allowed)|
/// | r1reward       | re.match `^<think>.*?</think><answer>.*?</answer>$`, DOTALL, and str.count of `<think>` and `<answer>` both 1 |
///
/// Only msrl ignores case. `$` in r1reward is Python's: end of text or before one final '\n'.
#include <cstdint>
#include <string_view>

#include "../core/error.hpp"
#include "sample.hpp"
#include "tags.hpp"

namespace msrl::reward {

enum class format_style : std::uint8_t {
  msrl,          ///< MSRL plugin `msrl_format_reward` (lenient)
  swift,         ///< ms-swift built-in `format` (fully anchored, whitespace between the tags)
  unifiedreward, ///< UnifiedReward-Think (anchored at the start only)
  r1reward,      ///< R1-Reward (fully anchored, nothing between the tags, one of each opening tag)
};

namespace detail_format {

inline constexpr std::string_view think_open = "<think>", think_close = "</think>";
inline constexpr std::string_view answer_open = "<answer>", answer_close = "</answer>";

inline bool starts_with(std::string_view t, std::string_view p) noexcept { return t.substr(0, p.size()) == p; }
inline bool ends_with(std::string_view t, std::string_view p) noexcept {
  return t.size() >= p.size() && t.substr(t.size() - p.size()) == p;
}

// Offset of `<answer>` after the first `</think>` (at or after 7) that is followed by ASCII
// whitespace then `<answer>`; npos when none. The whitespace runs after distinct `</think>`
// occurrences are disjoint, so the scan is linear.
inline std::size_t answer_after_think(std::string_view t) noexcept {
  const searcher sr(think_close);
  for (std::size_t p = sr.find(t, think_open.size()); p != std::string_view::npos; p = sr.find(t, p + think_close.size())) {
    std::size_t q = p + think_close.size();
    while (q < t.size() && detail_tags::is_space(static_cast<unsigned char>(t[q]))) ++q;
    if (detail_tags::equal_at(t, q, answer_open, false)) return q;
  }
  return std::string_view::npos;
}

} // namespace detail_format

/// True when `text` satisfies the format rule of `style` (table above).
inline bool check_format(std::string_view text, format_style style) noexcept {
  using namespace detail_format;
  switch (style) {
  case format_style::msrl:
    return find_tag(text, "think").has_value() && find_tag(text, "answer").has_value();
  case format_style::swift: {
    if (!starts_with(text, think_open) || !ends_with(text, answer_close)) return false;
    const std::size_t end_close = text.size() - answer_close.size();
    // Any `</think>` may close the lazy group; the answer must open early enough for the final close.
    const searcher sr(think_close);
    for (std::size_t p = sr.find(text, think_open.size()); p != std::string_view::npos;
         p = sr.find(text, p + think_close.size())) {
      std::size_t q = p + think_close.size();
      while (q < text.size() && detail_tags::is_space(static_cast<unsigned char>(text[q]))) ++q;
      if (q + answer_open.size() > end_close) return false; // later `</think>`s start even later
      if (detail_tags::equal_at(text, q, answer_open, false)) return true;
    }
    return false;
  }
  case format_style::unifiedreward: {
    if (!starts_with(text, think_open)) return false;
    const std::size_t q = answer_after_think(text); // the earliest answer gives the most room
    return q != std::string_view::npos && find(text, answer_close, q + answer_open.size()) != std::string_view::npos;
  }
  case format_style::r1reward: {
    if (!starts_with(text, think_open)) return false;
    if (count(text, think_open) != 1 || count(text, answer_open) != 1) return false;
    const std::size_t q = find(text, answer_open);
    if (q < think_open.size() + think_close.size() ||
        !detail_tags::equal_at(text, q - think_close.size(), think_close, false))
      return false;
    std::size_t n = text.size();
    if (!ends_with(text, answer_close) && n > 0 && text[n - 1] == '\n') --n; // Python `$`
    const std::string_view body = text.substr(0, n);
    return ends_with(body, answer_close) && n - answer_close.size() >= q + answer_open.size();
  }
  }
  return false;
}

/// Format reward: `value` when check_format holds, else 0.
struct format_reward {
  format_style style = format_style::msrl;
  double value = 1.0;
  double operator()(const sample& s) const noexcept { return check_format(s.completion, style) ? value : 0.0; }
};

} // namespace msrl::reward
