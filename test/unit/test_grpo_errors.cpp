// Bad input throws an msrl exception whose message names the argument and the rule.
#define BOOST_TEST_MODULE grpo_errors
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <msrl/grpo.hpp>

namespace g = msrl::grpo;
using vec = std::vector<double>;

template <class E, class F>
static void expect_throw(F f, const std::string& arg, const std::string& rule_fragment) {
  try {
    f();
    BOOST_ERROR("no exception; expected one naming '" + arg + "'");
  } catch (const E& e) {
    const std::string m = e.what();
    BOOST_TEST(m.find("'" + arg + "'") != std::string::npos, "message '" << m << "' names " << arg);
    BOOST_TEST(m.find(rule_fragment) != std::string::npos, "message '" << m << "' says " << rule_fragment);
  }
}

BOOST_AUTO_TEST_CASE(advantage_errors) {
  vec r{1, 2, 3}, out(3);
  expect_throw<msrl::shape_error>([&] { g::advantages(std::span<const double>(r), 2, std::span<double>(out)); },
                                  "group_size", "must divide");
  vec o2(2);
  expect_throw<msrl::shape_error>([&] { g::advantages(std::span<const double>(r), 3, std::span<double>(o2)); }, "out",
                                  "one element per reward row");
  expect_throw<msrl::invalid_argument>(
      [&] { g::advantages(std::span<const double>(r), 3, std::span<double>(out), {.std_eps = -1e-4}); },
      "options.std_eps", ">= 0");
  vec inf_r{1, std::numeric_limits<double>::infinity(), 0};
  expect_throw<msrl::value_error>([&] { g::advantages(std::span<const double>(inf_r), 3, std::span<double>(out)); },
                                  "rewards.values", "finite or NaN");
  vec w{1.0, 2.0};
  expect_throw<msrl::shape_error>(
      [&] { g::advantages(g::reward_matrix<double>{r, 1, w}, 3, std::span<double>(out)); }, "rewards.weights",
      "one weight per column");
  expect_throw<msrl::invalid_argument>([&] { g::advantages(std::span<const double>(r), 0, std::span<double>(out)); },
                                       "group_size", "at least 1");
}

BOOST_AUTO_TEST_CASE(estimator_and_kl_reward_errors) {
  const auto ref = msrl::backend::reference{};
  const auto lay = msrl::token_layout::padded(2, 3);
  vec s{1, 0}, old{-1, -1, -1, -1, -1, -1}, rf{-1.2, -1, -0.5, -1, -2, -1}, m{1, 1, 0, 1, 0, 0}, out(6), rows(2);
  const std::span<const double> ss(s), so(old), sr(rf), sm(m);
  vec nan_old = old;
  nan_old[1] = std::numeric_limits<double>::quiet_NaN();
  expect_throw<msrl::value_error>(
      [&] { g::kl_reward_rows(ref, lay, ss, std::span<const double>(nan_old), sr, sm, g::kl_reward_options::ms_swift(0.1), std::span<double>(rows)); },
      "old_logp/ref_logp", "finite at unmasked tokens");
  nan_old[1] = -1.0;
  nan_old[2] = std::numeric_limits<double>::quiet_NaN(); // masked out: never read
  BOOST_CHECK_NO_THROW(
      g::kl_reward_rows(ref, lay, ss, std::span<const double>(nan_old), sr, sm, g::kl_reward_options::ms_swift(0.1), std::span<double>(rows)));
  expect_throw<msrl::shape_error>(
      [&] { g::kl_reward_tokens(ref, lay, ss, so, sr, sm, g::kl_reward_options::verl(0.1), std::span<double>(rows)); },
      "out", "one element per token");
  vec bad_m{1, 0.5, 0, 1, 0, 0};
  expect_throw<msrl::value_error>(
      [&] { g::kl_reward_tokens(ref, lay, ss, so, sr, std::span<const double>(bad_m), {}, std::span<double>(out)); },
      "mask", "0 or 1");
  g::kl_reward_options inverted;
  inverted.reward_clip_low = 1.0;
  inverted.reward_clip_high = -1.0;
  expect_throw<msrl::invalid_argument>(
      [&] { g::kl_reward_tokens(ref, lay, ss, so, sr, sm, inverted, std::span<double>(out)); },
      "options.reward_clip_low", "must not exceed");
  g::openrlhf_options rloo;
  rloo.estimator = g::openrlhf_estimator::rloo;
  expect_throw<msrl::invalid_argument>(
      [&] { g::openrlhf_advantages(ref, lay, ss, 1, so, sr, sm, std::span<double>(out), rloo); }, "group_size",
      "at least 2");
  vec inf_s{1, std::numeric_limits<double>::infinity()};
  expect_throw<msrl::value_error>(
      [&] { g::swift_reinforce_pp(ref, std::span<const double>(inf_s), 2, std::span<double>(rows)); }, "scores",
      "finite");
  vec cols{1, 2, 3};
  expect_throw<msrl::shape_error>(
      [&] { g::gdpo_verl(ref, lay, g::reward_matrix<double>{cols, 2, {}}, 2, sm, std::span<double>(out)); },
      "rewards.values", "rows x columns");
}

