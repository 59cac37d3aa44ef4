// Conformance: the backend named by MSRL_TEST_BACKEND gives the reference backend's results for
// every operation (advantages in every mode, policy loss in every mode and preset, padded and
// packed layouts, validation errors). Tolerances: reductions may be summed in another order.
#define BOOST_TEST_MODULE conformance
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <msrl/grpo.hpp>
#ifdef MSRL_TEST_INCLUDE
#include MSRL_TEST_INCLUDE
#endif

namespace g = msrl::grpo;
using vec = std::vector<double>;
using fvec = std::vector<float>;

static const auto exec = MSRL_TEST_BACKEND;

// |a - b| <= tol * max(1, |b|): reductions summed in another order differ by rounding only.
static bool close(double a, double b, double tol) { return std::abs(a - b) <= tol * std::max(1.0, std::abs(b)); }
static_assert(msrl::execution_backend<std::remove_cv_t<decltype(exec)>>);

BOOST_AUTO_TEST_CASE(advantages_every_mode) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> coin(0, 3);
  const std::size_t G = 8, groups = 37, K = 3;
  vec r(G * groups * K);
  for (auto& x : r) {
    const int c = coin(rng);
    x = c == 0 ? std::numeric_limits<double>::quiet_NaN() : 0.5 * c;
  }
  const vec w{1.0, 0.2, 0.04};
  for (auto scaling : {g::std_scaling::none, g::std_scaling::group, g::std_scaling::batch})
    for (auto base : {g::baseline::group_mean, g::baseline::leave_one_out})
      for (auto agg : {g::reward_aggregation::sum_then_normalize, g::reward_aggregation::normalize_then_sum})
        for (auto nans : {g::nan_policy::exclude, g::nan_policy::as_zero})
          for (auto single : {g::singleton_policy::zero, g::singleton_policy::raw_score})
            for (std::size_t gs : {std::size_t(1), G}) {
              g::advantage_options o{.scaling = scaling, .singleton = single, .base = base, .aggregation = agg, .nans = nans};
              vec a_ref(G * groups), a(G * groups);
              auto s_ref = g::advantages(msrl::backend::reference{}, g::reward_matrix<double>{r, K, w}, gs,
                                         std::span<double>(a_ref), o);
              auto s = g::advantages(exec, g::reward_matrix<double>{r, K, w}, gs, std::span<double>(a), o);
              BOOST_TEST(s.zero_std_groups == s_ref.zero_std_groups);
              BOOST_TEST(s.unscorable_rows == s_ref.unscorable_rows);
              BOOST_TEST(close(s.reward_mean, s_ref.reward_mean, 1e-12));
              for (std::size_t i = 0; i < a.size(); ++i) BOOST_TEST(close(a[i], a_ref[i], 1e-10), a[i] << " vs " << a_ref[i]);
            }
}

struct data {
  std::size_t B, T;
  fvec lp, old, ref, adv_seq, adv_tok;
  std::vector<std::uint8_t> mask;
  std::vector<std::int64_t> offsets;
};

static data make(std::size_t B, std::size_t T, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  std::uniform_int_distribution<std::size_t> len(0, T);
  data d{B, T, fvec(B * T), fvec(B * T), fvec(B * T), fvec(B), fvec(B * T), std::vector<std::uint8_t>(B * T), {0}};
  for (std::size_t i = 0; i < B * T; ++i) {
    d.lp[i] = -1.2f + 0.8f * n(rng);
    d.old[i] = d.lp[i] + 0.3f * n(rng);
    d.ref[i] = d.lp[i] + 0.5f * n(rng);
    d.adv_tok[i] = n(rng);
  }
  for (auto& a : d.adv_seq) a = n(rng);
  for (std::size_t b = 0; b < B; ++b) {
    const std::size_t L = b % 5 == 3 ? 0 : len(rng);
    for (std::size_t t = 0; t < T; ++t) {
      d.mask[b * T + t] = t < L ? 1 : 0;
      if (t >= L) d.lp[b * T + t] = -std::numeric_limits<float>::infinity(); // masked -inf must stay harmless
    }
    d.offsets.push_back(d.offsets.back() + static_cast<std::int64_t>(L));
  }
  return d;
}

