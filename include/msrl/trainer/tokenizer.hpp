#pragma once
/// \file Qwen2-style byte-level BPE tokenizer read from a Hugging Face tokenizer.json, and the
/// ChatML prompt MSRL uses for InternVL3.5 (template "internvl2_5").
///
///   auto tok = msrl::trainer::bpe_tokenizer::from_file("ckpt/tokenizer.json");
///   std::vector<std::int64_t> ids = tok.encode("<|im_start|>user\nhi<|im_end|>\n");
///   std::string text = tok.decode(ids);
///
/// Encoding (the order of HF `tokenizers`): added tokens are matched first on the raw text
/// (leftmost, longest); each remaining span is split by the Qwen2 pre-tokenisation pattern
///   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
/// (implemented as a hand-written matcher with the same alternative order and backtracking
/// outcome), each piece's UTF-8 bytes are mapped through GPT-2's bytes_to_unicode, and BPE
/// merges the adjacent pair of lowest rank until none applies. No BOS/EOS is added.
/// Limitation: the NFC normaliser is not applied (text must already be NFC, which ordinary
/// UTF-8 text nearly always is); invalid UTF-8 bytes are treated as single code points.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "detail/unicode_tables.hpp"

namespace msrl::trainer {

namespace detail {

template <std::size_t N>
inline bool in_ranges(const std::uint32_t (&r)[N][2], std::uint32_t cp) {
  std::size_t lo = 0, hi = N;
  while (lo < hi) {
    const std::size_t mid = (lo + hi) / 2;
    if (cp < r[mid][0]) hi = mid;
    else if (cp > r[mid][1]) lo = mid + 1;
    else return true;
  }
  return false;
}
inline bool is_letter(std::uint32_t cp) { return cp < 0x80 ? ((cp | 32) >= 'a' && (cp | 32) <= 'z') : in_ranges(unicode_letters, cp); }
inline bool is_number(std::uint32_t cp) { return cp < 0x80 ? (cp >= '0' && cp <= '9') : in_ranges(unicode_numbers, cp); }
/// Unicode White_Space (what \s matches in a Unicode-aware regex engine).
inline bool is_space(std::uint32_t cp) {
  return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/// One decoded code point and its byte span.
struct code_point {
  std::uint32_t cp;
  std::size_t begin, end;
};

inline std::vector<code_point> utf8_decode(std::string_view s) {
  std::vector<code_point> out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    std::uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1Fu) : n == 3 ? (c & 0x0Fu) : (c & 0x07u);
    bool ok = n != 0 && i + n <= s.size();
    for (std::size_t k = 1; ok && k < n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      ok = (d >> 6) == 2;
      cp = (cp << 6) | (d & 0x3Fu);
    }
    if (!ok) {
      n = 1;
      cp = 0xFFFD0000u | c; // invalid byte: its own "character", matched by no class
    }
    out.push_back({cp, i, i + n});
    i += n;
  }
  return out;
}

inline void utf8_append(std::string& s, std::uint32_t cp) {
  if (cp < 0x80) s += static_cast<char>(cp);
  else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

/// Splits `text` into pre-tokens (byte spans) with the Qwen2 pattern's semantics.
inline std::vector<std::string_view> qwen2_pretokenize(std::string_view text) {
  const auto cps = utf8_decode(text);
  const std::size_t n = cps.size();
  auto cp = [&](std::size_t i) { return i < n ? cps[i].cp : 0xFFFFFFFFu; };
  auto L = [&](std::size_t i) { return i < n && is_letter(cps[i].cp); };
  auto N = [&](std::size_t i) { return i < n && is_number(cps[i].cp); };
  auto S = [&](std::size_t i) { return i < n && is_space(cps[i].cp); };
  auto CRLF = [&](std::size_t i) { return i < n && (cps[i].cp == '\r' || cps[i].cp == '\n'); };
  auto lower = [&](std::size_t i) { const auto c = cp(i); return c < 0x80 ? (c | 32u) : c; };
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < n) {
    std::size_t j = i; // match end (exclusive), in code points
    // 1. contractions, ASCII case-insensitive
    if (cp(i) == '\'') {
      const auto a = lower(i + 1), b = lower(i + 2);
      if (a == 's' || a == 't' || a == 'm' || a == 'd') j = i + 2;
      else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) j = i + 3;
    }
    // 2. [^\r\n\p{L}\p{N}]?\p{L}+
    if (j == i) {
      std::size_t k = i;
      if (i < n && !CRLF(i) && !L(i) && !N(i) && L(i + 1)) k = i + 1;
      if (L(k)) {
        while (L(k)) ++k;
        j = k;
      }
    }
    // 3. \p{N}
    if (j == i && N(i)) j = i + 1;
    // 4. ' '?[^\s\p{L}\p{N}]+[\r\n]*
    if (j == i) {
      auto other = [&](std::size_t k) { return k < n && !S(k) && !L(k) && !N(k); };
      std::size_t k = i;
      if (cp(i) == ' ' && other(i + 1)) k = i + 1;
      if (other(k)) {
        while (other(k)) ++k;
        while (CRLF(k)) ++k;
        j = k;
      }
    }
    if (j == i && S(i)) {
      std::size_t e = i;
      while (S(e)) ++e;
      // 5. \s*[\r\n]+ : ends just after the last CR/LF of the whitespace run
      std::size_t last = i; // one past the run's last CR/LF; i = none
      for (std::size_t k = e; k > i; --k)
        if (CRLF(k - 1)) {
          last = k;
          break;
        }
      if (last != i) j = last;
      // 6. \s+(?!\S) then 7. \s+
      else if (e == n || e - i == 1) j = e;
      else j = e - 1;
    }
    if (j == i) j = i + 1; // cannot happen (every code point is in some class); keeps progress
    out.emplace_back(text.substr(cps[i].begin, cps[j - 1].end - cps[i].begin));
    i = j;
  }
  return out;
}

/// GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to 256 + k.
inline const std::vector<std::string>& byte_symbols() {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    int k = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      std::string s;
      utf8_append(s, printable ? static_cast<std::uint32_t>(b) : static_cast<std::uint32_t>(256 + k++));
      t[static_cast<std::size_t>(b)] = s;
    }
    return t;
  }();
  return table;
}

} // namespace detail

class bpe_tokenizer {
public:
  static bpe_tokenizer from_file(const std::filesystem::path& p) {
    std::ifstream in(p);
    require(static_cast<bool>(in), "bpe_tokenizer::from_file", "path", "must be a readable tokenizer.json ('" + p.string() + "')");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw parse_error("bpe_tokenizer::from_file: '" + p.string() + "' is not valid JSON: " + e.what());
    }
    return from_json(j, p.string());
  }

  static bpe_tokenizer from_json(const nlohmann::json& j, const std::string& file = "tokenizer.json") {
    const std::string where = "bpe_tokenizer(" + file + ")";
    auto fail = [&](const std::string& arg, const std::string& rule) { throw parse_error(msrl::detail::format_error(where, arg, rule)); };
    if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) fail("model", "must be an object");
    const auto& m = j["model"];
    if (m.value("type", std::string()) != "BPE") fail("model.type", "must be BPE");
    if (!m.contains("vocab") || !m["vocab"].is_object()) fail("model.vocab", "must be an object");
    if (!m.contains("merges") || !m["merges"].is_array()) fail("model.merges", "must be an array");
    bpe_tokenizer t;
    t.ignore_merges_ = m.value("ignore_merges", false);
    // Ids index a dense table: bound them by the file's own entry count, so that a crafted file
    // cannot make the table (one string per id) larger than a few times the file.
    const std::size_t entries = m["vocab"].size() + (j.contains("added_tokens") && j["added_tokens"].is_array() ? j["added_tokens"].size() : 0);
    const auto max_id = static_cast<std::int64_t>(2 * entries + 65536);
    auto check_id = [&](const nlohmann::json& v, const std::string& arg) {
      if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() >= max_id)
        fail(arg, "must be an integer id in [0, " + std::to_string(max_id) + ") (twice the file's entries + 65,536)");
      return v.get<std::int64_t>();
    };
    for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) t.add_vocab(it.key(), check_id(it.value(), "model.vocab['" + it.key() + "']"));
    std::int64_t rank = 0;
    for (const auto& e : m["merges"]) {
      std::string a, b;
      if (e.is_string()) {
        const std::string s = e.get<std::string>();
        const auto sp = s.find(' ');
        if (sp == std::string::npos) fail("model.merges", "entries must be \"a b\" or [a, b]");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        a = e[0].get<std::string>();
        b = e[1].get<std::string>();
      } else {
        fail("model.merges", "entries must be \"a b\" or [a, b]");
      }
      t.ranks_.emplace(a + '\x01' + b, rank++);
    }
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const auto& a : j["added_tokens"]) {
        if (!a.is_object() || !a.contains("content") || !a["content"].is_string() || !a.contains("id"))
          fail("added_tokens", "entries must have a string content and an integer id");
        const std::string c = a["content"].get<std::string>();
        if (c.empty()) fail("added_tokens", "must not hold an empty token");
        const std::int64_t id = check_id(a["id"], "added_tokens['" + c + "'].id");
        t.add_vocab(c, id);
        t.added_.emplace(c, id);
      }
    }
    for (std::size_t b = 0; b < 256; ++b)
      if (!t.vocab_.count(detail::byte_symbols()[b])) fail("model.vocab", "must hold all 256 byte-level symbols (byte " + std::to_string(b) + " missing)");
    return t;
  }

  /// Token ids of `text` (no BOS/EOS).
  std::vector<std::int64_t> encode(std::string_view text) const {
    std::vector<std::int64_t> ids;
    std::size_t start = 0, i = 0;
    while (i < text.size()) {
      const auto [len, id] = match_added(text, i);
      if (len == 0) {
        ++i;
        continue;
      }
      encode_span(text.substr(start, i - start), ids);
      ids.push_back(id);
      i += len;
      start = i;
    }
    encode_span(text.substr(start), ids);
    return ids;
  }

  /// Text of `ids` (byte-level symbols mapped back to bytes, added tokens verbatim).
  std::string decode(const std::vector<std::int64_t>& ids) const {
    static const auto inverse = [] {
      std::unordered_map<std::string, unsigned char> m;
      for (int b = 0; b < 256; ++b) m.emplace(detail::byte_symbols()[static_cast<std::size_t>(b)], static_cast<unsigned char>(b));
      return m;
    }();
    std::string out;
    for (const auto id : ids) {
      require<value_error>(id >= 0 && static_cast<std::size_t>(id) < id_to_token_.size() && !id_to_token_[static_cast<std::size_t>(id)].empty(),
                           "bpe_tokenizer::decode", "ids", "must be ids of this vocabulary (got " + std::to_string(id) + ")");
      const std::string& tok = id_to_token_[static_cast<std::size_t>(id)];
      if (added_.count(tok)) {
        out += tok;
        continue;
      }
      for (const auto& c : detail::utf8_decode(tok)) {
        std::string sym(tok.substr(c.begin, c.end - c.begin));
        auto it = inverse.find(sym);
        out += it != inverse.end() ? static_cast<char>(it->second) : '?';
      }
    }
    return out;
  }

  /// Id of a token (added or regular); throws naming it if absent.
  std::int64_t token_id(const std::string& tok) const {
    auto it = vocab_.find(tok);
    require(it != vocab_.end(), "bpe_tokenizer::token_id", "token", "must be in the vocabulary ('" + tok + "')");
    return it->second;
  }
  bool has_token(const std::string& tok) const { return vocab_.count(tok) != 0; }
  std::size_t vocab_size() const noexcept { return id_to_token_.size(); }

