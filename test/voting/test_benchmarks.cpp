// Benchmark scoring conventions; accuracies computed by hand from the listed items.
#define BOOST_TEST_MODULE voting_benchmarks
#include <boost/test/unit_test.hpp>

#include <vector>

#include <msrl/voting/benchmarks.hpp>

#include "../reward/printing.hpp"

namespace v = msrl::voting;
using msrl::reward::label;
constexpr label A = label::a, B = label::b, N = label::none;
inline auto tol(double t) { return boost::test_tools::tolerance(t); }

BOOST_AUTO_TEST_CASE(vlrb_id_groups) {
  // prefix before the first '_' or '-'
  BOOST_TEST(v::vlrb_subset("RLAIF-V_001") == "rlaif-v");
  BOOST_TEST(v::vlrb_subset("RLHF-V-17") == "rlhf-v");
  BOOST_TEST(v::vlrb_subset("hallucination_pair-448") == "povid");
  BOOST_TEST(v::vlrb_group("hallucination_pair-448") == "hallucination"); // the povid rule
  BOOST_TEST(v::vlrb_group("RLAIF-V_001") == "hallucination");
  BOOST_TEST(v::vlrb_group("mathverse_12") == "reasoning");
  BOOST_TEST(v::vlrb_group("mmmu-pro_3") == "reasoning");
  BOOST_TEST(v::vlrb_subset("wildvision_9") == "wildvision-battle");
  BOOST_TEST(v::vlrb_group("wildvision_9") == "general");
  BOOST_TEST(v::vlrb_group("VLFeedback_3") == "general");
  BOOST_TEST(v::vlrb_group("") == "general");
  BOOST_TEST(v::vlrb_group("rlaif_1") == "general"); // prefixes are case-sensitive, as in cal.py
}

BOOST_AUTO_TEST_CASE(micro_macro_with_exclusion) {
  v::accuracy_table t(v::unparsable_policy::exclude);
  // general: 3 correct, 1 wrong, 1 unparsable -> 3/4
  for (label p : {A, A, A, B, N}) t.add("general", p, A);
  // hallucination: 1 correct, 1 wrong -> 1/2
  t.add("hallucination", B, B);
  t.add("hallucination", A, B);
  // reasoning: 0 of 2
  t.add("reasoning", A, B);
  t.add("reasoning", B, A);
  const auto r = t.report();
  BOOST_REQUIRE(r.categories.size() == 3u);
  BOOST_TEST(r.categories[0].category == "general");
  BOOST_TEST(r.categories[0].accuracy() == 0.75, tol(1e-12));
  BOOST_TEST(r.categories[0].unparsable == 1u);
  BOOST_TEST(r.categories[1].accuracy() == 0.5, tol(1e-12));
  BOOST_TEST(r.categories[2].accuracy() == 0.0);
  BOOST_TEST(r.micro == 4.0 / 8.0, tol(1e-12));
  BOOST_TEST(r.macro == (0.75 + 0.5 + 0.0) / 3.0, tol(1e-12));
  // counting unparsable as wrong: general 3/5, micro 4/9
  v::accuracy_table w(v::unparsable_policy::wrong);
  for (label p : {A, A, A, B, N}) w.add("general", p, A);
  BOOST_TEST(w.report().micro == 0.6, tol(1e-12));
}

BOOST_AUTO_TEST_CASE(random_guess_is_seeded) {
  auto run = [](std::uint64_t seed) {
    v::accuracy_table t(v::unparsable_policy::random_guess, seed);
    for (int i = 0; i < 200; ++i) t.add("vqa", N, i % 2 ? A : B);
    return t.report();
  };
  const auto r1 = run(123), r2 = run(123), r3 = run(7);
  BOOST_TEST(r1.correct + r1.wrong == 200u); // every unparsable item is guessed
  BOOST_TEST(r1.unparsable == 200u);
  BOOST_TEST(r1.correct == r2.correct);
  BOOST_TEST(r1.correct > 60u); // a fair coin: 100 +- 3 sigma (21)
  BOOST_TEST(r1.correct < 140u);
  BOOST_TEST((r1.correct != r3.correct || r1.micro == r3.micro));
}

BOOST_AUTO_TEST_CASE(k_judgments_per_item) {
  // cal.py: agree > k/2 -> correct, reject > k/2 -> wrong, else dropped
  v::accuracy_table t;
  const std::vector<label> agree{A, A, A, B, N}, split{A, A, B, B, N}, reject{B, B, B, A, A};
  t.add_votes("g", agree, A);
  t.add_votes("g", split, A);
  t.add_votes("g", reject, A);
  const auto r = t.report();
  BOOST_TEST(r.correct == 1u);
  BOOST_TEST(r.wrong == 1u);
  BOOST_TEST(r.unparsable == 1u);
  BOOST_TEST(r.micro == 0.5);
}

BOOST_AUTO_TEST_CASE(genai_and_mmrb_labels) {
  BOOST_TEST(v::genai_gold("leftvote") == A);
  BOOST_TEST(v::genai_gold("rightvote") == B);
  BOOST_TEST(v::genai_gold("tievote") == N);
  BOOST_TEST(v::genai_gold("bothbad_vote") == N);
  BOOST_CHECK_THROW(v::genai_gold("upvote"), msrl::value_error);
  v::accuracy_table t;
  t.add("image", A, v::genai_gold("leftvote"));
  t.add("image", A, v::genai_gold("tievote"));
  t.add("image", B, v::genai_gold("bothbad_vote"));
  t.add("image", A, v::genai_gold("rightvote"));
  const auto r = t.report();
  BOOST_TEST(r.excluded == 2u);
  BOOST_TEST(r.micro == 0.5); // 1 of the 2 non-tie items
  BOOST_TEST(v::mmrb_gold("Output2") == B);
  BOOST_TEST(v::mmrb_category("math_001", "reasoning") == "reasoning/math");
  BOOST_TEST(v::mmrb_category("code_7", "reasoning") == "reasoning/coding");
  BOOST_TEST(v::mmrb_category("pairs_3", "safety") == "safety/bias");
  BOOST_TEST(v::mmrb_category("hateful_3", "safety") == "safety/toxicity");
  BOOST_TEST(v::mmrb_category("x", "vqa") == "vqa");
  BOOST_CHECK_THROW(v::mmrb_gold("B"), msrl::value_error);
}
