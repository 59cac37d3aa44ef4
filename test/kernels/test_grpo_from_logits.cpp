// The fused GRPO loss from logits equals the core's path (double-precision log-softmax ->
// msrl::grpo::policy_loss -> chain rule) for every preset and mode, and its gradient equals
// central finite differences of that double path.
#define BOOST_TEST_MODULE kernels_grpo_from_logits
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <msrl/grpo.hpp>
#include <msrl/kernels/grpo_loss.hpp>

#include "reference.hpp"

namespace g = msrl::grpo;
namespace k = msrl::kernels;

struct isa_cap_guard {
  ~isa_cap_guard() { msrl::clear_isa_cap(); }
};

struct batch {
  std::size_t B, T, V;
  std::vector<float> x;
  std::vector<double> xd;
  std::vector<std::int64_t> y;
  std::vector<float> old, ref, adv;
  std::vector<std::uint8_t> mask;
  std::vector<std::int64_t> offsets; // packed layout over the same tokens (unequal lengths)
};

static batch make(unsigned seed, std::size_t B, std::size_t T, std::size_t V) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  const std::size_t N = B * T;
  batch b{B, T, V, std::vector<float>(N * V), std::vector<double>(N * V), std::vector<std::int64_t>(N),
          std::vector<float>(N), std::vector<float>(N), std::vector<float>(B), std::vector<std::uint8_t>(N), {}};
  for (std::size_t i = 0; i < N * V; ++i) b.xd[i] = b.x[i] = 2.f * n(rng);
  for (std::size_t i = 0; i < N; ++i) {
    b.y[i] = static_cast<std::int64_t>(rng() % V);
    // a logit bump so the target log-probs sit near -1..-3 and ratios spread around the clip range
    b.x[i * V + static_cast<std::size_t>(b.y[i])] += 4.f;
    b.xd[i * V + static_cast<std::size_t>(b.y[i])] = b.x[i * V + static_cast<std::size_t>(b.y[i])];
  }
  for (std::size_t i = 0; i < N; ++i) {
    const auto r = msrl::lab::ref_forward(b.xd.data() + i * V, V, b.y[i], 1.0);
    b.old[i] = static_cast<float>(r.logp + 0.3 * n(rng));
    b.ref[i] = static_cast<float>(r.logp + 0.5 * n(rng));
  }
  for (auto& a : b.adv) a = n(rng);
  for (std::size_t i = 0; i < B; ++i) {
    const std::size_t len = i == 1 ? 0 : 1 + rng() % T;
    for (std::size_t t = 0; t < T; ++t) b.mask[i * T + t] = t < len ? 1 : 0;
  }
  b.offsets.push_back(0);
  for (std::size_t i = 0; i < B; ++i) b.offsets.push_back(static_cast<std::int64_t>((i + 1) * T));
  b.offsets[1] = 2; // unequal packed sequences
  return b;
}

// The core's path in double: reference log-probs -> policy_loss -> d logits by the chain rule.
static g::loss_result core_path(const batch& b, const std::vector<double>& xd, msrl::token_layout lay, const g::loss_options& o,
                                double temp, std::vector<double>* dx, const std::vector<float>& isw = {},
                                const std::vector<std::uint8_t>& pmask = {}) {
  const std::size_t N = b.B * b.T, V = b.V;
  std::vector<double> lp(N), old(b.old.begin(), b.old.end()), ref(b.ref.begin(), b.ref.end()), adv(b.adv.begin(), b.adv.end()),
      dlp(N);
  for (std::size_t i = 0; i < N; ++i) lp[i] = b.mask[i] ? msrl::lab::ref_forward(xd.data() + i * V, V, b.y[i], temp).logp : 0.0;
  const std::vector<double> w(isw.begin(), isw.end());
  const g::loss_inputs<double> in{lay, lp, old, ref, adv, b.mask, w, pmask};
  auto r = g::policy_loss(in, o, {}, std::span<double>(dlp));
  if (dx) {
    dx->assign(N * V, 0.0);
    std::vector<double> row;
    for (std::size_t i = 0; i < N; ++i) {
      msrl::lab::ref_backward(xd.data() + i * V, V, b.y[i], temp, dlp[i], row);
      std::copy(row.begin(), row.end(), dx->begin() + static_cast<long>(i * V));
    }
  }
  return r;
}

