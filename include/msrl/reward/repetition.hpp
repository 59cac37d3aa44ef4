#pragma once
/// \file The n-gram repetition penalty (arXiv 2502.03373 appendix C.2):
///
///   r = (1 − #unique n-grams / #n-grams) · max_penalty,   n = 3 and max_penalty = −1 by default,
///
/// 0 when the completion has fewer than n units. Two peers, two units:
///
/// | repetition_form | units | peer |
/// |---|---|---|
/// | token_ids | `sample::completion_ids` | TRL `trl/rewards/other_rewards.py` `get_repetition_penalty_reward` |
/// | words     | `completion.lower().split()` | ms-swift `swift/rewards/orm.py` `RepetitionPenalty` |
///
/// The token-id form reads the ids from the sample (a view the caller owns, like the text). With
/// no ids it returns 0 when the sample's `completion_tokens` is known and < n (TRL gives 0 to any
/// completion that short) and NaN ("could not score") otherwise. Words are split at Python's
/// str.split() whitespace (ASCII `\t\n\v\f\r`, space, `\x1c`–`\x1f`, and the UTF-8 encodings of
/// U+0085, U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029, U+202F, U+205F, U+3000) and compared
/// after ASCII lower-casing (Python's lower() also folds non-ASCII letters; msrl compares those
/// bytes as they are). Both forms count exactly (hash candidates, then a comparison) in expected
/// O(m·n) time for m n-grams, on arbitrary bytes.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "sample.hpp"

