// Majority voting, voting@k and position-debiased voting; expected winners counted by hand.
#define BOOST_TEST_MODULE voting_vote
#include <boost/test/unit_test.hpp>

#include <string_view>
#include <vector>

#include <msrl/voting/vote.hpp>

#include "../reward/printing.hpp"

namespace v = msrl::voting;
using msrl::reward::label;
constexpr label A = label::a, B = label::b, N = label::none;

BOOST_AUTO_TEST_CASE(majority_and_ties) {
  const std::vector<label> aab{A, A, B};
  auto r = v::majority_vote(aab);
  BOOST_TEST(r.winner == A);
  BOOST_TEST(r.a == 2u);
  BOOST_TEST(r.b == 1u);
  BOOST_TEST(!r.tie);
  const std::vector<label> ab{A, B};
  BOOST_TEST(v::majority_vote(ab, v::tie_policy::abstain).winner == N);
  BOOST_TEST(v::majority_vote(ab, v::tie_policy::abstain).tie);
  BOOST_TEST(v::majority_vote(ab, v::tie_policy::first_vote).winner == A);
  BOOST_TEST(v::majority_vote(ab, v::tie_policy::prefer_b).winner == B);
  const std::vector<label> mixed{N, B, A, N, A, B}; // 2-2 tie, first valid vote is B
  auto t = v::majority_vote(mixed, v::tie_policy::first_vote);
  BOOST_TEST(t.winner == B);
  BOOST_TEST(t.invalid == 2u);
  const std::vector<label> none{N, N};
  auto n = v::majority_vote(none, v::tie_policy::prefer_a); // no valid vote: no label under any policy
  BOOST_TEST(n.winner == N);
  BOOST_TEST(!n.tie);
  BOOST_TEST(v::majority_vote({}).winner == N);
  BOOST_TEST((v::tie_policy_from_name("first") == v::tie_policy::first_vote));
  BOOST_CHECK_THROW(v::tie_policy_from_name("coin"), msrl::invalid_argument);
}

BOOST_AUTO_TEST_CASE(voting_at_k) {
  const std::vector<std::string_view> j{"<think>t</think><answer>A</answer>", "<answer>B</answer>", " b ", "junk"};
  BOOST_TEST(v::vote_at_k(j, 1).winner == A);
  BOOST_TEST(v::vote_at_k(j, 2).winner == N); // 1-1, abstain
  BOOST_TEST(v::vote_at_k(j, 2, msrl::reward::label_format::msrl, v::tie_policy::first_vote).winner == A);
  auto r3 = v::vote_at_k(j, 3);
  BOOST_TEST(r3.winner == B);
  BOOST_TEST(r3.b == 2u);
  auto all = v::vote_at_k(j); // k = 0: all four
  BOOST_TEST(all.winner == B);
  BOOST_TEST(all.invalid == 1u);
  BOOST_CHECK_THROW(v::vote_at_k(j, 5), msrl::shape_error);
  const std::vector<std::string_view> ph{"Image 2 is better", "<answer>Image 1 is better</answer>", "Image 2 is better"};
  BOOST_TEST(v::vote_at_k(ph, 0, msrl::reward::label_format::phrase).winner == B);
}

BOOST_AUTO_TEST_CASE(position_debiased) {
  // original order says A twice; the swapped order says A (= original B) once and B (= original A) once
  const std::vector<label> orig{A, A}, swp{A, B};
  auto r = v::debiased_vote(orig, swp);
  BOOST_TEST(r.winner == A);
  BOOST_TEST(r.a == 3u);
  BOOST_TEST(r.b == 1u);
  // a judge that always answers "A" whatever the order carries no preference: a tie
  const std::vector<label> a1{A}, a2{A};
  auto biased = v::debiased_vote(a1, a2);
  BOOST_TEST(biased.tie);
  BOOST_TEST(biased.winner == N);
  // a consistent judge: original B, swapped A (= original B)
  const std::vector<label> b1{B}, sa{A};
  BOOST_TEST(v::debiased_vote(b1, sa).winner == B);
  // first_vote on a tie uses the original order first
  BOOST_TEST(v::debiased_vote(a1, a2, v::tie_policy::first_vote).winner == A);
  // probability form: (0.8 + (1 - 0.4)) / 2 = 0.7
  BOOST_TEST(v::debiased_probability(0.8, 0.4) == 0.7, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(v::debiased_probability(1.0, 1.0) == 0.5);
  BOOST_CHECK_THROW(v::debiased_probability(1.5, 0.5), msrl::value_error);
  BOOST_CHECK_THROW(v::debiased_probability(0.5, -0.1), msrl::value_error);
}