private:
  void add_vocab(const std::string& tok, std::int64_t id) {
    vocab_[tok] = id;
    if (static_cast<std::size_t>(id) >= id_to_token_.size()) id_to_token_.resize(static_cast<std::size_t>(id) + 1);
    id_to_token_[static_cast<std::size_t>(id)] = tok;
  }

  /// Longest added token starting at byte i: (length, id); length 0 if none.
  std::pair<std::size_t, std::int64_t> match_added(std::string_view text, std::size_t i) const {
    std::size_t best = 0;
    std::int64_t id = -1;
    for (const auto& [tok, tid] : added_) // few tokens; a trie is not worth it here
      if (tok.size() > best && text.compare(i, tok.size(), tok) == 0) {
        best = tok.size();
        id = tid;
      }
    return {best, id};
  }

  void encode_span(std::string_view span, std::vector<std::int64_t>& ids) const {
    if (span.empty()) return;
    for (const auto piece : detail::qwen2_pretokenize(span)) {
      std::vector<std::string> syms;
      std::string whole;
      for (const char c : piece) {
        syms.push_back(detail::byte_symbols()[static_cast<unsigned char>(c)]);
        whole += syms.back();
      }
      if (ignore_merges_) {
        auto it = vocab_.find(whole);
        if (it != vocab_.end()) {
          ids.push_back(it->second);
          continue;
        }
      }
      bpe(syms);
      for (const auto& s : syms) {
        auto it = vocab_.find(s);
        if (it == vocab_.end()) throw value_error("bpe_tokenizer::encode: symbol '" + s + "' is not in the vocabulary (merges and vocab disagree)");
        ids.push_back(it->second);
      }
    }
  }

  /// Merge the lowest-rank adjacent pair (leftmost on ties) until no pair has a rank.
  void bpe(std::vector<std::string>& syms) const {
    while (syms.size() > 1) {
      std::int64_t best = std::numeric_limits<std::int64_t>::max();
      std::size_t at = 0;
      for (std::size_t k = 0; k + 1 < syms.size(); ++k) {
        auto it = ranks_.find(syms[k] + '\x01' + syms[k + 1]);
        if (it != ranks_.end() && it->second < best) {
          best = it->second;
          at = k;
        }
      }
      if (best == std::numeric_limits<std::int64_t>::max()) return;
      syms[at] += syms[at + 1];
      syms.erase(syms.begin() + static_cast<std::ptrdiff_t>(at) + 1);
    }
  }

  std::unordered_map<std::string, std::int64_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<std::string, std::int64_t> ranks_;
  std::map<std::string, std::int64_t> added_;
  bool ignore_merges_ = false;
};