// The row forms (VESPO, GMPO) take one advantage per row.
static bool row_form(const g::loss_options& o) { return o.form == g::loss_form::vespo || o.form == g::loss_form::gmpo; }

template <class Exec>
static void compare_loss(const Exec& ex, const data& d, const g::loss_options& o, bool per_token, g::loss_normalizer nm,
                         int is_weights = 0, // rollout IS weights: 0 none, 1 per sequence, 2 per token
                         bool policy_mask = false) {
  const auto layout = msrl::token_layout::padded(d.B, d.T);
  std::span<const float> adv = per_token ? std::span<const float>(d.adv_tok) : std::span<const float>(d.adv_seq);
  fvec w(is_weights == 0 ? 0 : is_weights == 1 ? d.B : d.B * d.T);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = 0.2f + 0.3f * static_cast<float>((i * 5) % 7);
  std::vector<std::uint8_t> pm(policy_mask ? d.B * d.T : 0);
  for (std::size_t i = 0; i < pm.size(); ++i) pm[i] = (i * 3) % 5 != 0;
  g::loss_inputs<float> in{layout, d.lp, d.old, d.ref, adv, d.mask, w, pm};
  fvec g_ref(d.B * d.T), g_b(d.B * d.T);
  auto r_ref = g::policy_loss(msrl::backend::reference{}, in, o, nm, std::span<float>(g_ref));
  auto r = g::policy_loss(ex, in, o, nm, std::span<float>(g_b));
  BOOST_TEST(close(r.loss, r_ref.loss, 1e-10), r.loss << " vs " << r_ref.loss);
  BOOST_TEST(close(r.metrics.clip_fraction_low, r_ref.metrics.clip_fraction_low, 1e-12), r.metrics.clip_fraction_low << " vs " << r_ref.metrics.clip_fraction_low);
  BOOST_TEST(close(r.metrics.clip_fraction_high, r_ref.metrics.clip_fraction_high, 1e-12), r.metrics.clip_fraction_high << " vs " << r_ref.metrics.clip_fraction_high);
  BOOST_TEST(close(r.metrics.dual_clip_fraction, r_ref.metrics.dual_clip_fraction, 1e-12), r.metrics.dual_clip_fraction << " vs " << r_ref.metrics.dual_clip_fraction);
  BOOST_TEST(close(r.metrics.ratio_mean, r_ref.metrics.ratio_mean, 1e-10), r.metrics.ratio_mean << " vs " << r_ref.metrics.ratio_mean);
  BOOST_TEST(close(r.metrics.kl_mean, r_ref.metrics.kl_mean, 1e-10), r.metrics.kl_mean << " vs " << r_ref.metrics.kl_mean);
  BOOST_TEST(close(r.metrics.log_ratio_mean, r_ref.metrics.log_ratio_mean, 1e-10));
  for (std::size_t i = 0; i < g_b.size(); ++i) BOOST_TEST(g_b[i] == g_ref[i]); // per-token math is identical

  // Packed layout over the unmasked tokens gives the same numbers as the padded one.
  fvec lp, old, ref, at, pw;
  std::vector<std::uint8_t> ppm;
  for (std::size_t b = 0; b < d.B; ++b)
    for (std::size_t t = 0; t < d.T; ++t)
      if (d.mask[b * d.T + t]) {
        lp.push_back(d.lp[b * d.T + t]);
        old.push_back(d.old[b * d.T + t]);
        ref.push_back(d.ref[b * d.T + t]);
        at.push_back(d.adv_tok[b * d.T + t]);
        if (is_weights == 2) pw.push_back(w[b * d.T + t]);
        if (policy_mask) ppm.push_back(pm[b * d.T + t]);
      }
  if (is_weights == 1) pw = w;
  std::span<const float> padv = per_token ? std::span<const float>(at) : std::span<const float>(d.adv_seq);
  g::loss_inputs<float> pin{msrl::token_layout::packed(d.offsets), lp, old, ref, padv, {}, pw, ppm};
  fvec gp(lp.size());
  auto rp = g::policy_loss(ex, pin, o, nm, std::span<float>(gp));
  // fp32 inputs are summed in fp32 partials of up to 8 vectors, grouped by layout: the two losses
  // agree to fp32 rounding of the size of their terms (sum |d loss / d logp| (1 + |logp|)).
  double terms = std::abs(r_ref.loss);
  for (std::size_t i = 0; i < g_ref.size(); ++i)
    if (d.mask[i]) terms += std::abs(double(g_ref[i])) * (1.0 + std::abs(double(d.lp[i])));
  BOOST_TEST(std::abs(rp.loss - r_ref.loss) <= 1e-6 * terms, rp.loss << " vs " << r_ref.loss << " (terms " << terms << ")");
  std::size_t k = 0;
  for (std::size_t i = 0; i < g_ref.size(); ++i)
    if (d.mask[i]) BOOST_TEST(gp[k++] == g_ref[i]);
}