BOOST_AUTO_TEST_CASE(every_preset_matches_the_core_path) {
  const batch b = make(3, 5, 6, 203);
  const std::size_t N = b.B * b.T, V = b.V;
  for (const g::preset* p : g::presets::all)
    for (int variant = 0; variant < 5; ++variant) {
      g::loss_options o = p->loss;
      if (variant >= 1) o.beta = 0.04;
      const double temp = variant == 2 ? 0.9 : 1.0;
      const auto lay = variant == 2 ? msrl::token_layout::packed(b.offsets) : msrl::token_layout::padded(b.B, b.T);
      // variants 3, 4: rollout IS weights per token / per sequence, the corrected KL, KL weighting
      std::vector<float> isw(variant == 3 ? N : variant == 4 ? b.B : 0);
      for (std::size_t i = 0; i < isw.size(); ++i) isw[i] = 0.25f + 0.5f * static_cast<float>((i * 7) % 5);
      o.kl_is_corrected = variant == 3 && o.level != g::ratio_level::sequence_token;
      o.is_weight_kl = variant == 4;
      std::vector<std::uint8_t> pmask(variant == 4 ? N : 0); // TRL's surrogate-only mask
      for (std::size_t i = 0; i < pmask.size(); ++i) pmask[i] = i % 4 != 2;
      std::vector<double> dref;
      const auto want = core_path(b, b.xd, lay, o, temp, &dref, isw, pmask);
      std::vector<float> dx(N * V, 99.f), lp(N);
      const k::logits_loss_inputs<float> in{lay, {b.x.data(), N, V}, b.y, b.old, b.ref, b.adv, b.mask, isw, pmask};
      const auto got = k::grpo_loss_from_logits(in, o, {}, k::logits_loss_outputs<float>{{dx.data(), N, V}, lp},
                                                {.temperature = temp, .threads = 2});
      BOOST_TEST_INFO("preset " << p->name << " variant " << variant);
      BOOST_TEST(std::abs(got.loss - want.loss) <= 1e-6 * std::max(1.0, std::abs(want.loss)));
      BOOST_TEST(got.metrics.tokens == want.metrics.tokens);
      BOOST_TEST(std::abs(got.metrics.clip_fraction - want.metrics.clip_fraction) <= 1e-12);
      BOOST_TEST(std::abs(got.metrics.kl_mean - want.metrics.kl_mean) <= 1e-5);
      BOOST_TEST(std::abs(got.metrics.ratio_mean - want.metrics.ratio_mean) <= 1e-5);
      double mx = 0.0, err = 0.0;
      for (std::size_t i = 0; i < N * V; ++i) {
        mx = std::max(mx, std::abs(dref[i]));
        err = std::max(err, std::abs(dx[i] - dref[i]));
      }
      BOOST_TEST(mx > 0.0);
      BOOST_TEST(err <= 1e-5 * mx); // fp32 d loss / d logp (1e-6 rel) times fp32 softmax
    }
}

BOOST_AUTO_TEST_CASE(gradient_equals_finite_differences_of_the_core_path) {
  const batch b = make(7, 3, 4, 29);
  const std::size_t N = b.B * b.T, V = b.V;
  g::loss_options o = g::presets::verl_default.loss;
  o.beta = 0.1;
  const auto lay = msrl::token_layout::padded(b.B, b.T);
  std::vector<float> dx(N * V);
  const k::logits_loss_inputs<float> in{lay, {b.x.data(), N, V}, b.y, b.old, b.ref, b.adv, b.mask};
  k::grpo_loss_from_logits(in, o, {}, k::logits_loss_outputs<float>{{dx.data(), N, V}});
  std::mt19937 rng(1);
  const double h = 1e-5;
  for (int s = 0; s < 60; ++s) {
    const std::size_t e = rng() % (N * V);
    auto xd = b.xd;
    xd[e] += h;
    const double up = core_path(b, xd, lay, o, 1.0, nullptr).loss;
    xd[e] -= 2 * h;
    const double dn = core_path(b, xd, lay, o, 1.0, nullptr).loss;
    BOOST_TEST_INFO("element " << e);
    BOOST_TEST(std::abs(dx[e] - (up - dn) / (2 * h)) <= 2e-6);
  }
}