BOOST_AUTO_TEST_CASE(loss_errors) {
  vec lp{-1, -2, -3, -4}, a{1, -1}, g4(4);
  auto in = [&] { return g::loss_inputs<double>{msrl::token_layout::padded(2, 2), lp, {}, {}, a, {}}; };
  auto call = [&](g::loss_inputs<double> i, g::loss_options o = {}, g::loss_normalizer n = {}) {
    return g::policy_loss(i, o, n, std::span<double>(g4));
  };
  {
    auto i = in();
    i.layout = msrl::token_layout::padded(2, 3);
    expect_throw<msrl::shape_error>([&] { call(i); }, "logp", "one element per token");
  }
  {
    vec a3{1, 2, 3};
    auto i = in();
    i.advantages = a3;
    expect_throw<msrl::shape_error>([&] { call(i); }, "advantages", "per sequence");
  }
  expect_throw<msrl::invalid_argument>([&] { call(in(), {.clip_low = -0.1}); }, "options.clip_low", ">= 0");
  expect_throw<msrl::invalid_argument>([&] { call(in(), {.dual_clip = 0.5}); }, "options.dual_clip", "> 1");
  // TRL's trap: an absolute CISPO cap below 1 (epsilon_high's fallback 0.2) is refused by name
  expect_throw<msrl::invalid_argument>([&] { call(in(), {.form = g::loss_form::cispo_absolute, .cispo_cap = 0.2}); },
                                       "options.cispo_cap", ">= 1");
  expect_throw<msrl::invalid_argument>([&] { call(in(), {.form = g::loss_form::sapo, .sapo_tau_pos = 0.0}); },
                                       "options.sapo_tau_pos", "> 0");
  expect_throw<msrl::invalid_argument>([&] { call(in(), {.form = g::loss_form::sapo, .sapo_tau_neg = -1.0}); },
                                       "options.sapo_tau_neg", "> 0");
  expect_throw<msrl::invalid_argument>([&] { call(in(), {.beta = 0.1}); }, "ref_logp", "required");
  expect_throw<msrl::invalid_argument>([&] { call(in(), {.agg = g::aggregation::seq_mean_token_sum_norm}); },
                                       "options.constant_normalizer", "> 0");
  expect_throw<msrl::invalid_argument>([&] { call(in(), {.agg = g::aggregation::token_mean}, {.global_tokens = 0.0}); },
                                       "normalizer.global_tokens", "token count zero");
  {
    std::vector<std::uint8_t> m(4, 0);
    g::loss_inputs<double> i{msrl::token_layout::padded(2, 2), lp, {}, {}, a, m};
    expect_throw<msrl::invalid_argument>([&] { g::policy_loss(i, {.agg = g::aggregation::token_mean}); },
                                         "normalizer.global_tokens", "token count is zero");
    // TRL's behaviour on request (and in the TRL presets): every row masked gives loss 0, gradient 0
    for (const g::loss_normalizer& n : {g::loss_normalizer{}, g::loss_normalizer{.global_tokens = 0.0}}) {
      vec grad(4, 7.0);
      const auto r = g::policy_loss(i, g::presets::trl_default.loss, n, std::span<double>(grad));
      BOOST_TEST(r.loss == 0.0);
      BOOST_TEST(r.metrics.normalizer == 1.0);
      for (double x : grad) BOOST_TEST(x == 0.0);
    }
    std::vector<std::uint8_t> m2{1, 2, 1, 1};
    g::loss_inputs<double> j{msrl::token_layout::padded(2, 2), lp, {}, {}, a, m2};
    expect_throw<msrl::value_error>([&] { g::policy_loss(j, {}); }, "mask", "0 or 1");
  }
  {
    vec bad{-1, std::nan(""), -3, -4};
    auto i = in();
    i.logp = bad;
    expect_throw<msrl::value_error>([&] { call(i); }, "logp/old_logp/ref_logp/advantages", "finite");
    // ... but NaN/-inf at a masked position is fine
    std::vector<std::uint8_t> m{1, 0, 1, 1};
    i.mask = m;
    BOOST_CHECK_NO_THROW(call(i));
  }
  {
    // a given ref_logp is validated even with beta = 0 (it feeds the KL metric)
    vec ref{-1, -2, std::nan(""), -4};
    auto i = in();
    i.ref_logp = ref;
    expect_throw<msrl::value_error>([&] { call(i); }, "logp/old_logp/ref_logp/advantages", "finite");
  }
  {
    std::vector<std::int64_t> off{0, 3, 2};
    g::loss_inputs<double> i{msrl::token_layout::packed(off, 4), lp, {}, {}, a, {}};
    expect_throw<msrl::shape_error>([&] { call(i); }, "layout.offsets", "non-decreasing");
  }
}