BOOST_AUTO_TEST_CASE(policy_loss_every_preset_and_mode) {
  const data d = make(23, 41, 3);
  for (const g::preset* p : g::presets::all) {
    g::loss_options o = p->loss;
    o.beta = 0.04;
    BOOST_TEST_CONTEXT("preset " << p->name) {
      compare_loss(exec, d, o, false, {});
      compare_loss(exec, d, o, !row_form(o), {.global_tokens = 1000.0, .global_sequences = 50.0, .scale = 0.25});
    }
  }
  for (auto level : {g::ratio_level::token, g::ratio_level::sequence, g::ratio_level::sequence_token})
    for (auto agg : {g::aggregation::token_mean, g::aggregation::seq_mean_token_mean, g::aggregation::seq_mean_token_sum,
                     g::aggregation::seq_mean_token_sum_norm, g::aggregation::token_sum})
      for (auto kl : {g::kl_estimator::k1, g::kl_estimator::abs, g::kl_estimator::k2, g::kl_estimator::k3}) {
        g::loss_options o{.level = level, .log_ratio_clamp = 0.5, .clip_high = 0.28, .dual_clip = 2.0, .beta = 0.1, .kl = kl,
                          .kl_value_clamp = 0.7, .agg = agg, .count_empty_sequences = false, .constant_normalizer = 64};
        BOOST_TEST_CONTEXT("level " << int(level) << " agg " << int(agg) << " kl " << int(kl)) {
          compare_loss(exec, d, o, level != g::ratio_level::sequence_token, {});
        }
      }
}

BOOST_AUTO_TEST_CASE(policy_loss_with_is_weights_and_corrected_kl) {
  const data d = make(23, 41, 5);
  int v = 0;
  for (const g::preset* p : g::presets::all)
    for (int isw = 1; isw <= 2; ++isw) {
      g::loss_options o = p->loss;
      o.beta = 0.04;
      o.kl_is_corrected = o.level != g::ratio_level::sequence_token;
      o.is_weight_kl = ++v % 2 == 0;
      BOOST_TEST_CONTEXT("preset " << p->name << " weights " << isw) {
        compare_loss(exec, d, o, isw == 2 && o.level != g::ratio_level::sequence_token && !row_form(o), {}, isw, isw == 2);
      }
    }
}

BOOST_AUTO_TEST_CASE(rollout_correction_every_preset) {
  const data d = make(23, 41, 6);
  const auto layout = msrl::token_layout::padded(d.B, d.T);
  for (const g::rollout_preset* p : g::rollout_presets::all)
    for (bool norm : {false, true}) {
      g::rollout_correction_options o = p->options;
      o.batch_normalize = norm;
      fvec w_ref(d.B * d.T), w(d.B * d.T);
      const auto m_ref = g::rollout_correction(msrl::backend::reference{}, layout, std::span<const float>(d.old),
                                               std::span<const float>(d.lp), std::span<const std::uint8_t>(d.mask), o, w_ref);
      const auto m = g::rollout_correction(exec, layout, std::span<const float>(d.old), std::span<const float>(d.lp),
                                           std::span<const std::uint8_t>(d.mask), o, w);
      BOOST_TEST_CONTEXT("preset " << p->name << " normalised " << norm) {
        for (std::size_t i = 0; i < w.size(); ++i) BOOST_TEST(close(w[i], w_ref[i], 1e-6));
        BOOST_TEST(close(m.weight_mean, m_ref.weight_mean, 1e-10));
        BOOST_TEST(close(m.effective_sample_size, m_ref.effective_sample_size, 1e-10));
        BOOST_TEST(m.weight_min == m_ref.weight_min);
        BOOST_TEST(m.weight_max == m_ref.weight_max);
        BOOST_TEST(close(m.masked_fraction, m_ref.masked_fraction, 1e-12));
        BOOST_TEST(close(m.mismatch_k3, m_ref.mismatch_k3, 1e-10));
      }
    }
}

