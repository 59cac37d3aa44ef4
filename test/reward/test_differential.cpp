// Differential test: the linear-time rules against a std::regex transcription of the recorded
// regexes (regex_reference.hpp) on many random strings built from tag fragments.
#define BOOST_TEST_MODULE reward_differential
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <string>

#include <msrl/reward.hpp>

#include "regex_reference.hpp"

namespace r = msrl::reward;

namespace {
const char* const pieces[] = {"<think>", "</think>", "<answer>", "</answer>", "<THINK>", "</Answer>", "<type>",
                              "</type>", "<caption>", "</caption>", " ", "\n", "\t", "A", "b", "x", "<", ">",
                              "/", "image_understanding", "Image Understanding", "text", "[[A]]", "1"};
std::string random_text(std::uint64_t& x, std::size_t max_pieces) {
  auto next = [&x] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  std::string s;
  const std::size_t n = next() % (max_pieces + 1);
  for (std::size_t i = 0; i < n; ++i) s += pieces[next() % (sizeof(pieces) / sizeof(pieces[0]))];
  return s;
}
} // namespace

BOOST_AUTO_TEST_CASE(formats_tags_and_preset_agree_with_regex) {
  const msrl_test::regex_reference ref;
  const auto paper = r::preset("paper");
  std::uint64_t x = 0x243f6a8885a308d3ull;
  std::size_t mismatches = 0, positives[4] = {0, 0, 0, 0};
  for (int i = 0; i < 20000; ++i) {
    // half the texts follow the think/answer skeleton with random fillers, so every style sees matches
    std::string t = random_text(x, 14);
    if (i % 2) {
      const char* const gaps[] = {"", " ", "\n", "x", "</think>"};
      t = "<think>" + random_text(x, 3) + "</think>" + gaps[x % 5] + "<answer>" + random_text(x, 2) + "</answer>" +
          (x % 3 == 0 ? random_text(x, 2) : std::string(x % 3 == 1 ? "\n" : ""));
    }
    const std::string gold = random_text(x, 3), task = random_text(x, 2);
    const bool want[4] = {ref.format_msrl(t), ref.format_swift(t), ref.format_unified(t), ref.format_r1(t)};
    const r::format_style styles[4] = {r::format_style::msrl, r::format_style::swift, r::format_style::unifiedreward,
                                       r::format_style::r1reward};
    for (int k = 0; k < 4; ++k) {
      positives[k] += want[k];
      if (r::check_format(t, styles[k]) != want[k] && ++mismatches < 20)
        BOOST_ERROR("style " << k << " differs on [" << t << "]");
    }
    if (r::extract_tag(t, "answer") != ref.extract(t, ref.answer_tag) && ++mismatches < 20)
      BOOST_ERROR("extract answer differs on [" << t << "]");
    if (r::extract_tag(t, "think") != ref.extract(t, ref.think_tag) && ++mismatches < 20)
      BOOST_ERROR("extract think differs on [" << t << "]");
    if (r::normalize_task(t) != ref.norm_task(t) && ++mismatches < 20) BOOST_ERROR("task norm differs on [" << t << "]");
    const double got = paper({.completion = t, .solution = gold, .task_type = task});
    if (std::abs(got - ref.paper(t, gold, task)) > 1e-12 && ++mismatches < 20)
      BOOST_ERROR("paper preset differs on [" << t << "] gold [" << gold << "] task [" << task << "]");
  }
  BOOST_TEST(mismatches == 0u);
  // the generator reaches both outcomes of every style
  for (std::size_t k = 0; k < 4; ++k) BOOST_TEST(positives[k] > 20u, "style " << k << " positives " << positives[k]);
}
