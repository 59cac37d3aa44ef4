#pragma once
/// \file Tag extraction over arbitrary bytes in linear time.
///
/// Semantics follow the MSRL reward plugin's `extract_tag`: the first match of
/// `<tag>(.*?)</tag>` (non-greedy; DOTALL; IGNORECASE), stripped; "" when nothing matches.
/// No std::regex: every scan is a Horspool search for a short fixed needle, so a call costs
/// O(n) in the text length whatever the bytes are (invalid UTF-8, NUL, unterminated or nested tags).
///
/// Differences from Python's `re` on `str`, by design: case folding is ASCII only (Python's
/// IGNORECASE also folds U+212A KELVIN SIGN to `k` and U+017F to `s`), and strip()/`\s` cover the
/// ASCII whitespace bytes " \t\n\v\f\r" (Python's also cover \x1c-\x1f and Unicode spaces).
#include <cstddef>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace msrl::reward {

/// How a tag is matched.
struct tag_options {
  bool ignore_case = true; ///< re.IGNORECASE on the tag names
  bool dot_all = true;     ///< re.DOTALL: the content may span newlines
};

/// Byte offsets of one `<tag>content</tag>` match.
struct tag_match {
  std::size_t open = 0;          ///< offset of '<' of the opening tag
  std::size_t content_begin = 0; ///< first byte after the opening tag
  std::size_t content_end = 0;   ///< offset of '<' of the closing tag
  std::size_t close_end = 0;     ///< first byte after the closing tag
};

namespace detail_tags {

inline constexpr bool is_space(unsigned char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}
inline constexpr unsigned char lower(unsigned char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<unsigned char>(c + 32) : c;
}

// Needles are short (< 16 bytes) so the cost is O(n * |needle|) = O(n).
inline bool equal_at(std::string_view text, std::size_t pos, std::string_view needle, bool icase) noexcept {
  if (pos > text.size() || text.size() - pos < needle.size()) return false;
  if (!icase) return std::memcmp(text.data() + pos, needle.data(), needle.size()) == 0;
  for (std::size_t i = 0; i < needle.size(); ++i)
    if (lower(static_cast<unsigned char>(text[pos + i])) != lower(static_cast<unsigned char>(needle[i]))) return false;
  return true;
}

} // namespace detail_tags

/// A reusable search for one short needle: memchr on the first byte for needles that start with
/// '<' or '[' (rare in prose), Horspool's algorithm with an ASCII-folded shift table otherwise or
/// when the first byte turns out to be dense. msrl's needles are a few bytes long, so the worst
/// case O(n * |needle|) is O(n). Build once, call find() in loops.
class searcher {
public:
  explicit searcher(std::string_view needle, bool ignore_case = false) noexcept : needle_(needle), icase_(ignore_case) {
    const std::size_t m = needle.size();
    const unsigned char full = static_cast<unsigned char>(m < 255 ? m : 255);
    for (unsigned char& v : shift_) v = full;
    for (std::size_t i = 0; i + 1 < m; ++i) {
      const unsigned char d = static_cast<unsigned char>(m - 1 - i < 255 ? m - 1 - i : 255);
      const unsigned char c = static_cast<unsigned char>(needle[i]);
      shift_[c] = d;
      if (icase_) {
        const unsigned char l = detail_tags::lower(c);
        shift_[l] = d;
        if (l >= 'a' && l <= 'z') shift_[l - 32] = d;
      }
    }
  }

  std::string_view needle() const noexcept { return needle_; }

  /// Offset of the first occurrence at or after `from`, or npos.
  std::size_t find(std::string_view text, std::size_t from = 0) const noexcept {
    const std::size_t m = needle_.size(), n = text.size();
    if (m == 0) return from <= n ? from : std::string_view::npos;
    if (from > n || n - from < m) return std::string_view::npos;
    const unsigned char* t = reinterpret_cast<const unsigned char*>(text.data());
    if (m == 1 && !icase_) {
      const void* p = std::memchr(t + from, needle_[0], n - from);
      return p ? static_cast<std::size_t>(static_cast<const unsigned char*>(p) - t) : std::string_view::npos;
    }
    if (needle_[0] == '<' || needle_[0] == '[') {
      // Tags start with a byte that is rare in prose: a vectorised memchr for it beats Horspool,
      // whose shifts stay short on English text (the tag names share its common letters).
      // When candidates come densely (text full of '<'), fall back to Horspool from there on.
      std::size_t pos = from, dense = 0;
      while (pos + m <= n) {
        const void* p = std::memchr(t + pos, needle_[0], n - m + 1 - pos);
        if (!p) return std::string_view::npos;
        const std::size_t hit = static_cast<std::size_t>(static_cast<const unsigned char*>(p) - t);
        if (detail_tags::equal_at(text, hit, needle_, icase_)) return hit;
        dense = hit - pos < 8 ? dense + 1 : 0;
        pos = hit + 1;
        if (dense > 16) return horspool(text, pos);
      }
      return std::string_view::npos;
    }
    return horspool(text, from);
  }

private:
  std::size_t horspool(std::string_view text, std::size_t from) const noexcept {
    const std::size_t m = needle_.size(), n = text.size();
    const unsigned char* t = reinterpret_cast<const unsigned char*>(text.data());
    const unsigned char last = fold(static_cast<unsigned char>(needle_[m - 1]));
    const std::string_view head = needle_.substr(0, m - 1);
    for (std::size_t pos = from; pos + m <= n;) {
      const unsigned char c = t[pos + m - 1];
      if (fold(c) == last && detail_tags::equal_at(text, pos, head, icase_)) return pos;
      pos += shift_[c];
    }
    return std::string_view::npos;
  }