BOOST_AUTO_TEST_CASE(bf16_logits_in_place_gradient) {
  const batch b = make(11, 4, 5, 1000);
  const std::size_t N = b.B * b.T, V = b.V;
  std::vector<k::bf16> xb(N * V);
  std::vector<double> xd(N * V);
  for (std::size_t i = 0; i < N * V; ++i) xd[i] = k::to_float(xb[i] = k::to_bf16(b.x[i]));
  const g::loss_options o = g::presets::dapo.loss;
  const auto lay = msrl::token_layout::padded(b.B, b.T);
  std::vector<double> dref;
  const auto want = core_path(b, xd, lay, o, 1.0, &dref);
  const k::logits_loss_inputs<k::bf16> in{lay, {xb.data(), N, V}, b.y, b.old, b.ref, b.adv, b.mask};
  const auto got = k::grpo_loss_from_logits(in, o, {}, k::logits_loss_outputs<k::bf16>{{xb.data(), N, V}});
  BOOST_TEST(std::abs(got.loss - want.loss) <= 1e-6 * std::max(1.0, std::abs(want.loss)));
  double mx = 0.0;
  for (double d : dref) mx = std::max(mx, std::abs(d));
  for (std::size_t i = 0; i < N * V; ++i)
    BOOST_TEST_REQUIRE(std::abs(k::to_float(xb[i]) - dref[i]) <= std::abs(dref[i]) * 0x1p-8 + 1e-5 * mx);
}

