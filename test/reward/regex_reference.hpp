#pragma once
// A std::regex transcription of the recorded reward rules, used as an independent oracle by the
// differential tests, the fuzzers and the throughput benchmark. Python's DOTALL `.` is written
// `[\s\S]`; Python's `$` (end, or before one final '\n') is written `\n?` under regex_match.
// libstdc++'s regex engine recurses per character: only use it on inputs up to a few KB.
#include <regex>
#include <string>
#include <string_view>

namespace msrl_test {

struct regex_reference {
  using re = std::regex;
  static constexpr auto ecma = std::regex_constants::ECMAScript;
  static constexpr auto icase = std::regex_constants::ECMAScript | std::regex_constants::icase;

  re think_any{R"(<think>[\s\S]*?</think>)", icase};
  re answer_any{R"(<answer>[\s\S]*?</answer>)", icase};
  re swift{R"(<think>[\s\S]*?</think>\s*<answer>[\s\S]*?</answer>)", ecma};
  re unified{R"(<think>[\s\S]*?</think>\s*<answer>[\s\S]*?</answer>)", ecma};
  re r1{R"(<think>[\s\S]*?</think><answer>[\s\S]*?</answer>\n?)", ecma};
  re answer_tag{R"(<answer>([\s\S]*?)</answer>)", icase};
  re type_tag{R"(<type>([\s\S]*?)</type>)", icase};
  re think_tag{R"(<think>([\s\S]*?)</think>)", icase};

  static std::string trim(const std::string& s) {
    const char* ws = " \t\n\v\f\r";
    const auto b = s.find_first_not_of(ws);
    if (b == std::string::npos) return {};
    return s.substr(b, s.find_last_not_of(ws) - b + 1);
  }
  static std::size_t count(const std::string& s, const std::string& n) {
    std::size_t c = 0;
    for (std::size_t i = s.find(n); i != std::string::npos; i = s.find(n, i + n.size())) ++c;
    return c;
  }

  bool format_msrl(const std::string& s) const { return std::regex_search(s, think_any) && std::regex_search(s, answer_any); }
  bool format_swift(const std::string& s) const { return std::regex_match(s, swift); }
  bool format_unified(const std::string& s) const {
    return std::regex_search(s, unified, std::regex_constants::match_continuous);
  }
  bool format_r1(const std::string& s) const {
    return std::regex_match(s, r1) && count(s, "<think>") == 1 && count(s, "<answer>") == 1;
  }
  std::string extract(const std::string& s, const re& tag) const {
    std::smatch m;
    return std::regex_search(s, m, tag) ? trim(m[1].str()) : std::string();
  }
  // MSRL plugin normaliser: strip; <answer> content if non-empty else the whole text; strip; upper
  std::string norm_msrl(const std::string& s) const {
    const std::string t = trim(s);
    std::string a = extract(t, answer_tag);
    if (a.empty()) a = t;
    for (char& c : a)
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    return a;
  }
  // MSRL plugin task normaliser
  std::string norm_task(const std::string& s) const {
    std::string low = s;
    for (char& c : low)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    std::string t = extract(low, type_tag);
    if (t.empty()) t = low;
    for (char& c : t)
      if (c == '_' || c == '-') c = ' ';
    std::string out;
    bool sp = false;
    for (char c : t) {
      if (c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r') {
        sp = !out.empty();
        continue;
      }
      if (sp) out.push_back(' ');
      sp = false;
      out.push_back(c);
    }
    return out;
  }
  // The paper preset: format + accuracy + task(0.2)
  double paper(const std::string& completion, const std::string& solution, const std::string& task) const {
    double r = format_msrl(completion) ? 1.0 : 0.0;
    const std::string g = norm_msrl(solution);
    if (!g.empty() && norm_msrl(completion) == g) r += 1.0;
    const std::string tg = norm_task(task);
    if (!tg.empty() && norm_task(completion) == tg) r += 0.2;
    return r;
  }
};

} // namespace msrl_test
