// CMKD selection. Per the MSRL paper: vote a pseudo-label over the K rationales, drop those that
// disagree, drop malformed ones, keep the most confident, emit <caption>…</caption><think>…</think><answer>X</answer>.
#define BOOST_TEST_MODULE voting_cmkd
#include <boost/test/unit_test.hpp>

#include <limits>
#include <string>
#include <vector>

#include <msrl/reward.hpp>

#include "../reward/printing.hpp"

namespace v = msrl::voting;
using msrl::reward::label;
using cs = v::candidate_status;

namespace msrl::voting {
inline std::ostream& operator<<(std::ostream& o, candidate_status c) { return o << static_cast<int>(c); }
inline std::ostream& operator<<(std::ostream& o, sample_status c) { return o << static_cast<int>(c); }
} // namespace msrl::voting

namespace {
const std::vector<double> lp0{-0.5};                   // mean -0.5, sum -0.5
const std::vector<double> lp1{-0.1, -0.3, -0.2, -0.2}; // mean -0.2, sum -0.8
const std::vector<double> lp2{-0.01};
const std::vector<double> lp3{-0.01};
const std::vector<double> lp5{-0.3, -0.3, -0.3, -0.3}; // mean -0.3, sum -1.2
const std::vector<v::cmkd_candidate> cands{
    {"<think>r0</think><answer>A</answer>", lp0, 0.6},
    {"<think>r1</think><answer>A</answer>", lp1, 0.7},
    {"<answer>A</answer>", lp2, 0.9},                 // votes A, but no <think>: malformed
    {"<think>r3</think><answer>B</answer>", lp3, 0.95}, // disagrees
    {"<think>r4</think>no answer", lp3, 0.99},        // label does not parse
    {"<think>  r5 long  </think><answer>a</answer>", lp5, 0.99},
};
const std::string caption = "A red car parked by a lake.";
} // namespace

