// The rollout/training mismatch correction (grpo/rollout_correction.hpp) against each peer's
// formula transcribed on its own (TRL, verl, ms-swift, OpenRLHF as the reference notes give them),
// the IS weights' effect on the loss against the advantage-scaling identity, and the errors.
#define BOOST_TEST_MODULE grpo_rollout
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <msrl/grpo.hpp>
#include <msrl/grpo/rollout_correction.hpp>

namespace g = msrl::grpo;
using vec = std::vector<double>;

struct batch {
  std::size_t B, T;
  vec old, roll;
  std::vector<std::uint8_t> mask;
};

// Log-ratios spread over [-1.5, 1.5] with a few at +-25 (beyond the safety clamps).
static batch make(unsigned seed, std::size_t B = 7, std::size_t T = 6) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  std::uniform_real_distribution<double> u(-1.5, 1.5);
  batch b{B, T, vec(B * T), vec(B * T), std::vector<std::uint8_t>(B * T)};
  for (std::size_t i = 0; i < B * T; ++i) {
    b.old[i] = -1.2 + 0.5 * n(rng);
    b.roll[i] = b.old[i] - u(rng) * (i % 17 == 3 ? 0.0 : 1.0) - (i == 9 ? 25.0 : 0.0) + (i == 30 ? 25.0 : 0.0);
  }
  for (std::size_t i = 0; i < B; ++i) {
    const std::size_t len = i == 2 ? 0 : 1 + (i * 5 + seed) % T;
    for (std::size_t t = 0; t < T; ++t) b.mask[i * T + t] = t < len ? 1 : 0;
  }
  return b;
}

static double clampd(double x, double lo, double hi) { return std::min(std::max(x, lo), hi); }
static double masked_sum_r(const batch& b, std::size_t i, double c) { // sum_t m * clamp(r_t, +-c)
  double s = 0;
  for (std::size_t t = 0; t < b.T; ++t)
    if (b.mask[i * b.T + t]) s += clampd(b.old[i * b.T + t] - b.roll[i * b.T + t], -c, c);
  return s;
}
static double row_len(const batch& b, std::size_t i) {
  double L = 0;
  for (std::size_t t = 0; t < b.T; ++t) L += b.mask[i * b.T + t];
  return L;
}

// Each peer's weights, written from its own description (reference notes §1, gap 1).
static vec peer_weights(const std::string& name, const batch& b) {
  const double inf = INFINITY;
  vec w(b.B * b.T, 0.0);
  for (std::size_t i = 0; i < b.B; ++i)
    for (std::size_t t = 0; t < b.T; ++t) {
      const std::size_t k = i * b.T + t;
      const double r = b.old[k] - b.roll[k];
      double x = 0;
      if (name == "trl_token_truncate")
        x = std::min(std::exp(r), 3.0);
      else if (name == "trl_token_mask")
        x = std::exp(r) * (std::exp(r) <= 3.0);
      else if (name == "trl_sequence_truncate")
        x = std::min(std::exp(masked_sum_r(b, i, inf)), 3.0);
      else if (name == "trl_sequence_mask") {
        const double W = std::exp(masked_sum_r(b, i, inf));
        x = W * (W <= 3.0);
      } else if (name == "verl_token_tis")
        x = std::min(std::exp(clampd(r, -20, 20)), 2.0);
      else if (name == "verl_sequence_tis")
        x = std::min(std::exp(clampd(masked_sum_r(b, i, inf), -20, 20)), 2.0);
      else if (name == "ms_swift_token_truncate")
        x = std::min(std::exp(clampd(r, -20, 20)), 2.0);
      else if (name == "ms_swift_token_mask") {
        const double e = std::exp(clampd(r, -20, 20));
        x = e * (e <= 2.0);
      } else if (name == "ms_swift_sequence_truncate")
        x = std::min(std::exp(masked_sum_r(b, i, 20) / std::max(row_len(b, i), 1.0)), 2.0);
      else if (name == "ms_swift_sequence_mask")
        x = std::exp(clampd(r, -20, 20)) * (std::exp(masked_sum_r(b, i, 20) / std::max(row_len(b, i), 1.0)) <= 2.0);
      else if (name == "openrlhf_tis")
        x = clampd(std::exp(r), 0.5, 5.0);
      else if (name == "openrlhf_icepop") {
        const double e = std::exp(r);
        x = e * (e >= 0.5 && e <= 5.0);
      } else if (name == "openrlhf_seq_mask_tis") {
        const double W = std::exp(masked_sum_r(b, i, inf) / std::max(row_len(b, i), 1.0));
        x = std::exp(r) * (W >= 0.5 && W <= 5.0);
      } else
        BOOST_FAIL("no transcription for " << name);
      w[k] = b.mask[k] ? x : 0.0;
    }
  return w;
}

