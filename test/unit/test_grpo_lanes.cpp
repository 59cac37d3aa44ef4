// The GRPO core's lanes (core/simd.hpp): fp32 inputs run in fp32 lanes on every ISA the CPU has
// (AVX-512: 16 per register, AVX2: 8) and must stay within 1e-6 of the double reference (the same
// inputs widened to double, run in double lanes): every preset, the three ratio levels, padded and
// packed rows, per-row and per-token advantages, IS weights; log-ratios from 1e-5 (where
// e^d - d - 1 cancels in fp32) to clip range. fp64 inputs give the scalar ISA's answer on every
// ISA to 1e-13.
#define BOOST_TEST_MODULE grpo_lanes
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <msrl/backend/host_threads.hpp>
#include <msrl/grpo.hpp>

namespace g = msrl::grpo;

namespace {

const std::vector<msrl::cpu_isa> isas{msrl::cpu_isa::scalar, msrl::cpu_isa::avx2, msrl::cpu_isa::avx512};

struct isa_guard {
  explicit isa_guard(msrl::cpu_isa i) { msrl::set_isa_cap(i); }
  ~isa_guard() { msrl::clear_isa_cap(); }
};

// B rows of up to T tokens: masked tails, log-probs of sampled tokens in [-8, 0], old and ref
// log-probs at distances spread over five decades (1e-5 .. 0.3) and a few far out.
struct batch {
  std::size_t B, T;
  std::vector<float> lp, old, ref, adv_row, adv_tok, isw;
  std::vector<std::uint8_t> mask;
  explicit batch(std::size_t rows, std::size_t cols, unsigned seed) : B(rows), T(cols) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(0.f, 1.f);
    std::normal_distribution<float> n(0.f, 1.f);
    const std::size_t N = B * T;
    lp.resize(N), old.resize(N), ref.resize(N), adv_tok.resize(N), isw.resize(N), mask.resize(N);
    for (std::size_t i = 0; i < N; ++i) {
      lp[i] = -8.f * u(rng) * u(rng);
      const float scale_o = std::pow(10.f, -5.f + 4.5f * u(rng)), scale_r = std::pow(10.f, -5.f + 4.5f * u(rng));
      old[i] = lp[i] + scale_o * n(rng);
      ref[i] = lp[i] + scale_r * n(rng);
      if (i % 97 == 5) ref[i] = lp[i] - 3.f; // |d| > 1: the direct k3 branch
      adv_tok[i] = n(rng);
      isw[i] = 0.5f + u(rng);
    }
    adv_row.resize(B);
    for (std::size_t b = 0; b < B; ++b) {
      adv_row[b] = b % 5 == 0 ? 0.f : n(rng); // rows of a zero-variance group: only the KL's gradient
      const std::size_t L = b == 3 ? 0 : T / 3 + (b * 37) % (T - T / 3);
      for (std::size_t t = 0; t < T; ++t) mask[b * T + t] = t < L;
    }
  }
};

template <class T>
std::vector<T> as(const std::vector<float>& v) {
  return std::vector<T>(v.begin(), v.end());
}

struct outcome {
  g::loss_result res;
  std::vector<double> grad;
};

template <class T>
outcome run(const batch& b, const g::loss_options& opt, bool packed, bool per_token, bool weights) {
  const std::vector<T> lp = as<T>(b.lp), old = as<T>(b.old), ref = as<T>(b.ref);
  const std::vector<T> adv = as<T>(per_token ? b.adv_tok : b.adv_row), isw = as<T>(b.isw);
  std::vector<T> grad(lp.size());
  std::vector<std::int64_t> offsets;
  g::loss_inputs<T> in{msrl::token_layout::padded(b.B, b.T), lp, old, ref, adv, b.mask};
  if (packed) { // the same tokens as ragged rows (rows of T, no mask)
    for (std::size_t i = 0; i <= b.B; ++i) offsets.push_back(static_cast<std::int64_t>(i * b.T));
    in.layout = msrl::token_layout::packed(offsets);
    in.mask = {};
  }
  if (weights) in.is_weights = isw;
  outcome o;
  o.res = g::policy_loss(msrl::backend::host_threads{.threads = 2}, in, opt, {}, std::span<T>(grad));
  o.grad.assign(grad.begin(), grad.end());
  return o;
}

