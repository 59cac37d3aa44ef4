// The loss-form extension point (grpo/surrogate.hpp): a user-defined surrogate_form runs through
// policy_loss on every ratio level, in the host's vector lanes and scalar tail alike, with the
// gradient assembled from its d/d rho and d/d logp parts. Checked against hand-worked values, the
// built-in form, and central finite differences.
#define BOOST_TEST_MODULE grpo_forms
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <msrl/grpo.hpp>

namespace g = msrl::grpo;
namespace simd = msrl::simd;
using vec = std::vector<double>;

namespace {

// REINFORCE / GPG: -A * logp (a weighted log-prob form with W = 1).
struct reinforce {
  template <class V>
  MSRL_HOST_DEVICE g::math::surrogate<V> operator()(const g::token_args<V>& x) const {
    const V zero = simd::splat<V>(0.0);
    g::math::surrogate<V> s{};
    s.value = -x.adv * x.logp;
    s.dratio = zero;
    s.dlogp = -x.adv;
    s.clipped_low = s.clipped_high = s.dual_clipped = simd::mask_of<V>(false);
    return s;
  }
};

// The unclipped ratio -rho * A (a ratio-gated form).
struct plain_ratio {
  template <class V>
  MSRL_HOST_DEVICE g::math::surrogate<V> operator()(const g::token_args<V>& x) const {
    g::math::surrogate<V> s{};
    s.value = -x.rho * x.adv;
    s.dratio = -x.adv;
    s.dlogp = simd::splat<V>(0.0);
    s.clipped_low = s.clipped_high = s.dual_clipped = simd::mask_of<V>(false);
    return s;
  }
};

// A form with both paths, -A * rho * logp / 2, and clip flags, to check how they combine.
struct mixed {
  double c;
  template <class V>
  MSRL_HOST_DEVICE g::math::surrogate<V> operator()(const g::token_args<V>& x) const {
    g::math::surrogate<V> s{};
    s.value = -c * x.adv * x.rho * x.logp;
    s.dratio = -c * x.adv * x.logp;
    s.dlogp = -c * x.adv * x.rho;
    s.clipped_low = x.rho < simd::splat<V>(0.9);
    s.clipped_high = x.rho > simd::splat<V>(1.1);
    s.dual_clipped = simd::mask_of<V>(false);
    return s;
  }
};

static_assert(g::surrogate_form<reinforce> && g::surrogate_form<plain_ratio> && g::surrogate_form<mixed>);

struct batch {
  std::size_t B, T;
  vec lp, old, ref, adv;
  std::vector<std::uint8_t> mask;
};

// Rows long enough for vector lanes plus a tail; one row fully masked.
batch make(unsigned seed, std::size_t B, std::size_t T) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  std::uniform_int_distribution<std::size_t> len(1, T);
  batch b{B, T, vec(B * T), vec(B * T), vec(B * T), vec(B), std::vector<std::uint8_t>(B * T)};
  for (std::size_t i = 0; i < B * T; ++i) {
    b.lp[i] = -1.5 + 0.7 * n(rng);
    b.old[i] = b.lp[i] + 0.3 * n(rng);
    b.ref[i] = b.lp[i] + 0.5 * n(rng);
  }
  for (auto& a : b.adv) a = n(rng);
  for (std::size_t i = 0; i < B; ++i) {
    const std::size_t L = i == 2 ? 0 : len(rng);
    for (std::size_t t = 0; t < T; ++t) b.mask[i * T + t] = t < L ? 1 : 0;
  }
  return b;
}

template <class Exec, class Form>
g::loss_result run(const Exec& exec, const Form& form, const batch& b, const vec& lp, const g::loss_options& o, vec& grad) {
  grad.assign(lp.size(), 0.0);
  const g::loss_inputs<double> in{msrl::token_layout::padded(b.B, b.T), lp, b.old, b.ref, b.adv, b.mask};
  return g::policy_loss(exec, form, in, o, {}, grad);
}

} // namespace