  unsigned char fold(unsigned char c) const noexcept { return icase_ ? detail_tags::lower(c) : c; }
  std::string_view needle_;
  bool icase_;
  unsigned char shift_[256];
};

/// Offset of the first occurrence of `needle` at or after `from`, or npos. Linear time.
inline std::size_t find(std::string_view text, std::string_view needle, std::size_t from = 0,
                        bool ignore_case = false) noexcept {
  return searcher(needle, ignore_case).find(text, from);
}

/// Number of non-overlapping occurrences of `needle` (Python str.count).
inline std::size_t count(std::string_view text, std::string_view needle, bool ignore_case = false) noexcept {
  if (needle.empty()) return text.size() + 1;
  const searcher sr(needle, ignore_case);
  std::size_t n = 0;
  for (std::size_t i = sr.find(text); i != std::string_view::npos; i = sr.find(text, i + needle.size())) ++n;
  return n;
}

/// Strips ASCII whitespace at both ends.
inline std::string_view trim(std::string_view s) noexcept {
  std::size_t b = 0, e = s.size();
  while (b < e && detail_tags::is_space(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && detail_tags::is_space(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

/// The first match of `<name>(.*?)</name>`, as Python's re.search finds it. Linear time.
/// With dot_all the answer is the first opening tag followed (anywhere later) by a closing tag;
/// without it, the content may not contain '\n', so later openings are tried with monotone
/// cursors (each byte is visited a bounded number of times).
/// The search starts at byte `from` (as re.search(text, pos)).
inline std::optional<tag_match> find_tag(std::string_view text, std::string_view name, tag_options opt = {},
                                         std::size_t from = 0) {
  if (name.empty() || name.size() > 64) return std::nullopt;
  char buf_open[68], buf_close[69];
  std::size_t no = 0, nc = 0;
  buf_open[no++] = '<';
  buf_close[nc++] = '<';
  buf_close[nc++] = '/';
  for (char c : name) { buf_open[no++] = c; buf_close[nc++] = c; }
  buf_open[no++] = '>';
  buf_close[nc++] = '>';
  const std::string_view open(buf_open, no), close(buf_close, nc);
  const bool ic = opt.ignore_case;
  if (from > text.size()) return std::nullopt;
  const searcher so(open, ic), sc(close, ic);
  std::size_t o = so.find(text, from);
  if (o == std::string_view::npos) return std::nullopt;
  if (opt.dot_all) {
    const std::size_t c = sc.find(text, o + open.size());
    if (c == std::string_view::npos) return std::nullopt;
    return tag_match{o, o + open.size(), c, c + close.size()};
  }
  // Without DOTALL: cursors for the next close and the next newline only move forward.
  std::size_t c = sc.find(text, o + open.size());
  std::size_t nl = text.find('\n', o + open.size());
  while (o != std::string_view::npos) {
    const std::size_t cb = o + open.size();
    if (c != std::string_view::npos && c < cb) c = sc.find(text, cb);
    if (c == std::string_view::npos) return std::nullopt; // no close after this or any later opening
    if (nl != std::string_view::npos && nl < cb) nl = text.find('\n', cb);
    if (nl == std::string_view::npos || c < nl) return tag_match{o, cb, c, c + close.size()};
    o = so.find(text, nl + 1); // an opening before the newline cannot succeed either
  }
  return std::nullopt;
}

/// The stripped content of the first `<name>…</name>` match, or "" (the plugin's extract_tag).
inline std::string_view extract_tag(std::string_view text, std::string_view name, tag_options opt = {}) {
  const auto m = find_tag(text, name, opt);
  if (!m) return {};
  return trim(text.substr(m->content_begin, m->content_end - m->content_begin));
}

/// ASCII case-insensitive equality.
inline bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && detail_tags::equal_at(a, 0, b, true);
}

/// ASCII upper-case copy.
inline std::string to_upper(std::string_view s) {
  std::string r(s);
  for (char& c : r)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
  return r;
}

/// ASCII lower-case copy.
inline std::string to_lower(std::string_view s) {
  std::string r(s);
  for (char& c : r)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return r;
}

} // namespace msrl::reward
