// Composition, presets and batch scoring into the GRPO core's reward_matrix layout.
#define BOOST_TEST_MODULE reward_compose
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <msrl/grpo.hpp>
#include <msrl/reward.hpp>

namespace r = msrl::reward;
namespace g = msrl::grpo;

namespace {
const r::sample good{.completion = "<type>image_understanding</type><think>t</think><answer>A</answer>",
                     .solution = "A",
                     .task_type = "image_understanding"};
const r::sample wrong{.completion = "<type>Image Understanding</type><think>t</think><answer>B</answer>",
                      .solution = "A",
                      .task_type = "image_understanding"};
const r::sample junk{.completion = "no tags at all", .solution = "A", .task_type = "image_understanding"};

struct length_penalty {
  double operator()(const r::sample& s) const { return s.completion.size() > 20 ? -1.0 : 0.0; }
};
} // namespace

static_assert(r::reward_function<r::format_reward>);
static_assert(r::reward_function<r::accuracy_reward>);
static_assert(r::reward_function<r::task_reward>);
static_assert(r::reward_function<r::caption_first_reward>);
static_assert(r::reward_function<length_penalty>);
static_assert(!r::reward_function<int>);
static_assert(!r::reward_function<std::string (*)(const r::sample&)>);

BOOST_AUTO_TEST_CASE(paper_preset_values) {
  // paper: r = 1*format + 1*accuracy + 1*task(0.2)
  const auto p = r::preset("paper");
  BOOST_TEST(p.names() == (std::vector<std::string>{"format", "accuracy", "task"}), boost::test_tools::per_element());
  BOOST_TEST(p(good) == 2.2, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(p(wrong) == 1.2, boost::test_tools::tolerance(1e-12)); // format 1 + task 0.2
  BOOST_TEST(p(junk) == 0.0);
}

BOOST_AUTO_TEST_CASE(release_preset_values) {
  // release scripts: --reward_funcs accuracy format task --reward_weights 1.0 0.2 0.2, task returns 0.2
  const auto p = r::preset("release");
  BOOST_TEST(p.names() == (std::vector<std::string>{"accuracy", "format", "task"}), boost::test_tools::per_element());
  BOOST_TEST(p.weights() == (std::vector<double>{1.0, 0.2, 0.2}), boost::test_tools::per_element());
  BOOST_TEST(p(good) == 1.24, boost::test_tools::tolerance(1e-12));  // 1 + 0.2*1 + 0.2*0.2
  BOOST_TEST(p(wrong) == 0.24, boost::test_tools::tolerance(1e-12)); // 0 + 0.2 + 0.04
  BOOST_TEST(r::preset("release-stage1")(good) == 1.2, boost::test_tools::tolerance(1e-12));
  // r1reward: 0.5*format(r1) + accuracy(numeric)
  BOOST_TEST(r::preset("r1reward")({.completion = "<think>t</think><answer>2</answer>", .solution = "2"}) == 1.5);
  BOOST_TEST(r::preset("r1reward")({.completion = "<think>t</think> <answer>2</answer>", .solution = "1"}) == 0.0);
  // unifiedreward: format(ur) + exact accuracy
  BOOST_TEST(r::preset("unifiedreward")({.completion = "<think>t</think><answer>Image 1 is better</answer>",
                                         .solution = "Image 1 is better"}) == 2.0);
  // paper-caption: paper + 1*caption_first(0.2)
  BOOST_TEST(r::preset("paper-caption")({.completion = "<type>text</type><caption>c</caption><think>t</think><answer>A</answer>",
                                         .solution = "A",
                                         .task_type = "text"}) == 2.4,
             boost::test_tools::tolerance(1e-12));
  for (auto n : r::preset_names) BOOST_TEST(r::preset(n).size() >= 2u);
}

BOOST_AUTO_TEST_CASE(preset_errors) {
  try {
    (void)r::preset("nope");
    BOOST_FAIL("no throw");
  } catch (const msrl::invalid_argument& e) {
    const std::string m = e.what();
    BOOST_TEST(m.find("'name'") != std::string::npos);
    BOOST_TEST(m.find("paper") != std::string::npos);
    BOOST_TEST(m.find("nope") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(custom_callables_and_errors) {
  r::reward_set s;
  s.add("acc", 2.0, r::accuracy_reward{})
      .add("len", 0.5, length_penalty{})
      .add("lambda", 1.0, [](const r::sample& x) { return x.completion.empty() ? 1 : 0; }); // int converts
  BOOST_TEST(s.size() == 3u);
  BOOST_TEST(s(good) == 2.0 - 0.5, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(s({.completion = "", .solution = "A"}) == 1.0);
  BOOST_CHECK_THROW(s.add("", 1.0, r::task_reward{}), msrl::invalid_argument);
  BOOST_CHECK_THROW(s.add("acc", 1.0, r::task_reward{}), msrl::invalid_argument);
  BOOST_CHECK_THROW(s.add("w", std::numeric_limits<double>::infinity(), r::task_reward{}), msrl::value_error);
  // a reward_set is itself a reward function and nests
  r::reward_set outer;
  outer.add("inner", 10.0, s);
  BOOST_TEST(outer(good) == 15.0, boost::test_tools::tolerance(1e-12));
  // NaN terms are skipped in the total (nansum), as ms-swift does
  r::reward_set n;
  n.add("nan", 1.0, [](const r::sample&) { return std::numeric_limits<double>::quiet_NaN(); })
      .add("one", 3.0, [](const r::sample&) { return 1.0; });
  BOOST_TEST(n(good) == 3.0);
  std::vector<double> out(1);
  BOOST_CHECK_THROW(n.score_terms(good, out), msrl::shape_error);
}

BOOST_AUTO_TEST_CASE(batch_columns_feed_grpo) {
  const auto p = r::preset("release");
  const std::vector<r::sample> batch{good, wrong, junk, good};
  const auto s = p.score(batch);
  BOOST_TEST(s.rows == 4u);
  BOOST_TEST(s.columns == 3u);
  // row-major [rows, columns]: columns accuracy, format, task (raw function values)
  const std::vector<double> expected{1, 1, 0.2, /**/ 0, 1, 0.2, /**/ 0, 0, 0, /**/ 1, 1, 0.2};
  BOOST_TEST(s.values == expected, boost::test_tools::per_element());
  BOOST_TEST(s.column(1) == (std::vector<double>{1, 1, 0, 1}), boost::test_tools::per_element());
  BOOST_CHECK_THROW((void)s.column(3), msrl::shape_error);
  const std::vector<double> totals{1.24, 0.24, 0.0, 1.24};
  for (std::size_t i = 0; i < 4; ++i) BOOST_TEST(s.totals[i] == totals[i], boost::test_tools::tolerance(1e-12));
  // The matrix goes straight into the core: group of 2, no std scaling -> A = R - group mean.
  std::vector<double> adv(4);
  g::advantages(g::reward_matrix<double>{s.values, s.columns, s.weights}, 2, std::span<double>(adv),
                {.scaling = g::std_scaling::none});
  BOOST_TEST(adv[0] == 0.5, boost::test_tools::tolerance(1e-12));  // (1.24 - 0.24) / 2
  BOOST_TEST(adv[1] == -0.5, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(adv[2] == -0.62, boost::test_tools::tolerance(1e-12)); // 0 - (0 + 1.24) / 2
  BOOST_TEST(adv[3] == 0.62, boost::test_tools::tolerance(1e-12));
  // GDPO (per-column normalisation) accepts the same columns
  g::advantages(g::reward_matrix<double>{s.values, s.columns, s.weights}, 2, std::span<double>(adv),
                {.aggregation = g::reward_aggregation::normalize_then_sum});
  for (double a : adv) BOOST_TEST(std::isfinite(a));
  BOOST_TEST(adv[0] > adv[1]);
}
