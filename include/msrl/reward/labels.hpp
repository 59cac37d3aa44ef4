#pragma once
/// \file Preference labels and the label normalisers of the recorded recipes.
///
/// | format  | recorded convention                                | parses to               |
/// |---------|----------------------------------------------------|-------------------------|
/// | msrl    | MSRL plugin: `<answer>` content if non-empty, else the whole text; strip; upper | `A` / `B` |
/// | bracket | MM-RewardBench judge: `[[A]]` / `[[B]]` in the text  | the verdict that occurs last |
/// | phrase  | UnifiedReward / VL-RewardBench: `Answer 1 is better`, `Image 2 is better`, `Video 1 is better`, `Response 2 is (the) (slightly) better` (case-insensitive), inside `<answer>` if present | 1 -> A, 2 -> B |
/// | numeric | R1-Reward: `<answer>1</answer>` / `2`               | 1 -> A, 2 -> B          |
/// | any     | msrl, then numeric, then bracket, then phrase (used for gold labels) | |
#include <cstdint>
#include <string>
#include <string_view>

#include "../core/error.hpp"
#include "tags.hpp"

namespace msrl::reward {

/// A pairwise preference: the first (A) or the second (B) candidate, or none (unparsable).
enum class label : std::uint8_t { none, a, b };

/// 'A', 'B' or '?' for none.
inline constexpr char to_char(label l) noexcept { return l == label::a ? 'A' : l == label::b ? 'B' : '?'; }

/// The same judgment seen with the two candidates swapped.
inline constexpr label swapped(label l) noexcept { return l == label::a ? label::b : l == label::b ? label::a : l; }

enum class label_format : std::uint8_t { msrl, bracket, phrase, numeric, any };

/// Parses "msrl", "bracket", "phrase", "numeric", "any"; throws msrl::invalid_argument otherwise.
inline label_format label_format_from_name(std::string_view name) {
  if (name == "msrl") return label_format::msrl;
  if (name == "bracket") return label_format::bracket;
  if (name == "phrase") return label_format::phrase;
  if (name == "numeric") return label_format::numeric;
  if (name == "any") return label_format::any;
  throw invalid_argument(detail::format_error("msrl::reward::label_format_from_name", "name",
                                              "must be one of msrl, bracket, phrase, numeric, any (got '" +
                                                  std::string(name.substr(0, 64)) + "')"));
}

/// normalize_msrl before upper-casing, as a view into `text` (no allocation).
inline std::string_view msrl_answer_view(std::string_view text) {
  const std::string_view t = trim(text);
  const std::string_view a = extract_tag(t, "answer");
  return a.empty() ? t : a;
}

/// The MSRL plugin's normaliser: strip; the stripped `<answer>` content if non-empty, else the
/// whole stripped text; upper-case.
inline std::string normalize_msrl(std::string_view text) { return to_upper(msrl_answer_view(text)); }

namespace detail_labels {

inline label from_digit(std::string_view s) noexcept {
  return s == "1" ? label::a : s == "2" ? label::b : label::none;
}

// "[[A]]" / "[[B]]": the one whose last occurrence is later (the judge's final verdict).
inline label bracket(std::string_view t) noexcept {
  std::size_t la = std::string_view::npos, lb = std::string_view::npos;
  const searcher sr("[[");
  for (std::size_t i = sr.find(t); i != std::string_view::npos; i = sr.find(t, i + 1)) {
    if (detail_tags::equal_at(t, i, "[[A]]", false)) la = i;
    else if (detail_tags::equal_at(t, i, "[[B]]", false)) lb = i;
  }
  if (la == std::string_view::npos) return lb == std::string_view::npos ? label::none : label::b;
  if (lb == std::string_view::npos) return label::a;
  return la > lb ? label::a : label::b;
}

// First "<word> <1|2> is [the ][slightly ]better" with word in answer/image/video/response,
// case-insensitive. Scans " is " occurrences once: linear.
inline label phrase(std::string_view t) noexcept {
  constexpr std::string_view words[] = {"answer", "image", "video", "response"};
  const searcher sr(" is ", true);
  for (std::size_t i = sr.find(t); i != std::string_view::npos; i = sr.find(t, i + 1)) {
    if (i < 2 || t[i - 2] != ' ') continue;
    const char d = t[i - 1];
    if (d != '1' && d != '2') continue;
    bool word = false;
    for (std::string_view w : words)
      if (i >= 2 + w.size() && detail_tags::equal_at(t, i - 2 - w.size(), w, true)) word = true;
    if (!word) continue;
    std::size_t j = i + 4;
    if (detail_tags::equal_at(t, j, "the ", true)) j += 4;
    if (detail_tags::equal_at(t, j, "slightly ", true)) j += 9;
    if (detail_tags::equal_at(t, j, "better", true)) return d == '1' ? label::a : label::b;
  }
  return label::none;
}

inline std::string_view answer_or_text(std::string_view text) {
  const std::string_view a = extract_tag(text, "answer");
  return a.empty() ? trim(text) : a;
}

} // namespace detail_labels

/// Parses a judgment (or a gold label) into A/B under `format`; label::none when unparsable.
inline label parse_label(std::string_view text, label_format format = label_format::msrl) {
  switch (format) {
  case label_format::msrl: {
    const std::string_view n = msrl_answer_view(text);
    return iequals(n, "A") ? label::a : iequals(n, "B") ? label::b : label::none;
  }
  case label_format::bracket:
    return detail_labels::bracket(text);
  case label_format::phrase:
    return detail_labels::phrase(detail_labels::answer_or_text(text));
  case label_format::numeric:
    return detail_labels::from_digit(detail_labels::answer_or_text(text));
  case label_format::any: {
    for (label_format f : {label_format::msrl, label_format::numeric, label_format::bracket, label_format::phrase})
      if (const label l = parse_label(text, f); l != label::none) return l;
    return label::none;
  }
  }
  return label::none;
}

} // namespace msrl::reward
