// Format, accuracy, task and caption rules. Each expected value is what the recorded rule
// (quoted above each table) gives for the input, worked out by hand.
#define BOOST_TEST_MODULE reward_rules
#include <boost/test/unit_test.hpp>

#include <ostream>
#include <string>
#include <string_view>

#include <msrl/reward.hpp>

#include "printing.hpp"

namespace r = msrl::reward;
using r::format_style;


namespace {
struct fmt_row {
  std::string_view text;
  int msrl, swift, unified, r1;
};
} // namespace

// msrl:          re.search(<think>.*?</think>) and re.search(<answer>.*?</answer>), DOTALL|IGNORECASE
// swift:         re.match(^<think>.*?</think>\s*<answer>.*?</answer>(?![\s\S]), DOTALL)  (nothing after)
// unifiedreward: re.match(<think>.*?</think>\s*<answer>.*?</answer>, DOTALL)            (trailing allowed)
// r1reward:      re.match(^<think>.*?</think><answer>.*?</answer>$, DOTALL) and
//                count('<think>') == 1 and count('<answer>') == 1;  `$` also matches before a final '\n'
BOOST_AUTO_TEST_CASE(format_styles_table) {
  const fmt_row rows[] = {
      {"<think>x</think><answer>A</answer>", 1, 1, 1, 1},
      {"<think>x</think>\n<answer>A</answer>", 1, 1, 1, 0},            // \s* allowed except in r1
      {"<think>x</think> \t<answer>A</answer>", 1, 1, 1, 0},
      {"<think>x</think><answer>A</answer> trailing", 1, 0, 1, 0},     // swift/r1 anchored at the end
      {"<think>x</think><answer>A</answer>\n", 1, 0, 1, 1},            // Python `$` before final \n
      {"<think>x</think><answer>A</answer>\n\n", 1, 0, 1, 0},
      {"<answer>A</answer><think>x</think>", 1, 0, 0, 0},              // msrl ignores order
      {"<THINK>x</THINK><ANSWER>A</ANSWER>", 1, 0, 0, 0},              // only msrl ignores case
      {"Sure. <think>x</think><answer>A</answer>", 1, 0, 0, 0},        // others anchored at the start
      {"<think>x</think>", 0, 0, 0, 0},
      {"<think>x<answer>A</answer>", 0, 0, 0, 0},                      // think never closed
      {"<think>x</think><answer>A", 0, 0, 0, 0},                       // answer never closed
      {"<think>a</think>b</think> <answer>A</answer>", 1, 1, 1, 0},    // lazy group extends to 2nd </think>
      {"<think>x</think><answer>A</answer><answer>B</answer>", 1, 1, 1, 0}, // two <answer>: r1 count
      {"<think><think>x</think><answer>A</answer>", 1, 1, 1, 0},       // two <think>: r1 count
      {"<think>\nmulti\nline\n</think>\n\n<answer>\nB\n</answer>", 1, 1, 1, 0},
      {"<think></think><answer></answer>", 1, 1, 1, 1},                // .*? may be empty
      {"<type>t</type><caption>c</caption><think>x</think><answer>A</answer>", 1, 0, 0, 0},
      {"", 0, 0, 0, 0},
      {"<think>x</think><answer>A</answer>y</answer>", 1, 1, 1, 1},    // .*? spans to the final close
  };
  for (const fmt_row& row : rows) {
    BOOST_TEST(r::check_format(row.text, format_style::msrl) == (row.msrl == 1), "msrl: " << row.text);
    BOOST_TEST(r::check_format(row.text, format_style::swift) == (row.swift == 1), "swift: " << row.text);
    BOOST_TEST(r::check_format(row.text, format_style::unifiedreward) == (row.unified == 1), "ur: " << row.text);
    BOOST_TEST(r::check_format(row.text, format_style::r1reward) == (row.r1 == 1), "r1: " << row.text);
  }
  const r::format_reward half{.style = format_style::swift, .value = 0.5};
  BOOST_TEST(half({.completion = rows[0].text}) == 0.5);
  BOOST_TEST(r::format_reward{}({.completion = "nothing"}) == 0.0);
}

namespace {
struct acc_row {
  std::string_view completion, solution;
  double expected;
};
} // namespace

