// Length and truncation shaping: overlong buffers, soft overlong punishment, cosine length reward,
// stop-properly penalty, reward clipping and the n-gram repetition penalty. Every expected value
// is worked by hand from the peer's formula (the comment beside it shows the arithmetic); the
// repetition counts are also checked against a std::set of n-grams.
#define BOOST_TEST_MODULE reward_length
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <msrl/reward.hpp>
#include <msrl/reward/clip.hpp>

namespace r = msrl::reward;
namespace tt = boost::test_tools;

namespace {

constexpr double qnan = std::numeric_limits<double>::quiet_NaN();

r::sample with_length(std::size_t n, bool truncated = false) {
  return {.completion = "<think>t</think><answer>A</answer>",
          .solution = "A",
          .completion_tokens = n,
          .truncated = truncated};
}

r::sample judged(std::string_view completion, std::size_t n) {
  return {.completion = completion, .solution = "A", .completion_tokens = n};
}

template <class F>
void expect_throw_naming(const F& f, const std::string& arg) {
  try {
    f();
    BOOST_FAIL("no throw for " + arg);
  } catch (const msrl::invalid_argument& e) {
    BOOST_TEST(std::string(e.what()).find("'" + arg + "'") != std::string::npos, e.what());
  }
}

} // namespace

BOOST_AUTO_TEST_CASE(token_count_prefers_the_count_then_the_ids) {
  const std::vector<std::int64_t> ids{7, 8, 9};
  BOOST_TEST(!r::token_count({.completion = "x"}).has_value());
  BOOST_TEST(*r::token_count({.completion_ids = ids}) == 3u);
  BOOST_TEST(*r::token_count({.completion_tokens = 5, .completion_ids = ids}) == 5u);
  BOOST_TEST(*r::token_count({.completion_tokens = 0}) == 0u);
}

BOOST_AUTO_TEST_CASE(overlong_buffer_verl_and_openrlhf) {
  // L_max = 1024, B = 256, f = 1: E = 768.
  const r::overlong_buffer_reward verl{.max_length = 1024, .buffer_length = 256};
  const r::overlong_buffer_reward orlhf{.max_length = 1024, .buffer_length = 256, .form = r::overlong_form::openrlhf};
  struct row {
    std::size_t L;
    double verl, openrlhf;
  };
  const std::vector<row> rows{
      {0, 0.0, 0.0},                 // far below E
      {768, 0.0, 0.0},               // L = L_max - B: exceed 0
      {769, -1.0 / 256, -1.0 / 256}, // exceed 1: -1/256
      {896, -0.5, -0.5},             // exceed 128: -128/256
      {1024, -1.0, -1.0},            // L = L_max: exceed 256 = B
      {1025, -257.0 / 256, -1.0},    // L_max + 1: verl -257/256; OpenRLHF min(257, 256)/256 = 1
      {1280, -2.0, -1.0},            // exceed 512: verl -2; OpenRLHF capped at -1
  };
  for (const row& w : rows) {
    BOOST_TEST(verl(with_length(w.L)) == w.verl, tt::tolerance(1e-15));
    BOOST_TEST(orlhf(with_length(w.L)) == w.openrlhf, tt::tolerance(1e-15));
  }
  // the penalty factor scales both: f = 0.5 at L = 1280 -> verl -1, OpenRLHF -0.5
  BOOST_TEST((r::overlong_buffer_reward{.max_length = 1024, .buffer_length = 256, .penalty_factor = 0.5})(
                 with_length(1280)) == -1.0);
  BOOST_TEST((r::overlong_buffer_reward{
                 .max_length = 1024, .buffer_length = 256, .penalty_factor = 0.5, .form = r::overlong_form::openrlhf})(
                 with_length(1280)) == -0.5);
  // DAPO's own setting: L_max 20480, B 4096; L = 18432 exceeds E = 16384 by 2048 -> -0.5
  BOOST_TEST((r::overlong_buffer_reward{.max_length = 20480, .buffer_length = 4096})(with_length(18432)) == -0.5);
  // B = L_max: E = 0, so every token counts: L = 512 of 1024 -> -0.5
  BOOST_TEST((r::overlong_buffer_reward{.max_length = 1024, .buffer_length = 1024})(with_length(512)) == -0.5);
  // no sign bit on the zero at E
  BOOST_TEST(!std::signbit(verl(with_length(768))));
  BOOST_TEST(std::isnan(verl({.completion = "x"})));
  BOOST_TEST(std::isnan(orlhf({.completion = "x"})));
}