// Rows keep their softmax numerators between the row's forward and backward
// (detail/kept_row.hpp): on every instruction set, with fp32 gradients, the loss, log-probs and
// gradient match the double path to fp32 rounding, on rows with -inf logits, targets at both ends
// of the row (the backward's two spans) and ragged V; with the entropy asked for, the online
// kernels run instead and agree with the kept ones.
template <class T>
static void check_kept_rows(std::size_t V, double temp) {
  batch b = make(23, 3, 6, V);
  const std::size_t N = b.B * b.T;
  b.y[0] = 0;
  b.y[2] = static_cast<std::int64_t>(V - 1);
  for (std::size_t i = 0; i < 4; ++i) b.mask[i] = 1; // the first sequence's first four tokens
  for (std::size_t j = 5; j < V; j += 7)
    if (static_cast<std::int64_t>(j) != b.y[3]) b.x[3 * V + j] = -std::numeric_limits<float>::infinity();
  std::vector<T> xh(N * V);
  std::vector<double> xd(N * V);
  for (std::size_t i = 0; i < N * V; ++i) {
    if constexpr (std::is_same_v<T, k::bf16>) xh[i] = k::to_bf16(b.x[i]);
    else if constexpr (std::is_same_v<T, k::f16>) xh[i] = k::to_f16(b.x[i]);
    else xh[i] = b.x[i];
    xd[i] = k::to_float(xh[i]);
  }
  const g::loss_options o = g::presets::verl_default.loss;
  const auto lay = msrl::token_layout::padded(b.B, b.T);
  std::vector<double> dref;
  const auto want = core_path(b, xd, lay, o, temp, &dref);
  double mx = 0.0;
  for (double d : dref) mx = std::max(mx, std::abs(d));
  BOOST_TEST_REQUIRE(mx > 0.0);
  const k::logits_loss_inputs<T> in{lay, {xh.data(), N, V}, b.y, b.old, b.ref, b.adv, b.mask};
  isa_cap_guard guard;
  for (msrl::cpu_isa isa : {msrl::cpu_isa::scalar, msrl::cpu_isa::avx2, msrl::cpu_isa::avx512}) {
    msrl::set_isa_cap(isa);
    std::vector<float> dx(N * V, 99.f), lp(N), dx2(N * V, 99.f), lp2(N), ent(N);
    const auto got = k::grpo_loss_from_logits(in, o, {}, k::logits_loss_outputs<float>{{dx.data(), N, V}, lp},
                                              {.temperature = temp, .threads = 2});
    // the entropy output sends every row through the online kernels
    const auto online = k::grpo_loss_from_logits(in, o, {}, k::logits_loss_outputs<float>{{dx2.data(), N, V}, lp2, {}, ent},
                                                 {.temperature = temp, .threads = 2});
    BOOST_TEST_INFO("V " << V << " isa " << msrl::to_string(isa));
    BOOST_TEST(std::abs(got.loss - want.loss) <= 1e-6 * std::max(1.0, std::abs(want.loss)));
    BOOST_TEST(std::abs(online.loss - got.loss) <= 1e-6 * std::max(1.0, std::abs(got.loss)));
    double err = 0.0, err2 = 0.0;
    for (std::size_t i = 0; i < N; ++i) {
      if (!b.mask[i]) continue;
      const double r = msrl::lab::ref_forward(xd.data() + i * V, V, b.y[i], temp).logp;
      BOOST_TEST(std::abs(lp[i] - r) <= 2e-6 * std::max(1.0, std::abs(r)));
    }
    for (std::size_t i = 0; i < N * V; ++i) {
      err = std::max(err, std::abs(dx[i] - dref[i]));
      err2 = std::max(err2, static_cast<double>(std::abs(dx2[i] - dx[i])));
      if (!std::isfinite(b.x[i])) BOOST_TEST_REQUIRE(dx[i] == 0.f); // -inf logits get exactly 0
    }
    BOOST_TEST(err <= 1e-5 * mx);
    BOOST_TEST(err2 <= 1e-5 * mx);
    // bf16 gradients into a separate buffer one element off 32-byte alignment (non-temporal
    // stores past a peeled head), and in place over a copy of the logits (normal stores): the
    // fp32 gradient rounded once
    std::vector<k::bf16> gb(N * V + 1, k::to_bf16(99.f)), xin(xh.size());
    if constexpr (std::is_same_v<T, k::bf16>) xin = xh;
    const auto sep = k::grpo_loss_from_logits(in, o, {}, k::logits_loss_outputs<k::bf16>{{gb.data() + 1, N, V}},
                                              {.temperature = temp, .threads = 2});
    BOOST_TEST(sep.loss == got.loss);
    std::optional<g::loss_result> inpl;
    if constexpr (std::is_same_v<T, k::bf16>) {
      const k::logits_loss_inputs<T> in2{lay, {xin.data(), N, V}, b.y, b.old, b.ref, b.adv, b.mask};
      inpl = k::grpo_loss_from_logits(in2, o, {}, k::logits_loss_outputs<k::bf16>{{xin.data(), N, V}},
                                      {.temperature = temp, .threads = 2});
      BOOST_TEST(inpl->loss == got.loss);
    }
    for (std::size_t i = 0; i < N * V; ++i) {
      const double tol = std::abs(dx[i]) * 0x1p-8 + 1e-30;
      BOOST_TEST_REQUIRE(std::abs(k::to_float(gb[i + 1]) - dx[i]) <= tol);
      if (inpl) BOOST_TEST_REQUIRE(std::abs(k::to_float(xin[i]) - dx[i]) <= tol);
    }
  }
}

BOOST_AUTO_TEST_CASE(rows_keep_their_numerators_between_forward_and_backward) {
  for (std::size_t V : {std::size_t{1000}, std::size_t{77}, std::size_t{3}}) {
    check_kept_rows<k::bf16>(V, 1.0);
    check_kept_rows<k::f16>(V, 0.7);
    check_kept_rows<float>(V, 0.9);
  }
}

BOOST_AUTO_TEST_CASE(errors_name_the_argument) {
  batch b = make(13, 2, 3, 11);
  const std::size_t N = 6, V = 11;
  const auto lay = msrl::token_layout::padded(2, 3);
  auto run = [&](const batch& bb, msrl::token_layout l) {
    const k::logits_loss_inputs<float> in{l, {bb.x.data(), N, V}, bb.y, bb.old, bb.ref, bb.adv, bb.mask};
    k::grpo_loss_from_logits(in, g::presets::trl_default.loss);
  };
  auto expect = [&](auto f, const std::string& needle) {
    try {
      f();
      BOOST_ERROR("no exception, expected " << needle);
    } catch (const msrl::invalid_argument& e) {
      BOOST_TEST_INFO(e.what());
      BOOST_TEST(std::string(e.what()).find(needle) != std::string::npos);
    }
  };
  expect([&] { run(b, msrl::token_layout::padded(2, 2)); }, "'layout.total_tokens'");
  batch c = b;
  c.mask[0] = 1;
  c.y[0] = -100;
  expect([&] { run(c, lay); }, "must be >= 0 at unmasked tokens");
  c = b;
  c.mask[0] = 2;
  expect([&] { run(c, lay); }, "'mask'");
  c = b;
  c.adv.pop_back();
  expect([&] { run(c, lay); }, "'advantages'");
  c = b;
  c.y[1] = 11;
  expect([&] { run(c, lay); }, "'targets'");
}