// |a - b| <= tol * scale, with a message naming what differs.
void close(double a, double b, double tol, double scale, const std::string& what) {
  BOOST_TEST_INFO(what << ": " << a << " vs " << b << " (scale " << scale << ")");
  BOOST_TEST(std::abs(a - b) <= tol * scale);
}

// The size of each token's gradient terms, from the double reference: the surrogate's gradient
// (beta = 0) and the KL's (zero advantages) taken apart. Each term is computed to a few fp32
// rounding errors; where the two have opposite signs their sum keeps that absolute error, so the
// gradient is held to tol times the size of its terms, not of their sum.
struct term_sizes {
  std::vector<double> grad; // |surrogate part| + |KL part| per token
  double loss;              // sum over tokens of |surrogate part| (1 + |logp|) + |KL loss|
};

term_sizes sizes(const batch& b, const g::loss_options& opt, bool packed, bool per_token, bool weights) {
  g::loss_options pg = opt;
  pg.beta = 0.0;
  const outcome a = run<double>(b, pg, packed, per_token, weights);
  batch zero = b;
  std::fill(zero.adv_row.begin(), zero.adv_row.end(), 0.f);
  std::fill(zero.adv_tok.begin(), zero.adv_tok.end(), 0.f);
  const outcome k = run<double>(zero, opt, packed, per_token, weights);
  term_sizes s{std::vector<double>(a.grad.size()), std::abs(k.res.metrics.kl_loss) + std::abs(a.res.loss)};
  std::vector<double> kl_sizes(k.grad.size());
  for (std::size_t i = 0; i < k.grad.size(); ++i) kl_sizes[i] = std::abs(k.grad[i]);
  if (opt.level == g::ratio_level::sequence && opt.kl_is_corrected) {
    // The corrected KL at sequence level, KL_t s_i, has two gradient terms of opposite signs: the
    // token's own s_i dKL_t/dlogp and the row's s_i / L_i sum_t KL_t. The first is the uncorrected
    // gradient times s_i = exp(mean log-ratio of the row); the second is the rest.
    g::loss_options plain = opt;
    plain.kl_is_corrected = false;
    const outcome u = run<double>(zero, plain, packed, per_token, weights);
    for (std::size_t r = 0; r < b.B; ++r) {
      double sum = 0.0, len = 0.0;
      for (std::size_t t = r * b.T; t < (r + 1) * b.T; ++t)
        if (packed || b.mask[t]) sum += double(b.lp[t]) - double(b.old[t]), len += 1.0;
      const double si = std::exp(sum / std::max(len, 1.0));
      for (std::size_t t = r * b.T; t < (r + 1) * b.T; ++t)
        kl_sizes[t] = std::abs(si * u.grad[t]) + std::abs(k.grad[t] - si * u.grad[t]);
    }
  }
  for (std::size_t i = 0; i < s.grad.size(); ++i) {
    s.grad[i] = std::abs(a.grad[i]) + kl_sizes[i];
    s.loss += std::abs(a.grad[i]) * (1.0 + std::abs(static_cast<double>(b.lp[i])));
  }
  return s;
}

double largest_error = 0.0; // the largest gradient error / term size seen (printed with --log_level=message)