BOOST_AUTO_TEST_CASE(soft_overlong_trl_and_swift) {
  // L_max = 100, C = 20: E = 80.
  const r::soft_overlong_reward trl{.max_length = 100, .cache_length = 20};
  const r::soft_overlong_reward swift{.max_length = 100, .cache_length = 20, .form = r::soft_overlong_form::swift};
  struct row {
    std::size_t L;
    double trl, swift;
  };
  const std::vector<row> rows{
      {0, 0.0, 0.0},      //
      {80, 0.0, 0.0},     // L = L_max - C
      {81, -0.05, -0.05}, // (80 - 81)/20
      {90, -0.5, -0.5},   // (80 - 90)/20 (TRL's docstring example)
      {100, -1.0, -1.0},  // L = L_max: (80 - 100)/20
      {101, -1.0, -1.05}, // L_max + 1: TRL -1; ms-swift -(101 - 80)/20
      {140, -1.0, -3.0},  // ms-swift -(140 - 80)/20
  };
  for (const row& w : rows) {
    BOOST_TEST(trl(with_length(w.L)) == w.trl, tt::tolerance(1e-15));
    BOOST_TEST(swift(with_length(w.L)) == w.swift, tt::tolerance(1e-15));
  }
  // TRL accepts C = 0: a hard step from 0 to -1 after L_max
  const r::soft_overlong_reward hard{.max_length = 100, .cache_length = 0};
  BOOST_TEST(hard(with_length(100)) == 0.0);
  BOOST_TEST(hard(with_length(101)) == -1.0);
  // TRL accepts C = L_max: E = 0, L = 50 -> (0 - 50)/100
  BOOST_TEST((r::soft_overlong_reward{.max_length = 100, .cache_length = 100})(with_length(50)) == -0.5);
  BOOST_TEST(std::isnan(trl({.completion = "x"})));
  BOOST_TEST(std::isnan(swift({.completion = "x"})));
}

BOOST_AUTO_TEST_CASE(overlong_options_are_checked) {
  expect_throw_naming([] { (void)r::overlong_buffer_reward{.max_length = 0, .buffer_length = 0}(with_length(1)); },
                      "max_length");
  expect_throw_naming([] { (void)r::overlong_buffer_reward{.max_length = 100}(with_length(1)); }, "buffer_length");
  expect_throw_naming([] { (void)r::overlong_buffer_reward{.max_length = 100, .buffer_length = 101}(with_length(1)); },
                      "buffer_length");
  expect_throw_naming(
      [] {
        (void)r::overlong_buffer_reward{.max_length = 100, .buffer_length = 10, .penalty_factor = -1}(with_length(1));
      },
      "penalty_factor");
  expect_throw_naming(
      [] {
        (void)r::overlong_buffer_reward{.max_length = 100, .buffer_length = 10, .penalty_factor = qnan}(with_length(1));
      },
      "penalty_factor");
  expect_throw_naming([] { (void)r::soft_overlong_reward{.max_length = 100, .cache_length = 120}(with_length(1)); },
                      "cache_length");
  for (std::size_t c : {0u, 100u, 120u})
    expect_throw_naming(
        [c] {
          (void)r::soft_overlong_reward{.max_length = 100, .cache_length = c, .form = r::soft_overlong_form::swift}(
              with_length(1));
        },
        "cache_length");
  // reward_set::add validates, so a bad option fails when the set is built
  r::reward_set rs;
  expect_throw_naming([&] { rs.add("overlong", 1.0, r::overlong_buffer_reward{}); }, "max_length");
  BOOST_TEST(rs.size() == 0u);
}

