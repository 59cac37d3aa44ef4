// The GRPO loss and its closed-form gradient against libtorch autograd, for every preset and every
// mode. The libtorch side re-implements each peer's formula with tensor ops, the way the peers'
// Python code writes it (clamp, torch.min/torch.where, detach for stop-gradients), and lets
// autograd differentiate it; msrl's gradient must agree to double rounding.
#define BOOST_TEST_MODULE grpo_torch
#include <boost/test/unit_test.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <msrl/grpo.hpp>

namespace g = msrl::grpo;
using torch::Tensor;

struct inputs {
  Tensor lp, old, ref, adv, mask; // [B, T] except adv: [B] or [B, T]
  Tensor isw;                     // rollout IS weights: undefined, [B] or [B, T]
  Tensor pmask;                   // the surrogate-only mask: undefined or [B, T] 0/1
};

static inputs make(int64_t B, int64_t T, bool per_token, uint64_t seed) {
  torch::manual_seed(seed);
  auto o = torch::TensorOptions().dtype(torch::kFloat64);
  inputs in;
  in.lp = -1.3 + 0.7 * torch::randn({B, T}, o);
  in.old = in.lp + 0.35 * torch::randn({B, T}, o);
  in.ref = in.lp + 0.6 * torch::randn({B, T}, o);
  in.adv = per_token ? torch::randn({B, T}, o) : torch::randn({B}, o);
  auto len = torch::randint(0, T + 1, {B, 1});
  len[1][0] = 0; // one fully masked row
  in.mask = (torch::arange(T).unsqueeze(0) < len).to(torch::kFloat64);
  return in;
}

static Tensor clampt(const Tensor& x, double lo, double hi) {
  Tensor y = x;
  if (std::isfinite(lo)) y = torch::clamp_min(y, lo);
  if (std::isfinite(hi)) y = torch::clamp_max(y, hi);
  return y;
}

static Tensor kl_torch(const Tensor& lp, const Tensor& ref, const g::loss_options& o) {
  Tensor x = lp - ref, k;
  switch (o.kl) {
  case g::kl_estimator::k1: k = x; break;
  case g::kl_estimator::abs: k = x.abs(); break;
  case g::kl_estimator::k2: k = 0.5 * x * x; break;
  case g::kl_estimator::k3: {
    Tensor d = clampt(ref - lp, -o.kl_log_ratio_clamp, o.kl_log_ratio_clamp);
    k = torch::exp(d) - d - 1;
    break;
  }
  }
  k = clampt(k, -o.kl_value_clamp, o.kl_value_clamp);
  if (o.kl_straight_through) {
    Tensor k2 = 0.5 * x * x;
    k = k2 - k2.detach() + k.detach();
  }
  return k;
}

// Loss as the peers write it, for msrl's option set.
static Tensor loss_torch(const inputs& in, const Tensor& lp, const g::loss_options& o, const g::loss_normalizer& n) {
  const auto B = lp.size(0);
  Tensor m = in.mask, L = m.sum(1);
  Tensor A = in.adv.dim() == 1 ? in.adv.unsqueeze(1).expand_as(lp) : in.adv;
  Tensor w = !in.isw.defined() ? torch::ones_like(lp) : (in.isw.dim() == 1 ? in.isw.unsqueeze(1).expand_as(lp) : in.isw);
  auto guard = [&](const Tensor& x) { return o.guard == g::length_guard::clamp_one ? x.clamp_min(1.0) : x + o.length_eps; };
  if (o.form == g::loss_form::gmpo) {
    // TRL GMPOTrainer._compute_loss (max(n, 1); the entropy mask inside the mean) and verl
    // compute_policy_loss_geo_mean (n + 1e-8; A as the masked row mean; IS weights by their
    // geometric mean): sign-aware log-space clip, geometric mean, plain mean over rows.
    Tensor lr = lp - in.old;
    Tensor cl = torch::clamp(lr, -o.clip_low, o.clip_high);
    Tensor c = torch::where(A > 0, torch::minimum(lr, cl), torch::maximum(lr, cl));
    Tensor sm = in.pmask.defined() ? m * in.pmask : m;
    Tensor coef = torch::exp((c * sm).sum(1) / guard(sm.sum(1)));
    if (in.isw.defined() && in.isw.dim() == 2) coef = coef * torch::exp((torch::log(in.isw + 1e-10) * m).sum(1) / guard(L));
    if (in.isw.defined() && in.isw.dim() == 1) coef = coef * in.isw; // msrl: a per-row weight multiplies s_i
    Tensor Arow = o.gmpo_empty_rows_minus_adv ? in.adv : (A * m).sum(1) / guard(L);
    Tensor row = -coef * Arow;
    if (o.beta != 0.0) {
      Tensor kl = kl_torch(lp, in.ref, o);
      if (o.kl_is_corrected) kl = kl * torch::exp(lp - in.old);
      if (o.is_weight_kl) kl = kl * w;
      row = row + o.beta * (kl * m).sum(1) / guard(L);
    }
    const double S = n.global_sequences.value_or(double(B));
    return row.sum() / S * n.scale;
  }
  Tensor coef1, raw; // raw: the unclamped ratio TRL's use_bias_correction_kl multiplies the KL by
  if (o.level == g::ratio_level::token) {
    coef1 = torch::exp(clampt(lp - in.old, -o.log_ratio_clamp, o.log_ratio_clamp));
    raw = torch::exp(lp - in.old);
  } else {
    Tensor log_s = ((lp - in.old) * m).sum(1) / L.clamp_min(1.0);
    raw = torch::exp(log_s).unsqueeze(1).expand_as(lp);
    if (o.level == g::ratio_level::sequence) {
      coef1 = torch::exp(clampt(log_s, -INFINITY, o.sequence_log_ratio_max)).unsqueeze(1).expand_as(lp);
    } else {
      Tensor t = lp - lp.detach() + log_s.detach().unsqueeze(1);
      coef1 = torch::exp(clampt(t, -INFINITY, o.sequence_log_ratio_max));
    }
  }
  Tensor per_tok;
  switch (o.form) {
  case g::loss_form::clipped_ratio: {
    Tensor coef2 = torch::clamp(coef1, 1 - o.clip_low, 1 + o.clip_high);
    Tensor c1 = clampt(coef1, -INFINITY, o.delta);
    per_tok = -torch::min(c1 * A, coef2 * A);
    if (std::isfinite(o.dual_clip)) per_tok = torch::where(A < 0, torch::min(-A * o.dual_clip, per_tok), per_tok);
    break;
  }
  case g::loss_form::cispo_absolute: // TRL: -clamp(coef_1, max=epsilon_high).detach() * A * logp
    per_tok = -torch::clamp(coef1, c10::nullopt, o.cispo_cap).detach() * A * lp;
    break;
  case g::loss_form::cispo_relative: // verl: -clamp(ratio, 1 - clip_low, 1 + clip_high).detach() * A * log_prob
    per_tok = -torch::clamp(coef1, 1 - o.clip_low, 1 + o.clip_high).detach() * A * lp;
    break;
  case g::loss_form::sapo: { // -(4 / tau) * sigmoid(tau * (ratio - 1)) * A
    Tensor tau = torch::where(A > 0, torch::full_like(A, o.sapo_tau_pos), torch::full_like(A, o.sapo_tau_neg));
    per_tok = -(4.0 / tau) * torch::sigmoid(tau * (coef1 - 1)) * A;
    break;
  }
  case g::loss_form::reinforce: per_tok = -A * lp; break;
  case g::loss_form::dppo_tv:
  case g::loss_form::dppo_kl: { // verl compute_policy_loss_dppo_tv / _kl
    Tensor truncated = torch::clamp(coef1, c10::nullopt, o.dppo_ratio_cap).detach();
    Tensor prob = torch::exp(lp), old_prob = torch::exp(in.old), pos, neg;
    if (o.form == g::loss_form::dppo_tv) {
      pos = (prob - old_prob) <= o.clip_high;
      neg = (prob - old_prob) >= -o.clip_low;
    } else {
      Tensor bkl = old_prob * (in.old - lp) + (1 - old_prob) * torch::log((1.0 - old_prob + 1e-8) / (1.0 - prob + 1e-8));
      pos = (bkl <= o.clip_high).logical_or(prob <= old_prob);
      neg = (bkl <= o.clip_low).logical_or(prob >= old_prob);
    }
    Tensor valid = torch::where(A > 0, pos, neg).detach().to(torch::kFloat64);
    per_tok = -A * truncated * lp * valid;
    break;
  }
  case g::loss_form::dro: per_tok = -(A * lp - 0.5 * o.dro_beta * (lp - in.old).pow(2)); break; // verl dro
  case g::loss_form::vespo: { // Liger get_gamma_weights (= TRL's): the IS weights are folded into phi
    const double lower = std::log(1e-8);
    Tensor slr = (torch::clamp(lp - in.old, -20.0, 20.0) * m).sum(1, true);
    if (in.isw.defined()) {
      Tensor iw = in.isw.dim() == 1 ? in.isw.unsqueeze(1) : in.isw;
      slr = slr + torch::clamp(torch::log(iw), lower, 20.0).sum(-1, true);
    }
    Tensor lw = torch::clamp(slr, lower, 20.0).detach();
    Tensor nonneg = A.select(1, 0).unsqueeze(1) >= 0;
    Tensor k = torch::where(nonneg, torch::full_like(lw, o.vespo_k_pos), torch::full_like(lw, o.vespo_k_neg));
    Tensor lam = torch::where(nonneg, torch::full_like(lw, o.vespo_lambda_pos), torch::full_like(lw, o.vespo_lambda_neg))
                     .clamp_min(1e-4);
    Tensor phi = torch::nan_to_num(torch::exp(lam + k * lw - lam * torch::exp(lw)), 0.0, 0.0, 0.0);
    per_tok = -phi * A * lp;
    break;
  }
  case g::loss_form::kl_cov: { // verl kl_cov: -A ratio, + ppo_kl_coef |lr| on the selected tokens (the policy mask)
    Tensor sel = in.pmask.defined() ? in.pmask : torch::ones_like(lp);
    per_tok = -A * coef1 + o.kl_cov_coef * sel * (lp - in.old).abs();
    break;
  }
  case g::loss_form::gmpo: break; // above
  }
  // TRL: entropy / off-policy masks on the policy loss only; kl_cov reads the mask as its selection
  if (in.pmask.defined() && o.form != g::loss_form::kl_cov) per_tok = per_tok * in.pmask;
  // TRL / verl / Liger: the IS weight multiplies the surrogate, then the KL is added; ms-swift
  // weights the sum (is_weight_kl).
  // VESPO folds the weights into phi: they weight only its KL, and that under is_weight_kl.
  const bool folded = o.form == g::loss_form::vespo;
  Tensor kl = torch::zeros_like(lp);
  if (o.beta != 0.0) {
    kl = o.beta * kl_torch(lp, in.ref, o);
    if (o.kl_is_corrected) kl = kl * raw; // TRL: per_token_kl * coef_1 (not detached)
  }
  if (folded)
    per_tok = per_tok + (o.is_weight_kl ? kl * w : kl);
  else
    per_tok = o.is_weight_kl ? (per_tok + kl) * w : per_tok * w + kl;
  Tensor s = per_tok * m;
  const double nonempty = (L > 0).sum().item<double>();
  const double S = n.global_sequences.value_or(o.count_empty_sequences ? double(B) : nonempty);
  Tensor loss;
  switch (o.agg) {
  case g::aggregation::token_mean: {
    double N = n.global_tokens.value_or(m.sum().item<double>());
    if (o.clamp_token_count) N = std::max(N, 1.0); // TRL: .clamp(min=1.0)
    loss = s.sum() / N;
    break;
  }
  case g::aggregation::seq_mean_token_mean: {
    Tensor Lg = o.guard == g::length_guard::clamp_one ? L.clamp_min(1.0) : L + o.length_eps;
    loss = (s.sum(1) / Lg).sum() / S;
    break;
  }
  case g::aggregation::seq_mean_token_sum: loss = s.sum(1).sum() / S; break;
  case g::aggregation::seq_mean_token_sum_norm: loss = s.sum(1).sum() / (S * o.constant_normalizer); break;
  case g::aggregation::token_sum: loss = s.sum(); break;
  }
  return loss * n.scale;
}