// With a gradient and a token-level form the loss runs row by row in one pass (forward, the
// core's term, backward while the row is in cache); without a gradient it runs the forward over
// all rows, then the core. Both routes give the same loss, metrics and log-probs, and the same
// errors; the sequence levels and row forms always take the second route.
BOOST_AUTO_TEST_CASE(one_pass_and_two_pass_routes_agree) {
  const batch b = make(17, 4, 7, 301);
  const std::size_t N = b.B * b.T, V = b.V;
  const auto lay = msrl::token_layout::padded(b.B, b.T);
  const k::logits_loss_inputs<float> in{lay, {b.x.data(), N, V}, b.y, b.old, b.ref, b.adv, b.mask};
  for (const g::preset* p : {&g::presets::verl_default, &g::presets::trl_default, &g::presets::gspo, &g::presets::trl_vespo}) {
    g::loss_options o = p->loss;
    o.beta = 0.04;
    std::vector<float> dx(N * V, 7.f), lp1(N, 5.f), lp2(N, 5.f), ent1(N, 5.f), ent2(N, 5.f);
    std::vector<double> lse1(N, 5.0), lse2(N, 5.0);
    const auto one = k::grpo_loss_from_logits(in, o, {}, k::logits_loss_outputs<float>{{dx.data(), N, V}, lp1, lse1, ent1},
                                              {.threads = 2});
    const auto two = k::grpo_loss_from_logits(in, o, {}, k::logits_loss_outputs<float>{{}, lp2, lse2, ent2}, {.threads = 1});
    BOOST_TEST_INFO("preset " << p->name);
    BOOST_TEST(std::abs(one.loss - two.loss) <= 1e-6 * std::max(1.0, std::abs(two.loss)));
    BOOST_TEST(one.metrics.tokens == two.metrics.tokens);
    BOOST_TEST(one.metrics.normalizer == two.metrics.normalizer);
    BOOST_TEST(std::abs(one.metrics.clip_fraction - two.metrics.clip_fraction) <= 1e-12);
    BOOST_TEST(std::abs(one.metrics.kl_mean - two.metrics.kl_mean) <= 1e-6 * std::max(1.0, std::abs(two.metrics.kl_mean)));
    for (std::size_t i = 0; i < N; ++i) {
      BOOST_TEST(lp1[i] == lp2[i]);
      BOOST_TEST(lse1[i] == lse2[i]);
      BOOST_TEST(ent1[i] == ent2[i]);
      if (!b.mask[i]) // masked rows: zeros, not read
        for (std::size_t j = 0; j < V; ++j) BOOST_TEST_REQUIRE(dx[i * V + j] == 0.f);
    }
  }
  // a row whose logits are all -inf has no log-prob: the same error on both routes
  batch c = b;
  BOOST_TEST_REQUIRE(c.mask[0] == 1); // the first token of every sequence but the empty one is unmasked
  for (std::size_t j = 0; j < V; ++j) c.x[0 * V + j] = -std::numeric_limits<float>::infinity();
  const k::logits_loss_inputs<float> inc{lay, {c.x.data(), N, V}, c.y, c.old, c.ref, c.adv, c.mask};
  std::vector<float> dx(N * V);
  for (bool grad : {true, false}) {
    try {
      k::grpo_loss_from_logits(inc, g::presets::verl_default.loss, {},
                               grad ? k::logits_loss_outputs<float>{{dx.data(), N, V}} : k::logits_loss_outputs<float>{});
      BOOST_ERROR("no exception for a row of -inf logits");
    } catch (const msrl::value_error& e) {
      BOOST_TEST(std::string(e.what()).find("must be finite") != std::string::npos, e.what());
    }
  }
}