BOOST_AUTO_TEST_CASE(cosine_trl_and_swift) {
  const r::trl_cosine_reward trl{.max_length = 100};
  const r::swift_cosine_reward swift{.max_length = 100};
  const double c25 = std::sqrt(0.5); // cos(pi/4)
  const auto right = [](std::size_t L) { return judged("<answer>A</answer>", L); };
  const auto wrong = [](std::size_t L) { return judged("<answer>B</answer>", L); };
  struct row {
    std::size_t L;
    double trl_right, trl_wrong, swift_right, swift_wrong;
  };
  // TRL: right 0.5 + 0.25(1 + cos), wrong -0.5 - 0.25(1 + cos), cos of pi*min(L/100, 1).
  // ms-swift: right 1 - 0.25(1 - cos), wrong -0.5 + 0.25(1 - cos), cos of pi*L/100, no clamp.
  const std::vector<row> rows{
      {0, 1.0, -1.0, 1.0, -0.5}, // cos 0 = 1
      {25, 0.5 + 0.25 * (1 + c25), -0.5 - 0.25 * (1 + c25), 1 - 0.25 * (1 - c25), -0.5 + 0.25 * (1 - c25)},
      {50, 0.75, -0.75, 0.75, -0.25}, // cos pi/2 = 0 (TRL's docstring: 0.75, -0.75)
      {100, 0.5, -0.5, 0.5, 0.0},     // L = L_max: cos pi = -1
      {101, 0.5, -0.5, 1 - 0.25 * (1 + std::cos(0.01 * 3.141592653589793)),
       -0.5 + 0.25 * (1 + std::cos(0.01 * 3.141592653589793))},
      {150, 0.5, -0.5, 0.75, -0.25}, // ms-swift: cos 1.5 pi = 0
      {200, 0.5, -0.5, 1.0, -0.5},   // ms-swift: cos 2 pi = 1, back to L = 0
  };
  for (const row& w : rows) {
    BOOST_TEST(trl(right(w.L)) == w.trl_right, tt::tolerance(1e-12));
    BOOST_TEST(trl(wrong(w.L)) == w.trl_wrong, tt::tolerance(1e-12));
    BOOST_TEST(swift(right(w.L)) == w.swift_right, tt::tolerance(1e-12));
    BOOST_TEST(swift(wrong(w.L)) == w.swift_wrong, tt::tolerance(1e-12));
  }
  // correctness: TRL takes any non-zero accuracy, ms-swift needs >= 1; a NaN accuracy is TRL's
  // None (NaN) and a wrong row for ms-swift. L = 0 shows which branch ran.
  const auto half = [](const r::sample&) { return 0.5; };
  const auto none = [](const r::sample&) { return qnan; };
  BOOST_TEST((r::trl_cosine_reward{.max_length = 100, .accuracy = half})(right(0)) == 1.0);
  BOOST_TEST((r::swift_cosine_reward{.max_length = 100, .accuracy = half})(right(0)) == -0.5);
  BOOST_TEST(std::isnan(r::trl_cosine_reward{.max_length = 100, .accuracy = none}(right(0))));
  BOOST_TEST((r::swift_cosine_reward{.max_length = 100, .accuracy = none})(right(0)) == -0.5);
  // custom values: ms-swift right from 2 (L = 0) to 0 (L = T): at T/2, 2 - 2(1 - 0)/2 = 1
  BOOST_TEST((r::swift_cosine_reward{.max_length = 100, .min_len_value_correct = 2.0, .max_len_value_correct = 0.0})(
                 right(50)) == 1.0,
             tt::tolerance(1e-12));
  // unknown length
  BOOST_TEST(std::isnan(trl({.completion = "A", .solution = "A"})));
  BOOST_TEST(std::isnan(swift({.completion = "A", .solution = "A"})));
  expect_throw_naming([] { (void)r::trl_cosine_reward{}(with_length(1)); }, "max_length");
  expect_throw_naming([] { (void)r::swift_cosine_reward{}(with_length(1)); }, "max_length");
  expect_throw_naming([] { (void)r::trl_cosine_reward{.max_length = 10, .min_value_wrong = qnan}(with_length(1)); },
                      "value");
  expect_throw_naming([] { (void)r::swift_cosine_reward{.max_length = 10, .accuracy = {}}(with_length(1)); },
                      "accuracy");
}

