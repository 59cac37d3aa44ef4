// Parsers take arbitrary bytes in linear time: 10 MB adversarial inputs must score in well under
// a second (a quadratic scan of 10 MB would take hours).
#define BOOST_TEST_MODULE reward_robust
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstdint>
#include <string>

#include <msrl/reward.hpp>

#include "printing.hpp"

namespace r = msrl::reward;

namespace {
#if defined(__SANITIZE_ADDRESS__)
constexpr double budget_s = 5.0; // sanitizer builds are several times slower
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr double budget_s = 5.0;
#else
constexpr double budget_s = 1.0;
#endif
#else
constexpr double budget_s = 1.0;
#endif

constexpr std::size_t ten_mb = 10u << 20;

std::string repeat(std::string_view unit, std::size_t bytes) {
  std::string s;
  s.reserve(bytes + unit.size());
  while (s.size() < bytes) s.append(unit);
  return s;
}

double score_everything(const std::string& text) {
  double acc = 0;
  const std::string gold = text.substr(0, 64); // the sample holds views: keep the bytes alive
  const r::sample s{.completion = text, .solution = gold, .task_type = "text"};
  for (auto name : r::preset_names) acc += r::preset(name)(s);
  for (auto st : {r::format_style::msrl, r::format_style::swift, r::format_style::unifiedreward, r::format_style::r1reward})
    acc += r::check_format(text, st) ? 1 : 0;
  for (auto f : {r::label_format::msrl, r::label_format::bracket, r::label_format::phrase, r::label_format::numeric,
                 r::label_format::any})
    acc += static_cast<double>(r::parse_label(text, f));
  acc += r::accuracy_reward{.style = r::accuracy_style::exact}(s);
  acc += static_cast<double>(r::normalize_task(text).size() > 0);
  acc += r::caption_first(text, true) ? 1 : 0;
  return acc;
}

void check_fast(const std::string& text, const char* what) {
  const auto t0 = std::chrono::steady_clock::now();
  const double v = score_everything(text);
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  BOOST_TEST_MESSAGE(what << ": " << dt << " s (checksum " << v << ")");
  BOOST_TEST(dt < budget_s, what << " took " << dt << " s");
}
} // namespace

BOOST_AUTO_TEST_CASE(adversarial_10mb_inputs_are_linear) {
  check_fast(repeat("<think>", ten_mb), "unterminated openings");
  check_fast("<think>" + repeat("</think>", ten_mb), "many closes");
  check_fast("<think>x" + repeat("</think> \n", ten_mb) + "<answer>", "closes without answer");
  check_fast(repeat("<answer>x\n", ten_mb) + "</answer>", "no-DOTALL openings");
  check_fast(repeat("Answer 1 is the slightly bette", ten_mb), "phrase near misses");
  check_fast(repeat("[[", ten_mb), "bracket openings");
  check_fast(repeat("<caption>c</caption>", ten_mb), "captions without think");
  check_fast(repeat("<type>", ten_mb) + repeat("</type>", 64), "type openings");
  check_fast(repeat("<<<<", ten_mb), "angle brackets");
  check_fast(repeat("<thinK", ten_mb), "partial tags");
  std::string random(ten_mb, '\0');
  std::uint64_t x = 0x9e3779b97f4a7c15ull;
  for (char& c : random) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    c = static_cast<char>(x >> 56); // invalid UTF-8 and NUL bytes included
  }
  check_fast(random, "random bytes");
}

BOOST_AUTO_TEST_CASE(nested_and_huge_tags_give_defined_values) {
  const std::string big = "<think>" + repeat("<think>", 1u << 20) + "</think><answer>B</answer>";
  BOOST_TEST(r::check_format(big, r::format_style::msrl));
  BOOST_TEST(r::check_format(big, r::format_style::swift));     // lazy group may contain <think>
  BOOST_TEST(!r::check_format(big, r::format_style::r1reward)); // count('<think>') > 1
  BOOST_TEST(r::parse_label(big) == r::label::b);
  const std::string huge_answer = "<answer>" + std::string(ten_mb, 'A') + "</answer>";
  BOOST_TEST(r::parse_label(huge_answer) == r::label::none);
}