// Row forms take one advantage per sequence.
static bool row_form(const g::loss_options& o) { return o.form == g::loss_form::vespo || o.form == g::loss_form::gmpo; }

// isw: 0 none, 1 per sequence, 2 per token
static void check(const g::loss_options& o, bool per_token, uint64_t seed, g::loss_normalizer n = {}, int isw = 0,
                  bool policy_mask = false) {
  const int64_t B = 6, T = 9;
  inputs in = make(B, T, per_token, seed);
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  if (isw == 1) in.isw = 2.5 * torch::rand({B}, f64);
  if (isw == 2) in.isw = torch::where(in.mask > 0, 2.5 * torch::rand({B, T}, f64), 1.0); // TRL: padding weighs 1
  if (policy_mask) in.pmask = (torch::rand({B, T}, f64) < 0.6).to(torch::kFloat64);
  Tensor lp = in.lp.clone().requires_grad_(true);
  Tensor lt = loss_torch(in, lp, o, n);
  lt.backward();
  Tensor gt = lp.grad();

  auto vecof = [](const Tensor& t) {
    Tensor c = t.contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  auto vlp = vecof(in.lp), vold = vecof(in.old), vref = vecof(in.ref), vadv = vecof(in.adv), vm = vecof(in.mask);
  std::vector<double> grad(vlp.size());
  std::vector<double> vw = in.isw.defined() ? vecof(in.isw) : std::vector<double>{};
  std::vector<double> vpm = in.pmask.defined() ? vecof(in.pmask) : std::vector<double>{};
  g::loss_inputs<double, double> msrl_in{msrl::token_layout::padded(B, T), vlp, vold, vref, vadv, vm, vw, vpm};
  auto r = g::policy_loss(msrl_in, o, n, std::span<double>(grad));
  const double tl = lt.item<double>();
  BOOST_TEST(std::abs(r.loss - tl) <= 1e-12 * std::max(1.0, std::abs(tl)), "loss " << r.loss << " vs torch " << tl);
  // verl's ppo_kl = masked_mean(-(logp - old)): msrl reports its negative, log_ratio_mean
  const double ppo_kl = ((in.old - in.lp) * in.mask).sum().item<double>() / in.mask.sum().item<double>();
  BOOST_TEST(std::abs(-r.metrics.log_ratio_mean - ppo_kl) <= 1e-13, "log_ratio_mean " << r.metrics.log_ratio_mean);
  auto vg = vecof(gt);
  for (std::size_t i = 0; i < grad.size(); ++i)
    BOOST_TEST(std::abs(grad[i] - vg[i]) <= 1e-12 * std::max(1.0, std::abs(vg[i])),
               "token " << i << ": " << grad[i] << " vs autograd " << vg[i]);
}

BOOST_AUTO_TEST_CASE(every_preset) {
  uint64_t seed = 1;
  for (const g::preset* p : g::presets::all) {
    BOOST_TEST_CONTEXT("preset " << p->name) {
      g::loss_options o = p->loss;
      check(o, false, seed++);
      o.beta = 0.07;
      check(o, false, seed++);
      check(o, !row_form(o), seed++, {.global_tokens = 40.0, .global_sequences = 9.0, .scale = 0.5});
    }
  }
}

BOOST_AUTO_TEST_CASE(every_mode) {
  uint64_t seed = 1000;
  for (auto level : {g::ratio_level::token, g::ratio_level::sequence, g::ratio_level::sequence_token})
    for (auto agg : {g::aggregation::token_mean, g::aggregation::seq_mean_token_mean, g::aggregation::seq_mean_token_sum,
                     g::aggregation::seq_mean_token_sum_norm, g::aggregation::token_sum})
      for (auto kl : {g::kl_estimator::k1, g::kl_estimator::abs, g::kl_estimator::k2, g::kl_estimator::k3})
        for (int v = 0; v < 4; ++v) {
          g::loss_options o{.level = level, .clip_low = 0.2, .clip_high = 0.28, .beta = 0.1, .kl = kl, .agg = agg,
                            .constant_normalizer = 32.0};
          if (v == 1) { o.dual_clip = 1.4; o.log_ratio_clamp = 0.3; o.kl_straight_through = true; }
          if (v == 2) { o.delta = 1.25; o.kl_log_ratio_clamp = 0.4; o.kl_value_clamp = 0.25; o.count_empty_sequences = false;
                        o.guard = g::length_guard::add_eps; o.sequence_log_ratio_max = 0.05; }
          if (v == 3) { o.clip_low = 0.0003; o.clip_high = 0.0004; }
          // GSPO-token needs a sequence-constant advantage to be a well-defined peer formula
          const bool per_token = level != g::ratio_level::sequence_token && v % 2 == 1;
          BOOST_TEST_CONTEXT("level " << int(level) << " agg " << int(agg) << " kl " << int(kl) << " v " << v) {
            check(o, per_token, seed++);
          }
        }
}

// DRO (no preset: verl requires dro_beta) at several coefficients, with the KL and both advantages.
BOOST_AUTO_TEST_CASE(dro_form) {
  uint64_t seed = 7000;
  for (double b : {0.0, 0.1, 1.5})
    for (auto agg : {g::aggregation::token_mean, g::aggregation::seq_mean_token_mean}) {
      g::loss_options o{.form = g::loss_form::dro, .dro_beta = b, .beta = 0.05, .agg = agg};
      BOOST_TEST_CONTEXT("dro_beta " << b) {
        check(o, false, seed++);
        check(o, true, seed++);
      }
    }
}

// Rollout IS weights (per sequence and per token) and the IS-corrected KL, in each peer's order
// of application, for every preset at both ratio levels that define the corrected KL.
BOOST_AUTO_TEST_CASE(is_weights_and_corrected_kl) {
  uint64_t seed = 5000;
  for (const g::preset* p : g::presets::all)
    for (int isw = 0; isw < 3; ++isw)
      for (int v = 0; v < 4; ++v) {
        g::loss_options o = p->loss;
        o.beta = 0.07;
        o.is_weight_kl = v % 2 == 1;
        o.kl_is_corrected = v >= 2 && o.level != g::ratio_level::sequence_token;
        BOOST_TEST_CONTEXT("preset " << p->name << " isw " << isw << " v " << v) {
          check(o, false, seed++, {}, isw);
          if (o.level != g::ratio_level::sequence_token)
            check(o, !row_form(o), seed++, {.global_tokens = 40.0, .global_sequences = 9.0, .scale = 0.5}, isw);
        }
      }
}

// The surrogate-only mask (TRL's entropy and off-policy masks) with and without IS weights, in
// TRL's order (KL unmasked) and ms-swift's (KL weighted by the IS weight only).
BOOST_AUTO_TEST_CASE(policy_mask_on_the_surrogate_only) {
  uint64_t seed = 9000;
  for (const g::preset* p : g::presets::all)
    for (int isw = 0; isw < 3; isw += 2) {
      g::loss_options o = p->loss;
      o.beta = 0.07;
      BOOST_TEST_CONTEXT("preset " << p->name << " isw " << isw) { check(o, false, seed++, {}, isw, true); }
    }
}

// entropy_quantile_threshold is torch.quantile (linear interpolation) over the unmasked values.
BOOST_AUTO_TEST_CASE(entropy_threshold_is_torch_quantile) {
  torch::manual_seed(3);
  for (int64_t n : {1, 2, 7, 50})
    for (double q : {1.0, 0.8, 0.5, 0.2, 0.01}) {
      Tensor h = torch::rand({n}, torch::kFloat64) * 3, m = (torch::rand({n}, torch::kFloat64) < 0.7).to(torch::kFloat64);
      m[0] = 1.0;
      Tensor valid = h.masked_select(m.to(torch::kBool));
      const double want = torch::quantile(valid, 1.0 - q).item<double>();
      std::vector<double> vh(h.data_ptr<double>(), h.data_ptr<double>() + n), vm(m.data_ptr<double>(), m.data_ptr<double>() + n);
      const double got = g::entropy_quantile_threshold(std::span<const double>(vh), std::span<const double>(vm), q);
      BOOST_TEST(got == want, boost::test_tools::tolerance(1e-14));
    }
}

// Edge cases: log-ratios of +-30 with and without clamps, -inf at masked positions.
BOOST_AUTO_TEST_CASE(extreme_log_ratios) {
  auto o = torch::TensorOptions().dtype(torch::kFloat64);
  inputs in;
  in.lp = torch::tensor({{-1.0, -2.0, -0.5}, {-3.0, -1.0, -std::numeric_limits<double>::infinity()}}, o);
  in.old = in.lp - torch::tensor({{30.0, -30.0, 0.1}, {29.0, -29.0, 0.0}}, o);
  in.old.index_put_({1, 2}, -1.0);
  in.ref = in.lp + torch::tensor({{30.0, -30.0, 0.2}, {-30.0, 30.0, 0.0}}, o);
  in.ref.index_put_({1, 2}, -1.0);
  in.adv = torch::tensor({-1.0, 1.0}, o);
  in.mask = torch::tensor({{1.0, 1.0, 1.0}, {1.0, 1.0, 0.0}}, o);
  for (const g::preset* p : {&g::presets::verl_default, &g::presets::ms_swift_default}) {
    g::loss_options opt = p->loss;
    opt.beta = 0.1;
    std::vector<double> grad(6);
    auto vecof = [](const Tensor& t) {
      Tensor c = t.contiguous();
      return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
    };
    auto vlp = vecof(in.lp), vold = vecof(in.old), vref = vecof(in.ref), vadv = vecof(in.adv), vm = vecof(in.mask);
    g::loss_inputs<double, double> mi{msrl::token_layout::padded(2, 3), vlp, vold, vref, vadv, vm};
    auto r = g::policy_loss(mi, opt, {.global_tokens = 5.0}, std::span<double>(grad));
    BOOST_TEST(std::isfinite(r.loss));
    for (double x : grad) BOOST_TEST(std::isfinite(x));
    BOOST_TEST(grad[5] == 0.0);
  }
}

// verl's rejection masks, transcribed from rollout_corr_helper.py compute_rollout_rejection_mask
// (verl_F.masked_sum / masked_mean with + 1e-8, seq_max with -inf fill and 0 for empty rows),
// every option alone and chained, on random log-ratios spread across the thresholds.
BOOST_AUTO_TEST_CASE(rejection_masks_match_verl) {
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const int64_t B = 12, T = 10;
  torch::manual_seed(11);
  Tensor old = -1.0 + 0.5 * torch::randn({B, T}, f64);
  Tensor roll = old - 0.6 * torch::randn({B, T}, f64);
  auto len = torch::randint(0, T + 1, {B, 1});
  len[2][0] = 0;
  Tensor mask = (torch::arange(T).unsqueeze(0) < len).to(torch::kFloat64);
  Tensor lr = torch::clamp(old - roll, -20.0, 20.0);
  Tensor k1 = -lr, k2 = 0.5 * lr.pow(2), k3 = torch::exp(lr) - 1.0 - lr;
  auto keep_of = [&](const g::rejection_criterion& c) {
    Tensor k = c.est == g::divergence::k1 ? k1 : (c.est == g::divergence::k2 ? k2 : k3);
    auto test = [&](const Tensor& s) {
      return c.est == g::divergence::k1 ? (s >= std::log(c.lower)).logical_and(s <= std::log(c.upper)) : s <= c.upper;
    };
    switch (c.scope) {
    case g::rejection_scope::token: return test(k);
    case g::rejection_scope::seq_sum: return test(torch::where(mask.to(torch::kBool), k, 0.0).sum(-1)).unsqueeze(-1).expand_as(k);
    case g::rejection_scope::seq_mean:
      return test(torch::where(mask.to(torch::kBool), k, 0.0).sum(-1) / (mask.sum(-1) + 1e-8)).unsqueeze(-1).expand_as(k);
    case g::rejection_scope::seq_max: {
      Tensor mx = k.masked_fill(mask.logical_not(), -INFINITY).amax(-1);
      mx = torch::where(mx == -INFINITY, torch::zeros_like(mx), mx);
      return test(mx).unsqueeze(-1).expand_as(k);
    }
    }
    return test(k);
  };
  auto vecof = [](const Tensor& t) {
    Tensor c = t.contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  const auto vold = vecof(old), vroll = vecof(roll), vm = vecof(mask);
  const std::vector<std::pair<std::string, std::string>> configs = {
      {"token_k1", "0.6_1.5"}, {"token_k2", "0.1"},  {"token_k3", "0.08"},   {"seq_sum_k1", "0.3_2.5"},
      {"seq_sum_k2", "0.6"},   {"seq_sum_k3", "0.5"}, {"seq_mean_k1", "1.3"}, {"seq_mean_k2", "0.09"},
      {"seq_mean_k3", "0.08"}, {"seq_max_k2", "0.3"}, {"seq_max_k3", "0.25"}, {"token_k1,seq_mean_k3", "0.5_1.8,0.1"}};
  for (const auto& [rs, th] : configs) {
    BOOST_TEST_CONTEXT("rollout_rs " << rs << " threshold " << th) {
      const auto crit = g::parse_rollout_rs(rs, th);
      Tensor keep = torch::ones_like(mask, torch::kBool);
      for (const auto& c : crit) keep = keep.logical_and(keep_of(c));
      Tensor want = mask * keep.to(torch::kFloat64);
      std::vector<double> got(B * T);
      const auto mt = g::rollout_rejection_mask(msrl::token_layout::padded(B, T), std::span<const double>(vold),
                                                std::span<const double>(vroll), std::span<const double>(vm),
                                                std::span<const g::rejection_criterion>(crit), got);
      BOOST_TEST(got == vecof(want), boost::test_tools::per_element());
      const double masked = ((1 - keep.to(torch::kFloat64)) * mask).sum().item<double>() / mask.sum().item<double>();
      BOOST_TEST(mt.masked_fraction == masked, boost::test_tools::tolerance(1e-14));
      const double seq = (keep.logical_not().logical_and(mask.to(torch::kBool))).any(-1).to(torch::kFloat64).mean().item<double>();
      BOOST_TEST(mt.seq_masked_fraction == seq, boost::test_tools::tolerance(1e-14));
      BOOST_TEST(masked > 0.0); // each threshold was chosen to reject some tokens
      BOOST_TEST(masked < 1.0);
    }
  }
}

// Clip-Cov and KL-Cov end to end: verl's compute_policy_loss_clip_cov / _kl_cov
// (verl-project/verl@1dda039 core_algos.py L1742-1925) transcribed with their selection (the
// covariance, torch.randperm over the candidates, torch.topk), against clip_cov_mask / kl_cov_mask
// writing the policy mask and policy_loss with the verl_clip_cov / verl_kl_cov presets.
static double masked_mean(const Tensor& x, const Tensor& m) { return (x * m).sum().item<double>() / m.sum().item<double>(); }

BOOST_AUTO_TEST_CASE(clip_cov_and_kl_cov_match_verl) {
  const int64_t B = 8, T = 40;
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto vecof = [](const Tensor& t) {
    Tensor c = t.contiguous().to(torch::kFloat64);
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  for (uint64_t seed = 0; seed < 6; ++seed) {
    torch::manual_seed(100 + seed);
    const double ratio = seed < 3 ? 0.03 : 2e-4;
    Tensor lp = -1.3 + 1.5 * torch::randn({B, T}, f64);
    Tensor old = lp + 0.4 * torch::randn({B, T}, f64);
    Tensor adv = 2.0 * torch::randn({B}, f64);
    Tensor mask = (torch::arange(T).unsqueeze(0) < torch::randint(0, T + 1, {B, 1})).to(torch::kFloat64);
    Tensor A = adv.unsqueeze(1).expand({B, T});
    const double ntok = mask.sum().item<double>();
    auto vlp = vecof(lp), vold = vecof(old), vadv = vecof(adv), vm = vecof(mask);
    const auto lay = msrl::token_layout::padded(B, T);
    g::loss_normalizer n{.global_tokens = ntok};

    BOOST_TEST_CONTEXT("seed " << seed) {
      // --- Clip-Cov (clip_ratio_low / _high 0.2, lb 1, ub 5)
      {
        Tensor x = lp.clone().requires_grad_(true);
        Tensor ratio_t = torch::exp(x - old);
        Tensor pg1 = -A * ratio_t, pg2 = -A * torch::clamp(ratio_t, 0.8, 1.2);
        Tensor by_origin = (pg2 > pg1).logical_and(mask > 0);
        Tensor cov = ((A - masked_mean(A, mask)) * (x - masked_mean(x.detach(), mask))).detach().clone();
        cov.masked_fill_(mask == 0, -INFINITY);
        cov.masked_fill_(by_origin, -INFINITY);
        const auto clip_num = std::max<int64_t>(static_cast<int64_t>(ratio * ntok), 1);
        Tensor idx = torch::nonzero((cov < 5.0).logical_and(cov > 1.0).logical_and(mask > 0));
        Tensor perm = torch::randperm(idx.size(0), torch::TensorOptions().dtype(torch::kInt64));
        Tensor corr = torch::ones_like(A);
        const int64_t k = std::min<int64_t>(clip_num, idx.size(0));
        if (idx.size(0) > 0) {
          Tensor pick = idx.index_select(0, perm.slice(0, 0, k));
          for (int64_t j = 0; j < k; ++j) corr[pick[j][0].item<int64_t>()][pick[j][1].item<int64_t>()] = 0.0;
        }
        Tensor loss = (torch::maximum(pg1, pg2) * corr * mask).sum() / ntok;
        loss.backward();

        std::vector<std::int64_t> vperm(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + perm.numel());
        std::vector<double> pm(vlp.size());
        const auto sel = g::clip_cov_mask(lay, std::span<const double>(vlp), std::span<const double>(vold),
                                          std::span<const double>(vadv), std::span<const double>(vm),
                                          {.ratio = ratio, .permutation = vperm}, pm);
        BOOST_TEST(sel.candidates == static_cast<std::size_t>(idx.size(0)));
        BOOST_TEST(sel.candidates > sel.selected); // a real draw among several candidates
        BOOST_TEST(sel.selected >= 1u);
        BOOST_TEST(sel.selected == static_cast<std::size_t>(k));
        BOOST_TEST(pm == vecof(corr), boost::test_tools::per_element());
        g::loss_options o = g::presets::verl_clip_cov.loss;
        std::vector<double> grad(vlp.size()), none;
        g::loss_inputs<double, double> in{lay, vlp, vold, none, vadv, vm, {}, pm};
        const auto r = g::policy_loss(in, o, n, std::span<double>(grad));
        BOOST_TEST(std::abs(r.loss - loss.item<double>()) <= 1e-12, r.loss << " vs verl " << loss.item<double>());
        auto vg = vecof(x.grad());
        for (std::size_t i = 0; i < grad.size(); ++i) BOOST_TEST(std::abs(grad[i] - vg[i]) <= 1e-12, "token " << i);
      }
      // --- KL-Cov (ppo_kl_coef 0.1)
      {
        Tensor x = lp.clone().requires_grad_(true);
        Tensor nakl = x - old;
        Tensor pg = -A * torch::exp(nakl);
        Tensor pg_kl = -A * torch::exp(nakl) + 0.1 * nakl.abs();
        Tensor valid = mask > 0;
        Tensor vidx = torch::nonzero(valid.reshape(-1)).squeeze(1);
        Tensor va = A.masked_select(valid), vl = x.detach().masked_select(valid);
        Tensor covl = (va - va.mean()) * (vl - vl.mean());
        const auto kk = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(covl.numel()) * ratio));
        Tensor top = vidx.index_select(0, std::get<1>(torch::topk(covl, kk)));
        Tensor sel_t = torch::zeros({B * T}, f64).index_fill_(0, top, 1.0).reshape({B, T});
        Tensor loss = (torch::where(sel_t > 0, pg_kl, pg) * mask).sum() / ntok;
        loss.backward();

        std::vector<double> pm(vlp.size());
        const auto sel = g::kl_cov_mask(lay, std::span<const double>(vlp), std::span<const double>(vadv),
                                        std::span<const double>(vm), {.ratio = ratio}, pm);
        BOOST_TEST(sel.selected == static_cast<std::size_t>(kk));
        BOOST_TEST(pm == vecof(sel_t), boost::test_tools::per_element());
        std::vector<double> grad(vlp.size()), none;
        g::loss_inputs<double, double> in{lay, vlp, vold, none, vadv, vm, {}, pm};
        const auto r = g::policy_loss(in, g::presets::verl_kl_cov.loss, n, std::span<double>(grad));
        BOOST_TEST(std::abs(r.loss - loss.item<double>()) <= 1e-12, r.loss << " vs verl " << loss.item<double>());
        auto vg = vecof(x.grad());
        for (std::size_t i = 0; i < grad.size(); ++i) BOOST_TEST(std::abs(grad[i] - vg[i]) <= 1e-12, "token " << i);
      }
    }
  }
}

// FIPO: ms-swift's _compute_fipo_influence (the future KL as a matmul with the decay matrix, the
// weight clip, the safety clamp) and its fipo loss (clipped ratio with the two-sided delta, times
// the detached weight, + beta k3, dapo normaliser), against fipo_weights passed as is_weights
// with the ms_swift_fipo preset.
BOOST_AUTO_TEST_CASE(fipo_matches_ms_swift) {
  const int64_t B = 6, T = 30;
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto vecof = [](const Tensor& t) {
    Tensor c = t.contiguous().to(torch::kFloat64);
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  int variant = 0;
  for (bool high_only : {true, false})
    for (double delta : {std::numeric_limits<double>::infinity(), 1.3})
      for (double safety : {4.0, 1.2}) {
        torch::manual_seed(300 + variant++);
        Tensor lp = -1.2 + 0.8 * torch::randn({B, T}, f64);
        Tensor old = lp + 0.3 * torch::randn({B, T}, f64);
        Tensor ref = lp + 0.5 * torch::randn({B, T}, f64);
        Tensor adv = torch::randn({B}, f64);
        Tensor mask = (torch::arange(T).unsqueeze(0) < torch::randint(0, T + 1, {B, 1})).to(torch::kFloat64);
        Tensor A = adv.unsqueeze(1).expand({B, T});
        Tensor cm = mask > 0;
        g::fipo_options fo{.clip_high_only = high_only, .safety_threshold = safety, .delta = delta};
        g::loss_options o = g::presets::ms_swift_fipo.loss;
        if (std::isfinite(delta)) o.delta = delta;

        Tensor x = lp.clone().requires_grad_(true);
        Tensor log_ratio = x - old;
        Tensor coef1 = torch::exp(log_ratio);
        // _compute_fipo_influence
        Tensor fkd = log_ratio.masked_fill(~cm, 0.0);
        if (std::isfinite(delta)) fkd = torch::where(coef1 > delta, torch::zeros_like(fkd), fkd);
        const double gamma = std::pow(2.0, -1.0 / fo.decay_rate);
        Tensor pos = torch::arange(T).unsqueeze(1), cpos = torch::arange(T).unsqueeze(0);
        Tensor dist = cpos - pos;
        Tensor decay = torch::pow(torch::full({}, gamma, f64), dist.clamp_min(0).to(torch::kFloat64)) * (dist >= 0).to(torch::kFloat64);
        Tensor fkl = torch::matmul(fkd, decay.t()).masked_fill(~cm, 0.0);
        Tensor w = torch::exp(fkl);
        w = torch::clamp(w, high_only ? 1.0 : 0.8, 1.2).detach();
        Tensor safe = ~((A < 0).logical_and(coef1 > safety));
        w = torch::where(safe, w, torch::clamp(w, 0.8, 1.0)).detach();
        // the loss
        Tensor c2 = torch::clamp(coef1, 0.8, 1.2);
        Tensor c1 = std::isfinite(delta) ? torch::clamp(coef1, c10::nullopt, delta) : coef1;
        Tensor per_tok = -torch::min(c1 * A, c2 * A) * w;
        Tensor sr = torch::clamp(ref - x, -20.0, 20.0);
        per_tok = per_tok + 0.04 * torch::clamp(torch::exp(sr) - sr - 1, -10.0, 10.0);
        const double ntok = mask.sum().item<double>();
        Tensor loss = (per_tok * mask).sum() / ntok;
        loss.backward();

        auto vlp = vecof(lp), vold = vecof(old), vref = vecof(ref), vadv = vecof(adv), vm = vecof(mask);
        std::vector<double> vw(vlp.size()), grad(vlp.size());
        const auto lay = msrl::token_layout::padded(B, T);
        const auto st = g::fipo_weights(lay, std::span<const double>(vlp), std::span<const double>(vold),
                                        std::span<const double>(vadv), std::span<const double>(vm), fo, vw);
        BOOST_TEST_CONTEXT("variant " << variant) {
          auto want_w = vecof(w);
          for (std::size_t i = 0; i < vw.size(); ++i)
            if (vm[i] != 0.0) BOOST_TEST(std::abs(vw[i] - want_w[i]) <= 1e-13, "weight " << i);
          BOOST_TEST(std::abs(st.future_kl_mean - masked_mean(fkl, mask)) <= 1e-13);
          BOOST_TEST(std::abs(st.weight_mean - masked_mean(w, mask)) <= 1e-13);
          BOOST_TEST(std::abs(st.safety_keep_ratio - masked_mean(safe.to(torch::kFloat64), mask)) <= 1e-13);
          g::loss_inputs<double, double> in{lay, vlp, vold, vref, vadv, vm, vw};
          const auto r = g::policy_loss(in, o, {.global_tokens = ntok}, std::span<double>(grad));
          BOOST_TEST(std::abs(r.loss - loss.item<double>()) <= 1e-12, r.loss << " vs ms-swift " << loss.item<double>());
          auto vg = vecof(x.grad());
          for (std::size_t i = 0; i < grad.size(); ++i) BOOST_TEST(std::abs(grad[i] - vg[i]) <= 1e-12, "token " << i);
        }
      }
}

// The estimators of estimators.hpp against verl's functions (verl-project/verl@1dda039
// core_algos.py compute_opo_outcome_advantage, compute_grpo_passk_outcome_advantage,
// compute_gpg_outcome_advantage, compute_reinforce_plus_plus_baseline_outcome_advantage,
// compute_reinforce_plus_plus_outcome_advantage, compute_remax_outcome_advantage, and
// torch_functional.py masked_whiten) transcribed in libtorch: outcome rewards on the last token.
static Tensor masked_mean_verl(const Tensor& v, const Tensor& m) { return (v * m).sum() / (m.sum() + 1e-8); }
static Tensor masked_whiten_verl(const Tensor& v, const Tensor& m) {
  Tensor mean = masked_mean_verl(v, m);
  Tensor var = masked_mean_verl((v - mean).pow(2), m);
  var = var * (m.sum() / (m.sum() - 1));
  return (v - mean) * torch::rsqrt(var + 1e-8);
}

BOOST_AUTO_TEST_CASE(estimators_match_verl) {
  const int64_t G = 4, groups = 5, B = G * groups, T = 9;
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto vecof = [](const Tensor& t) {
    Tensor c = t.contiguous().to(torch::kFloat64);
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  auto near = [](const std::vector<double>& a, const std::vector<double>& b, const char* what) {
    BOOST_REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) BOOST_TEST(std::abs(a[i] - b[i]) <= 1e-12 * std::max(1.0, std::abs(b[i])), what << " " << i << ": " << a[i] << " vs " << b[i]);
  };
  for (uint64_t seed = 0; seed < 4; ++seed) {
    torch::manual_seed(900 + seed);
    // binary and continuous scores; one group all equal
    Tensor scores = seed % 2 ? torch::randint(0, 2, {B}, f64) : torch::randn({B}, f64);
    scores.slice(0, 0, G).fill_(0.5);
    Tensor len = torch::randint(1, T + 1, {B, 1});
    Tensor mask = (torch::arange(T).unsqueeze(0) < len).to(torch::kFloat64);
    Tensor last = (torch::arange(T).unsqueeze(0) == len - 1).to(torch::kFloat64);
    Tensor tok = last * scores.unsqueeze(1) + (seed > 1 ? 0.05 * torch::randn({B, T}, f64) * mask : torch::zeros({B, T}, f64));
    Tensor greedy = torch::randn({B}, f64);
    auto vs = vecof(scores), vl = vecof(len.squeeze(1)), vm = vecof(mask), vt = vecof(tok), vg = vecof(greedy);
    const std::span<const double> sc(vs), ln(vl), mk(vm), tr(vt), gr(vg);
    const auto lay = msrl::token_layout::padded(B, T);
    std::vector<double> a(B), ta(B * T);
    BOOST_TEST_CONTEXT("seed " << seed) {
      Tensor sg = scores.view({groups, G}), lg = len.view({groups, G}).to(torch::kFloat64);
      // OPO: length-weighted group baseline
      Tensor opo = (sg - (lg * sg).sum(1, true) / lg.sum(1, true)).reshape({B});
      g::opo_advantages(msrl::backend::reference{}, sc, ln, G, std::span<double>(a));
      near(a, vecof(opo), "opo");
      // pass@k with std normalisation (torch.topk over each group)
      Tensor pk = torch::zeros({B}, f64);
      for (int64_t q = 0; q < groups; ++q) {
        auto [top, idx] = torch::topk(sg[q], 2);
        Tensor adv = (top[0] - top[1]) / (torch::std(sg[q]) + 1e-6);
        pk[q * G + idx[0].item<int64_t>()] = adv;
      }
      g::passk_advantages(msrl::backend::reference{}, sc, G, std::span<double>(a));
      near(a, vecof(pk), "passk");
      // GPG: alpha = B / max(nnz, 1)
      const double alpha = double(B) / std::max<double>(1.0, torch::count_nonzero(scores).item<double>());
      Tensor gpg = (alpha * (sg - sg.mean(1, true))).reshape({B});
      BOOST_TEST(g::gpg_advantages(msrl::backend::reference{}, sc, G, std::span<double>(a)) == alpha);
      near(a, vecof(gpg), "gpg");
      // REINFORCE++-baseline
      Tensor x = (sg - sg.mean(1, true)).reshape({B, 1}).expand({B, T}) * mask;
      Tensor rb = masked_whiten_verl(x, mask) * mask;
      g::reinforce_pp_baseline(msrl::backend::reference{}, lay, sc, G, mk, std::span<double>(ta));
      near(ta, vecof(rb), "reinforce_pp_baseline");
      // REINFORCE++ (gamma 0.95): verl's reversed loop, then whitening
      Tensor ret = torch::zeros_like(tok);
      Tensor run = torch::zeros({B}, f64);
      for (int64_t t = T - 1; t >= 0; --t) {
        run = tok.select(1, t) + 0.95 * run;
        ret.select(1, t).copy_(run);
        run = run * mask.select(1, t);
      }
      Tensor rpp = masked_whiten_verl(ret, mask) * mask;
      g::reinforce_pp(msrl::backend::reference{}, lay, tr, mk, 0.95, std::span<double>(ta));
      near(ta, vecof(rpp), "reinforce_pp");
      g::discounted_returns(msrl::backend::reference{}, lay, tr, mk, 0.95, std::span<double>(ta));
      near(ta, vecof(ret), "returns");
      // ReMax
      Tensor rr = (tok * mask).flip({-1}).cumsum(-1).flip({-1});
      Tensor remax = rr - greedy.unsqueeze(-1) * mask;
      g::remax_advantages(msrl::backend::reference{}, lay, tr, gr, mk, std::span<double>(ta));
      near(ta, vecof(remax), "remax");
    }
  }
}

// The data-side estimators of other peers, transcribed in libtorch from their files:
// OpenRLHF/OpenRLHF@3c3be62 experience_maker.py compute_advantages_and_returns (+ models/utils.py
// compute_reward, compute_approx_kl; get_cumulative_returns), modelscope/ms-swift@3602360
// swift/rl_core/advantage.py compute_advantages (+ grpo_trainer.py's kl_values), verl@1dda039
// compute_gdpo_outcome_advantage and ray_trainer.py apply_kl_penalty.
namespace {
struct est_batch {
  int64_t G, groups, B, T;
  Tensor scores, len, mask, old, ref;
};
est_batch est_make(uint64_t seed, int64_t G, int64_t groups, int64_t T, double score_scale) {
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  torch::manual_seed(seed);
  est_batch e{G, groups, G * groups, T, {}, {}, {}, {}, {}};
  e.scores = seed % 2 ? torch::randint(0, 2, {e.B}, f64) * score_scale : score_scale * torch::randn({e.B}, f64);
  e.scores.slice(0, 0, G).fill_(0.5); // a group with equal scores
  e.len = torch::randint(1, T + 1, {e.B, 1});
  e.len[1][0] = 0; // an empty row
  e.mask = (torch::arange(T).unsqueeze(0) < e.len).to(torch::kFloat64);
  e.old = -1.0 + 0.8 * torch::randn({e.B, T}, f64);
  e.ref = e.old + 0.5 * torch::randn({e.B, T}, f64);
  // NaN at masked-out tokens of the last column: msrl must not read them (the torch side
  // replaces them before use)
  e.ref = torch::where(e.mask > 0, e.ref, torch::full_like(e.ref, std::numeric_limits<double>::quiet_NaN()));
  return e;
}
std::vector<double> vec64(const Tensor& t) {
  Tensor c = t.contiguous().to(torch::kFloat64);
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}
void near_all(const std::vector<double>& a, const std::vector<double>& b, const std::string& what, double tol = 1e-12) {
  BOOST_REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    BOOST_TEST(std::abs(a[i] - b[i]) <= tol * std::max(1.0, std::abs(b[i])), what << " " << i << ": " << a[i] << " vs " << b[i]);
}
double masked_mean_rows(const Tensor& v, const Tensor& m) { // verl masked_mean(axis=-1), then the batch mean
  return ((v * m).sum(-1) / (m.sum(-1) + 1e-8)).mean().item<double>();
}
Tensor openrlhf_kl(const Tensor& lp, const Tensor& base, g::kl_estimator est) {
  Tensor lr = lp - base;
  if (est == g::kl_estimator::k2) lr = lr.pow(2) / 2.0;
  else if (est == g::kl_estimator::k3) lr = (-lr).exp() - 1 + lr;
  return lr.clamp(-10, 10);
}
Tensor verl_kl(const Tensor& lp, const Tensor& ref, g::kl_estimator est) {
  if (est == g::kl_estimator::k1) return lp - ref;
  if (est == g::kl_estimator::abs) return (lp - ref).abs();
  if (est == g::kl_estimator::k2) return 0.5 * (lp - ref).square();
  Tensor kl = torch::clamp(ref - lp, -20, 20);
  return torch::clamp(torch::exp(kl) - kl - 1, -10, 10);
}
} // namespace

BOOST_AUTO_TEST_CASE(openrlhf_estimators_match_experience_maker) {
  using E = g::openrlhf_estimator;
  for (uint64_t seed = 0; seed < 4; ++seed) {
    est_batch e = est_make(1300 + seed, 4, 5, 7, seed < 2 ? 1.0 : 8.0); // seeds 2-3 exceed the clip range
    const int64_t B = e.B, T = e.T, G = e.G;
    Tensor masked_ref = torch::where(e.mask > 0, e.ref, e.old); // the torch side reads every token
    for (E est : {E::reinforce, E::rloo, E::reinforce_baseline, E::group_norm, E::dr_grpo})
      for (g::kl_estimator ke : {g::kl_estimator::k1, g::kl_estimator::k2, g::kl_estimator::k3})
        for (bool no_std : {false, true}) {
          const double beta = 0.05, gamma = est == E::reinforce ? 0.9 : 1.0;
          Tensor r = e.scores.reshape({-1, G});
          if (est == E::rloo) r = r - (r.sum(-1, true) - r) / (G - 1);
          else if (est == E::reinforce_baseline || est == E::dr_grpo) r = r - r.mean(-1, true);
          else if (est == E::group_norm) r = (r - r.mean(-1, true)) / (r.std(-1, /*unbiased=*/true, /*keepdim=*/true) + 1e-9);
          r = r.reshape(-1).clamp(-10, 10);
          Tensor kl = openrlhf_kl(e.old, masked_ref, ke);
          Tensor eos = T - 1 - e.mask.to(torch::kLong).fliplr().argmax(1, true);
          Tensor reward = torch::zeros_like(kl).scatter_(1, eos, r.unsqueeze(1)) + (-beta * kl);
          Tensor rew = e.mask * reward, ret = torch::zeros_like(rew), run = torch::zeros({B}, rew.options());
          for (int64_t t = T - 1; t >= 0; --t) {
            run = rew.select(1, t) + gamma * run;
            ret.select(1, t).copy_(run);
          }
          Tensor adv = ret;
          if (est == E::reinforce || est == E::reinforce_baseline) {
            Tensor n = e.mask.sum();
            Tensor mean = (adv * e.mask).sum() / n;
            Tensor rstd = no_std ? torch::ones({}, adv.options()) : (((adv - mean).pow(2) * e.mask).sum() / n).clamp_min(1e-8).rsqrt();
            adv = (adv - mean) * rstd;
          }
          adv = adv * e.mask;
          g::openrlhf_options o;
          o.estimator = est;
          o.gamma = gamma;
          o.no_std_norm = no_std;
          o.kl = g::kl_reward_options::openrlhf(beta, ke);
          auto vs = vec64(e.scores), vo = vec64(e.old), vr = vec64(e.ref), vm = vec64(e.mask);
          std::vector<double> out(B * T);
          g::openrlhf_advantages(msrl::backend::reference{}, msrl::token_layout::padded(B, T), std::span<const double>(vs), G,
                                 std::span<const double>(vo), std::span<const double>(vr), std::span<const double>(vm),
                                 std::span<double>(out), o);
          near_all(out, vec64(adv), "openrlhf seed " + std::to_string(seed) + " est " + std::to_string(int(est)) + " kl " +
                                        std::to_string(int(ke)) + " no_std " + std::to_string(no_std));
        }
  }
}

BOOST_AUTO_TEST_CASE(swift_reinforce_pp_and_kl_in_reward_match_ms_swift) {
  for (uint64_t seed = 0; seed < 4; ++seed) {
    est_batch e = est_make(1400 + seed, 4, 5, 7, 1.0);
    const int64_t B = e.B, T = e.T, K = e.G;
    const double beta = 0.04;
    Tensor masked_ref = torch::where(e.mask > 0, e.ref, e.old);
    Tensor kl_values = ((e.old - masked_ref) * e.mask).sum(-1);
    Tensor rewards = e.scores - beta * kl_values;
    auto vs = vec64(e.scores), vo = vec64(e.old), vr = vec64(e.ref), vm = vec64(e.mask);
    std::vector<double> shaped(B), out(B);
    const auto klm = g::kl_reward_rows(msrl::backend::reference{}, msrl::token_layout::padded(B, T), std::span<const double>(vs),
                                         std::span<const double>(vo), std::span<const double>(vr), std::span<const double>(vm), g::kl_reward_options::ms_swift(beta),
                                         std::span<double>(shaped));
    near_all(shaped, vec64(rewards), "kl_in_reward");
    BOOST_TEST(std::abs(klm.row_sum_mean - kl_values.mean().item<double>()) <= 1e-12);
    BOOST_TEST(std::abs(klm.row_mean - masked_mean_rows(e.old - masked_ref, e.mask)) <= 1e-12);
    Tensor grouped = rewards.view({-1, K});
    Tensor adv0 = rewards - grouped.mean(1).repeat_interleave(K);
    for (auto sc : {g::std_scaling::batch, g::std_scaling::group, g::std_scaling::none}) {
      Tensor adv = adv0;
      if (sc == g::std_scaling::batch) adv = adv0 / (adv0.std() + 1e-4);
      if (sc == g::std_scaling::group) adv = adv0 / (adv0.view({-1, K}).std(1).repeat_interleave(K) + 1e-4);
      g::swift_reinforce_pp(msrl::backend::reference{}, std::span<const double>(shaped), K, std::span<double>(out), sc);
      near_all(out, vec64(adv), "swift reinforce_plus_plus scale " + std::to_string(int(sc)));
    }
  }
  // one completion per prompt: x = 0 everywhere (ms-swift's mean of one)
  std::vector<double> one{0.3, 0.9}, out(2);
  g::swift_reinforce_pp(msrl::backend::reference{}, std::span<const double>(one), 1, std::span<double>(out));
  BOOST_TEST(out[0] == 0.0);
  BOOST_TEST(out[1] == 0.0);
}

BOOST_AUTO_TEST_CASE(verl_gdpo_and_kl_in_reward_match_verl) {
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  for (uint64_t seed = 0; seed < 4; ++seed) {
    const int64_t G = seed == 3 ? 1 : 4; // seed 3: singletons (verl: mean 0, std 1)
    est_batch e = est_make(1500 + seed, G, 20 / G, 7, 1.0);
    const int64_t B = e.B, T = e.T, Kc = 3;
    Tensor cols = torch::randn({B, Kc}, f64);
    cols.select(1, 1).copy_(torch::randint(0, 2, {B}, f64));
    std::vector<double> w{1.0, 0.5, 2.0};
    Tensor sum = torch::zeros({B, T}, f64);
    for (int64_t k = 0; k < Kc; ++k) {
      Tensor s = cols.select(1, k).clone(), a = torch::zeros({B}, f64);
      for (int64_t q = 0; q < B / G; ++q) {
        Tensor sg = s.slice(0, q * G, (q + 1) * G);
        Tensor mean = G == 1 ? torch::zeros({}, f64) : sg.mean();
        Tensor sd = G == 1 ? torch::ones({}, f64) : torch::std(sg);
        a.slice(0, q * G, (q + 1) * G).copy_((sg - mean) / (sd + 1e-6));
      }
      sum = sum + w[k] * (a.unsqueeze(-1) * e.mask);
    }
    Tensor want = masked_whiten_verl(sum, e.mask) * e.mask;
    auto vc = vec64(cols), vm = vec64(e.mask);
    std::vector<double> out(B * T);
    g::gdpo_verl(msrl::backend::reference{}, msrl::token_layout::padded(B, T),
                 g::reward_matrix<double>{std::span<const double>(vc), std::size_t(Kc), std::span<const double>(w)}, G,
                 std::span<const double>(vm), std::span<double>(out));
    near_all(out, vec64(want), "gdpo_verl seed " + std::to_string(seed));

    // apply_kl_penalty: scores on the last valid token, minus beta * masked kl
    Tensor masked_ref = torch::where(e.mask > 0, e.ref, e.old);
    for (auto ke : {g::kl_estimator::k1, g::kl_estimator::abs, g::kl_estimator::k2, g::kl_estimator::k3}) {
      const double beta = 0.1;
      Tensor last = (torch::arange(T).unsqueeze(0) == e.len - 1).to(torch::kFloat64);
      Tensor tls = last * e.scores.unsqueeze(1);
      Tensor kld = verl_kl(e.old, masked_ref, ke) * e.mask;
      Tensor tlr = tls - beta * kld;
      const double current = masked_mean_rows(kld, e.mask);
      auto vs = vec64(e.scores), vo = vec64(e.old), vr = vec64(e.ref);
      const double kl = g::kl_reward_tokens(msrl::backend::reference{}, msrl::token_layout::padded(B, T), std::span<const double>(vs),
                                            std::span<const double>(vo), std::span<const double>(vr), std::span<const double>(vm),
                                            g::kl_reward_options::verl(beta, ke), std::span<double>(out)).row_mean;
      near_all(out, vec64(tlr), "verl kl_in_reward est " + std::to_string(int(ke)));
      BOOST_TEST(std::abs(kl - current) <= 1e-12 * std::max(1.0, std::abs(current)));
    }
  }
}

// estimate_advantages: every name gives its estimator's numbers per token; with the KL in the
// reward, verl's REINFORCE++ is transcribed (apply_kl_penalty, then the return-to-go and
// masked_whiten), the row estimators get ms-swift's shifted scores.
BOOST_AUTO_TEST_CASE(estimate_advantages_by_name) {
  const auto ref = msrl::backend::reference{};
  for (uint64_t seed = 0; seed < 2; ++seed) {
    est_batch e = est_make(1600 + seed, 4, 5, 7, 1.0);
    const int64_t B = e.B, T = e.T, G = e.G;
    const auto lay = msrl::token_layout::padded(B, T);
    auto vs = vec64(e.scores), vo = vec64(e.old), vr = vec64(e.ref), vm = vec64(e.mask);
    const std::span<const double> ss(vs), so(vo), sr(vr), sm(vm);
    Tensor lens = e.mask.sum(1);
    auto vl = vec64(lens);
    std::vector<double> got(B * T), want(B * T), rows(B);
    auto broadcast = [&](const std::vector<double>& r) {
      for (int64_t i = 0; i < B; ++i)
        for (int64_t t = 0; t < T; ++t) want[i * T + t] = vm[i * T + t] != 0.0 ? r[i] : 0.0;
    };
    for (const auto& [name, est] : g::estimator_names) {
      BOOST_TEST((g::parse_estimator(name) == est));
      BOOST_TEST(g::estimator_name(est) == name);
      for (bool with_kl : {false, true}) {
        if (est == g::estimator::verl_gdpo && with_kl) {
          // verl's GDPO takes no KL in the reward: refused by name
          g::estimate_options bad;
          bad.kl = g::kl_reward_options::verl(0.05);
          g::estimate_inputs<double, double, double> in{lay, ss, std::size_t(G), sm, so, sr};
          BOOST_CHECK_THROW(g::estimate_advantages(ref, est, in, std::span<double>(got), bad), msrl::invalid_argument);
          continue;
        }
        g::estimate_options opt;
        opt.gamma = 0.97;
        const bool orl = std::string_view(name).starts_with("openrlhf");
        opt.kl = orl ? g::kl_reward_options::openrlhf(with_kl ? 0.05 : 0.0)
                     : (with_kl ? g::kl_reward_options::verl(0.05, g::kl_estimator::k1) : g::kl_reward_options{});
        g::estimate_inputs<double, double, double> in{lay, ss, std::size_t(G), sm, so, sr};
        const auto st = g::estimate_advantages(ref, est, in, std::span<double>(got), opt);
        BOOST_TEST(st.group.num_groups == std::size_t(B / G));
        // the scores the row estimators see
        std::vector<double> sh(vs);
        if (with_kl && !orl && est != g::estimator::verl_reinforce_pp)
          g::kl_reward_rows(ref, lay, ss, so, sr, sm, opt.kl, std::span<double>(sh));
        const std::span<const double> s2(sh);
        switch (est) {
        case g::estimator::grpo: g::advantages(ref, s2, G, std::span<double>(rows)); broadcast(rows); break;
        case g::estimator::verl_reinforce_pp_baseline: g::reinforce_pp_baseline(ref, lay, s2, G, sm, std::span<double>(want)); break;
        case g::estimator::verl_opo: g::opo_advantages(ref, s2, std::span<const double>(vl), G, std::span<double>(rows)); broadcast(rows); break;
        case g::estimator::verl_gpg: g::gpg_advantages(ref, s2, G, std::span<double>(rows)); broadcast(rows); break;
        case g::estimator::verl_passk: g::passk_advantages(ref, s2, G, std::span<double>(rows)); broadcast(rows); break;
        case g::estimator::ms_swift_reinforce_pp: g::swift_reinforce_pp(ref, s2, G, std::span<double>(rows)); broadcast(rows); break;
        case g::estimator::verl_gdpo: // the scores as the one reward column
          g::gdpo_verl(ref, lay, g::reward_matrix<double>{ss, 1, {}}, G, sm, std::span<double>(want));
          break;
        case g::estimator::verl_reinforce_pp: {
          Tensor masked_ref = torch::where(e.mask > 0, e.ref, e.old);
          Tensor last = (torch::arange(T).unsqueeze(0) == e.len - 1).to(torch::kFloat64);
          Tensor tlr = last * e.scores.unsqueeze(1) - (with_kl ? 0.05 : 0.0) * (e.old - masked_ref) * e.mask;
          Tensor ret = torch::zeros_like(tlr), run = torch::zeros({B}, tlr.options());
          for (int64_t t = T - 1; t >= 0; --t) {
            run = tlr.select(1, t) + 0.97 * run;
            ret.select(1, t).copy_(run);
            run = run * e.mask.select(1, t);
          }
          want = vec64(masked_whiten_verl(ret, e.mask) * e.mask);
          break;
        }
        default: {
          g::openrlhf_options o;
          o.estimator = est == g::estimator::openrlhf_reinforce    ? g::openrlhf_estimator::reinforce
                        : est == g::estimator::openrlhf_rloo       ? g::openrlhf_estimator::rloo
                        : est == g::estimator::openrlhf_group_norm ? g::openrlhf_estimator::group_norm
                        : est == g::estimator::openrlhf_dr_grpo    ? g::openrlhf_estimator::dr_grpo
                                                                   : g::openrlhf_estimator::reinforce_baseline;
          o.gamma = 0.97;
          o.kl = opt.kl;
          g::openrlhf_advantages(ref, lay, ss, G, so, sr, sm, std::span<double>(want), o);
        }
        }
        near_all(got, want, std::string(name) + (with_kl ? " with kl" : ""));
      }
    }
  }
  BOOST_CHECK_THROW(g::parse_estimator("reinforce++"), msrl::invalid_argument);
}

// The optimal token baseline (grpo/otb.hpp) against verl's compute_optimal_token_baseline_advantage
// (verl-project/verl@1dda039 core_algos.py) transcribed in libtorch, and with sum_pi_squared from
// the host selective log-softmax kernel against the torch route (softmax, then the sum of squares).
#include <map>

#include <msrl/kernels/selective_log_softmax.hpp>

namespace {
// verl's function: `index` the prompt id per row; isw undefined = no rollout IS weights.
Tensor otb_verl(const Tensor& rewards, const Tensor& mask, const std::vector<int64_t>& index, const Tensor& old_logp,
                const Tensor& sum_pi_squared, const Tensor& isw, bool handle_zero_tail, double eps = 1e-8) {
  const int64_t B = rewards.size(0);
  Tensor returns = (rewards * mask).flip({-1}).cumsum(-1).flip({-1});
  Tensor pi = torch::exp(old_logp);
  Tensor w = 1 - 2 * pi + sum_pi_squared;
  if (isw.defined()) w = w * isw.pow(2);
  Tensor wc = (w * mask).cumsum(-1);
  std::map<int64_t, std::vector<int64_t>> groups;
  for (int64_t i = 0; i < B; ++i) groups[index[i]].push_back(i);
  Tensor base = torch::zeros_like(returns);
  for (const auto& [id, rows] : groups) {
    const auto N = static_cast<int64_t>(rows.size());
    if (N == 1) continue;
    Tensor idx = torch::tensor(rows, torch::kLong);
    Tensor rg = returns.index_select(0, idx), wg = wc.index_select(0, idx), mg = mask.index_select(0, idx);
    Tensor num = (rg * wg * mg).sum(0);
    Tensor den = (wg * mg).sum(0) + eps;
    Tensor bps = num / den;
    base.index_copy_(0, idx, bps.unsqueeze(0).expand({N, -1}).contiguous());
    if (handle_zero_tail) {
      Tensor lens = mg.sum(-1);
      Tensor sorted = std::get<0>(torch::sort(lens));
      const auto mx = static_cast<int64_t>(sorted[-1].item<double>()), second = static_cast<int64_t>(sorted[-2].item<double>());
      Tensor at_max = (lens == static_cast<double>(mx)).nonzero().flatten();
      if (at_max.numel() == 1 && mx > second) base[rows[at_max[0].item<int64_t>()]].slice(0, second).fill_(0.0);
    }
  }
  return (returns - base) * mask;
}
} // namespace

BOOST_AUTO_TEST_CASE(otb_matches_verl) {
  const auto ref = msrl::backend::reference{};
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (uint64_t seed = 0; seed < 4; ++seed) {
    torch::manual_seed(2100 + seed);
    const int64_t G = 4, groups = 6, B = G * groups, T = 13;
    Tensor len = torch::randint(1, T + 1, {B});
    // group 0: a unique longest row (zero tail); group 1: two rows of the max length; group 2: an
    // empty row; group 3: every row of the full length
    const int64_t g0[] = {3, 11, 6, 8}, g1[] = {9, 4, 9, 2}, g2[] = {0, 5, 12, 7};
    for (int64_t j = 0; j < G; ++j) {
      len[j] = g0[j];
      len[G + j] = g1[j];
      len[2 * G + j] = g2[j];
      len[3 * G + j] = T;
    }
    Tensor mask = (torch::arange(T).unsqueeze(0) < len.unsqueeze(1)).to(torch::kFloat64);
    if (seed % 2) { // holes inside rows (masked turns): lengths are counts, positions columns
      mask[4 * G][1] = 0.0;
      mask[4 * G + 2][0] = 0.0;
      mask[1][4] = 0.0;
    }
    Tensor last = (torch::arange(T).unsqueeze(0) == (len - 1).unsqueeze(1)).to(torch::kFloat64);
    Tensor scores = torch::randint(0, 2, {B, 1}, f64);
    Tensor tok = last * scores + 0.1 * torch::randn({B, T}, f64);
    Tensor old = -0.6 * torch::randn({B, T}, f64).abs() - 0.01;
    old[5][0] = -std::numeric_limits<double>::infinity(); // pi = 0 at an unmasked token
    Tensor sp2 = 0.05 + 0.9 * torch::rand({B, T}, f64);
    Tensor isw = torch::exp(0.3 * torch::randn({B, T}, f64));
    // msrl's inputs: NaN at masked tokens, which it must not read
    auto poison = [&](const Tensor& x) { return vec64(torch::where(mask > 0, x, torch::full_like(x, nan))); };
    auto vr = poison(tok), vo = poison(old), vs = poison(sp2), vw = poison(isw), vm = vec64(mask);
    const std::span<const double> sr(vr), so(vo), ss(vs), sw(vw), sm(vm);
    const auto lay = msrl::token_layout::padded(B, T);
    std::vector<double> got(B * T);
    for (int64_t gs : {G, int64_t(1), 2 * G})
      for (bool zt : {true, false})
        for (bool with_is : {false, true}) {
          std::vector<int64_t> index(B);
          for (int64_t i = 0; i < B; ++i) index[i] = i / gs;
          Tensor want = otb_verl(tok, mask, index, old, sp2, with_is ? isw : Tensor(), zt);
          g::otb_options o;
          o.handle_zero_tail = zt;
          if (with_is) g::otb_advantages(ref, lay, sr, so, ss, sw, sm, std::size_t(gs), std::span<double>(got), o);
          else g::otb_advantages(ref, lay, sr, so, ss, sm, std::size_t(gs), std::span<double>(got), o);
          near_all(got, vec64(want), "otb seed " + std::to_string(seed) + " group " + std::to_string(gs) + " zero_tail " +
                                         std::to_string(zt) + " is " + std::to_string(with_is));
          if (gs == 1) near_all(got, vec64((tok * mask).flip({-1}).cumsum(-1).flip({-1}) * mask), "otb singleton = returns");
        }
    // the packed layout: row i holds its columns [0, extent_i), positions are offsets, same numbers
    std::vector<int64_t> off{0};
    std::vector<double> pr, po, ps, pm, want_packed;
    std::vector<double> padded(B * T);
    g::otb_advantages(ref, lay, sr, so, ss, sm, std::size_t(G), std::span<double>(padded));
    for (int64_t i = 0; i < B; ++i) {
      const int64_t ext = len[i].item<int64_t>();
      for (int64_t t = 0; t < ext; ++t) {
        pr.push_back(vr[i * T + t]), po.push_back(vo[i * T + t]), ps.push_back(vs[i * T + t]), pm.push_back(vm[i * T + t]);
        want_packed.push_back(padded[i * T + t]);
      }
      off.push_back(static_cast<int64_t>(pr.size()));
    }
    std::vector<double> packed(pr.size());
    g::otb_advantages(ref, msrl::token_layout::packed(off), std::span<const double>(pr), std::span<const double>(po),
                      std::span<const double>(ps), std::span<const double>(pm), std::size_t(G), std::span<double>(packed));
    near_all(packed, want_packed, "otb packed", 0.0);
  }

  // sum_pi_squared from the kernel (fp32 logits, temperature 0.7) against the torch route; ignored
  // targets at masked tokens
  torch::manual_seed(2200);
  const int64_t G = 4, B = 8, T = 9, V = 301;
  const double temp = 0.7;
  Tensor logits = 3.0 * torch::randn({B * T, V}, torch::kFloat32);
  logits.index_put_({torch::indexing::Slice(), torch::indexing::Slice(0, V, 7)}, -std::numeric_limits<float>::infinity());
  Tensor tgt = torch::randint(1, V, {B * T}, torch::kLong);
  tgt.index_put_({tgt.remainder(7) == 0}, 1); // no -inf target
  Tensor len = torch::randint(1, T + 1, {B});
  len[0] = T, len[1] = 3, len[2] = 5, len[3] = 2; // group 0: a unique longest row
  Tensor mask = (torch::arange(T).unsqueeze(0) < len.unsqueeze(1)).to(torch::kFloat64);
  std::vector<std::int64_t> ty(tgt.data_ptr<int64_t>(), tgt.data_ptr<int64_t>() + B * T);
  for (int64_t k = 0; k < B * T; ++k)
    if (mask.view({-1})[k].item<double>() == 0.0) ty[k] = -100;
  std::vector<float> klp(B * T), ksp(B * T);
  msrl::kernels::selective_log_softmax(msrl::kernels::matrix_view<const float>{logits.data_ptr<float>(), std::size_t(B * T), std::size_t(V)},
                                       std::span<const std::int64_t>(ty), {klp, {}, {}, ksp}, {.temperature = temp});
  Tensor z = logits.to(torch::kFloat64) / temp;
  Tensor tlp = torch::log_softmax(z, -1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1).view({B, T});
  Tensor tsp = torch::softmax(z, -1).pow(2).sum(-1).view({B, T});
  auto ksp64 = std::vector<double>(ksp.begin(), ksp.end()), klp64 = std::vector<double>(klp.begin(), klp.end());
  Tensor mflat = mask.view({-1});
  auto msp = vec64(tsp.view({-1}) * mflat), mlp = vec64(tlp.view({-1}) * mflat);
  for (int64_t k = 0; k < B * T; ++k) {
    BOOST_TEST(std::abs(ksp64[k] - msp[k]) <= 1e-5 * msp[k], "sum_p2 " << k << ": " << ksp64[k] << " vs " << msp[k]);
    BOOST_TEST(std::abs(klp64[k] - mlp[k]) <= 1e-5, "logp " << k);
  }
  Tensor last = (torch::arange(T).unsqueeze(0) == (len - 1).unsqueeze(1)).to(torch::kFloat64);
  Tensor tok = last * torch::randint(0, 2, {B, 1}, torch::kFloat64);
  auto vr = vec64(tok), vm = vec64(mask);
  std::vector<double> got(B * T);
  g::otb_advantages(ref, msrl::token_layout::padded(B, T), std::span<const double>(vr), std::span<const float>(klp),
                    std::span<const float>(ksp), std::span<const double>(vm), std::size_t(G), std::span<double>(got));
  std::vector<int64_t> index(B);
  for (int64_t i = 0; i < B; ++i) index[i] = i / G;
  near_all(got, vec64(otb_verl(tok, mask, index, tlp, tsp, Tensor(), true)), "otb from the kernel's sum_p2", 1e-5);
}