BOOST_AUTO_TEST_CASE(stop_properly_scales_or_replaces_truncated_rows) {
  const auto eight = [](const r::sample&) { return 0.8; };
  const r::sample done = with_length(10, false), cut = with_length(10, true);
  BOOST_TEST(r::stop_properly(eight, 0.5)(done) == 0.8);
  BOOST_TEST(r::stop_properly(eight, 0.5)(cut) == 0.4, tt::tolerance(1e-15)); // 0.5 * 0.8
  BOOST_TEST(r::stop_properly(eight, 0.0)(cut) == 0.0);
  BOOST_TEST(r::stop_properly(eight, 1.0)(cut) == 0.8);
  BOOST_TEST(r::stop_properly(eight, -0.5)(cut) == -0.5); // replaced
  BOOST_TEST(r::stop_properly(eight, -0.5)(done) == 0.8);
  expect_throw_naming([&] { (void)r::stop_properly(eight, 1.5)(cut); }, "coef");
  expect_throw_naming([&] { (void)r::stop_properly(eight, qnan)(cut); }, "coef");
  r::reward_set rs;
  expect_throw_naming([&] { rs.add("s", 1.0, r::stop_properly(eight, 2.0)); }, "coef");
  // an invalid wrapped function is reported too
  expect_throw_naming([&] { rs.add("s", 1.0, r::stop_properly(r::overlong_buffer_reward{}, 0.5)); }, "max_length");

  // OpenRLHF's order on the dapo preset (accuracy 1, format 0.2, overlong verl 1024/256): a
  // truncated, correct, well-formed row of L = 1024 has total 1 + 0.2 - 1 = 0.2.
  const r::reward_set dapo = r::dapo_preset();
  BOOST_TEST(dapo(with_length(1024, true)) == 0.2, tt::tolerance(1e-12));
  const r::reward_set scaled = r::with_stop_properly(dapo, 0.5);
  BOOST_TEST(scaled.names() == dapo.names());
  BOOST_TEST(scaled.weights() == dapo.weights());
  std::vector<double> terms(3);
  BOOST_TEST(scaled.score_terms(with_length(1024, true), terms) == 0.1, tt::tolerance(1e-12)); // 0.5 * 0.2
  BOOST_TEST(terms[0] == 0.5);                                                                 // accuracy 0.5 * 1
  BOOST_TEST(terms[1] == 0.5);  // format 0.5 * 1 (weight 0.2 stays in the weights)
  BOOST_TEST(terms[2] == -0.5); // overlong 0.5 * -1
  BOOST_TEST(scaled(with_length(1024, false)) == 0.2, tt::tolerance(1e-12)); // untouched
  // c < 0 replaces the total: only the whole-set wrapper does that
  BOOST_TEST(r::stop_properly(dapo, -0.5)(with_length(1024, true)) == -0.5);
  expect_throw_naming([&] { (void)r::with_stop_properly(dapo, -0.5); }, "coef");
}

BOOST_AUTO_TEST_CASE(clipped_reward_clamps) {
  const auto k = [](double v) { return [v](const r::sample&) { return v; }; };
  const r::sample s{.completion = "x"};
  BOOST_TEST(r::clipped(k(25.0))(s) == 10.0);
  BOOST_TEST(r::clipped(k(-25.0))(s) == -10.0);
  BOOST_TEST(r::clipped(k(3.0))(s) == 3.0);
  BOOST_TEST(r::clipped(k(10.0))(s) == 10.0);
  BOOST_TEST(std::isnan(r::clipped(k(qnan))(s)));
  BOOST_TEST(r::clipped(k(3.0), -1.0, 1.0)(s) == 1.0);
  expect_throw_naming([&] { (void)r::clipped(k(3.0), 2.0, 1.0)(s); }, "low");
  r::reward_set set;
  expect_throw_naming([&] { set.add("c", 1.0, r::clipped(k(0.0), qnan)); }, "low, high");
}

