// Tag extraction: the MSRL plugin's extract_tag is "the first match of <tag>(.*?)</tag>,
// non-greedy, DOTALL, IGNORECASE, stripped; '' when nothing matches". Expected values below are
// what that Python expression returns for each input, worked by hand.
#define BOOST_TEST_MODULE reward_tags
#include <boost/test/unit_test.hpp>

#include <string>
#include <string_view>

#include <msrl/reward/tags.hpp>

namespace r = msrl::reward;
using namespace std::string_view_literals;

BOOST_AUTO_TEST_CASE(extract_tag_plugin_semantics) {
  struct row {
    std::string_view text, tag, expected;
  };
  const row rows[] = {
      {"<answer>A</answer>", "answer", "A"},
      {"<ANSWER> a </Answer>", "answer", "a"},                         // IGNORECASE, then strip
      {"<answer>A</answer><answer>B</answer>", "answer", "A"},         // first match
      {"<think>\nline1\nline2\n</think>", "think", "line1\nline2"},    // DOTALL
      {"<answer>A", "answer", ""},                                     // unterminated
      {"A</answer>", "answer", ""},                                    // no opening
      {"<answer><answer>B</answer></answer>", "answer", "<answer>B"}, // non-greedy from the first opening
      {"<answer></answer>", "answer", ""},
      {"x <type>image_generation</type> y", "type", "image_generation"},
      {"<thinking>x</thinking>", "think", ""}, // `<think>` is not a prefix of `<thinking>`
      {"", "answer", ""},
  };
  for (const row& rw : rows) BOOST_TEST(r::extract_tag(rw.text, rw.tag) == rw.expected, rw.text);
}

BOOST_AUTO_TEST_CASE(offsets_and_start_position) {
  const std::string_view t = "ab<answer>X</answer>cd<answer>Y</answer>";
  auto m = r::find_tag(t, "answer");
  BOOST_REQUIRE(m.has_value());
  BOOST_TEST(m->open == 2u);
  BOOST_TEST(m->content_begin == 10u);
  BOOST_TEST(m->content_end == 11u);
  BOOST_TEST(m->close_end == 20u);
  auto m2 = r::find_tag(t, "answer", {}, 3); // re.search(text, pos=3) skips the first opening
  BOOST_REQUIRE(m2.has_value());
  BOOST_TEST(t.substr(m2->content_begin, 1) == "Y");
  BOOST_TEST(!r::find_tag(t, "answer", {}, 100).has_value());
}

BOOST_AUTO_TEST_CASE(case_sensitive_without_dotall) {
  // Python re.search(r'<answer>(.*?)</answer>', s) without flags: '.' stops at '\n', so the first
  // opening whose close lies before the next newline wins.
  const r::tag_options plain{.ignore_case = false, .dot_all = false};
  BOOST_TEST(r::extract_tag("<answer>A\n</answer> <answer>B</answer>", "answer", plain) == "B");
  BOOST_TEST(r::extract_tag("<answer>A\n</answer>", "answer", plain) == "");
  BOOST_TEST(r::extract_tag("<ANSWER>A</ANSWER>", "answer", plain) == "");
  BOOST_TEST(r::extract_tag("<answer>A</answer>\n<answer>B</answer>", "answer", plain) == "A");
  // two openings on one line, close on the next: neither matches; a later line does
  BOOST_TEST(r::extract_tag("<answer>x<answer>y\n</answer><answer>Z</answer>", "answer", plain) == "Z");
}

BOOST_AUTO_TEST_CASE(arbitrary_bytes) {
  const std::string bad = std::string("\xff\xfe<answer>\xc3") + '\0' + "A</answer>";
  BOOST_TEST(r::extract_tag(bad, "answer") == std::string("\xc3") + '\0' + "A");
  BOOST_TEST(r::trim(" \t\r\n\v\f") == "");
  BOOST_TEST(r::trim("\xa0x\xa0") == "\xa0x\xa0"); // not ASCII whitespace: kept
}

BOOST_AUTO_TEST_CASE(find_and_count) {
  BOOST_TEST(r::find("xxAbC", "abc", 0, true) == 2u);
  BOOST_TEST(r::find("xxAbC", "abc", 0, false) == std::string_view::npos);
  BOOST_TEST(r::find("abcabc", "abc", 1) == 3u);
  BOOST_TEST(r::count("<think><think>x", "<think>") == 2u);
  BOOST_TEST(r::count("aaaa", "aa") == 2u); // non-overlapping, as str.count
  BOOST_TEST(r::to_upper("aB1\xe9") == "AB1\xe9");
  BOOST_TEST(r::to_lower("aB1") == "ab1");
}