void compare(const outcome& f, const outcome& d, const term_sizes& size, double tol, const std::string& what) {
  std::size_t bad = 0, worst = 0;
  double worst_err = 0.0;
  for (std::size_t i = 0; i < d.grad.size(); ++i) {
    const double err = std::abs(f.grad[i] - d.grad[i]) / (size.grad[i] + 1e-300);
    if (err > tol && std::abs(f.grad[i] - d.grad[i]) > 1e-300) ++bad;
    if (err > worst_err) worst_err = err, worst = i;
  }
  largest_error = std::max(largest_error, worst_err);
  BOOST_TEST_INFO(what << ": worst gradient element " << worst << ", error / size of its terms " << worst_err);
  BOOST_TEST(bad == 0u);
  close(f.res.loss, d.res.loss, tol, size.loss, what + " loss");
  close(f.res.metrics.policy_loss, d.res.metrics.policy_loss, tol, size.loss, what + " policy_loss");
  close(f.res.metrics.kl_loss, d.res.metrics.kl_loss, tol, std::abs(d.res.metrics.kl_loss) + 1e-300, what + " kl_loss");
  const double n = d.res.metrics.tokens;
  BOOST_TEST(f.res.metrics.tokens == n);
  close(f.res.metrics.ratio_mean, d.res.metrics.ratio_mean, tol, 1.0, what + " ratio_mean");
  close(f.res.metrics.kl_mean, d.res.metrics.kl_mean, tol, std::abs(d.res.metrics.kl_mean), what + " kl_mean");
  close(f.res.metrics.log_ratio_mean, d.res.metrics.log_ratio_mean, tol, 1e-2, what + " log_ratio_mean");
  // A token whose ratio sits within rounding of a clip bound may count on the other side.
  close(f.res.metrics.clip_fraction, d.res.metrics.clip_fraction, 0.0, 2.0 / n + 1e-15, what + " clip_fraction");
}

} // namespace

BOOST_AUTO_TEST_CASE(fp32_lanes_agree_with_the_double_reference_on_every_preset) {
  const batch b(24, 67, 3); // 67 = 4 x 16 + 3: vector groups and a scalar tail in every row
  for (msrl::cpu_isa isa : isas) {
    isa_guard cap(isa);
    for (const g::preset* p : g::presets::all) {
      for (int variant = 0; variant < 4; ++variant) {
        g::loss_options opt = p->loss;
        if (opt.beta == 0.0) opt.beta = 0.04; // the KL path on every preset
        const bool packed = variant & 1, weights = variant & 2;
        const bool row_form = opt.form == g::loss_form::vespo || opt.form == g::loss_form::gmpo;
        const bool per_token = variant == 2 && !row_form && opt.level == g::ratio_level::token;
        const std::string what = std::string(msrl::to_string(msrl::active_isa())) + " " + std::string(p->name) +
                                 (packed ? " packed" : " padded") + (weights ? " is_weights" : "") +
                                 (per_token ? " per-token advantages" : "");
        const outcome f = run<float>(b, opt, packed, per_token, weights);
        const outcome d = run<double>(b, opt, packed, per_token, weights);
        compare(f, d, sizes(b, opt, packed, per_token, weights), 1e-6, what);
      }
    }
  }
  BOOST_TEST_MESSAGE("largest fp32 gradient error / size of its terms: " << largest_error);
}

BOOST_AUTO_TEST_CASE(fp64_inputs_give_the_scalar_answer_on_every_isa) {
  const batch b(16, 45, 4);
  for (const g::preset* p : g::presets::all) {
    g::loss_options opt = p->loss;
    if (opt.beta == 0.0) opt.beta = 0.04;
    const term_sizes size = sizes(b, opt, false, false, true);
    outcome ref;
    {
      isa_guard cap(msrl::cpu_isa::scalar);
      ref = run<double>(b, opt, false, false, true);
    }
    for (msrl::cpu_isa isa : {msrl::cpu_isa::avx2, msrl::cpu_isa::avx512}) {
      isa_guard cap(isa);
      const outcome d = run<double>(b, opt, false, false, true);
      compare(d, ref, size, 1e-13, std::string(msrl::to_string(msrl::active_isa())) + " fp64 " + std::string(p->name));
    }
  }
}
