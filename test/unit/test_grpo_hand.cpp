// Hand-worked cases: every expected number below was computed by hand (shown in the comments)
// from the formulas in docs/grpo-math.md, independently of the implementation.
#define BOOST_TEST_MODULE grpo_hand
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <msrl/grpo.hpp>

namespace g = msrl::grpo;
using vec = std::vector<double>;
const double nan_ = std::numeric_limits<double>::quiet_NaN();

static vec adv(const vec& r, std::size_t G, const g::advantage_options& o, g::advantage_stats* st = nullptr,
               std::size_t K = 1, const vec& w = {}) {
  vec out(r.size() / K);
  auto s = g::advantages(g::reward_matrix<double>{r, K, w}, G, std::span<double>(out), o);
  if (st) *st = s;
  return out;
}

BOOST_AUTO_TEST_CASE(group_std_unbiased) {
  // [1,0,1,0]: mean 0.5, unbiased var = 4*0.25/3 = 1/3
  auto a = adv({1, 0, 1, 0}, 4, {});
  const double s = std::sqrt(1.0 / 3.0) + 1e-4;
  BOOST_TEST(a[0] == 0.5 / s, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(a[1] == -0.5 / s, boost::test_tools::tolerance(1e-12));
  // biased: var = 0.25 -> std 0.5
  auto b = adv({1, 0, 1, 0}, 4, {.unbiased_std = false, .std_eps = 0.0});
  BOOST_TEST(b[0] == 1.0, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(no_scaling_and_batch_std) {
  auto a = adv({3, 1, 2, 2}, 2, {.scaling = g::std_scaling::none});
  BOOST_TEST(a == (vec{1, -1, 0, 0}), boost::test_tools::per_element());
  // batch: group means 2,2; batch values 3,1,2,2 mean 2, unbiased var (1+1)/3 -> std sqrt(2/3)
  auto b = adv({3, 1, 2, 2}, 2, {.scaling = g::std_scaling::batch, .std_eps = 0.0});
  BOOST_TEST(b[0] == 1.0 / std::sqrt(2.0 / 3.0), boost::test_tools::tolerance(1e-12));
  BOOST_TEST(b[2] == 0.0);
}

BOOST_AUTO_TEST_CASE(singleton_policies_and_zero_std) {
  g::advantage_stats st;
  auto z = adv({0.7, 0.2}, 1, {}, &st);
  BOOST_TEST(z == (vec{0, 0}), boost::test_tools::per_element()); // TRL/ms-swift
  auto r = adv({0.7, 0.2}, 1, {.singleton = g::singleton_policy::raw_score});
  // verl: mean 0, std 1, so A = R / (1 + eps)
  BOOST_TEST(r[0] == 0.7 / 1.0001, boost::test_tools::tolerance(1e-15));
  BOOST_TEST(r[1] == 0.2 / 1.0001, boost::test_tools::tolerance(1e-15));
  auto rn = adv({0.7, 0.2}, 1, {.scaling = g::std_scaling::none, .singleton = g::singleton_policy::raw_score});
  BOOST_TEST(rn == (vec{0.7, 0.2}), boost::test_tools::per_element());
  auto e = adv({1, 1, 1, 1, 0, 1, 0, 1}, 4, {}, &st);
  BOOST_TEST(e[0] == 0.0);
  BOOST_TEST(st.zero_std_groups == 1u);
  BOOST_TEST(st.zero_std_fraction == 0.5);
}

BOOST_AUTO_TEST_CASE(nan_rows_excluded_or_zero) {
  // exclude (TRL): valid {1, 0, 1}: mean 2/3, unbiased var ((1/3)^2*2 + (2/3)^2)/2 = 1/3
  g::advantage_stats st;
  auto a = adv({1, nan_, 0, 1}, 4, {.std_eps = 0.0}, &st);
  BOOST_TEST(a[0] == (1.0 / 3.0) / std::sqrt(1.0 / 3.0), boost::test_tools::tolerance(1e-12));
  BOOST_TEST(a[1] == 0.0);
  BOOST_TEST(st.unscorable_rows == 1u);
  // as_zero (ms-swift): {1, 0, 0, 1}: mean 0.5, var 1/3
  auto b = adv({1, nan_, 0, 1}, 4, {.std_eps = 0.0, .nans = g::nan_policy::as_zero});
  BOOST_TEST(b[1] == -0.5 / std::sqrt(1.0 / 3.0), boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(weighted_columns_nan_aware) {
  // rows (acc, fmt) weights (1, 0.2): R = 1.2, 0.2, 1 (fmt NaN -> skipped), 0 ; no scaling
  auto a = adv({1, 1, 0, 1, 1, nan_, 0, 0}, 4, {.scaling = g::std_scaling::none}, nullptr, 2, {1.0, 0.2});
  const double mean = (1.2 + 0.2 + 1.0 + 0.0) / 4;
  BOOST_TEST(a[0] == 1.2 - mean, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(a[2] == 1.0 - mean, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(rloo_leave_one_out) {
  // [1,0,0,0]: baselines 0, 1/3, 1/3, 1/3
  auto a = adv({1, 0, 0, 0}, 4, {.scaling = g::std_scaling::none, .base = g::baseline::leave_one_out});
  BOOST_TEST(a[0] == 1.0, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(a[1] == -1.0 / 3.0, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(gdpo_normalize_then_sum) {
  // two groups of 2, two columns, eps 0, biased std for easy numbers.
  // col0 g0 {1,0} -> z {1,-1}; col1 g0 {0,0} -> std 0 -> z {0,0}; g1 col0 {0,0}->{0,0}; col1 {2,0}->{1,-1}
  // weights (1, 2): x = {1, -1, 2, -2}; batch mean 0, biased std sqrt((1+1+4+4)/4) = sqrt(2.5)
  g::advantage_options o{.unbiased_std = false, .std_eps = 0.0, .aggregation = g::reward_aggregation::normalize_then_sum};
  auto a = adv({1, 0, 0, 0, 0, 0, 0, 2}, 2, o, nullptr, 2, {1.0, 2.0});
  // row layout is [row][col]: rows (1,0),(0,0),(0,0),(0,2)
  // col0: g0 {1,0} z {1,-1}; g1 {0,0} z 0. col1: g0 {0,0} -> 0 (0/0 guarded), g1 {0,2} z {-1,1}
  // x = {1, -1, -2, 2}
  const double s = std::sqrt(2.5);
  // With eps = 0 a zero-std column divides 0 by 0; msrl's guard is the std_eps, so use 1e-12.
  g::advantage_options o2 = o;
  o2.std_eps = 1e-12;
  a = adv({1, 0, 0, 0, 0, 0, 0, 2}, 2, o2, nullptr, 2, {1.0, 2.0});
  BOOST_TEST(a[0] == 1.0 / s, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(a[2] == -2.0 / s, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(a[3] == 2.0 / s, boost::test_tools::tolerance(1e-9));
}

// ---------------------------------------------------------------- policy loss

static g::loss_result loss(const vec& lp, const vec& old, const vec& ref, const vec& a, std::size_t B, std::size_t T,
                           const g::loss_options& o, vec* grad = nullptr, g::loss_normalizer n = {},
                           const std::vector<std::uint8_t>& mask = {}) {
  g::loss_inputs<double> in{msrl::token_layout::padded(B, T), lp, old, ref, a, mask};
  vec gr(lp.size());
  auto r = g::policy_loss(in, o, n, std::span<double>(gr));
  if (grad) *grad = gr;
  return r;
}

BOOST_AUTO_TEST_CASE(msrl_release_two_sequences) {
  // seq0 A=+1: lr 0.1 -> rho e^0.1 (inside [0.8,1.28]) loss -e^0.1 ; lr 0 -> -1 ; mean -(e^0.1+1)/2
  // seq1 A=-1: lr -0.5 -> rho 0.6065 < 0.8, clipped: loss 0.8, grad 0 ; lr 0 -> 1 ; mean 0.9
  vec gr;
  auto r = loss({-1, -2, -3, -1}, {-1.1, -2, -2.5, -1}, {}, {1, -1}, 2, 2, g::presets::msrl_release.loss, &gr);
  const double e = std::exp(0.1);
  BOOST_TEST(r.loss == (-(e + 1) / 2 + 0.9) / 2, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(gr[0] == -e / 4, boost::test_tools::tolerance(1e-12)); // w = 1/(L*B) = 1/4, d/dl = -A*rho
  BOOST_TEST(gr[1] == -0.25, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(gr[2] == 0.0);
  BOOST_TEST(gr[3] == 0.25, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(r.metrics.clip_fraction_low == 0.25);
  BOOST_TEST(r.metrics.clip_fraction_high == 0.0);
  BOOST_TEST(r.metrics.ratio_mean == (e + 1 + std::exp(-0.5) + 1) / 4, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(clip_higher_and_high_clip_metric) {
  // A=+1, rho = 1.25: inside [0.8, 1.28] -> loss -1.25 ; rho = 1.5 -> clipped at 1.28, grad 0
  vec gr;
  auto r = loss({std::log(1.25), std::log(1.5)}, {0, 0}, {}, {1, 1}, 2, 1, g::presets::msrl_release.loss, &gr);
  BOOST_TEST(r.loss == (-1.25 - 1.28) / 2, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(gr[1] == 0.0);
  BOOST_TEST(r.metrics.clip_fraction_high == 0.5);
}

BOOST_AUTO_TEST_CASE(dual_clip_and_delta) {
  // A = -1, rho = 4: PPO term max(-A rho, -A clip) = 4 ; dual clip c=3 caps it at 3, grad 0
  g::loss_options o{.dual_clip = 3.0, .agg = g::aggregation::token_sum};
  vec gr;
  auto r = loss({std::log(4.0)}, {0}, {}, {-1}, 1, 1, o, &gr);
  BOOST_TEST(r.loss == 3.0, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(gr[0] == 0.0);
  BOOST_TEST(r.metrics.dual_clip_fraction == 1.0);
  // rho = 2.5 < c: loss 2.5, grad -A*rho = 2.5
  r = loss({std::log(2.5)}, {0}, {}, {-1}, 1, 1, o, &gr);
  BOOST_TEST(r.loss == 2.5, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(gr[0] == 2.5, boost::test_tools::tolerance(1e-12));
  // delta = 2: rho = 4 -> min(rho, 2) = 2 -> loss 2, grad 0 ; rho = 1.5 -> loss 1.5, grad 1.5
  g::loss_options d{.delta = 2.0, .agg = g::aggregation::token_sum};
  r = loss({std::log(4.0)}, {0}, {}, {-1}, 1, 1, d, &gr);
  BOOST_TEST(r.loss == 2.0, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(gr[0] == 0.0);
  r = loss({std::log(1.5)}, {0}, {}, {-1}, 1, 1, d, &gr);
  BOOST_TEST(gr[0] == 1.5, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(kl_estimators_by_hand) {
  // logp = -1, ref = -2: x = 1, d = -1
  const double e = std::exp(-1.0);
  struct c { g::kl_estimator k; double v, dv; } cases[] = {
      {g::kl_estimator::k1, 1.0, 1.0}, {g::kl_estimator::abs, 1.0, 1.0},
      {g::kl_estimator::k2, 0.5, 1.0}, {g::kl_estimator::k3, e + 1 - 1, 1 - e}};
  for (auto cs : cases) {
    g::loss_options o{.beta = 0.5, .kl = cs.k, .agg = g::aggregation::token_sum};
    vec gr;
    // on-policy (old = logp), A = 0: the surrogate is 0 with zero gradient; only beta*KL remains
    auto r = loss({-1}, {}, {-2}, {0}, 1, 1, o, &gr);
    BOOST_TEST(r.loss == 0.5 * cs.v, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(gr[0] == 0.5 * cs.dv, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(r.metrics.kl_mean == cs.v, boost::test_tools::tolerance(1e-12));
  }
  // straight-through k3: value k3, gradient x = logp - ref = 1
  g::loss_options st{.beta = 1.0, .kl = g::kl_estimator::k3, .kl_straight_through = true, .agg = g::aggregation::token_sum};
  vec gr;
  auto r = loss({-1}, {}, {-2}, {0}, 1, 1, st, &gr);
  BOOST_TEST(r.loss == e, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(gr[0] == 1.0, boost::test_tools::tolerance(1e-12));
  // clamps: ref - logp = 30 -> clamped to 20: e^20 - 21, then the value clamp 10 -> 10, grad 0
  g::loss_options cl{.beta = 1.0, .kl_log_ratio_clamp = 20, .kl_value_clamp = 10, .agg = g::aggregation::token_sum};
  r = loss({-31}, {}, {-1}, {0}, 1, 1, cl, &gr);
  BOOST_TEST(r.loss == 10.0);
  BOOST_TEST(gr[0] == 0.0);
}

BOOST_AUTO_TEST_CASE(log_ratio_clamp_blocks_gradient) {
  // log-ratio 30 with clamp 20: rho = e^20, A = -1 -> loss e^20 (no clip wins: -A*rho > -A*1.2), grad 0
  g::loss_options o{.log_ratio_clamp = 20.0, .agg = g::aggregation::token_sum};
  vec gr;
  auto r = loss({0}, {-30}, {}, {-1}, 1, 1, o, &gr);
  BOOST_TEST(r.loss == std::exp(20.0), boost::test_tools::tolerance(1e-12));
  BOOST_TEST(gr[0] == 0.0);
  BOOST_TEST(std::isfinite(r.loss));
}

BOOST_AUTO_TEST_CASE(aggregations_by_hand) {
  // two rows, T=3: row0 mask 1,1,0 ; row1 mask 1,0,0 ; on-policy so each token loss = -A
  // A = (1, 2): token losses row0 -1,-1 ; row1 -2
  vec lp{-1, -1, -1, -1, -1, -1}, a{1, 2};
  std::vector<std::uint8_t> m{1, 1, 0, 1, 0, 0};
  auto L = [&](g::loss_options o, g::loss_normalizer n = {}) { return loss(lp, {}, {}, a, 2, 3, o, nullptr, n, m).loss; };
  BOOST_TEST(L({.agg = g::aggregation::token_mean}) == -4.0 / 3, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(L({.agg = g::aggregation::token_mean}, {.global_tokens = 8.0}) == -4.0 / 8, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(L({.agg = g::aggregation::seq_mean_token_mean}) == (-1.0 - 2.0) / 2, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(L({.agg = g::aggregation::seq_mean_token_sum}) == (-2.0 - 2.0) / 2, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(L({.agg = g::aggregation::seq_mean_token_sum_norm, .constant_normalizer = 4.0}) == -4.0 / (2 * 4),
             boost::test_tools::tolerance(1e-12));
  BOOST_TEST(L({.agg = g::aggregation::token_sum}) == -4.0, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(L({.agg = g::aggregation::token_sum}, {.scale = 0.5}) == -2.0, boost::test_tools::tolerance(1e-12));
  // add_eps guard: row0 -2/(2+1e-8), row1 -2/(1+1e-8)
  BOOST_TEST(L({.agg = g::aggregation::seq_mean_token_mean, .guard = g::length_guard::add_eps}) ==
                 (-2 / (2 + 1e-8) - 2 / (1 + 1e-8)) / 2,
             boost::test_tools::tolerance(1e-14));
}

BOOST_AUTO_TEST_CASE(aggregate_tokens_by_hand) {
  // the same two rows (row0 mask 1,1,0; row1 mask 1,0,0), any per-token value: x = entropies
  // row0: 0.5, 1.5 (masked 9); row1: 2.0 (masked 7, 7) -> masked sum 4, row sums 2 and 2, row means 1 and 2
  const vec x{0.5, 1.5, 9, 2.0, 7, 7};
  const std::vector<std::uint8_t> m{1, 1, 0, 1, 0, 0};
  const auto lay = msrl::token_layout::padded(2, 3);
  auto A = [&](g::loss_options o, g::loss_normalizer n = {}, vec* gx = nullptr) {
    if (gx) gx->assign(6, -1.0);
    return g::aggregate_tokens<double>(lay, x, m, o, n, gx ? std::span<double>(*gx) : std::span<double>());
  };
  const auto tol = boost::test_tools::tolerance(1e-12);
  vec gx;
  BOOST_TEST(A({.agg = g::aggregation::token_mean}, {}, &gx) == 4.0 / 3, tol);
  BOOST_TEST(gx == (vec{1.0 / 3, 1.0 / 3, 0, 1.0 / 3, 0, 0}), boost::test_tools::per_element());
  BOOST_TEST(A({.agg = g::aggregation::token_mean}, {.global_tokens = 8.0}) == 4.0 / 8, tol);
  BOOST_TEST(A({.agg = g::aggregation::seq_mean_token_mean}, {}, &gx) == (1.0 + 2.0) / 2, tol);
  BOOST_TEST(gx == (vec{0.25, 0.25, 0, 0.5, 0, 0}), boost::test_tools::per_element());
  BOOST_TEST(A({.agg = g::aggregation::seq_mean_token_sum}) == (2.0 + 2.0) / 2, tol);
  BOOST_TEST(A({.agg = g::aggregation::seq_mean_token_sum_norm, .constant_normalizer = 4.0}) == 4.0 / (2 * 4), tol);
  BOOST_TEST(A({.agg = g::aggregation::token_sum}, {.scale = 0.5}) == 2.0, tol);
  // the weights are the policy loss's: on-policy with A = -x per token, each token loss is x_t
  const vec lp(6, -1.0);
  vec gl;
  for (auto agg : {g::aggregation::token_mean, g::aggregation::seq_mean_token_mean, g::aggregation::seq_mean_token_sum}) {
    const g::loss_options o{.agg = agg};
    const vec neg_x{-0.5, -1.5, -9, -2.0, -7, -7};
    const auto r = g::policy_loss(g::loss_inputs<double>{lay, lp, {}, {}, neg_x, m}, o, {}, std::span<double>());
    BOOST_TEST(A(o) == r.loss, tol);
  }
  // errors name the argument
  BOOST_CHECK_EXCEPTION(g::aggregate_tokens<double>(lay, std::span<const double>(x).first(5), m, {}), msrl::shape_error,
                        [](const msrl::shape_error& e) { return std::string(e.what()).find("'x'") != std::string::npos; });
  const vec bad{0.5, std::numeric_limits<double>::infinity(), 0, 1, 0, 0};
  BOOST_CHECK_EXCEPTION(g::aggregate_tokens<double>(lay, bad, m, {}), msrl::value_error,
                        [](const msrl::value_error& e) { return std::string(e.what()).find("finite") != std::string::npos; });
  const vec inf_masked{0.5, 1.5, std::numeric_limits<double>::infinity(), 2.0, 0, 0};
  BOOST_TEST(A({}) == 1.5, tol); // masked non-finite values are never read into the result
  BOOST_TEST(g::aggregate_tokens<double>(lay, inf_masked, m, {}) == 1.5, tol);
}

BOOST_AUTO_TEST_CASE(empty_rows_counted_or_excluded) {
  // row1 fully masked (with -inf log-probs there): TRL counts it (B = 2), verl excludes it (S = 1)
  const double ninf = -std::numeric_limits<double>::infinity();
  vec lp{-1, -1, ninf, ninf}, a{1, 1};
  std::vector<std::uint8_t> m{1, 1, 0, 0};
  vec gr;
  auto r = loss(lp, {}, {}, a, 2, 2, {.count_empty_sequences = true}, &gr, {}, m);
  BOOST_TEST(r.loss == -0.5);
  BOOST_TEST(gr[2] == 0.0);
  BOOST_TEST(std::isfinite(gr[3]));
  r = loss(lp, {}, {}, a, 2, 2, {.count_empty_sequences = false}, &gr, {}, m);
  BOOST_TEST(r.loss == -1.0);
}

BOOST_AUTO_TEST_CASE(gspo_sequence_ratio_by_hand) {
  // one row, 2 tokens, log-ratios 0.1 and 0.3 -> s = e^0.2 = 1.221 ; A = 1, clip 0.3/0.3 -> inside,
  // loss -s per token; seq_mean_token_mean: loss = -s ; d/dl_t = -A * s * (1/L) = -s/2 (direct form)
  g::loss_options o{.level = g::ratio_level::sequence, .clip_low = 0.3, .clip_high = 0.3};
  vec gr;
  auto r = loss({0.1, 0.3}, {0, 0}, {}, {1}, 1, 2, o, &gr);
  const double s = std::exp(0.2);
  BOOST_TEST(r.loss == -s, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(gr[0] == -s / 2, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(gr[1] == -s / 2, boost::test_tools::tolerance(1e-12));
  // token form: each token's ratio has derivative s w.r.t. its own log-prob: w = 1/2 -> -s/2 as well
  o.level = g::ratio_level::sequence_token;
  r = loss({0.1, 0.3}, {0, 0}, {}, {1}, 1, 2, o, &gr);
  BOOST_TEST(r.loss == -s, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(gr[0] == -s / 2, boost::test_tools::tolerance(1e-12));
  // verl's cap: log s = 0.2 > max 0.1 -> s = e^0.1, gradient blocked
  o.sequence_log_ratio_max = 0.1;
  r = loss({0.1, 0.3}, {0, 0}, {}, {1}, 1, 2, o, &gr);
  BOOST_TEST(r.loss == -std::exp(0.1), boost::test_tools::tolerance(1e-12));
  BOOST_TEST(gr[0] == 0.0);
}

BOOST_AUTO_TEST_CASE(packed_equals_padded) {
  // packed rows of length 2 and 1 equal a padded [2, 2] batch with mask 1,1,1,0
  vec lp{-1.0, -0.5, -2.0}, old{-1.2, -0.4, -2.1}, ref{-1.1, -0.6, -1.9}, a{0.7, -0.3};
  std::vector<std::int64_t> off{0, 2, 3};
  g::loss_options o = g::presets::ms_swift_default.loss;
  vec gp(3);
  auto rp = g::policy_loss(g::loss_inputs<double>{msrl::token_layout::packed(off), lp, old, ref, a, {}}, o, {},
                           std::span<double>(gp));
  vec gq;
  auto rq = loss({-1.0, -0.5, -2.0, 0}, {-1.2, -0.4, -2.1, 0}, {-1.1, -0.6, -1.9, 0}, a, 2, 2, o, &gq, {},
                 {1, 1, 1, 0});
  BOOST_TEST(rp.loss == rq.loss, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(gp[2] == gq[2], boost::test_tools::tolerance(1e-14));
  BOOST_TEST(gq[3] == 0.0);
}

// Estimators by hand. One group of three: scores 1, 0, 2 with lengths 2, 1, 1.
//   OPO: b = (2 + 0 + 2) / 4 = 1 -> 0, -1, 1.
//   pass@k: best row 2 (2), second 1: 1 / (std 1 + 1e-6) on row 2, 0 elsewhere.
//   GPG: two non-zero scores of three -> alpha 1.5; mean 1 -> 0, -1.5, 1.5.
BOOST_AUTO_TEST_CASE(estimators_match_hand_worked_values) {
  const std::vector<double> s{1.0, 0.0, 2.0}, len{2.0, 1.0, 1.0};
  std::vector<double> a(3);
  g::opo_advantages(msrl::backend::reference{}, std::span<const double>(s), std::span<const double>(len), 3,
                    std::span<double>(a));
  BOOST_TEST(a == (std::vector<double>{0.0, -1.0, 1.0}), boost::test_tools::per_element());
  g::passk_advantages(msrl::backend::reference{}, std::span<const double>(s), 3, std::span<double>(a));
  BOOST_TEST(a[0] == 0.0);
  BOOST_TEST(a[1] == 0.0);
  BOOST_TEST(a[2] == 1.0 / (1.0 + 1e-6), boost::test_tools::tolerance(1e-15));
  BOOST_TEST(g::gpg_advantages(msrl::backend::reference{}, std::span<const double>(s), 3, std::span<double>(a)) == 1.5);
  BOOST_TEST(a == (std::vector<double>{0.0, -1.5, 1.5}), boost::test_tools::per_element());
  // token whitening of 1, 2, 3 (and a masked 100): mean 2, unbiased var 1 -> -1, 0, 1 (eps 1e-8)
  const std::vector<double> v{1.0, 2.0, 3.0, 100.0};
  const std::vector<std::uint8_t> m{1, 1, 1, 0};
  std::vector<double> w(4);
  g::token_whiten(msrl::backend::reference{}, msrl::token_layout::padded(1, 4), std::span<const double>(v),
                  std::span<const std::uint8_t>(m), std::span<double>(w), {.count_eps = 0.0});
  BOOST_TEST(w[0] == -1.0 / std::sqrt(1.0 + 1e-8), boost::test_tools::tolerance(1e-15));
  BOOST_TEST(w[2] == 1.0 / std::sqrt(1.0 + 1e-8), boost::test_tools::tolerance(1e-15));
  BOOST_TEST(w[3] == 0.0);
  // verl's masked_mean divides by n + 1e-8 (both means), then Bessel's n / (n - 1)
  g::token_whiten(msrl::backend::reference{}, msrl::token_layout::padded(1, 4), std::span<const double>(v),
                  std::span<const std::uint8_t>(m), std::span<double>(w));
  const double mu = 6.0 / (3.0 + 1e-8);
  const double var = ((1 - mu) * (1 - mu) + (2 - mu) * (2 - mu) + (3 - mu) * (3 - mu)) / (3.0 + 1e-8) * 1.5;
  BOOST_TEST(w[0] == (1 - mu) / std::sqrt(var + 1e-8), boost::test_tools::tolerance(1e-15));
  BOOST_TEST(w[2] == (3 - mu) / std::sqrt(var + 1e-8), boost::test_tools::tolerance(1e-15));
  // bad input names the argument
  BOOST_CHECK_THROW(g::passk_advantages(msrl::backend::reference{}, std::span<const double>(s), 1, std::span<double>(a)),
                    msrl::invalid_argument);
  const std::vector<double> neg{1.0, -1.0, 1.0};
  BOOST_CHECK_THROW(g::opo_advantages(msrl::backend::reference{}, std::span<const double>(s),
                                      std::span<const double>(neg), 3, std::span<double>(a)),
                    msrl::value_error);
  const std::vector<std::uint8_t> one{1, 0, 0, 0};
  BOOST_CHECK_THROW(g::token_whiten(msrl::backend::reference{}, msrl::token_layout::padded(1, 4),
                                    std::span<const double>(v), std::span<const std::uint8_t>(one), std::span<double>(w)),
                    msrl::value_error);
}

// Group filters by hand: groups (1, 1), (0, 1), (1, 1) with a score 0.5 next to it, and a singleton.
BOOST_AUTO_TEST_CASE(group_filters_match_hand_worked_values) {
  const std::vector<double> s{1.0, 1.0, 0.0, 1.0, 0.5, 0.5};
  std::vector<std::uint8_t> keep(3);
  auto r = g::filter_groups(std::span<const double>(s), 2, {}, keep);
  BOOST_TEST(keep == (std::vector<std::uint8_t>{0, 1, 0}), boost::test_tools::per_element());
  BOOST_TEST(r.kept == 1u);
  BOOST_TEST(r.dropped == 2u);
  // OpenRLHF's range (0, 1) on the means 1, 0.5, 0.5
  g::filter_groups(std::span<const double>(s), 2, {.rule = g::group_filter_rule::openrlhf_range}, keep);
  BOOST_TEST(keep == (std::vector<std::uint8_t>{0, 1, 1}), boost::test_tools::per_element());
  // singletons: verl keeps them, ms-swift drops them
  std::vector<std::uint8_t> k6(6);
  g::filter_groups(std::span<const double>(s), 1, {}, k6);
  BOOST_TEST(k6 == (std::vector<std::uint8_t>(6, 1)), boost::test_tools::per_element());
  const auto ms = g::filter_groups(std::span<const double>(s), 1, {.rule = g::group_filter_rule::ms_swift_zero_std}, k6);
  BOOST_TEST(ms.dropped == 6u);
  // equal scores are flat whatever their value: eight rewards of 0.2 (a format-only group), whose
  // plain-loop mean is not 0.2 (0.2 + ... + 0.2 = 1.5999999999999999), and sixteen of 1.2;
  // np.std gives 0.0 for both, so verl drops them, and so does ms-swift's unbiased std
  double plain = 0;
  for (int i = 0; i < 8; ++i) plain += 0.2;
  BOOST_TEST(plain / 8 != 0.2); // the trap
  std::vector<double> flat(8, 0.2);
  flat.insert(flat.end(), 16, 1.2);
  std::vector<std::uint8_t> k1(1);
  for (const auto rule : {g::group_filter_rule::verl_zero_std, g::group_filter_rule::ms_swift_zero_std}) {
    BOOST_TEST(g::filter_groups(std::span<const double>(flat).first(8), 8, {.rule = rule}, k1).dropped == 1u);
    BOOST_TEST(g::filter_groups(std::span<const double>(flat).last(16), 16, {.rule = rule}, k1).dropped == 1u);
    flat[3] = 0.2000000001; // one score apart: kept
    BOOST_TEST(g::filter_groups(std::span<const double>(flat).first(8), 8, {.rule = rule}, k1).kept == 1u);
    flat[3] = 0.2;
  }
  // OpenRLHF's range sees the mean of equal scores exactly: (0.2, 1) drops eight 0.2s
  BOOST_TEST(g::filter_groups(std::span<const double>(flat).first(8), 8, {.rule = g::group_filter_rule::openrlhf_range, .lo = 0.2, .hi = 1.0}, k1)
                 .dropped == 1u);
  BOOST_CHECK_THROW(g::filter_groups(std::span<const double>(s), 4, {}, keep), msrl::shape_error);
  BOOST_CHECK_THROW(g::filter_groups(std::span<const double>(s), 2, {}, k6), msrl::shape_error);
}
