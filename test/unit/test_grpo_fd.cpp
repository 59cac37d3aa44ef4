// The closed-form gradient equals central finite differences of the loss, for every preset and
// every mode (ratio level, aggregation, KL estimator, clamps, dual clip, delta, packed layout).
#define BOOST_TEST_MODULE grpo_fd
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <random>
#include <vector>

#include <msrl/grpo.hpp>

namespace g = msrl::grpo;
using vec = std::vector<double>;

struct batch {
  std::size_t B, T;
  vec lp, old, ref, adv;
  std::vector<std::uint8_t> mask;
};

static batch make(unsigned seed, std::size_t B, std::size_t T, bool per_token_adv) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  batch b{B, T, vec(B * T), vec(B * T), vec(B * T), vec(per_token_adv ? B * T : B), std::vector<std::uint8_t>(B * T)};
  for (std::size_t i = 0; i < B * T; ++i) {
    b.lp[i] = -1.5 + 0.7 * n(rng);
    b.old[i] = b.lp[i] + 0.35 * n(rng); // ratios spread across the clip range
    b.ref[i] = b.lp[i] + 0.6 * n(rng);
  }
  for (auto& a : b.adv) a = n(rng);
  for (std::size_t i = 0; i < B; ++i) {
    const std::size_t len = i == 1 ? 0 : 1 + static_cast<std::size_t>(u(rng) * static_cast<double>(T));
    for (std::size_t t = 0; t < T; ++t) b.mask[i * T + t] = t < len ? 1 : 0;
  }
  return b;
}

static double eval(const batch& b, const vec& lp, const g::loss_options& o, vec* grad) {
  g::loss_inputs<double> in{msrl::token_layout::padded(b.B, b.T), lp, b.old, b.ref, b.adv, b.mask};
  vec gr(lp.size());
  auto r = g::policy_loss(msrl::backend::reference{}, in, o, {}, std::span<double>(gr));
  if (grad) *grad = gr;
  return r.loss;
}

static void check_fd(const g::loss_options& o, unsigned seed, bool per_token_adv = false) {
  const batch b = make(seed, 5, 7, per_token_adv);
  vec grad;
  eval(b, b.lp, o, &grad);
  const double h = 1e-6;
  double worst = 0;
  for (std::size_t i = 0; i < b.lp.size(); ++i) {
    vec p = b.lp, m = b.lp;
    p[i] += h;
    m[i] -= h;
    const double fd = (eval(b, p, o, nullptr) - eval(b, m, o, nullptr)) / (2 * h);
    const double err = std::abs(fd - grad[i]) / std::max(1.0, std::abs(fd));
    worst = std::max(worst, err);
    BOOST_TEST(err < 1e-6, "token " << i << ": closed form " << grad[i] << " vs finite difference " << fd);
  }
  BOOST_TEST_MESSAGE("worst relative error " << worst);
}

// Some modes are *defined* by a gradient that is not the derivative of the value: the GSPO-token
// form (stop-gradient trick), straight-through KL, CISPO, DPPO and VESPO (-sg(W) A logp). They get their own
// oracles (below, and the autograd transcriptions of test_grpo_torch).
static bool fd_applies(const g::loss_options& o) {
  return o.level != g::ratio_level::sequence_token && !o.kl_straight_through &&
         o.form != g::loss_form::cispo_absolute && o.form != g::loss_form::cispo_relative &&
         o.form != g::loss_form::dppo_tv && o.form != g::loss_form::dppo_kl && o.form != g::loss_form::vespo;
}

BOOST_AUTO_TEST_CASE(every_preset) {
  unsigned seed = 1;
  for (const g::preset* p : g::presets::all) {
    if (!fd_applies(p->loss)) continue;
    BOOST_TEST_CONTEXT("preset " << p->name) {
      g::loss_options o = p->loss;
      if (o.beta == 0.0) o.beta = 0.05; // exercise the KL path too
      check_fd(o, seed++);
      if (o.form != g::loss_form::gmpo) check_fd(o, seed++, true); // a row form: one advantage per row
    }
  }
}

BOOST_AUTO_TEST_CASE(dro_form) {
  for (double b : {0.2, 2.0}) {
    g::loss_options o{.form = g::loss_form::dro, .dro_beta = b, .beta = 0.1, .agg = g::aggregation::seq_mean_token_mean};
    check_fd(o, 40, false);
    check_fd(o, 41, true);
  }
}

BOOST_AUTO_TEST_CASE(every_mode) {
  unsigned seed = 100;
  for (auto level : {g::ratio_level::token, g::ratio_level::sequence, g::ratio_level::sequence_token})
    for (auto agg : {g::aggregation::token_mean, g::aggregation::seq_mean_token_mean, g::aggregation::seq_mean_token_sum,
                     g::aggregation::seq_mean_token_sum_norm, g::aggregation::token_sum})
      for (auto kl : {g::kl_estimator::k1, g::kl_estimator::abs, g::kl_estimator::k2, g::kl_estimator::k3})
        for (int variant = 0; variant < 3; ++variant) {
          g::loss_options o{.level = level, .clip_low = 0.2, .clip_high = 0.28, .beta = 0.1, .kl = kl,
                            .agg = agg, .constant_normalizer = 16.0};
          if (variant == 1) { o.dual_clip = 1.5; o.log_ratio_clamp = 0.4; o.kl_straight_through = true; }
          if (variant == 2) { o.delta = 1.3; o.kl_log_ratio_clamp = 0.5; o.kl_value_clamp = 0.3;
                              o.count_empty_sequences = false; o.guard = g::length_guard::add_eps;
                              o.sequence_log_ratio_max = 0.05; }
          if (!fd_applies(o)) continue;
          BOOST_TEST_CONTEXT("level " << int(level) << " agg " << int(agg) << " kl " << int(kl) << " variant " << variant) {
            check_fd(o, seed++, variant == 1);
          }
        }
}

