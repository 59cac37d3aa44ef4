// Replay mixing: per-batch counts follow floor((b+1)·B·r/T) - floor(b·B·r/T), computed by hand below.
#define BOOST_TEST_MODULE data_replay
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include <msrl/data/replay.hpp>

namespace d = msrl::data;

BOOST_AUTO_TEST_CASE(splitmix_reference_value) {
  // SplitMix64 seeded with 0: first output 0xe220a8397b1dcdaf (the published reference sequence)
  d::splitmix64 g(0);
  BOOST_TEST(g.next() == 0xe220a8397b1dcdafull);
  BOOST_TEST(g.next() == 0x6e789e6aa1b965f4ull);
  auto p = d::seeded_permutation(10, 42);
  auto q = p;
  std::sort(q.begin(), q.end());
  for (std::size_t i = 0; i < 10; ++i) BOOST_TEST(q[i] == i);
  BOOST_TEST((p == d::seeded_permutation(10, 42)));
}

BOOST_AUTO_TEST_CASE(four_to_one_pattern) {
  const auto plan = d::mix_plan(8, 3, {.ratio = d::ratio_table6, .seed = 7});
  // batch = 5: F F F F R | F F F F R, then a fresh slot with nothing left
  BOOST_REQUIRE(plan.size() == 10u);
  for (std::size_t i = 0; i < plan.size(); ++i) BOOST_TEST(plan[i].replay == (i == 4 || i == 9), i);
  std::size_t f = 0;
  for (const auto& s : plan)
    if (!s.replay) BOOST_TEST(s.index == f++); // fresh in input order
  const auto perm = d::seeded_permutation(3, 7);
  BOOST_TEST(plan[4].index == perm[0]);
  BOOST_TEST(plan[9].index == perm[1]);
  // 5:1 with batch 6: F F F F F R
  const auto p51 = d::mix_plan(5, 2, {.ratio = d::ratio_section51});
  BOOST_REQUIRE(p51.size() == 6u);
  BOOST_TEST(p51[5].replay);
  BOOST_TEST(!p51[4].replay);
}

BOOST_AUTO_TEST_CASE(batches_of_128) {
  // 4:1, B = 128: replay per batch = floor((b+1)*25.6) - floor(b*25.6) = 25, 26, 25, 26, 26 (sum 128)
  const auto plan = d::mix_plan(512, 1000, {.ratio = {4, 1}, .batch_size = 128, .seed = 1});
  BOOST_REQUIRE(plan.size() == 640u);
  const std::size_t expected[5] = {25, 26, 25, 26, 26};
  std::set<std::size_t> seen;
  for (std::size_t b = 0; b < 5; ++b) {
    std::size_t k = 0;
    for (std::size_t s = 0; s < 128; ++s) {
      const auto& slot = plan[b * 128 + s];
      if (slot.replay) {
        ++k;
        BOOST_TEST(slot.index < 1000u);
        BOOST_TEST(seen.insert(slot.index).second); // without replacement within a pass
      }
    }
    BOOST_TEST(k == expected[b], "batch " << b);
  }
}

BOOST_AUTO_TEST_CASE(seeds_and_cycling) {
  const auto a = d::mix_plan(40, 100, {.seed = 1}), b = d::mix_plan(40, 100, {.seed = 1}),
             c = d::mix_plan(40, 100, {.seed = 2});
  auto replays = [](const std::vector<d::mix_slot>& p) {
    std::vector<std::size_t> r;
    for (auto s : p)
      if (s.replay) r.push_back(s.index);
    return r;
  };
  BOOST_TEST(replays(a) == replays(b), boost::test_tools::per_element());
  BOOST_TEST(replays(a).size() == 10u);
  BOOST_TEST((replays(a) != replays(c)));
  // a pool of 2 is cycled with a fresh permutation (seed + pass) each time
  const auto small = replays(d::mix_plan(20, 2, {.seed = 9}));
  BOOST_REQUIRE(small.size() == 5u);
  const auto p0 = d::seeded_permutation(2, 9), p1 = d::seeded_permutation(2, 10), p2 = d::seeded_permutation(2, 11);
  BOOST_TEST(small == (std::vector<std::size_t>{p0[0], p0[1], p1[0], p1[1], p2[0]}), boost::test_tools::per_element());
  // no replay at 1:0, even with an empty pool
  const auto none = d::mix_plan(7, 0, {.ratio = {1, 0}});
  BOOST_TEST(none.size() == 7u);
  BOOST_TEST(d::mix_plan(0, 5, {}).empty());
}

BOOST_AUTO_TEST_CASE(errors) {
  BOOST_CHECK_THROW(d::replay_mixer(5, {.ratio = {0, 1}}), msrl::invalid_argument);
  BOOST_CHECK_THROW(d::replay_mixer(0, {.ratio = {4, 1}}), msrl::invalid_argument);
  d::replay_mixer m(3, {.ratio = {1, 1}, .batch_size = 2}); // F R F R ...
  BOOST_CHECK_THROW(m.take_replay(), msrl::invalid_argument);
  m.take_fresh();
  BOOST_CHECK_THROW(m.take_fresh(), msrl::invalid_argument);
  BOOST_TEST(m.take_replay() < 3u);
  BOOST_TEST(m.replay_taken() == 1u);
}

BOOST_AUTO_TEST_CASE(ratios_parse_as_written_and_bad_ones_name_the_argument) {
  const auto r = d::parse_replay_ratio("5:1", "w", "a");
  BOOST_TEST(r.fresh == 5u);
  BOOST_TEST(r.replay == 1u);
  BOOST_TEST(d::parse_replay_ratio("12:0", "w", "a").replay == 0u);
  BOOST_TEST(d::parse_replay_ratio("1000000:1000000", "w", "a").fresh == 1000000u);
  BOOST_TEST(d::parse_replay_ratio("table6", "w", "a").fresh == 4u);
  BOOST_TEST(d::parse_replay_ratio("section51", "w", "a").fresh == 5u);
  for (const char* bad : {"", ":", "4", "4:", ":1", "4-1", "0:1", "4:1:1", "-4:1", "4 :1", "1000001:1", "99999999999999999999999:1", "Table6"}) {
    BOOST_TEST_CONTEXT(bad) {
      try {
        (void)d::parse_replay_ratio(bad, "msrl mix", "--ratio");
        BOOST_ERROR("accepted");
      } catch (const msrl::invalid_argument& e) {
        BOOST_TEST(std::string(e.what()).find("msrl mix") != std::string::npos);
        BOOST_TEST(std::string(e.what()).find("'--ratio'") != std::string::npos, e.what());
      }
    }
  }
}