namespace msrl::reward {

namespace detail_repetition {

// Length of the Python-whitespace character starting at t[i], or 0 when t[i] starts none.
inline std::size_t space_at(std::string_view t, std::size_t i) noexcept {
  const auto b = [&](std::size_t k) { return i + k < t.size() ? static_cast<unsigned char>(t[i + k]) : 0u; };
  const unsigned c = b(0);
  if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
  if (c == 0xc2 && (b(1) == 0x85 || b(1) == 0xa0)) return 2;
  if (c == 0xe1 && b(1) == 0x9a && b(2) == 0x80) return 3; // U+1680
  if (c == 0xe2 && b(1) == 0x80 && ((b(2) >= 0x80 && b(2) <= 0x8a) || b(2) == 0xa8 || b(2) == 0xa9 || b(2) == 0xaf))
    return 3;                                              // U+2000–U+200A, U+2028, U+2029, U+202F
  if (c == 0xe2 && b(1) == 0x81 && b(2) == 0x9f) return 3; // U+205F
  if (c == 0xe3 && b(1) == 0x80 && b(2) == 0x80) return 3; // U+3000
  return 0;
}

// 1 − #unique / #total over the windows [i, i + n) of `units` (0 when there are fewer than n):
// a polynomial rolling hash of the per-unit hashes `h` picks the candidates in an
// open-addressing table and `equal` on the units decides, so the count is exact. Expected
// O(m·n) for m windows; memory O(m).
template <class T, class Equal>
double duplicate_fraction(std::span<const T> units, std::span<const std::uint64_t> h, std::size_t n, Equal equal) {
  if (n == 0 || units.size() < n) return 0.0;
  const std::size_t m = units.size() - n + 1;
  constexpr std::uint64_t P = 0x9e3779b97f4a7c15ull; // odd: multiplication is invertible mod 2^64
  std::uint64_t top = 1;                             // P^(n-1)
  for (std::size_t k = 1; k < n; ++k) top *= P;
  std::size_t cap = 16;
  while (cap < 2 * m) cap *= 2;
  constexpr std::size_t empty = static_cast<std::size_t>(-1);
  std::vector<std::size_t> table(cap, empty);
  std::vector<std::uint64_t> wh(m);
  std::uint64_t H = 0;
  for (std::size_t k = 0; k < n; ++k) H = H * P + h[k];
  std::size_t unique = 0;
  for (std::size_t i = 0;; ++i) {
    wh[i] = H;
    const std::uint64_t mixed = (H ^ (H >> 31)) * 0xbf58476d1ce4e5b9ull;
    for (std::size_t slot = static_cast<std::size_t>(mixed >> 17) & (cap - 1);; slot = (slot + 1) & (cap - 1)) {
      const std::size_t j = table[slot];
      if (j == empty) {
        table[slot] = i;
        ++unique;
        break;
      }
      if (wh[j] != H) continue;
      bool same = true;
      for (std::size_t k = 0; k < n && same; ++k) same = equal(units[j + k], units[i + k]);
      if (same) break;
    }
    if (i + 1 == m) break;
    H = (H - h[i] * top) * P + h[i + n];
  }
  return 1.0 - static_cast<double>(unique) / static_cast<double>(m);
}

} // namespace detail_repetition

/// Python's str.split() with no argument: the maximal runs of non-whitespace (see the file
/// comment for the whitespace set), as views into `text`.
inline std::vector<std::string_view> split_words(std::string_view text) {
  std::vector<std::string_view> words;
  std::size_t i = 0, begin = std::string_view::npos;
  while (i < text.size()) {
    const std::size_t w = detail_repetition::space_at(text, i);
    if (w == 0) {
      if (begin == std::string_view::npos) begin = i;
      ++i;
      continue;
    }
    if (begin != std::string_view::npos) words.push_back(text.substr(begin, i - begin));
    begin = std::string_view::npos;
    i += w;
  }
  if (begin != std::string_view::npos) words.push_back(text.substr(begin));
  return words;
}

/// 1 − #unique n-grams / #n-grams of token ids (0 when fewer than n ids). n must be > 0.
inline double ngram_repetition(std::span<const std::int64_t> ids, std::size_t n) {
  require(n > 0, "msrl::reward::ngram_repetition", "n", "must be > 0");
  if (ids.size() < n) return 0.0;
  std::vector<std::uint64_t> h(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) h[i] = std::hash<std::int64_t>{}(ids[i]) * 0xff51afd7ed558ccdull + 1;
  return detail_repetition::duplicate_fraction(ids, std::span<const std::uint64_t>(h), n, std::equal_to<>{});
}

/// 1 − #unique n-grams / #n-grams of the lower-cased words of `text` (0 when fewer than n
/// words). n must be > 0.
inline double word_ngram_repetition(std::string_view text, std::size_t n) {
  require(n > 0, "msrl::reward::word_ngram_repetition", "n", "must be > 0");
  std::string lowered(text);
  for (char& c : lowered)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  const std::vector<std::string_view> words = split_words(lowered);
  if (words.size() < n) return 0.0;
  std::vector<std::uint64_t> h(words.size());
  for (std::size_t i = 0; i < words.size(); ++i) h[i] = std::hash<std::string_view>{}(words[i]);
  return detail_repetition::duplicate_fraction(std::span<const std::string_view>(words),
                                               std::span<const std::uint64_t>(h), n, std::equal_to<>{});
}

/// Which peer's repetition penalty (the table in the file comment).
enum class repetition_form : std::uint8_t {
  words,     ///< ms-swift: lower-cased whitespace words of the completion text
  token_ids, ///< TRL: the completion's token ids (`sample::completion_ids`)
};

/// The n-gram repetition penalty: (1 − #unique / #total n-grams) · max_penalty, 0 below n units.
///
///   repetition_penalty_reward{}({.completion = "a b c a b c"})  // 4 trigrams, 3 unique: −0.25
///
/// Accepts ngram_size > 0 and a finite max_penalty ≤ 0 (TRL's checks; ms-swift checks neither).
struct repetition_penalty_reward {
  repetition_form form = repetition_form::words;
  std::size_t ngram_size = 3; ///< TRL `ngram_size`, ms-swift `repetition_n_grams`
  double max_penalty = -1.0;  ///< TRL `max_penalty`, ms-swift `repetition_max_penalty`

  void validate() const {
    constexpr const char* where = "msrl::reward::repetition_penalty_reward";
    require(ngram_size > 0, where, "ngram_size", "must be > 0");
    require(std::isfinite(max_penalty) && max_penalty <= 0.0, where, "max_penalty", "must be finite and <= 0");
  }

  double operator()(const sample& s) const {
    validate();
    double fraction = 0.0;
    if (form == repetition_form::words) {
      fraction = word_ngram_repetition(s.completion, ngram_size);
    } else if (!s.completion_ids.empty()) {
      fraction = ngram_repetition(s.completion_ids, ngram_size);
    } else {
      if (!s.completion_tokens || *s.completion_tokens >= ngram_size) return std::numeric_limits<double>::quiet_NaN();
      return 0.0;
    }
    return fraction == 0.0 ? 0.0 : fraction * max_penalty;
  }
};

} // namespace msrl::reward