// GSPO-token: equal in value and gradient to the direct sequence form when the advantage is
// constant within a sequence and the aggregation is seq-mean-token-mean (grpo-semantics.md §3).
BOOST_AUTO_TEST_CASE(gspo_token_form_equals_sequence_form) {
  for (unsigned seed = 7; seed < 12; ++seed) {
    const batch b = make(seed, 6, 5, false);
    g::loss_options o{.level = g::ratio_level::sequence, .clip_low = 0.1, .clip_high = 0.15, .beta = 0.2,
                      .agg = g::aggregation::seq_mean_token_mean};
    vec gs, gt;
    const double vs = eval(b, b.lp, o, &gs);
    o.level = g::ratio_level::sequence_token;
    const double vt = eval(b, b.lp, o, &gt);
    BOOST_TEST(vs == vt, boost::test_tools::tolerance(1e-12));
    for (std::size_t i = 0; i < gs.size(); ++i) BOOST_TEST(gs[i] == gt[i], boost::test_tools::tolerance(1e-12));
  }
}

// Straight-through KL: the value is the chosen estimator, the gradient is k2's (x = logp - ref):
// check it against finite differences of the same loss with the k2 estimator in place of k.
BOOST_AUTO_TEST_CASE(straight_through_gradient_is_k2_gradient) {
  const batch b = make(3, 4, 6, false);
  for (auto k : {g::kl_estimator::k1, g::kl_estimator::abs, g::kl_estimator::k3}) {
    g::loss_options st{.beta = 0.3, .kl = k, .kl_straight_through = true};
    g::loss_options k2{.beta = 0.3, .kl = g::kl_estimator::k2};
    vec gst, gk2;
    eval(b, b.lp, st, &gst);
    eval(b, b.lp, k2, &gk2);
    for (std::size_t i = 0; i < gst.size(); ++i) BOOST_TEST(gst[i] == gk2[i], boost::test_tools::tolerance(1e-12));
    g::loss_options plain{.beta = 0.3, .kl = k};
    BOOST_TEST(eval(b, b.lp, st, nullptr) == eval(b, b.lp, plain, nullptr), boost::test_tools::tolerance(1e-14));
  }
}

// The IS-corrected KL (KL times the non-detached ratio) is an ordinary function of logp: its
// closed-form gradient, including the sequence level's row-sum term, must match finite
// differences; likewise with rollout IS weights (detached constants) on the surrogate and KL.
BOOST_AUTO_TEST_CASE(corrected_kl_and_is_weights) {
  unsigned seed = 500;
  for (auto level : {g::ratio_level::token, g::ratio_level::sequence})
    for (auto agg : {g::aggregation::token_mean, g::aggregation::seq_mean_token_mean, g::aggregation::token_sum})
      for (auto kl : {g::kl_estimator::k1, g::kl_estimator::k2, g::kl_estimator::k3})
        for (int v = 0; v < 3; ++v) {
          g::loss_options o{.level = level, .clip_low = 0.2, .clip_high = 0.28, .beta = 0.3, .kl = kl,
                            .kl_is_corrected = true, .agg = agg};
          if (v == 1) { o.kl_value_clamp = 0.3; o.is_weight_kl = true; o.form = g::loss_form::sapo; }
          if (v == 2) { o.kl_log_ratio_clamp = 0.5; o.delta = 1.3; }
          BOOST_TEST_CONTEXT("level " << int(level) << " agg " << int(agg) << " kl " << int(kl) << " v " << v) {
            const batch b = make(seed++, 5, 7, v == 2);
            vec w(v == 0 ? 0 : (v == 1 ? b.B * b.T : b.B));
            std::mt19937 rng(seed);
            std::uniform_real_distribution<double> u(0.0, 2.5);
            for (auto& x : w) x = u(rng);
            auto f = [&](const vec& lp, vec* grad) {
              g::loss_inputs<double> in{msrl::token_layout::padded(b.B, b.T), lp, b.old, b.ref, b.adv, b.mask, w};
              vec gr(lp.size());
              auto r = g::policy_loss(in, o, {}, gr);
              if (grad) *grad = gr;
              return r.loss;
            };
            vec grad;
            f(b.lp, &grad);
            const double h = 1e-6;
            for (std::size_t i = 0; i < b.lp.size(); ++i) {
              vec p = b.lp, m = b.lp;
              p[i] += h;
              m[i] -= h;
              const double fd = (f(p, nullptr) - f(m, nullptr)) / (2 * h);
              BOOST_TEST(std::abs(fd - grad[i]) / std::max(1.0, std::abs(fd)) < 1e-6,
                         "token " << i << ": closed form " << grad[i] << " vs finite difference " << fd);
            }
          }
        }
}