BOOST_AUTO_TEST_CASE(repetition_on_words_swift) {
  const r::repetition_penalty_reward rep{};
  const auto on = [&](std::string_view text) { return rep({.completion = text}); };
  BOOST_TEST(on("") == 0.0);                                            // ms-swift: '' -> 0
  BOOST_TEST(on("a b") == 0.0);                                         // 2 words < n = 3
  BOOST_TEST(on("   \n\t ") == 0.0);                                    // no words
  BOOST_TEST(on("a b c") == 0.0);                                       // one trigram, unique
  BOOST_TEST(on("a b c a b c") == -0.25, tt::tolerance(1e-15));         // abc bca cab abc: 1 - 3/4
  BOOST_TEST(on("A b C a B c") == -0.25, tt::tolerance(1e-15));         // lower-cased first
  BOOST_TEST(on("a a a a a") == -2.0 / 3, tt::tolerance(1e-15));        // aaa x3: 1 - 1/3
  BOOST_TEST(on("  a\tb\n\nc  a b c ") == -0.25, tt::tolerance(1e-15)); // runs of whitespace
  // Python's str.split() whitespace beyond ASCII space: \x1c-\x1f, U+00A0, U+3000
  BOOST_TEST(on("a\x1c"
                "b\x1f"
                "c a\xc2\xa0"
                "b\xe3\x80\x80"
                "c") == -0.25,
             tt::tolerance(1e-15));
  // n = 2: ab ba ab -> 1 - 2/3; max_penalty -0.5 halves it
  BOOST_TEST((r::repetition_penalty_reward{.ngram_size = 2})({.completion = "a b a b"}) == -1.0 / 3,
             tt::tolerance(1e-15));
  BOOST_TEST((r::repetition_penalty_reward{.max_penalty = -0.5})({.completion = "a a a a a"}) == -1.0 / 3,
             tt::tolerance(1e-15));
  // n = 1: unigrams a b a -> 1 - 2/3
  BOOST_TEST((r::repetition_penalty_reward{.ngram_size = 1})({.completion = "a b a"}) == -1.0 / 3,
             tt::tolerance(1e-15));
  // the text form ignores ids and lengths
  BOOST_TEST(on("a b c a b c") == rep({.completion = "a b c a b c", .completion_tokens = 1}));
  const std::vector<std::string_view> w = r::split_words(" x\xc2\x85y  z\xe2\x80\xa8 ");
  BOOST_TEST(w.size() == 3u);
  BOOST_TEST(w[0] == "x");
  BOOST_TEST(w[1] == "y");
  BOOST_TEST(w[2] == "z");
}

BOOST_AUTO_TEST_CASE(repetition_on_token_ids_trl) {
  const r::repetition_penalty_reward rep{.form = r::repetition_form::token_ids};
  const auto on = [&](const std::vector<std::int64_t>& ids) { return rep({.completion_ids = ids}); };
  BOOST_TEST(on({1, 2, 3, 1, 2, 3}) == -0.25, tt::tolerance(1e-15)); // 4 trigrams, 3 unique
  BOOST_TEST(on({1, 2}) == 0.0);                                     // fewer than n
  // TRL's docstring example, n = 2: [1,2,3,4] -> 0; [5,5,5,5,5]: 4 bigrams, 1 unique -> -0.75
  const r::repetition_penalty_reward bi{.form = r::repetition_form::token_ids, .ngram_size = 2};
  const std::vector<std::int64_t> distinct{1, 2, 3, 4}, fives{5, 5, 5, 5, 5};
  BOOST_TEST(bi({.completion_ids = distinct}) == 0.0);
  BOOST_TEST(bi({.completion_ids = fives}) == -0.75);
  // without ids: 0 when the count says fewer than n tokens, else could not score
  BOOST_TEST(rep({.completion = "a b c a b c", .completion_tokens = 2}) == 0.0);
  BOOST_TEST(std::isnan(rep({.completion = "a b c a b c", .completion_tokens = 3})));
  BOOST_TEST(std::isnan(rep({.completion = "a b c a b c"})));
  // side by side: the same completion, words repeat, ids do not
  const std::vector<std::int64_t> six{1, 2, 3, 4, 5, 6};
  const r::sample both{.completion = "a b c a b c", .completion_ids = six};
  BOOST_TEST((r::repetition_penalty_reward{})(both) == -0.25, tt::tolerance(1e-15));
  BOOST_TEST(rep(both) == 0.0);
}

