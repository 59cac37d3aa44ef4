// The token and row selections of grpo/token_masks.hpp on hand-worked cases, and their effect in
// the loss: a surrogate-only mask equals zeroing those tokens' advantages (the KL stays).
#define BOOST_TEST_MODULE grpo_masks
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <string>
#include <vector>

#include <msrl/grpo.hpp>

namespace g = msrl::grpo;
using vec = std::vector<double>;
using bytes = std::vector<std::uint8_t>;

BOOST_AUTO_TEST_CASE(entropy_threshold_by_hand) {
  // unmasked values 1, 2, 4, 8 (the 100 is masked); q = 0.5: position 0.5 * 3 = 1.5 -> 2 + 0.5 * 2 = 3
  const vec h{4, 1, 100, 8, 2};
  const bytes m{1, 1, 0, 1, 1};
  BOOST_TEST(g::entropy_quantile_threshold(std::span<const double>(h), std::span<const std::uint8_t>(m), 0.5) == 3.0);
  BOOST_TEST(g::entropy_quantile_threshold(std::span<const double>(h), std::span<const std::uint8_t>(m), 1.0) == 1.0);
  bytes keep(5);
  const double th = g::high_entropy_mask(std::span<const double>(h), std::span<const std::uint8_t>(m), 0.5, keep);
  BOOST_TEST(th == 3.0);
  BOOST_TEST((keep == bytes{1, 0, 0, 1, 0}));
  // no unmasked token: nothing is kept (TRL)
  const bytes none(5, 0);
  BOOST_TEST(g::high_entropy_mask(std::span<const double>(h), std::span<const std::uint8_t>(none), 0.2, keep) ==
             HUGE_VAL);
  BOOST_TEST((keep == bytes(5, 0)));
  BOOST_CHECK_THROW(g::entropy_quantile_threshold(std::span<const double>(h), std::span<const std::uint8_t>(m), 0.0),
                    msrl::invalid_argument);
}

BOOST_AUTO_TEST_CASE(off_policy_rows_by_hand) {
  // Row 0: A < 0, mean deviation (0.5 + 0.3) / 2 = 0.4 > 0.25 -> dropped. Row 1: same deviation, A = 0 ->
  // kept (TRL never masks A >= 0). Row 2: A < 0, deviation 0.1 -> kept. The masked token of row 2
  // does not count.
  const auto lay = msrl::token_layout::padded(3, 2);
  const vec lp{-1.0, -2.0, -1.0, -2.0, -1.0, -3.0};
  const vec samp{-0.5, -1.7, -0.5, -1.7, -0.9, 5.0};
  const vec adv{-1.0, 0.0, -2.0};
  const bytes m{1, 1, 1, 1, 1, 0};
  bytes keep(6);
  const auto dropped =
      g::off_policy_sequence_mask(lay, std::span<const double>(lp), std::span<const double>(samp),
                                  std::span<const double>(adv), std::span<const std::uint8_t>(m), 0.25, keep);
  BOOST_TEST(dropped == 1u);
  BOOST_TEST((keep == bytes{0, 0, 1, 1, 1, 0}));
  // per-token advantages: the row's masked mean decides (ms-swift)
  const vec adv_tok{-1.0, 0.5, 1.0, -1.0, -2.0, 100.0};
  g::off_policy_sequence_mask(lay, std::span<const double>(lp), std::span<const double>(samp),
                              std::span<const double>(adv_tok), std::span<const std::uint8_t>(m), 0.25, keep);
  BOOST_TEST((keep == bytes{0, 0, 1, 1, 1, 0}));
  BOOST_CHECK_THROW(g::off_policy_sequence_mask(lay, std::span<const double>(lp), std::span<const double>(vec(5)),
                                                std::span<const double>(adv), std::span<const std::uint8_t>(m), 0.25,
                                                keep),
                    msrl::shape_error);
}