static vec run(const batch& b, const g::rollout_correction_options& o, g::rollout_correction_metrics* mt = nullptr) {
  vec w(b.B * b.T, -1.0);
  const auto m = g::rollout_correction(msrl::token_layout::padded(b.B, b.T), std::span<const double>(b.old),
                                       std::span<const double>(b.roll), std::span<const std::uint8_t>(b.mask), o, w);
  if (mt) *mt = m;
  return w;
}

BOOST_AUTO_TEST_CASE(every_peer_preset_matches_its_transcription) {
  for (unsigned seed = 1; seed < 6; ++seed) {
    const batch b = make(seed);
    for (const g::rollout_preset* p : g::rollout_presets::all) {
      BOOST_TEST_CONTEXT("preset " << p->name << " seed " << seed) {
        const vec got = run(b, p->options), want = peer_weights(std::string(p->name), b);
        for (std::size_t k = 0; k < got.size(); ++k)
          BOOST_TEST(std::abs(got[k] - want[k]) <= 1e-14 * std::max(1.0, std::abs(want[k])),
                     "token " << k << ": " << got[k] << " vs " << want[k]);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(metrics_from_the_weights) {
  const batch b = make(11);
  g::rollout_correction_metrics mt;
  const auto& o = g::rollout_presets::trl_token_mask.options;
  const vec w = run(b, o, &mt);
  double n = 0, s = 0, s2 = 0, masked = 0, high = 0, k1 = 0, k3 = 0, lo = INFINITY, hi = -INFINITY;
  for (std::size_t k = 0; k < w.size(); ++k) {
    if (!b.mask[k]) continue;
    const double r = b.old[k] - b.roll[k];
    n += 1, s += w[k], s2 += w[k] * w[k];
    masked += std::exp(r) > 3.0;
    high += std::exp(r) > 3.0;
    k1 += -r, k3 += std::exp(r) - 1 - r;
    lo = std::min(lo, w[k]), hi = std::max(hi, w[k]);
  }
  BOOST_TEST(mt.tokens == n);
  BOOST_TEST(mt.weight_mean == s / n, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(mt.effective_sample_size == s * s / (n * s2), boost::test_tools::tolerance(1e-14));
  BOOST_TEST(mt.masked_fraction == masked / n, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(masked > 0); // the +25 log-ratio token is dropped
  BOOST_TEST(mt.fraction_high == high / n, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(mt.fraction_low == 0.0);
  BOOST_TEST(mt.mismatch_k1 == k1 / n, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(mt.mismatch_k3 == k3 / n, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(mt.weight_min == lo);
  BOOST_TEST(mt.weight_max == hi);
}

// verl rollout_is_batch_normalize: token level divides by the masked token mean, sequence level by
// the mean of the non-empty rows' weights.
BOOST_AUTO_TEST_CASE(batch_normalisation) {
  const batch b = make(4);
  for (auto level : {g::is_level::token, g::is_level::sequence}) {
    g::rollout_correction_options o = level == g::is_level::token ? g::rollout_presets::verl_token_tis.options
                                                                  : g::rollout_presets::verl_sequence_tis.options;
    const vec raw = run(b, o);
    o.batch_normalize = true;
    g::rollout_correction_metrics mt;
    const vec w = run(b, o, &mt);
    double num = 0, den = 0;
    for (std::size_t i = 0; i < b.B; ++i) {
      if (level == g::is_level::sequence) {
        if (row_len(b, i) > 0) num += raw[i * b.T], den += 1; // every token of a row has its weight
        continue;
      }
      for (std::size_t t = 0; t < b.T; ++t)
        if (b.mask[i * b.T + t]) num += raw[i * b.T + t], den += 1;
    }
    const double mean = num / den;
    BOOST_TEST(mt.batch_norm_factor == mean, boost::test_tools::tolerance(1e-14));
    for (std::size_t k = 0; k < w.size(); ++k) BOOST_TEST(w[k] == raw[k] / mean, boost::test_tools::tolerance(1e-14));
  }
}

// For w >= 0 the clipped surrogate is positively homogeneous in A, so weighting token t by w_t
// equals scaling its advantage by w_t (beta = 0): an independent route to the weighted loss.
BOOST_AUTO_TEST_CASE(weights_equal_scaled_advantages) {
  std::mt19937 rng(3);
  std::normal_distribution<double> n(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 3.0);
  const std::size_t B = 5, T = 8;
  vec lp(B * T), old(B * T), adv(B), w(B * T), advw(B * T);
  std::vector<std::uint8_t> mask(B * T, 1);
  for (std::size_t k = 0; k < B * T; ++k) lp[k] = -1 + 0.5 * n(rng), old[k] = lp[k] + 0.3 * n(rng), w[k] = u(rng);
  for (auto& a : adv) a = n(rng);
  for (std::size_t t = 5; t < T; ++t) mask[3 * T + t] = 0;
  for (std::size_t k = 0; k < B * T; ++k) advw[k] = adv[k / T] * w[k];
  for (const g::preset* p : g::presets::all) {
    if (p->loss.level != g::ratio_level::token || p->loss.form == g::loss_form::sapo ||
        p->loss.form == g::loss_form::vespo || p->loss.form == g::loss_form::gmpo ||
        p->loss.form == g::loss_form::kl_cov)
      continue; // forms homogeneous in A only (the row forms fold the weights into their row; kl_cov's
                // |log-ratio| term does not scale with A)
    BOOST_TEST_CONTEXT("preset " << p->name) {
      g::loss_options o = p->loss;
      o.beta = 0.0;
      vec g1(B * T), g2(B * T);
      const auto lay = msrl::token_layout::padded(B, T);
      const auto r1 = g::policy_loss(g::loss_inputs<double>{lay, lp, old, {}, adv, mask, w}, o, {}, g1);
      const auto r2 = g::policy_loss(g::loss_inputs<double>{lay, lp, old, {}, advw, mask}, o, {}, g2);
      BOOST_TEST(r1.loss == r2.loss, boost::test_tools::tolerance(1e-13));
      for (std::size_t k = 0; k < g1.size(); ++k) BOOST_TEST(g1[k] == g2[k], boost::test_tools::tolerance(1e-13));
    }
  }
}

BOOST_AUTO_TEST_CASE(bad_options_and_inputs_are_refused_by_name) {
  const batch b = make(2);
  auto fails = [&](g::rollout_correction_options o, const std::string& what) {
    try {
      run(b, o);
      BOOST_ERROR("no error for " << what);
    } catch (const msrl::error& e) {
      BOOST_TEST(std::string(e.what()).find(what) != std::string::npos, e.what());
    }
  };
  fails({.lower = 3.0, .upper = 2.0}, "options.lower");
  fails({.lower = -1.0}, "options.lower");
  fails({.upper = 0.0}, "options.upper");
  fails({.level = g::is_level::token, .mode = g::is_mode::row_gated}, "row_gated");
  fails({.log_ratio_clamp = 0.0}, "options.log_ratio_clamp");
  vec w(3);
  BOOST_CHECK_THROW(g::rollout_correction(msrl::token_layout::padded(b.B, b.T), std::span<const double>(b.old),
                                          std::span<const double>(b.roll), std::span<const std::uint8_t>(b.mask), {},
                                          w),
                    msrl::shape_error);
  batch bad = b;
  bad.roll[0] = NAN;
  try {
    run(bad, {});
    BOOST_ERROR("NaN accepted");
  } catch (const msrl::value_error& e) {
    BOOST_TEST(std::string(e.what()).find("rollout_logp") != std::string::npos, e.what());
  }
  BOOST_CHECK_THROW(g::find_rollout_preset("vllm"), msrl::invalid_argument);
  BOOST_TEST(g::find_rollout_preset("trl_sequence_mask").options.upper == 3.0);
}

BOOST_AUTO_TEST_CASE(loss_refuses_bad_weights) {
  const std::size_t B = 2, T = 3;
  vec lp(B * T, -1.0), adv{1.0, -1.0}, w(B * T, 1.0);
  const auto lay = msrl::token_layout::padded(B, T);
  w[4] = -0.5;
  BOOST_CHECK_THROW(g::policy_loss(g::loss_inputs<double>{lay, lp, {}, {}, adv, {}, w}, {}), msrl::value_error);
  w[4] = NAN;
  BOOST_CHECK_THROW(g::policy_loss(g::loss_inputs<double>{lay, lp, {}, {}, adv, {}, w}, {}), msrl::value_error);
  vec w3(3, 1.0);
  BOOST_CHECK_THROW(g::policy_loss(g::loss_inputs<double>{lay, lp, {}, {}, adv, {}, w3}, {}), msrl::shape_error);
  g::loss_options o{.level = g::ratio_level::sequence_token, .kl_is_corrected = true};
  BOOST_CHECK_THROW(g::policy_loss(g::loss_inputs<double>{lay, lp, {}, {}, adv}, o), msrl::invalid_argument);
}

// Rejection masks (grpo/rejection_mask.hpp) by hand: one row, r = (0, ln 3, -ln 3), k1 = -r.
// token_k1 with ratio bounds [0.5, 2] keeps only the first token; seq_sum_k1 (sum 0) keeps the
// row; seq_max_k2 at 0.5 drops it (max k2 = ln^2 3 / 2 = 0.603); the second row (all r = 0) stays.
BOOST_AUTO_TEST_CASE(rejection_masks_by_hand) {
  const double l3 = std::log(3.0);
  const vec old{-1.0, -1.0, -1.0, -2.0, -2.0, -2.0}, roll{-1.0, -1.0 - l3, -1.0 + l3, -2.0, -2.0, -2.0};
  const std::vector<std::uint8_t> mask{1, 1, 1, 1, 1, 0};
  const auto lay = msrl::token_layout::padded(2, 3);
  auto run = [&](std::string_view rs, std::string_view th) {
    const auto crit = g::parse_rollout_rs(rs, th);
    std::vector<std::uint8_t> kept(6, 7);
    const auto mt = g::rollout_rejection_mask(lay, std::span<const double>(old), std::span<const double>(roll),
                                              std::span<const std::uint8_t>(mask),
                                              std::span<const g::rejection_criterion>(crit), kept);
    return std::pair{kept, mt};
  };
  {
    const auto [kept, mt] = run("token_k1", "0.5_2");
    BOOST_TEST(kept == (std::vector<std::uint8_t>{1, 0, 0, 1, 1, 0}), boost::test_tools::per_element());
    BOOST_TEST(mt.tokens == 5.0);
    BOOST_TEST(mt.masked_fraction == 2.0 / 5.0, boost::test_tools::tolerance(1e-15));
    BOOST_TEST(mt.seq_masked_fraction == 0.5);
  }
  {
    const auto [kept, mt] = run("seq_sum_k1", "0.5_2");
    BOOST_TEST(kept == (std::vector<std::uint8_t>{1, 1, 1, 1, 1, 0}), boost::test_tools::per_element());
  }
  {
    const auto [kept, mt] = run("seq_max_k2,token_k3", "0.5,100");
    BOOST_TEST(kept == (std::vector<std::uint8_t>{0, 0, 0, 1, 1, 0}), boost::test_tools::per_element());
    BOOST_TEST(mt.criterion_masked_fraction[0] == 3.0 / 5.0, boost::test_tools::tolerance(1e-15));
    BOOST_TEST(mt.criterion_masked_fraction[1] == 0.0);
  }
  // "2" for a k1 option means [1/2, 2]
  const auto c = g::parse_rollout_rs("token_k1 , token_k1", "2");
  BOOST_TEST(c.size() == 1u);
  BOOST_TEST(c[0].lower == 0.5);
  BOOST_TEST(c[0].upper == 2.0);
}

BOOST_AUTO_TEST_CASE(rejection_mask_errors_name_the_argument) {
  auto fails = [](std::string_view rs, std::string_view th, const std::string& what) {
    try {
      (void)g::parse_rollout_rs(rs, th);
      BOOST_ERROR("no exception for " << rs << " / " << th);
    } catch (const msrl::invalid_argument& e) {
      BOOST_TEST(std::string(e.what()).find(what) != std::string::npos, e.what());
    }
  };
  fails("token_k4", "1", "rollout_rs");
  fails("seq_max_k1", "1", "rollout_rs");
  fails("", "1", "rollout_rs");
  fails("token_k1,token_k2,token_k3", "1,2", "rollout_rs_threshold");
  fails("token_k1", "0.5_x", "rollout_rs_threshold");
  fails("token_k1", "2_1", "rollout_rs_threshold");
  fails("token_k3", "0.1_0.2", "rollout_rs_threshold");
  fails("token_k2", "-1", "rollout_rs_threshold");
  fails("token_k2", "nan", "rollout_rs_threshold");
  const vec x{-1.0, -1.0};
  std::vector<std::uint8_t> kept(2);
  const std::vector<g::rejection_criterion> none;
  BOOST_CHECK_THROW(g::rollout_rejection_mask(msrl::token_layout::padded(1, 2), std::span<const double>(x),
                                              std::span<const double>(x), std::span<const std::uint8_t>{},
                                              std::span<const g::rejection_criterion>(none), kept),
                    msrl::invalid_argument);
  const std::vector<g::rejection_criterion> bad{{.scope = g::rejection_scope::token, .est = g::divergence::k1, .lower = 3.0, .upper = 2.0}};
  BOOST_CHECK_THROW(g::rollout_rejection_mask(msrl::token_layout::padded(1, 2), std::span<const double>(x),
                                              std::span<const double>(x), std::span<const std::uint8_t>{},
                                              std::span<const g::rejection_criterion>(bad), kept),
                    msrl::invalid_argument);
  const vec nan_roll{-1.0, NAN};
  const auto ok = g::parse_rollout_rs("token_k2", "1");
  BOOST_CHECK_THROW(g::rollout_rejection_mask(msrl::token_layout::padded(1, 2), std::span<const double>(x),
                                              std::span<const double>(nan_roll), std::span<const std::uint8_t>{},
                                              std::span<const g::rejection_criterion>(ok), kept),
                    msrl::invalid_argument);
}