BOOST_AUTO_TEST_CASE(default_mean_token_logprob) {
  const auto s = v::cmkd_select(cands, caption);
  BOOST_TEST(s.status == v::sample_status::kept);
  BOOST_TEST(s.pseudo_label == label::a); // A: 0,1,2,5 (4 votes) vs B: 3 (1 vote)
  BOOST_TEST(s.votes.a == 4u);
  BOOST_TEST(s.votes.b == 1u);
  BOOST_TEST(s.votes.invalid == 1u);
  const std::vector<cs> expected{cs::eligible, cs::eligible, cs::malformed, cs::disagree, cs::unparsable, cs::eligible};
  BOOST_TEST(s.candidates == expected, boost::test_tools::per_element());
  BOOST_TEST(s.chosen == 1u); // means -0.5, -0.2, -0.3
  BOOST_TEST(s.confidence == -0.2, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(s.target == "<caption>A red car parked by a lake.</caption><think>r1</think><answer>A</answer>");
  // the target parses back under the reward rules
  BOOST_TEST(msrl::reward::extract_tag(s.target, "caption") == caption);
  BOOST_TEST(msrl::reward::parse_label(s.target) == label::a);
  BOOST_TEST(msrl::reward::caption_first(s.target));
}

BOOST_AUTO_TEST_CASE(other_confidences) {
  BOOST_TEST(v::cmkd_select(cands, caption, {}, v::sequence_logprob{}).chosen == 0u); // sums -0.5, -0.8, -1.2
  const auto p = v::cmkd_select(cands, caption, {}, v::answer_token_probability{});
  BOOST_TEST(p.chosen == 5u); // 0.6, 0.7, 0.99
  BOOST_TEST(p.target == "<caption>A red car parked by a lake.</caption><think>r5 long</think><answer>A</answer>");
  BOOST_TEST(v::cmkd_select(cands, caption, {}, v::first_eligible{}).chosen == 0u);
  // any callable: prefer the longest rationale
  const auto longest = v::cmkd_select(cands, caption, {},
                                      [](const v::cmkd_candidate& c) { return static_cast<double>(c.text.size()); });
  BOOST_TEST(longest.chosen == 5u);
  static_assert(v::confidence_scorer<v::mean_token_logprob>);
  static_assert(!v::confidence_scorer<int>);
}

BOOST_AUTO_TEST_CASE(drops_and_counts) {
  v::cmkd_counts counts;
  counts.add(v::cmkd_select(cands, caption));
  const std::vector<v::cmkd_candidate> tie{{"<think>x</think><answer>A</answer>", lp0}, {"<think>y</think><answer>B</answer>", lp1}};
  const auto t = v::cmkd_select(tie, caption);
  BOOST_TEST(t.status == v::sample_status::tie);
  BOOST_TEST(t.target.empty());
  counts.add(t);
  const auto tf = v::cmkd_select(tie, caption, {.tie = v::tie_policy::first_vote});
  BOOST_TEST(tf.status == v::sample_status::kept);
  BOOST_TEST(tf.chosen == 0u);
  const std::vector<v::cmkd_candidate> junk{{"junk", lp0}};
  const auto j = v::cmkd_select(junk, caption);
  BOOST_TEST(j.status == v::sample_status::no_votes);
  counts.add(j);
  const std::vector<v::cmkd_candidate> nolp{{"<think>x</think><answer>B</answer>"}};
  const auto n = v::cmkd_select(nolp, caption); // mean of no tokens: no confidence
  BOOST_TEST(n.status == v::sample_status::none_eligible);
  BOOST_TEST(n.candidates[0] == cs::no_confidence);
  counts.add(n);
  BOOST_TEST(counts.samples == 4u);
  BOOST_TEST(counts.kept == 1u);
  BOOST_TEST(counts.dropped_tie == 1u);
  BOOST_TEST(counts.dropped_no_votes == 1u);
  BOOST_TEST(counts.dropped_none_eligible == 1u);
  BOOST_TEST(counts.candidates == 6u + 2u + 1u + 1u);
  BOOST_TEST(counts.eligible == 3u);
  BOOST_TEST(counts.disagree == 1u + 2u); // the tie abstains: both of its candidates disagree with 'none'
  BOOST_TEST(counts.unparsable == 1u + 1u);
  BOOST_TEST(counts.malformed == 1u);
  BOOST_TEST(counts.no_confidence == 1u);
  // the strict R1-Reward format still accepts these compact candidates, so the choice is unchanged
  const auto sw = v::cmkd_select(cands, caption, {.format = msrl::reward::format_style::r1reward});
  BOOST_TEST(sw.chosen == 1u);
}

// min_agreement: the winner's share of the parsable votes (unparsable ones do not count). `cands`
// votes A, A, A, B, -, a: 4 of 5 = 0.8.
BOOST_AUTO_TEST_CASE(min_agreement_drops_split_votes) {
  BOOST_TEST(v::cmkd_select(cands, caption, {.min_agreement = 0.8}).status == v::sample_status::kept);
  const auto low = v::cmkd_select(cands, caption, {.min_agreement = 0.81});
  BOOST_TEST(low.status == v::sample_status::low_agreement);
  BOOST_TEST(low.target.empty());
  BOOST_TEST(low.pseudo_label == label::a); // the vote is reported, the sample is not kept
  BOOST_TEST(low.votes.a == 4u);
  BOOST_TEST(low.votes.b == 1u);
  // 6 of 8 at 0.75 is kept, 5 of 8 is not (exact at the boundary)
  std::vector<v::cmkd_candidate> eight;
  for (int i = 0; i < 8; ++i) eight.push_back({i < 6 ? "<think>x</think><answer>A</answer>" : "<think>y</think><answer>B</answer>", lp1});
  BOOST_TEST(v::cmkd_select(eight, caption, {.min_agreement = 0.75}).status == v::sample_status::kept);
  eight[5].text = "<think>y</think><answer>B</answer>";
  BOOST_TEST(v::cmkd_select(eight, caption, {.min_agreement = 0.75}).status == v::sample_status::low_agreement);
  BOOST_TEST(v::cmkd_select(eight, caption, {.min_agreement = 0.625}).status == v::sample_status::kept);
  BOOST_TEST(v::cmkd_select(eight, caption, {.min_agreement = 1.0}).status == v::sample_status::low_agreement);
  v::cmkd_counts counts;
  counts.add(v::cmkd_select(eight, caption, {.min_agreement = 0.75}));
  BOOST_TEST(counts.dropped_low_agreement == 1u);
  BOOST_TEST(counts.kept == 0u);
  // the report lists: every drop reason and candidate outcome by name, in a fixed order
  const auto dropped = counts.dropped_by_reason();
  BOOST_TEST(dropped[3].first == "low_agreement");
  BOOST_TEST(dropped[3].second == 1u);
  BOOST_TEST(dropped[0].first == "no_votes");
  const auto outcomes = counts.candidates_by_outcome();
  BOOST_TEST(outcomes[0].first == "total");
  BOOST_TEST(outcomes[0].second == 8u);
  BOOST_TEST(outcomes[1].first == "eligible");
  BOOST_TEST(outcomes[1].second == 5u); // the 5 A votes; the 3 B votes disagree with the pseudo-label
  BOOST_TEST(outcomes[3].first == "disagree");
  BOOST_TEST(outcomes[3].second == 3u);
  // a tie stays a tie whatever the threshold
  const std::vector<v::cmkd_candidate> tie{{"<think>x</think><answer>A</answer>", lp0}, {"<think>y</think><answer>B</answer>", lp1}};
  BOOST_TEST(v::cmkd_select(tie, caption, {.min_agreement = 0.9}).status == v::sample_status::tie);
  for (double bad : {-0.1, 1.5, std::numeric_limits<double>::quiet_NaN()})
    BOOST_CHECK_THROW(v::cmkd_select(cands, caption, {.min_agreement = bad}), msrl::invalid_argument);
}

BOOST_AUTO_TEST_CASE(target_errors) {
  BOOST_CHECK_THROW(v::cmkd_target("  ", "t", label::a), msrl::invalid_argument);
  BOOST_CHECK_THROW(v::cmkd_target("x</CAPTION>y", "t", label::a), msrl::value_error);
  BOOST_CHECK_THROW(v::cmkd_target("c", "t", label::none), msrl::invalid_argument);
  BOOST_TEST(v::cmkd_target("c", "t", label::b) == "<caption>c</caption><think>t</think><answer>B</answer>");
  // tags inside the caption or the think text would change what the target parses back to
  BOOST_CHECK_THROW(v::cmkd_target("a <Answer> B", "t", label::a), msrl::value_error);
  BOOST_CHECK_THROW(v::cmkd_target("c", "x <answer>B", label::a), msrl::value_error);
  BOOST_TEST(v::cmkd_target("<think>c", "t", label::a) == "<caption><think>c</caption><think>t</think><answer>A</answer>");
}

BOOST_AUTO_TEST_CASE(select_rejects_bad_caption) {
  const std::vector<double> lp{-0.1};
  std::vector<v::cmkd_candidate> one{{"<think>r</think><answer>A</answer>", lp, 0.5}};
  BOOST_CHECK_THROW(v::cmkd_select(one, " "), msrl::invalid_argument);
  BOOST_CHECK_THROW(v::cmkd_select(one, "x </caption> y"), msrl::value_error);
  // an <answer> in the caption would be the first one the target's parser sees
  BOOST_CHECK_THROW(v::cmkd_select(one, "x <answer> B </answeng"), msrl::value_error);
  BOOST_TEST(msrl::reward::parse_label(v::cmkd_select(one, "c").target) == label::a);
}

// A sampled rationale that holds an unclosed '<answer>' (model output is untrusted) would give a
// target that parses back to another label: that candidate is malformed, the next one is kept
// (it used to throw from cmkd_target; found by fuzz_rewards, reproducer in the fuzz corpus).
BOOST_AUTO_TEST_CASE(rationale_with_tags_is_malformed) {
  const std::vector<v::cmkd_candidate> c{
      {"<answer>A</answer><think>x <answer></think>", lp2, 0.9}, // votes A, most confident, unusable think
      {"<think>r1</think><answer>A</answer>", lp1, 0.7},
  };
  const auto s = v::cmkd_select(c, caption);
  BOOST_TEST(s.status == v::sample_status::kept);
  BOOST_TEST(s.candidates[0] == cs::malformed);
  BOOST_TEST(s.chosen == 1u);
  BOOST_TEST(msrl::reward::parse_label(s.target) == label::a);
  // with only the unusable one left the sample is dropped, not thrown
  const auto d = v::cmkd_select(std::span<const v::cmkd_candidate>(c.data(), 1), caption);
  BOOST_TEST(d.status == v::sample_status::none_eligible);
}