BOOST_AUTO_TEST_CASE(reinforce_form_matches_hand_worked_values) {
  // token_mean: loss = -(1/N) sum_{i,t} m A_i logp_t, d/d logp_t = -m A_i / N.
  const batch b = make(3, 4, 21);
  g::loss_options o;
  o.agg = g::aggregation::token_mean;
  for (unsigned threads : {1u, 3u}) {
    vec grad;
    const auto r = run(msrl::backend::host_threads{threads, 5}, reinforce{}, b, b.lp, o, grad);
    double n = 0, want = 0;
    for (std::size_t t = 0; t < b.lp.size(); ++t) n += b.mask[t];
    for (std::size_t t = 0; t < b.lp.size(); ++t)
      if (b.mask[t]) want -= b.adv[t / b.T] * b.lp[t] / n;
    BOOST_TEST(r.loss == want, boost::test_tools::tolerance(1e-13));
    BOOST_TEST(r.metrics.tokens == n);
    BOOST_TEST(r.metrics.clip_fraction == 0.0);
    for (std::size_t t = 0; t < b.lp.size(); ++t) {
      const double gw = b.mask[t] ? -b.adv[t / b.T] / n : 0.0;
      BOOST_TEST(grad[t] == gw, boost::test_tools::tolerance(1e-13));
    }
  }
}