// With beta = 0 a token the policy mask drops contributes nothing, exactly as a zero advantage on
// that token would (every built-in form's surrogate is 0 at A = 0, and so is its gradient); with
// beta > 0 the KL term of the dropped token remains.
BOOST_AUTO_TEST_CASE(policy_mask_equals_zeroed_advantages) {
  const std::size_t B = 3, T = 4;
  vec lp(B * T), old(B * T), ref(B * T), adv{0.7, -1.2, 0.4}, adv_tok(B * T);
  bytes pm(B * T), mask(B * T, 1);
  for (std::size_t k = 0; k < B * T; ++k) {
    lp[k] = -1.0 - 0.1 * static_cast<double>(k % 5);
    old[k] = lp[k] + 0.05 * static_cast<double>(k % 3) - 0.04;
    ref[k] = lp[k] + 0.2;
    pm[k] = k % 3 != 1;
    adv_tok[k] = pm[k] ? adv[k / T] : 0.0;
  }
  const auto lay = msrl::token_layout::padded(B, T);
  for (const g::preset* p : g::presets::all) {
    if (p->loss.level != g::ratio_level::token || p->loss.form == g::loss_form::vespo ||
        p->loss.form == g::loss_form::gmpo || p->loss.form == g::loss_form::kl_cov)
      continue; // the row forms take one advantage per row; kl_cov reads the mask as its selection
    BOOST_TEST_CONTEXT("preset " << p->name) {
      g::loss_options o = p->loss;
      o.beta = 0.0;
      vec g1(B * T), g2(B * T);
      const auto r1 = g::policy_loss(g::loss_inputs<double>{lay, lp, old, ref, adv, mask, {}, pm}, o, {}, g1);
      const auto r2 = g::policy_loss(g::loss_inputs<double>{lay, lp, old, ref, adv_tok, mask}, o, {}, g2);
      BOOST_TEST(r1.loss == r2.loss, boost::test_tools::tolerance(1e-13));
      for (std::size_t k = 0; k < g1.size(); ++k) BOOST_TEST(g1[k] == g2[k], boost::test_tools::tolerance(1e-13));
      o.beta = 0.1; // the KL stays on every token: the difference is beta * KL of the dropped tokens only
      const auto k1 = g::policy_loss(g::loss_inputs<double>{lay, lp, old, ref, adv, mask, {}, pm}, o, {}, g1);
      const auto k2 = g::policy_loss(g::loss_inputs<double>{lay, lp, old, ref, adv_tok, mask}, o, {}, g2);
      BOOST_TEST(k1.metrics.kl_loss == k2.metrics.kl_loss, boost::test_tools::tolerance(1e-13));
      BOOST_TEST(k1.loss == k2.loss, boost::test_tools::tolerance(1e-13));
    }
  }
  bytes bad = pm;
  bad[2] = 2;
  BOOST_CHECK_THROW(g::policy_loss(g::loss_inputs<double>{lay, lp, old, ref, adv, mask, {}, bad}, g::loss_options{}),
                    msrl::value_error);
}

// TRL's mask_truncated_completions by hand: EOS 2 (and 9), pad 0. Padded rows: [5 6 2 0] ends in
// pad (kept), [5 6 7 8] ran out (dropped), [5 6 7 2] ends in EOS (kept), [4 9 0 0] ends in pad.
BOOST_AUTO_TEST_CASE(truncated_completions_leave_the_mask) {
  const std::vector<int> ids{5, 6, 2, 0, 5, 6, 7, 8, 5, 6, 7, 2, 4, 9, 0, 0}, eos{2, 9};
  const bytes mask{1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
  bytes out(16, 7);
  const auto n = g::truncated_completion_mask(msrl::token_layout::padded(4, 4), std::span<const int>(ids),
                                              std::span<const std::uint8_t>(mask), std::span<const int>(eos), 0, out);
  BOOST_TEST(n == 1u);
  BOOST_TEST(out == (bytes{1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0}), boost::test_tools::per_element());
  // packed: rows [5 6 2], [5 6 7], [] -> the second is truncated, the empty one is not
  const std::vector<std::int64_t> off{0, 3, 6, 6};
  const std::vector<int> pids{5, 6, 2, 5, 6, 7};
  bytes pout(6);
  BOOST_TEST(g::truncated_completion_mask(msrl::token_layout::packed(off), std::span<const int>(pids),
                                          std::span<const std::uint8_t>{}, std::span<const int>(eos), 0, pout) == 1u);
  BOOST_TEST(pout == (bytes{1, 1, 1, 0, 0, 0}), boost::test_tools::per_element());
  BOOST_CHECK_THROW(g::truncated_completion_mask(msrl::token_layout::padded(4, 4), std::span<const int>(ids),
                                                 std::span<const std::uint8_t>(mask), std::span<const int>{}, 0, out),
                    msrl::invalid_argument);
}