BOOST_AUTO_TEST_CASE(unknown_preset) {
  expect_throw<msrl::invalid_argument>([] { g::find_preset("grpo++"); }, "name", "msrl_release");
  BOOST_TEST(g::find_preset("verl_default").loss.dual_clip == 3.0);
}

BOOST_AUTO_TEST_CASE(otb_errors) {
  const auto ref = msrl::backend::reference{};
  const auto lay = msrl::token_layout::padded(2, 3);
  vec r{0, 0, 1, 0, 1, 0}, lp(6, -0.5), sp(6, 0.4), w(6, 1.0), m{1, 1, 1, 1, 1, 0}, out(6);
  const std::span<const double> sr(r), sl(lp), ss(sp), sw(w), sm(m);
  const std::span<double> so(out);
  BOOST_CHECK_NO_THROW(g::otb_advantages(ref, lay, sr, sl, ss, sw, sm, 2, so));
  // shapes: each argument named
  expect_throw<msrl::shape_error>([&] { g::otb_advantages(ref, lay, sr.first(5), sl, ss, sm, 2, so); }, "token_rewards",
                                  "one element per token (6)");
  expect_throw<msrl::shape_error>([&] { g::otb_advantages(ref, lay, sr, sl.first(4), ss, sm, 2, so); }, "old_logp",
                                  "one element per token");
  expect_throw<msrl::shape_error>([&] { g::otb_advantages(ref, lay, sr, sl, ss.first(2), sm, 2, so); }, "sum_pi_squared",
                                  "one element per token");
  expect_throw<msrl::shape_error>([&] { g::otb_advantages(ref, lay, sr, sl, ss, sw.first(3), sm, 2, so); }, "is_weights",
                                  "must be empty or have one element per token");
  expect_throw<msrl::shape_error>([&] { g::otb_advantages(ref, lay, sr, sl, ss, sm.first(5), 2, so); }, "mask",
                                  "must be empty or have one element per token");
  expect_throw<msrl::shape_error>([&] { g::otb_advantages(ref, lay, sr, sl, ss, sm, 2, so.first(5)); }, "out",
                                  "one element per token");
  expect_throw<msrl::shape_error>([&] { g::otb_advantages(ref, msrl::token_layout::padded(3, 2), sr, sl, ss, sm, 2, so); },
                                  "group_size", "must divide the number of rows (3)");
  expect_throw<msrl::invalid_argument>([&] { g::otb_advantages(ref, lay, sr, sl, ss, sm, 0, so); }, "group_size", "at least 1");
  std::vector<std::int64_t> off{0, 4, 3};
  expect_throw<msrl::shape_error>(
      [&] { g::otb_advantages(ref, msrl::token_layout::packed(off, 6), sr, sl, ss, sm, 2, so); }, "layout.offsets", "non-decreasing");
  // values
  expect_throw<msrl::invalid_argument>([&] { g::otb_advantages(ref, lay, sr, sl, ss, sm, 2, so, {.eps = -1.0}); }, "options.eps",
                                       "finite and >= 0");
  vec m2{1, 1, 2, 1, 1, 0};
  expect_throw<msrl::value_error>([&] { g::otb_advantages(ref, lay, sr, sl, ss, std::span<const double>(m2), 2, so); }, "mask",
                                  "0 or 1");
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  auto with = [](vec v, std::size_t k, double x) {
    v[k] = x;
    return v;
  };
  vec bad_r = with(r, 1, inf), bad_lp = with(lp, 2, nan), bad_sp = with(sp, 0, nan), bad_w = with(w, 3, inf);
  expect_throw<msrl::value_error>([&] { g::otb_advantages(ref, lay, std::span<const double>(bad_r), sl, ss, sm, 2, so); },
                                  "token_rewards", "finite at unmasked tokens");
  expect_throw<msrl::value_error>([&] { g::otb_advantages(ref, lay, sr, std::span<const double>(bad_lp), ss, sm, 2, so); },
                                  "old_logp", "finite or -inf");
  expect_throw<msrl::value_error>([&] { g::otb_advantages(ref, lay, sr, sl, std::span<const double>(bad_sp), sm, 2, so); },
                                  "sum_pi_squared", "finite at unmasked tokens");
  expect_throw<msrl::value_error>([&] { g::otb_advantages(ref, lay, sr, sl, ss, std::span<const double>(bad_w), sm, 2, so); },
                                  "is_weights", "finite at unmasked tokens");
  // NaN at a masked token is never read; old_logp = -inf (pi = 0) is a valid log-prob
  vec masked_nan = with(lp, 5, nan), neg_inf = with(lp, 0, -inf);
  BOOST_CHECK_NO_THROW(g::otb_advantages(ref, lay, sr, std::span<const double>(masked_nan), ss, sm, 2, so));
  BOOST_CHECK_NO_THROW(g::otb_advantages(ref, lay, sr, std::span<const double>(neg_inf), ss, sm, 2, so));
  for (double a : out) BOOST_TEST(std::isfinite(a));
  BOOST_TEST(out[5] == 0.0);
}