// MSRL plugin accuracy: norm(x) = upper(strip(answer content if non-empty else whole stripped text));
// 1.0 iff norm(pred) == norm(gold) and norm(pred) != ''.
BOOST_AUTO_TEST_CASE(accuracy_msrl_table) {
  const acc_row rows[] = {
      {"<think>t</think><answer>A</answer>", "A", 1},
      {"<answer> a </answer>", "A", 1},                    // upper-cased
      {"<answer>B</answer>", "A", 0},
      {"A", "A", 1},                                       // no tag: the whole text
      {" a \n", "<answer>A</answer>", 1},                  // gold in a tag
      {"<answer>Response A</answer>", "A", 0},             // exact after upper
      {"<answer></answer>", "A", 0},                       // empty tag: whole text '<ANSWER></ANSWER>'
      {"<answer>A</answer>", "", 0},                       // missing gold
      {"", "", 0},
      {"<answer>c</answer>", "C", 1},                      // not restricted to A/B
      {"<ANSWER>b</ANSWER>", "b", 1},                      // tag case-insensitive
  };
  for (const acc_row& row : rows)
    BOOST_TEST(r::accuracy_reward{}({.completion = row.completion, .solution = row.solution}) == row.expected,
               row.completion << " vs " << row.solution);
  BOOST_TEST(r::normalize_msrl("  <answer> b </answer> ") == "B");
  BOOST_TEST(r::normalize_msrl(" <answer> </answer> x") == "<ANSWER> </ANSWER> X");
}

// UnifiedReward-Think: re.search('<answer>(.*?)</answer>') (no flags) stripped, else the whole
// stripped text; 1.0 iff equal to the gold treated the same way (case-sensitive).
BOOST_AUTO_TEST_CASE(accuracy_exact_table) {
  const std::string_view gold = "Image 1 is better";
  const acc_row rows[] = {
      {"<think>t</think><answer>Image 1 is better</answer>", gold, 1},
      {"<answer>image 1 is better</answer>", gold, 0},      // case-sensitive
      {"<ANSWER>Image 1 is better</ANSWER>", gold, 0},      // tag case-sensitive: whole text compared
      {"<answer>Image\n1 is better</answer>", gold, 0},     // no DOTALL
      {"  Image 1 is better ", gold, 1},                    // whole stripped text
      {"<answer>Image 1 is better</answer>", "<answer>Image 1 is better</answer>", 1},
      {"<answer></answer>", "", 0},                         // missing gold scores 0
  };
  for (const acc_row& row : rows)
    BOOST_TEST(r::accuracy_reward{.style = r::accuracy_style::exact}({.completion = row.completion,
                                                                        .solution = row.solution}) == row.expected,
               row.completion);
}

BOOST_AUTO_TEST_CASE(label_normalisers) {
  using r::label;
  using r::label_format;
  // numeric (R1-Reward): <answer>1</answer> -> A, 2 -> B
  BOOST_TEST(r::parse_label("<think>t</think><answer> 1 </answer>", label_format::numeric) == label::a);
  BOOST_TEST(r::parse_label("2", label_format::numeric) == label::b);
  BOOST_TEST(r::parse_label("<answer>A</answer>", label_format::numeric) == label::none);
  BOOST_TEST(r::parse_label("<answer>12</answer>", label_format::numeric) == label::none);
  // bracket (MM-RewardBench): the verdict that occurs last
  BOOST_TEST(r::parse_label("... so [[B]]", label_format::bracket) == label::b);
  BOOST_TEST(r::parse_label("[[A]] at first, finally [[B]]", label_format::bracket) == label::b);
  BOOST_TEST(r::parse_label("[[B]] ... [[A]]", label_format::bracket) == label::a);
  BOOST_TEST(r::parse_label("[[a]] [[C]] [A]", label_format::bracket) == label::none);
  // phrase (UnifiedReward / VL-RewardBench)
  BOOST_TEST(r::parse_label("<answer>Video 2 is better</answer>", label_format::phrase) == label::b);
  BOOST_TEST(r::parse_label("Therefore, Answer 1 is the slightly better one", label_format::phrase) == label::a);
  BOOST_TEST(r::parse_label("IMAGE 2 IS BETTER", label_format::phrase) == label::b);
  BOOST_TEST(r::parse_label("Response 2 is slightly better", label_format::phrase) == label::b);
  BOOST_TEST(r::parse_label("Answer 3 is better", label_format::phrase) == label::none);
  BOOST_TEST(r::parse_label("Answer 1 is worse", label_format::phrase) == label::none);
  BOOST_TEST(r::parse_label("Answer1 is better", label_format::phrase) == label::none);
  // only the <answer> content is read when a tag is present
  BOOST_TEST(r::parse_label("Image 1 is better <answer>Image 2 is better</answer>", label_format::phrase) == label::b);
  // msrl: exactly A or B after normalisation
  BOOST_TEST(r::parse_label("<answer> b</answer>", label_format::msrl) == label::b);
  BOOST_TEST(r::parse_label("<answer>Response B</answer>", label_format::msrl) == label::none);
  // any (gold labels)
  BOOST_TEST(r::parse_label("<answer>A</answer>", label_format::any) == label::a);
  BOOST_TEST(r::parse_label("2", label_format::any) == label::b);
  BOOST_TEST(r::parse_label("[[A]]", label_format::any) == label::a);
  BOOST_TEST(r::parse_label("Image 2 is better", label_format::any) == label::b);
  BOOST_TEST(r::parse_label("tie", label_format::any) == label::none);
  BOOST_TEST(r::swapped(label::a) == label::b);
  BOOST_TEST(r::swapped(label::none) == label::none);
  BOOST_TEST(r::to_char(label::b) == 'B');
  BOOST_TEST(r::label_format_from_name("phrase") == label_format::phrase);
  BOOST_CHECK_THROW(r::label_format_from_name("xml"), msrl::invalid_argument);
}