BOOST_AUTO_TEST_CASE(rejection_masks_every_option) {
  const data d = make(23, 41, 7);
  const auto layout = msrl::token_layout::padded(d.B, d.T);
  for (const char* rs : {"token_k1", "token_k2", "token_k3", "seq_sum_k1", "seq_sum_k2", "seq_sum_k3", "seq_mean_k1",
                         "seq_mean_k2", "seq_mean_k3", "seq_max_k2", "seq_max_k3", "token_k1,seq_mean_k3,seq_max_k2"}) {
    const auto crit = g::parse_rollout_rs(rs, std::string_view(rs).find("k1") != std::string_view::npos &&
                                                      std::string_view(rs).find(',') == std::string_view::npos
                                                  ? "0.97_1.03"
                                                  : (std::string_view(rs).find(',') != std::string_view::npos ? "1.2,0.002,0.01" : "0.001"));
    std::vector<std::uint8_t> k_ref(d.B * d.T), k(d.B * d.T);
    const auto m_ref = g::rollout_rejection_mask(msrl::backend::reference{}, layout, std::span<const float>(d.old),
                                                 std::span<const float>(d.lp), std::span<const std::uint8_t>(d.mask),
                                                 std::span<const g::rejection_criterion>(crit), k_ref);
    const auto m = g::rollout_rejection_mask(exec, layout, std::span<const float>(d.old), std::span<const float>(d.lp),
                                             std::span<const std::uint8_t>(d.mask),
                                             std::span<const g::rejection_criterion>(crit), k);
    BOOST_TEST_CONTEXT("rollout_rs " << rs) {
      BOOST_TEST(k == k_ref, boost::test_tools::per_element());
      BOOST_TEST(m.masked_fraction == m_ref.masked_fraction);
      BOOST_TEST(m.seq_masked_fraction == m_ref.seq_masked_fraction);
      BOOST_TEST(m_ref.masked_fraction > 0.0);
    }
  }
}

BOOST_AUTO_TEST_CASE(validation_runs_on_the_backend) {
  data d = make(4, 5, 9);
  d.mask[0] = 1;
  d.lp[0] = std::numeric_limits<float>::quiet_NaN();
  g::loss_inputs<float> in{msrl::token_layout::padded(d.B, d.T), d.lp, d.old, d.ref, d.adv_seq, d.mask};
  BOOST_CHECK_THROW(g::policy_loss(exec, in, g::loss_options{}), msrl::value_error);
  std::vector<std::int64_t> bad{0, 5, 3, 20, 20};
  g::loss_inputs<float> pin{msrl::token_layout::packed(bad, 20), fvec(20), {}, {}, d.adv_seq, {}};
  BOOST_CHECK_THROW(g::policy_loss(exec, pin, g::loss_options{}), msrl::shape_error);
}