/// One chat turn.
struct chat_message {
  std::string role;    ///< "system", "user" or "assistant"
  std::string content; ///< text; "<image>" marks where an image goes (else it is prepended)
  std::vector<std::int64_t> image_tiles; ///< tiles (incl. thumbnail) of each image in this turn
};

/// ChatML prompt of the InternVL "internvl2_5" template: each turn
/// "<|im_start|>{role}\n{content}<|im_end|>\n"; every "<image>" of a turn with images becomes
/// "<img>" + "<IMG_CONTEXT>" x (tokens_per_tile x tiles) + "</img>" (missing markers are
/// prepended as "<image>\n", as the reference chat() does). With add_generation_prompt the
/// prompt ends with "<|im_start|>assistant\n". No system turn is added here: pass one explicitly
/// (the reference code's default is a fixed Chinese system message; the HF template has none).
inline std::string chat_prompt(const std::vector<chat_message>& messages, std::int64_t tokens_per_tile, bool add_generation_prompt = true) {
  std::string out;
  for (const auto& msg : messages) {
    require(msg.role == "system" || msg.role == "user" || msg.role == "assistant", "chat_prompt", "messages.role",
            "must be system, user or assistant ('" + msg.role + "')");
    std::string content = msg.content;
    std::size_t markers = 0;
    for (std::size_t p = content.find("<image>"); p != std::string::npos; p = content.find("<image>", p + 7)) ++markers;
    require(markers <= msg.image_tiles.size(), "chat_prompt", "messages.content", "has more <image> markers than images");
    for (std::size_t k = markers; k < msg.image_tiles.size(); ++k) content = "<image>\n" + content;
    std::size_t img = 0;
    std::string expanded;
    std::size_t pos = 0;
    for (std::size_t p = content.find("<image>"); p != std::string::npos; p = content.find("<image>", pos)) {
      expanded += content.substr(pos, p - pos);
      require(msg.image_tiles[img] > 0, "chat_prompt", "messages.image_tiles", "must be positive");
      expanded += "<img>";
      for (std::int64_t t = 0; t < msg.image_tiles[img] * tokens_per_tile; ++t) expanded += "<IMG_CONTEXT>";
      expanded += "</img>";
      ++img;
      pos = p + 7;
    }
    expanded += content.substr(pos);
    out += "<|im_start|>" + msg.role + "\n" + expanded + "<|im_end|>\n";
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

} // namespace msrl::trainer