BOOST_AUTO_TEST_CASE(a_ratio_form_without_clip_equals_the_built_in_form_with_clip_out_of_reach) {
  const batch b = make(5, 6, 19);
  for (auto level : {g::ratio_level::token, g::ratio_level::sequence, g::ratio_level::sequence_token}) {
    g::loss_options o;
    o.level = level;
    o.beta = 0.04;
    o.clip_low = o.clip_high = 1e6; // the clip never binds; the tie splits the gradient 1/2 + 1/2
    vec g1, g2(b.lp.size());
    const auto r1 = run(msrl::backend::reference{}, plain_ratio{}, b, b.lp, o, g1);
    const auto r2 = g::policy_loss(msrl::backend::reference{},
                                   g::loss_inputs<double>{msrl::token_layout::padded(b.B, b.T), b.lp, b.old, b.ref, b.adv, b.mask},
                                   o, {}, g2);
    BOOST_TEST(r1.loss == r2.loss, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(r1.metrics.kl_loss == r2.metrics.kl_loss, boost::test_tools::tolerance(1e-14));
    for (std::size_t t = 0; t < g1.size(); ++t) BOOST_TEST(g1[t] == g2[t], boost::test_tools::tolerance(1e-13));
  }
}

BOOST_AUTO_TEST_CASE(both_gradient_paths_agree_with_finite_differences) {
  // token and sequence (GSPO) ratios; GSPO-token's ratio is defined through stop-gradients, so its
  // gradient is not the derivative of its value (test_grpo_fd checks it against its own formula).
  const batch b = make(11, 5, 13);
  for (auto level : {g::ratio_level::token, g::ratio_level::sequence}) {
    for (auto agg : {g::aggregation::seq_mean_token_mean, g::aggregation::token_mean}) {
      g::loss_options o;
      o.level = level;
      o.agg = agg;
      o.beta = 0.02;
      const mixed form{0.5};
      vec grad, scratch;
      const auto r = run(msrl::backend::host_threads{2, 3}, form, b, b.lp, o, grad);
      // the clip metrics are the form's, counted over unmasked tokens
      BOOST_TEST(r.metrics.clip_fraction >= 0.0);
      BOOST_TEST(r.metrics.clip_fraction <= 1.0);
      const double h = 1e-6;
      for (std::size_t t = 0; t < b.lp.size(); ++t) {
        vec p = b.lp, m = b.lp;
        p[t] += h;
        m[t] -= h;
        const double fd = (run(msrl::backend::reference{}, form, b, p, o, scratch).loss -
                           run(msrl::backend::reference{}, form, b, m, o, scratch).loss) /
                          (2 * h);
        BOOST_TEST(std::abs(fd - grad[t]) <= 1e-7 * std::max(1.0, std::abs(fd)),
                   "level " << int(level) << " agg " << int(agg) << " token " << t << ": " << grad[t] << " vs " << fd);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(form_clip_metrics_are_counted_over_unmasked_tokens) {
  const batch b = make(7, 3, 17);
  g::loss_options o;
  vec grad;
  const auto r = run(msrl::backend::host_threads{1, 1}, mixed{1.0}, b, b.lp, o, grad);
  double n = 0, low = 0, high = 0;
  for (std::size_t t = 0; t < b.lp.size(); ++t) {
    if (!b.mask[t]) continue;
    const double rho = std::exp(b.lp[t] - b.old[t]);
    n += 1;
    low += rho < 0.9;
    high += rho > 1.1;
  }
  BOOST_TEST(r.metrics.clip_fraction_low == low / n, boost::test_tools::tolerance(1e-15));
  BOOST_TEST(r.metrics.clip_fraction_high == high / n, boost::test_tools::tolerance(1e-15));
}

// DPPO-TV and DRO on two tokens worked by hand. Token 0: p = 0.5, p_old = 0.2 (rho = 2.5), so
// p - p_old = 0.3 is outside the TV region for A > 0 (0.3 > 0.2: loss and gradient 0) and inside
// for A < 0 (0.3 >= -0.2): loss -A min(2.5, 20) ln 0.5, gradient -A 2.5.
BOOST_AUTO_TEST_CASE(dppo_tv_and_dro_match_hand_worked_values) {
  const double lp0 = std::log(0.5), old0 = std::log(0.2);
  const vec lp{lp0, lp0}, old{old0, old0};
  for (double A : {1.0, -1.0}) {
    const vec adv{A, A};
    g::loss_options o{.form = g::loss_form::dppo_tv, .agg = g::aggregation::token_sum};
    vec grad(2);
    const auto r = g::policy_loss(g::loss_inputs<double>{msrl::token_layout::padded(2, 1), lp, old, {}, adv, {}}, o, {}, grad);
    const double want = A > 0 ? 0.0 : -A * 2.5 * lp0;
    BOOST_TEST(r.loss == 2 * want, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(grad[0] == (A > 0 ? 0.0 : -A * 2.5), boost::test_tools::tolerance(1e-14));
    BOOST_TEST(r.metrics.clip_fraction_high == (A > 0 ? 1.0 : 0.0));
    // DRO, beta 0.4: -(A lp - 0.2 (lp - old)^2), gradient -A + 0.4 (lp - old)
    o = {.form = g::loss_form::dro, .dro_beta = 0.4, .agg = g::aggregation::token_sum};
    const auto d = g::policy_loss(g::loss_inputs<double>{msrl::token_layout::padded(2, 1), lp, old, {}, adv, {}}, o, {}, grad);
    const double x = lp0 - old0;
    BOOST_TEST(d.loss == 2 * -(A * lp0 - 0.2 * x * x), boost::test_tools::tolerance(1e-14));
    BOOST_TEST(grad[1] == -A + 0.4 * x, boost::test_tools::tolerance(1e-14));
  }
  // DPPO and DRO need the token ratio level
  g::loss_options bad{.level = g::ratio_level::sequence, .form = g::loss_form::dro};
  BOOST_CHECK_THROW(g::policy_loss(g::loss_inputs<double>{msrl::token_layout::padded(2, 1), lp, old, {}, vec{1, 1}, {}}, bad),
                    msrl::invalid_argument);
}

// VESPO by hand: one row of two tokens. The row's summed log-ratio is ln w; phi(w) = e^lambda w^k
// e^(-lambda w) with (k, lambda) = (2, 3) for A >= 0 and (3, 2) for A < 0, so phi(1) = 1, phi(2)
// = 4 e^-3 (A > 0) and 8 e^-2 (A < 0). The loss is -phi A (lp_0 + lp_1), the gradient -phi A.
BOOST_AUTO_TEST_CASE(vespo_matches_hand_worked_values) {
  const vec lp{-1.0, -2.0};
  const double l2 = std::log(2.0);
  for (double A : {2.0, -1.0})
    for (double lw : {0.0, l2}) {
      const vec old{-1.0 - lw + 0.3, -2.0 - 0.3}; // log-ratios lw - 0.3 and 0.3: sum lw
      const double phi = lw == 0.0 ? 1.0 : (A > 0 ? 4.0 * std::exp(-3.0) : 8.0 * std::exp(-2.0));
      g::loss_options o{.form = g::loss_form::vespo, .agg = g::aggregation::token_sum};
      vec grad(2);
      const auto r = g::policy_loss(g::loss_inputs<double>{msrl::token_layout::padded(1, 2), lp, old, {}, vec{A}, {}}, o, {}, grad);
      BOOST_TEST(r.loss == -phi * A * (-3.0), boost::test_tools::tolerance(1e-13));
      BOOST_TEST(grad[0] == -phi * A, boost::test_tools::tolerance(1e-13));
      BOOST_TEST(grad[1] == -phi * A, boost::test_tools::tolerance(1e-13));
      // A per-token IS weight of 2 on the first token is folded into w (ln w + ln 2), not multiplied:
      // at lw = 0 that is phi(2).
      if (lw == 0.0) {
        const auto rw = g::policy_loss(
            g::loss_inputs<double>{msrl::token_layout::padded(1, 2), lp, old, {}, vec{A}, {}, vec{2.0, 1.0}}, o, {}, grad);
        const double phi2 = A > 0 ? 4.0 * std::exp(-3.0) : 8.0 * std::exp(-2.0);
        BOOST_TEST(rw.loss == -phi2 * A * (-3.0), boost::test_tools::tolerance(1e-13));
      }
    }
  // one advantage per row, token ratio level
  g::loss_options o{.form = g::loss_form::vespo};
  BOOST_CHECK_THROW(g::policy_loss(g::loss_inputs<double>{msrl::token_layout::padded(1, 2), lp, lp, {}, vec{1, 1}, {}}, o),
                    msrl::invalid_argument);
  o.level = g::ratio_level::sequence;
  BOOST_CHECK_THROW(g::policy_loss(g::loss_inputs<double>{msrl::token_layout::padded(1, 2), lp, lp, {}, vec{1}, {}}, o),
                    msrl::invalid_argument);
  o = {.form = g::loss_form::vespo, .vespo_lambda_neg = NAN};
  BOOST_CHECK_THROW(g::policy_loss(g::loss_inputs<double>{msrl::token_layout::padded(1, 2), lp, lp, {}, vec{1}, {}}, o),
                    msrl::invalid_argument);
}

// GMPO by hand, clip 0.2 in log space, one row of two tokens (seq_mean_token_mean over one row =
// the row loss). A = 1, log-ratios (0.1, 0.5): clipped (0.1, 0.2), s = e^0.15, loss -e^0.15,
// gradient (-s/2, 0) (the second token is clipped). A = -1, log-ratios (-0.5, 0.1): clipped
// (-0.2, 0.1), s = e^-0.05, loss e^-0.05, gradient (0, s/2).
BOOST_AUTO_TEST_CASE(gmpo_matches_hand_worked_values) {
  const vec lp{-1.0, -2.0};
  struct item {
    double A, lr0, lr1, s, g0, g1;
  };
  for (const item c : {item{1.0, 0.1, 0.5, std::exp(0.15), -0.5 * std::exp(0.15), 0.0},
                       item{-1.0, -0.5, 0.1, std::exp(-0.05), 0.0, 0.5 * std::exp(-0.05)}}) {
    const vec old{lp[0] - c.lr0, lp[1] - c.lr1};
    g::loss_options o{.clip_low = 0.2, .clip_high = 0.2, .form = g::loss_form::gmpo};
    vec grad(2);
    const auto r = g::policy_loss(g::loss_inputs<double>{msrl::token_layout::padded(1, 2), lp, old, {}, vec{c.A}, {}}, o, {}, grad);
    BOOST_TEST(r.loss == -c.A * c.s, boost::test_tools::tolerance(1e-13));
    BOOST_TEST(grad[0] == c.g0, boost::test_tools::tolerance(1e-13));
    BOOST_TEST(grad[1] == c.g1, boost::test_tools::tolerance(1e-13));
    BOOST_TEST(r.metrics.clip_fraction == 0.5);
  }
  // An empty row (second) adds -A / B under TRL's rule and 0 under verl's.
  const vec lp2{-1.0, -2.0, -1.0, -1.0}, old2{-1.1, -2.0, -1.0, -1.0};
  const std::vector<std::uint8_t> mask{1, 1, 0, 0};
  for (bool trl : {false, true}) {
    g::loss_options o{.clip_low = 0.4, .clip_high = 0.4, .form = g::loss_form::gmpo, .gmpo_empty_rows_minus_adv = trl};
    const auto r = g::policy_loss(
        g::loss_inputs<double>{msrl::token_layout::padded(2, 2), lp2, old2, {}, vec{1.0, 3.0}, mask}, o);
    BOOST_TEST(r.loss == (-std::exp(0.05) + (trl ? -3.0 : 0.0)) / 2, boost::test_tools::tolerance(1e-13));
  }
}

// KL-Cov by hand: token 0 selected (lr = 0.5), token 1 not (lr = -0.3); A = 2, coef 0.1, token_sum.
// Selected: -A e^lr + 0.1 |lr|, gradient -A e^lr + 0.1 sign(lr); otherwise -A e^lr and -A e^lr.
BOOST_AUTO_TEST_CASE(kl_cov_matches_hand_worked_values) {
  const vec lp{-1.0, -2.0}, old{-1.5, -1.7}, adv{2.0};
  const std::vector<std::uint8_t> sel{1, 0};
  g::loss_options o{.form = g::loss_form::kl_cov, .kl_cov_coef = 0.1, .agg = g::aggregation::token_sum};
  vec grad(2);
  g::loss_inputs<double> in{msrl::token_layout::padded(1, 2), lp, old, {}, adv, {}, {}, sel};
  const auto r = g::policy_loss(in, o, {}, grad);
  const double e0 = std::exp(0.5), e1 = std::exp(-0.3);
  BOOST_TEST(r.loss == -2 * e0 + 0.05 - 2 * e1, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(grad[0] == -2 * e0 + 0.1, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(grad[1] == -2 * e1, boost::test_tools::tolerance(1e-14));
  // the form is token level only; the coefficient must be finite and >= 0
  o.level = g::ratio_level::sequence;
  BOOST_CHECK_THROW(g::policy_loss(in, o, {}, grad), msrl::invalid_argument);
  o = {.form = g::loss_form::kl_cov, .kl_cov_coef = -1.0};
  BOOST_CHECK_THROW(g::policy_loss(in, o, {}, grad), msrl::invalid_argument);
}

// The covariance selections on one row of four tokens. Advantages 2, 0, -1, 3 (mean 1), log-probs
// -1, -2, -0.5, -3 (mean -1.625): cov = 0.625, 0.375, -2.25, -2.75.
BOOST_AUTO_TEST_CASE(covariance_selections_match_hand_worked_values) {
  const auto lay = msrl::token_layout::padded(1, 4);
  const vec lp{-1.0, -2.0, -0.5, -3.0}, adv{2.0, 0.0, -1.0, 3.0};
  const std::vector<std::uint8_t> all;
  std::vector<std::uint8_t> out(4);
  auto kl = g::kl_cov_mask(lay, std::span<const double>(lp), std::span<const double>(adv),
                           std::span<const std::uint8_t>(all), {.ratio = 0.25}, out);
  BOOST_TEST(out == (std::vector<std::uint8_t>{1, 0, 0, 0}), boost::test_tools::per_element());
  BOOST_TEST(kl.selected == 1u);
  kl = g::kl_cov_mask(lay, std::span<const double>(lp), std::span<const double>(adv),
                      std::span<const std::uint8_t>(all), {.ratio = 0.5}, out);
  BOOST_TEST(out == (std::vector<std::uint8_t>{1, 1, 0, 0}), boost::test_tools::per_element());
  // a masked token leaves the statistic: tokens 1, 2, 3 (A mean 2/3, logp mean -11/6):
  // cov = 0.111, -2.222, -2.722 -> the top one is token 1
  const std::vector<std::uint8_t> m{0, 1, 1, 1};
  kl = g::kl_cov_mask(lay, std::span<const double>(lp), std::span<const double>(adv), std::span<const std::uint8_t>(m),
                      {.ratio = 0.25}, out);
  BOOST_TEST(out == (std::vector<std::uint8_t>{0, 1, 0, 0}), boost::test_tools::per_element());
  BOOST_TEST(kl.unmasked == 3u);

  // Clip-Cov with lb 0.3, ub 1: candidates tokens 0 and 1 (ratio 1: nothing clipped); k = 1; the
  // permutation {1, 0} takes candidate 1 = token 1.
  const vec same = lp;
  const std::vector<std::int64_t> perm{1, 0};
  auto cc = g::clip_cov_mask(lay, std::span<const double>(lp), std::span<const double>(same),
                             std::span<const double>(adv), std::span<const std::uint8_t>(all),
                             {.ratio = 0.25, .lower = 0.3, .upper = 1.0, .permutation = perm}, out);
  BOOST_TEST(out == (std::vector<std::uint8_t>{1, 0, 1, 1}), boost::test_tools::per_element());
  BOOST_TEST(cc.candidates == 2u);
  BOOST_TEST(cc.selected == 1u);
  // token 0 with rho = e^0.5 > 1.2 and A = 2 > 0: the clipped branch wins, it is no candidate
  const vec old{-1.5, -2.0, -0.5, -3.0};
  cc = g::clip_cov_mask(lay, std::span<const double>(lp), std::span<const double>(old), std::span<const double>(adv),
                        std::span<const std::uint8_t>(all), {.ratio = 0.25, .lower = 0.3, .upper = 1.0}, out);
  BOOST_TEST(out == (std::vector<std::uint8_t>{1, 0, 1, 1}), boost::test_tools::per_element());
  BOOST_TEST(cc.candidates == 1u);
  // bad input
  const std::vector<std::int64_t> dup{0, 0};
  BOOST_CHECK_THROW(g::clip_cov_mask(lay, std::span<const double>(lp), std::span<const double>(same),
                                     std::span<const double>(adv), std::span<const std::uint8_t>(all),
                                     {.ratio = 0.25, .lower = 0.3, .upper = 1.0, .permutation = dup}, out),
                    msrl::value_error);
  BOOST_CHECK_THROW(g::clip_cov_mask(lay, std::span<const double>(lp), std::span<const double>(same),
                                     std::span<const double>(adv), std::span<const std::uint8_t>(all),
                                     {.ratio = 0.25, .lower = 0.3, .upper = 1.0, .permutation = std::span<const std::int64_t>(perm).subspan(0, 1)},
                                     out),
                    msrl::shape_error);
  BOOST_CHECK_THROW(g::kl_cov_mask(lay, std::span<const double>(lp), std::span<const double>(adv),
                                   std::span<const std::uint8_t>(all), {.ratio = 0.0}, out),
                    msrl::invalid_argument);
  BOOST_CHECK_THROW(g::kl_cov_mask(lay, std::span<const double>(lp), std::span<const double>(vec{1.0, 2.0}),
                                   std::span<const std::uint8_t>(all), {}, out),
                    msrl::shape_error);
}

// msrl's seeded Clip-Cov draw: the same seed gives the same subset, and over many seeds every
// candidate is chosen k / n of the time (10 candidates, k = 2: 1,000 of 5,000 each; sd 28).
BOOST_AUTO_TEST_CASE(clip_cov_seeded_draw_is_uniform) {
  const auto lay = msrl::token_layout::padded(1, 10);
  vec lp(10), adv(10);
  for (int t = 0; t < 10; ++t) {
    lp[t] = -0.1 * t;
    adv[t] = t % 2 ? 1.0 : -1.0;
  }
  const std::vector<std::uint8_t> all;
  std::vector<std::uint8_t> out(10), again(10);
  std::vector<int> hits(10, 0);
  const double inf = std::numeric_limits<double>::infinity();
  for (std::uint64_t seed = 0; seed < 5000; ++seed) {
    const g::clip_cov_options o{.ratio = 0.2, .lower = -inf, .upper = inf, .seed = seed};
    const auto s = g::clip_cov_mask(lay, std::span<const double>(lp), std::span<const double>(lp),
                                    std::span<const double>(adv), std::span<const std::uint8_t>(all), o, out);
    BOOST_REQUIRE(s.selected == 2u);
    for (int t = 0; t < 10; ++t) hits[t] += out[t] == 0;
    if (seed < 3) {
      g::clip_cov_mask(lay, std::span<const double>(lp), std::span<const double>(lp), std::span<const double>(adv),
                       std::span<const std::uint8_t>(all), o, again);
      BOOST_TEST(out == again, boost::test_tools::per_element());
    }
  }
  for (int t = 0; t < 10; ++t) BOOST_TEST(std::abs(hits[t] - 1000) < 150, "token " << t << ": " << hits[t]);
}

// shape_tokens, the presets' step-time shaping: nothing for a plain preset; Clip-Cov tests the
// clipped branch with the loss's own epsilon (not the options' defaults), KL-Cov and FIPO write what
// their functions write; the draw seed changes Clip-Cov's subset and only it.
BOOST_AUTO_TEST_CASE(shape_tokens_applies_the_presets_shaping) {
  const auto lay = msrl::token_layout::padded(1, 4);
  const vec lp{-1.0, -2.0, -0.5, -3.0}, adv{2.0, 0.0, -1.0, 3.0};
  const std::vector<std::uint8_t> all;
  g::token_shaping_buffers<double, std::uint8_t> buf;
  g::shape_tokens(g::presets::msrl_release.shaping, g::presets::msrl_release.loss, lay, std::span<const double>(lp),
                  std::span<const double>(), std::span<const double>(adv), std::span<const std::uint8_t>(all), 0, buf);
  BOOST_TEST(buf.policy_mask.empty());
  BOOST_TEST(buf.is_weights.empty());

  // KL-Cov, ratio 0.25: the hand case above (token 0)
  g::token_shaping kl{.kind = g::shaping_kind::kl_cov, .kl_cov = {.ratio = 0.25}};
  g::shape_tokens(kl, g::presets::verl_kl_cov.loss, lay, std::span<const double>(lp), std::span<const double>(),
                  std::span<const double>(adv), std::span<const std::uint8_t>(all), 7, buf);
  BOOST_TEST(buf.policy_mask == (std::vector<std::uint8_t>{1, 0, 0, 0}), boost::test_tools::per_element());
  BOOST_TEST(buf.selection.selected == 1u);

  // Clip-Cov, lb 0.3, ub 1 (cov 0.625 and 0.375 for tokens 0, 1). Token 0 has rho = e^0.5: with the
  // loss's epsilon 0.2 its clipped branch wins and it is no candidate; with epsilon_high 1.0 (rho
  // inside the range) it is one.
  const vec old{-1.5, -2.0, -0.5, -3.0};
  g::token_shaping cc{.kind = g::shaping_kind::clip_cov, .clip_cov = {.ratio = 1.0, .lower = 0.3, .upper = 1.0}};
  auto loss = g::presets::verl_clip_cov.loss;
  g::shape_tokens(cc, loss, lay, std::span<const double>(lp), std::span<const double>(old), std::span<const double>(adv),
                  std::span<const std::uint8_t>(all), 0, buf);
  BOOST_TEST(buf.policy_mask == (std::vector<std::uint8_t>{1, 0, 1, 1}), boost::test_tools::per_element());
  BOOST_TEST(buf.selection.candidates == 1u);
  loss.clip_high = 1.0;
  g::shape_tokens(cc, loss, lay, std::span<const double>(lp), std::span<const double>(old), std::span<const double>(adv),
                  std::span<const std::uint8_t>(all), 0, buf);
  BOOST_TEST(buf.policy_mask == (std::vector<std::uint8_t>{0, 0, 1, 1}), boost::test_tools::per_element());
  BOOST_TEST(buf.selection.candidates == 2u);
  // k = 1 of the two candidates: over draws both are chosen, each draw reproducibly
  cc.clip_cov.ratio = 0.25;
  int chose0 = 0;
  for (std::uint64_t d = 0; d < 64; ++d) {
    g::shape_tokens(cc, loss, lay, std::span<const double>(lp), std::span<const double>(old),
                    std::span<const double>(adv), std::span<const std::uint8_t>(all), d, buf);
    const auto first = buf.policy_mask;
    g::shape_tokens(cc, loss, lay, std::span<const double>(lp), std::span<const double>(old),
                    std::span<const double>(adv), std::span<const std::uint8_t>(all), d, buf);
    BOOST_TEST(buf.policy_mask == first, boost::test_tools::per_element());
    BOOST_TEST(buf.selection.selected == 1u);
    chose0 += buf.policy_mask[0] == 0;
  }
  BOOST_TEST(chose0 > 8);
  BOOST_TEST(chose0 < 56);

  // FIPO on-policy: every log-ratio 0, every weight exp(0) = 1
  g::shape_tokens(g::presets::ms_swift_fipo.shaping, g::presets::ms_swift_fipo.loss, lay, std::span<const double>(lp),
                  std::span<const double>(), std::span<const double>(adv), std::span<const std::uint8_t>(all), 0, buf);
  BOOST_TEST(buf.is_weights == (vec{1.0, 1.0, 1.0, 1.0}), boost::test_tools::per_element());
  BOOST_TEST(buf.policy_mask.empty());
  BOOST_CHECK_THROW(g::shape_tokens(cc, loss, lay, std::span<const double>(lp), std::span<const double>(vec{1.0}),
                                    std::span<const double>(adv), std::span<const std::uint8_t>(all), 0, buf),
                    msrl::shape_error);
}

// FIPO's weights by hand: one row, log-ratios 0.1, -0.2, 0.3, decay rate 1 (gamma = 1/2): future
// KL F = 0.075, -0.05, 0.3; w = exp(F) clipped to [1, 1.2] (high only) or [0.8, 1.2]; with A < 0
// and the safety threshold 1.2 the last token (rho = e^0.3) is clamped to [0.8, 1].
BOOST_AUTO_TEST_CASE(fipo_weights_match_hand_worked_values) {
  const auto lay = msrl::token_layout::padded(1, 3);
  const vec lp{-1.0, -1.0, -1.0}, old{-1.1, -0.8, -1.3};
  const std::vector<std::uint8_t> all;
  vec w(3);
  auto run = [&](double A, const g::fipo_options& o) {
    return g::fipo_weights(lay, std::span<const double>(lp), std::span<const double>(old),
                           std::span<const double>(vec{A}), std::span<const std::uint8_t>(all), o, w);
  };
  auto st = run(1.0, {.decay_rate = 1.0});
  BOOST_TEST(w[0] == std::exp(0.075), boost::test_tools::tolerance(1e-14));
  BOOST_TEST(w[1] == 1.0);
  BOOST_TEST(w[2] == 1.2);
  BOOST_TEST(st.future_kl_mean == (0.075 - 0.05 + 0.3) / 3, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(st.safety_keep_ratio == 1.0);
  run(1.0, {.decay_rate = 1.0, .clip_high_only = false});
  BOOST_TEST(w[1] == std::exp(-0.05), boost::test_tools::tolerance(1e-14));
  st = run(-1.0, {.decay_rate = 1.0, .safety_threshold = 1.2});
  BOOST_TEST(w[2] == 1.0);
  BOOST_TEST(st.safety_keep_ratio == 2.0 / 3, boost::test_tools::tolerance(1e-14));
  // delta: the last token (rho = e^0.3 > 1.3) leaves the future KL: F = 0.1 - 0.1 = 0, -0.2, 0
  run(1.0, {.decay_rate = 1.0, .clip_range = 0.0, .delta = 1.3});
  BOOST_TEST(w[0] == 1.0, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(w[1] == std::exp(-0.2), boost::test_tools::tolerance(1e-14));
  BOOST_TEST(w[2] == 1.0);
  BOOST_CHECK_THROW(run(1.0, {.decay_rate = 0.0}), msrl::invalid_argument);
  BOOST_CHECK_THROW(run(1.0, {.clip_range = 1.0}), msrl::invalid_argument);
}