// The estimators of estimators.hpp on this backend against the reference backend.
BOOST_AUTO_TEST_CASE(estimators_match_reference) {
  std::mt19937 rng(23);
  std::normal_distribution<double> n(0.0, 1.0);
  std::uniform_int_distribution<int> coin(0, 2);
  const std::size_t G = 4, groups = 9, B = G * groups, T = 13;
  vec scores(B), lengths(B), base(B), tokr(B * T);
  std::vector<std::uint8_t> mask(B * T);
  for (std::size_t i = 0; i < B; ++i) {
    scores[i] = coin(rng) * 0.5;
    base[i] = n(rng);
    const std::size_t L = 1 + (i * 7) % T;
    lengths[i] = static_cast<double>(L);
    for (std::size_t t = 0; t < T; ++t) {
      mask[i * T + t] = t < L;
      tokr[i * T + t] = t + 1 == L ? scores[i] : 0.1 * n(rng);
    }
  }
  const auto lay = msrl::token_layout::padded(B, T);
  const msrl::backend::reference ref;
  auto same = [](const vec& a, const vec& b) {
    for (std::size_t i = 0; i < a.size(); ++i) BOOST_TEST(close(a[i], b[i], 1e-12), i << ": " << a[i] << " vs " << b[i]);
  };
  const std::span<const double> sc(scores), ln(lengths), bl(base), tr(tokr);
  const std::span<const std::uint8_t> mk(mask);
  vec a(B), b(B), ta(B * T), tb(B * T);
  g::opo_advantages(exec, sc, ln, G, std::span<double>(a));
  g::opo_advantages(ref, sc, ln, G, std::span<double>(b));
  same(a, b);
  g::passk_advantages(exec, sc, G, std::span<double>(a));
  g::passk_advantages(ref, sc, G, std::span<double>(b));
  same(a, b);
  BOOST_TEST(g::gpg_advantages(exec, sc, G, std::span<double>(a)) == g::gpg_advantages(ref, sc, G, std::span<double>(b)));
  same(a, b);
  g::reinforce_pp_baseline(exec, lay, sc, G, mk, std::span<double>(ta));
  g::reinforce_pp_baseline(ref, lay, sc, G, mk, std::span<double>(tb));
  same(ta, tb);
  g::reinforce_pp(exec, lay, tr, mk, 0.9, std::span<double>(ta), {.unbiased = false, .floor_eps = true});
  g::reinforce_pp(ref, lay, tr, mk, 0.9, std::span<double>(tb), {.unbiased = false, .floor_eps = true});
  same(ta, tb);
  g::remax_advantages(exec, lay, tr, bl, mk, std::span<double>(ta));
  g::remax_advantages(ref, lay, tr, bl, mk, std::span<double>(tb));
  same(ta, tb);
  // ms-swift, verl GDPO, OpenRLHF and the KL in the reward
  vec old(B * T), rl(B * T), cols(B * 2);
  for (std::size_t t = 0; t < B * T; ++t) {
    old[t] = -1.0 + 0.5 * n(rng);
    rl[t] = old[t] + 0.4 * n(rng);
  }
  for (auto& c : cols) c = n(rng);
  const std::span<const double> ol(old), rf(rl);
  for (auto scale : {g::std_scaling::batch, g::std_scaling::group, g::std_scaling::none}) {
    g::swift_reinforce_pp(exec, sc, G, std::span<double>(a), scale);
    g::swift_reinforce_pp(ref, sc, G, std::span<double>(b), scale);
    same(a, b);
  }
  BOOST_TEST(close(g::kl_reward_rows(exec, lay, sc, ol, rf, mk, g::kl_reward_options::verl(0.1, g::kl_estimator::k3), std::span<double>(a)).row_mean,
                   g::kl_reward_rows(ref, lay, sc, ol, rf, mk, g::kl_reward_options::verl(0.1, g::kl_estimator::k3), std::span<double>(b)).row_mean, 1e-12));
  same(a, b);
  for (const auto& ko : {g::kl_reward_options::verl(0.2, g::kl_estimator::k3), g::kl_reward_options::openrlhf(0.2)}) {
    BOOST_TEST(close(g::kl_reward_tokens(exec, lay, sc, ol, rf, mk, ko, std::span<double>(ta)).row_mean,
                     g::kl_reward_tokens(ref, lay, sc, ol, rf, mk, ko, std::span<double>(tb)).row_mean, 1e-12));
    same(ta, tb);
  }
  const std::vector<double> w2{1.0, 0.5};
  g::gdpo_verl(exec, lay, g::reward_matrix<double>{std::span<const double>(cols), 2, std::span<const double>(w2)}, G, mk,
               std::span<double>(ta));
  g::gdpo_verl(ref, lay, g::reward_matrix<double>{std::span<const double>(cols), 2, std::span<const double>(w2)}, G, mk,
               std::span<double>(tb));
  same(ta, tb);
  using E = g::openrlhf_estimator;
  for (E e : {E::reinforce, E::rloo, E::reinforce_baseline, E::group_norm, E::dr_grpo}) {
    g::openrlhf_options o;
    o.estimator = e;
    o.gamma = 0.95;
    o.kl = g::kl_reward_options::openrlhf(0.05, g::kl_estimator::k3);
    g::openrlhf_advantages(exec, lay, sc, G, ol, rf, mk, std::span<double>(ta), o);
    g::openrlhf_advantages(ref, lay, sc, G, ol, rf, mk, std::span<double>(tb), o);
    same(ta, tb);
  }
  // every estimator by name, with the KL in the reward
  for (const auto& [name, est] : g::estimator_names) {
    g::estimate_options eo;
    eo.gamma = 0.9;
    eo.kl = g::kl_reward_options::verl(est == g::estimator::verl_gdpo ? 0.0 : 0.05, g::kl_estimator::k3);
    const std::vector<double> w2c{1.0, 0.5};
    const g::estimate_inputs<double, double, std::uint8_t> in{lay, sc, G, mk, ol, rf, std::span<const double>(cols), 2,
                                                              std::span<const double>(w2c)};
    const auto sa = g::estimate_advantages(exec, est, in, std::span<double>(ta), eo);
    const auto sb = g::estimate_advantages(ref, est, in, std::span<double>(tb), eo);
    BOOST_TEST_CONTEXT(name) {
      same(ta, tb);
      BOOST_TEST(close(sa.kl.row_mean, sb.kl.row_mean, 1e-12));
      BOOST_TEST(close(sa.kl.row_sum_mean, sb.kl.row_sum_mean, 1e-12));
      BOOST_TEST(sa.group.zero_std_groups == sb.group.zero_std_groups);
    }
  }
  // the optimal token baseline (grpo/otb.hpp), padded and packed, with and without IS weights
  vec sp2(B * T), isw(B * T);
  for (std::size_t t = 0; t < B * T; ++t) {
    sp2[t] = 0.1 + 0.8 * std::abs(std::sin(static_cast<double>(t)));
    isw[t] = std::exp(0.3 * n(rng));
  }
  const std::span<const double> s2(sp2), iw(isw);
  for (std::size_t gs : {G, std::size_t(1)})
    for (bool zt : {true, false}) {
      g::otb_options oo;
      oo.handle_zero_tail = zt;
      g::otb_advantages(exec, lay, tr, ol, s2, mk, gs, std::span<double>(ta), oo);
      g::otb_advantages(ref, lay, tr, ol, s2, mk, gs, std::span<double>(tb), oo);
      same(ta, tb);
      g::otb_advantages(exec, lay, tr, ol, s2, iw, mk, gs, std::span<double>(ta), oo);
      g::otb_advantages(ref, lay, tr, ol, s2, iw, mk, gs, std::span<double>(tb), oo);
      same(ta, tb);
    }
  std::vector<std::int64_t> off{0};
  vec pr, po, ps;
  std::vector<std::uint8_t> pm;
  for (std::size_t i = 0; i < B; ++i) {
    for (std::size_t t = 0; t < static_cast<std::size_t>(lengths[i]); ++t) {
      pr.push_back(tokr[i * T + t]), po.push_back(old[i * T + t]), ps.push_back(sp2[i * T + t]);
      pm.push_back(static_cast<std::uint8_t>(t % 5 != 3)); // a few holes
    }
    off.push_back(static_cast<std::int64_t>(pr.size()));
  }
  const auto play = msrl::token_layout::packed(off);
  vec pa(pr.size()), pb(pr.size());
  g::otb_advantages(exec, play, std::span<const double>(pr), std::span<const double>(po), std::span<const double>(ps),
                    std::span<const std::uint8_t>(pm), G, std::span<double>(pa));
  g::otb_advantages(ref, play, std::span<const double>(pr), std::span<const double>(po), std::span<const double>(ps),
                    std::span<const std::uint8_t>(pm), G, std::span<double>(pb));
  same(pa, pb);
}