BOOST_AUTO_TEST_CASE(accuracy_label_style) {
  const r::accuracy_reward num{.style = r::accuracy_style::label, .format = r::label_format::numeric};
  BOOST_TEST(num({.completion = "<answer>1</answer>", .solution = "<answer>1</answer>"}) == 1.0);
  BOOST_TEST(num({.completion = "<answer>2</answer>", .solution = "1"}) == 0.0);
  BOOST_TEST(num({.completion = "<answer>2</answer>", .solution = "B"}) == 1.0); // gold read with `any`
  BOOST_TEST(num({.completion = "<answer>2</answer>", .solution = ""}) == 0.0);
  const r::accuracy_reward br{.style = r::accuracy_style::label, .format = r::label_format::bracket, .value = 2.0};
  BOOST_TEST(br({.completion = "reasoning [[B]]", .solution = "B"}) == 2.0);
  BOOST_TEST(br({.completion = "no verdict", .solution = "B"}) == 0.0);
  const r::accuracy_reward ph{.style = r::accuracy_style::label, .format = r::label_format::phrase};
  BOOST_TEST(ph({.completion = "<answer>Response 2 is better</answer>", .solution = "Response 2 is better"}) == 1.0);
}

// MSRL plugin task reward: norm(x) = collapse_ws(replace(_,- -> ' ')(type content if non-empty
// else whole text, lower-cased)); 0.2 iff equal and non-empty.
BOOST_AUTO_TEST_CASE(task_table) {
  struct row {
    std::string_view completion, task;
    double expected;
  };
  const row rows[] = {
      {"<type>Image Understanding</type><think>t</think>", "image_understanding", 0.2},
      {"<type>image-understanding</type>", "Image Understanding", 0.2},
      {"<TYPE> video   generation\n</TYPE>", "video_generation", 0.2},
      {"<type>image generation</type>", "image_understanding", 0.0},
      {"<type></type>image_understanding", "image_understanding", 0.0}, // empty tag: whole text compared
      {"image_understanding", "image_understanding", 0.2},               // no tag: whole text
      {"<type>image_understanding</type>", "", 0.0},                     // missing task_type
      {"<type>Text</type>", "text", 0.2},
      {"<type>image__understanding</type>", "image understanding", 0.2}, // runs collapse
  };
  for (const row& rw : rows)
    BOOST_TEST(r::task_reward{}({.completion = rw.completion, .task_type = rw.task}) == rw.expected, rw.completion);
  BOOST_TEST(r::normalize_task("  Image__Understanding-\n") == "image understanding");
  BOOST_TEST(r::normalize_task("<type>Video-Generation</type> rest") == "video generation");
  BOOST_TEST(r::task_reward{.value = 1.0}({.completion = "text", .task_type = "TEXT"}) == 1.0);
  BOOST_TEST((r::parse_task("<type>Video Understanding</type>") == r::task_kind::video_understanding));
  BOOST_TEST(!r::parse_task("audio").has_value());
  BOOST_TEST(r::task_name(r::task_kind::image_generation) == "image_generation");
}

// caption-first: non-empty <caption> closes before a <think>…</think> that closes before an <answer>…</answer>;
// with require_type a non-empty <type> closes before the caption opens.
BOOST_AUTO_TEST_CASE(caption_first_table) {
  struct row {
    std::string_view text;
    bool plain, typed;
  };
  const row rows[] = {
      {"<type>x</type><caption>a cat</caption><think>t</think><answer>A</answer>", true, true},
      {"<caption>a cat</caption>\n<think>t</think>\n<answer>A</answer>", true, false},
      {"<think>t</think><caption>c</caption><answer>A</answer>", false, false},
      {"<caption> </caption><think>t</think><answer>A</answer>", false, false},
      {"<caption>c</caption><think>t</think>", false, false},
      {"<caption>c</caption><type>x</type><think>t</think><answer>A</answer>", true, false},
      {"<type> </type><caption>c</caption><think>t</think><answer>A</answer>", true, false},
      {"<caption>c</caption><answer>A</answer><think>t</think>", false, false},
  };
  for (const row& rw : rows) {
    BOOST_TEST(r::caption_first(rw.text) == rw.plain, rw.text);
    BOOST_TEST(r::caption_first(rw.text, true) == rw.typed, rw.text);
  }
  BOOST_TEST(r::caption_first_reward{.value = 0.3}({.completion = rows[0].text}) == 0.3);
}