BOOST_AUTO_TEST_CASE(repetition_counts_match_a_set_of_ngrams) {
  std::mt19937_64 gen(15);
  for (int trial = 0; trial < 300; ++trial) {
    const std::size_t len = gen() % 60, n = 1 + gen() % 5, alphabet = 1 + gen() % 4;
    std::vector<std::int64_t> ids(len);
    for (auto& x : ids) x = static_cast<std::int64_t>(gen() % alphabet) - 2;
    std::string text;
    for (auto x : ids) text += std::string(1, static_cast<char>('a' + x + 2)) + (gen() % 2 ? " " : "\t");
    double expected = 0.0;
    if (len >= n) {
      std::set<std::vector<std::int64_t>> grams;
      for (std::size_t i = 0; i + n <= len; ++i)
        grams.emplace(ids.begin() + static_cast<std::ptrdiff_t>(i), ids.begin() + static_cast<std::ptrdiff_t>(i + n));
      expected = 1.0 - static_cast<double>(grams.size()) / static_cast<double>(len - n + 1);
    }
    BOOST_TEST(r::ngram_repetition(ids, n) == expected, tt::tolerance(1e-15));
    BOOST_TEST(r::word_ngram_repetition(text, n) == expected, tt::tolerance(1e-15));
  }
}

BOOST_AUTO_TEST_CASE(repetition_options_are_checked) {
  const std::vector<std::int64_t> ids{1, 2};
  expect_throw_naming([] { (void)r::repetition_penalty_reward{.ngram_size = 0}({.completion = "a"}); }, "ngram_size");
  expect_throw_naming([] { (void)r::repetition_penalty_reward{.max_penalty = 0.5}({.completion = "a"}); },
                      "max_penalty");
  expect_throw_naming([] { (void)r::repetition_penalty_reward{.max_penalty = qnan}({.completion = "a"}); },
                      "max_penalty");
  expect_throw_naming([&] { (void)r::ngram_repetition(ids, 0); }, "n");
  expect_throw_naming([] { (void)r::word_ngram_repetition("a", 0); }, "n");
}

BOOST_AUTO_TEST_CASE(length_presets) {
  // dapo: 1 x accuracy + 0.2 x format + 1 x overlong(verl, 1024, 256)
  const r::reward_set d = r::preset("dapo");
  BOOST_TEST(d.names() == (std::vector<std::string>{"accuracy", "format", "overlong"}));
  BOOST_TEST(d(with_length(896)) == 0.7, tt::tolerance(1e-12));   // 1 + 0.2 - 0.5
  BOOST_TEST(d(with_length(1280)) == -0.8, tt::tolerance(1e-12)); // 1 + 0.2 - 2
  BOOST_TEST(d({.completion = "<think>t</think><answer>A</answer>", .solution = "A"}) == 1.2,
             tt::tolerance(1e-12)); // unknown length: the overlong term is NaN and skipped
  BOOST_TEST(r::dapo_preset(1024, 256, r::overlong_form::openrlhf)(with_length(1280)) == 0.2, tt::tolerance(1e-12));
  // cosine: 1 x cosine(ms-swift, T = 1024) + 0.2 x format + 1 x repetition(words)
  const r::reward_set cos = r::preset("cosine");
  BOOST_TEST(cos.names() == (std::vector<std::string>{"cosine", "format", "repetition"}));
  BOOST_TEST(cos(with_length(512)) == 0.95, tt::tolerance(1e-12));                                  // 0.75 + 0.2 + 0
  BOOST_TEST(cos(judged("<think>t</think><answer>B</answer>", 1024)) == 0.2, tt::tolerance(1e-12)); // 0 + 0.2 + 0
  // wrong at L = 0: -0.5; format 0.2; 6 words x x x x x <think>…</answer>, trigrams xxx xxx xxx
  // xxW: 1 - 2/4 = 0.5 -> -0.5
  BOOST_TEST(cos(judged("x x x x x <think>t</think><answer>B</answer>", 0)) == -0.5 + 0.2 - 0.5, tt::tolerance(1e-12));
  BOOST_TEST(r::cosine_preset(100)(judged("<answer>A</answer>", 50)) == 0.75, tt::tolerance(1e-12));
}
