// Host selective log-softmax (every ISA path, fp32/bf16/fp16, temperature, entropy, backward
// with and without the entropy gradient, in place, -inf logits, ignored rows, ragged V, threads)
// against the double reference, and the backward against central finite differences of the
// double forward.
#define BOOST_TEST_MODULE kernels_selective_log_softmax
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <msrl/kernels/selective_log_softmax.hpp>

#include "reference.hpp"

namespace k = msrl::kernels;
using msrl::lab::ref_backward;
using msrl::lab::ref_forward;
constexpr float ninf = -std::numeric_limits<float>::infinity();

template <class T>
struct problem {
  std::size_t N, V;
  std::vector<T> x;
  std::vector<double> xd; // the exact widened values
  std::vector<std::int64_t> y;
};

template <class T>
problem<T> make(std::size_t N, std::size_t V, unsigned seed, double scale = 3.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  problem<T> p{N, V, std::vector<T>(N * V), std::vector<double>(N * V), std::vector<std::int64_t>(N)};
  for (std::size_t i = 0; i < N * V; ++i) {
    float v = static_cast<float>(scale) * n(rng);
    if (i % 997 == 3) v += 15.f; // a few peaks (peaked RL distributions)
    p.x[i] = k::from_float<T>(v);
    p.xd[i] = k::to_float(p.x[i]);
  }
  for (std::size_t i = 0; i < N; ++i) p.y[i] = static_cast<std::int64_t>(rng() % V);
  return p;
}

static const std::vector<k::cpu_isa> isas{k::cpu_isa::scalar, k::cpu_isa::avx2, k::cpu_isa::avx512};

struct isa_guard {
  ~isa_guard() { k::clear_isa_cap(); }
};

template <class T>
void check_forward(std::size_t N, std::size_t V, double temp, unsigned seed) {
  auto p = make<T>(N, V, seed);
  isa_guard guard;
  for (k::cpu_isa isa : isas) {
    k::set_isa_cap(isa);
    std::vector<float> lp(N), ent(N);
    std::vector<double> lse(N);
    k::selective_log_softmax(k::matrix_view<const T>{p.x.data(), N, V}, p.y, {lp, lse, ent}, {.temperature = temp, .threads = 2});
    for (std::size_t i = 0; i < N; ++i) {
      const auto r = ref_forward(p.xd.data() + i * V, V, p.y[i], temp);
      BOOST_TEST_INFO("isa " << k::to_string(k::active_isa()) << " type " << k::type_name_v<T> << " V " << V << " row " << i);
      BOOST_TEST(std::abs(lp[i] - r.logp) <= 1e-5);
      BOOST_TEST(std::abs(lse[i] - r.lse) <= 1e-5 * std::max(1.0, std::abs(r.lse)));
      BOOST_TEST(std::abs(ent[i] - r.entropy) <= 1e-5 * std::max(1.0, std::abs(r.entropy)));
    }
  }
}

BOOST_AUTO_TEST_CASE(forward_fp32_matches_double_reference) {
  for (std::size_t V : {1, 2, 7, 15, 16, 17, 63, 64, 65, 100, 1000, 4099})
    for (double t : {1.0, 0.7, 1.3}) check_forward<float>(9, V, t, static_cast<unsigned>(V * 10) + static_cast<unsigned>(t * 10));
  check_forward<float>(3, 151936, 1.0, 1); // the Qwen / InternVL3.5 vocabulary
  check_forward<float>(2, 151936 + 5, 0.9, 2);
}

BOOST_AUTO_TEST_CASE(forward_half_inputs_match_reference_on_the_same_values) {
  for (std::size_t V : {1, 9, 33, 1000, 151936}) {
    check_forward<k::bf16>(4, V, 1.0, static_cast<unsigned>(V));
    check_forward<k::f16>(4, V, 0.8, static_cast<unsigned>(V + 1));
  }
}

// Backward: fp32 output within 1e-6 of the row's largest gradient; 16-bit outputs within their rounding.
template <class T, class G>
void check_backward(std::size_t N, std::size_t V, double temp, unsigned seed) {
  auto p = make<T>(N, V, seed);
  std::vector<float> gl(N);
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  for (auto& g : gl) g = n(rng);
  gl[0] = 0.0f; // a zero upstream gradient gives an all-zero row
  isa_guard guard;
  for (k::cpu_isa isa : isas) {
    k::set_isa_cap(isa);
    std::vector<float> lp(N);
    std::vector<double> lse(N);
    const k::matrix_view<const T> xv{p.x.data(), N, V};
    k::selective_log_softmax(xv, p.y, {lp, lse, {}}, {.temperature = temp});
    std::vector<G> gx(N * V, k::from_float<G>(12345.f)); // poison: every element must be written
    k::selective_log_softmax_backward(xv, p.y, lse, gl, k::matrix_view<G>{gx.data(), N, V}, {.temperature = temp, .threads = 3});
    std::vector<double> ref;
    for (std::size_t i = 0; i < N; ++i) {
      ref_backward(p.xd.data() + i * V, V, p.y[i], temp, gl[i], ref);
      double mx = 0.0, err = 0.0, rel16 = 0.0;
      for (std::size_t j = 0; j < V; ++j) {
        const double got = k::to_float(gx[i * V + j]);
        mx = std::max(mx, std::abs(ref[j]));
        err = std::max(err, std::abs(got - ref[j]));
        rel16 = std::max(rel16, std::abs(got - ref[j]) - std::abs(ref[j]) * (std::is_same_v<G, k::bf16> ? 0x1p-8 : 0x1p-11));
      }
      BOOST_TEST_INFO("isa " << k::to_string(k::active_isa()) << " in " << k::type_name_v<T> << " out " << k::type_name_v<G>
                             << " V " << V << " row " << i);
      if constexpr (std::is_same_v<G, float>) BOOST_TEST(err <= 1e-6 * std::max(mx, 1e-30));
      else BOOST_TEST(rel16 <= 1e-6 * mx + 0x1p-24); // within the output format half-ulp rounding
    }
  }
}

#ifdef MSRL_KERNELS_X86
// The bf16 gradient stores through AVX512_BF16's conversion (taken where the CPU has it) against
// the rounding by integer arithmetic of the plain AVX-512 rows: the same bits, except that the
// conversion reads an fp32 subnormal (|g| < 2^-126) as 0. Logits spread wide (scale 40) so that
// some gradients fall into that range; a -inf logit gets exactly 0 from both.
template <class T>
void check_bf16_conversion_store(unsigned seed) {
  if (!msrl::has_avx512_bf16()) {
    BOOST_TEST_MESSAGE("no AVX512_BF16 on this CPU: the conversion store is not used here");
    return;
  }
  const std::size_t N = 3, V = 4099;
  auto p = make<T>(N, V, seed, 40.0);
  p.x[5] = k::from_float<T>(ninf);
  std::vector<float> lp(N);
  std::vector<double> lse(N);
  k::selective_log_softmax(k::matrix_view<const T>{p.x.data(), N, V}, p.y, {lp, lse, {}}, {});
  std::size_t same = 0, flushed = 0, other = 0;
  for (std::size_t i = 0; i < N; ++i) {
    std::vector<k::bf16> a(V), b(V);
    const T* row = p.x.data() + i * V;
    const auto y = static_cast<std::size_t>(p.y[i]);
    const float hi = static_cast<float>(lse[i]), lo = static_cast<float>(lse[i] - hi); // as row_backward splits it
    const auto ra = k::detail::avx512_rows::backward_row<T, k::bf16, false>(row, a.data(), V, y, 1.0f, hi, lo, 0.7f, 0.0f);
    const auto rb = k::detail::avx512_bf16_rows::backward_row<T, k::bf16, false>(row, b.data(), V, y, 1.0f, hi, lo, 0.7f, 0.0f);
    BOOST_TEST(ra.p == rb.p); // the sums do not depend on the store
    for (std::size_t j = 0; j < V; ++j) {
      if (j == y) continue; // left for the caller
      if (a[j].bits == b[j].bits) ++same;
      else if ((b[j].bits & 0x7fffu) == 0 && (a[j].bits & 0x7f80u) == 0) ++flushed; // a subnormal read as 0
      else ++other;
    }
  }
  BOOST_TEST_MESSAGE("bf16 conversion store: " << same << " equal, " << flushed << " subnormals stored as 0");
  BOOST_TEST(other == 0u);
  BOOST_TEST(same > N * (V - 1) / 2);
}

BOOST_AUTO_TEST_CASE(bf16_conversion_store_matches_the_integer_rounding) {
  check_bf16_conversion_store<k::bf16>(21);
  check_bf16_conversion_store<float>(22);
}
#endif

BOOST_AUTO_TEST_CASE(backward_matches_double_reference) {
  for (std::size_t V : {1, 3, 16, 31, 100, 4099}) check_backward<float, float>(7, V, 1.0, static_cast<unsigned>(V));
  check_backward<float, float>(3, 151936, 0.7, 11);
  check_backward<k::bf16, k::bf16>(4, 151936, 1.0, 12);
  check_backward<k::f16, k::f16>(4, 1003, 1.0, 13);
  check_backward<k::bf16, float>(4, 517, 1.2, 14);
  check_backward<float, k::bf16>(4, 517, 1.0, 15);
}

BOOST_AUTO_TEST_CASE(backward_equals_finite_differences_of_the_double_forward) {
  // d (sum_i g_i logp_i) / d x_ij by central differences of the reference forward
  const std::size_t N = 3, V = 37;
  const double temp = 0.8, h = 1e-5;
  auto p = make<float>(N, V, 21, 1.0);
  std::vector<float> lp(N), gl{0.7f, -1.3f, 2.0f}, gx(N * V);
  std::vector<double> lse(N);
  const k::matrix_view<const float> xv{p.x.data(), N, V};
  k::selective_log_softmax(xv, p.y, {lp, lse, {}}, {.temperature = temp});
  k::selective_log_softmax_backward(xv, p.y, lse, gl, k::matrix_view<float>{gx.data(), N, V}, {.temperature = temp});
  for (std::size_t i = 0; i < N; ++i)
    for (std::size_t j = 0; j < V; ++j) {
      std::vector<double> row(p.xd.begin() + static_cast<long>(i * V), p.xd.begin() + static_cast<long>((i + 1) * V));
      row[j] += h;
      const double up = ref_forward(row.data(), V, p.y[i], temp).logp;
      row[j] -= 2 * h;
      const double dn = ref_forward(row.data(), V, p.y[i], temp).logp;
      const double fd = gl[i] * (up - dn) / (2 * h);
      BOOST_TEST(std::abs(gx[i * V + j] - fd) <= 1e-6 * std::max(1.0, std::abs(fd)));
    }
}

BOOST_AUTO_TEST_CASE(in_place_backward_equals_out_of_place) {
  for (std::size_t V : {5, 151936}) {
    auto p = make<k::bf16>(3, V, 31);
    const k::matrix_view<const k::bf16> xv{p.x.data(), 3, V};
    std::vector<float> lp(3), gl{1.f, -0.5f, 0.25f};
    std::vector<double> lse(3);
    k::selective_log_softmax(xv, p.y, {lp, lse, {}});
    std::vector<k::bf16> out(3 * V);
    k::selective_log_softmax_backward(xv, p.y, lse, gl, k::matrix_view<k::bf16>{out.data(), 3, V});
    k::selective_log_softmax_backward(xv, p.y, lse, gl, k::matrix_view<k::bf16>{p.x.data(), 3, V});
    for (std::size_t i = 0; i < 3 * V; ++i) BOOST_TEST_REQUIRE(p.x[i].bits == out[i].bits);
  }
}

BOOST_AUTO_TEST_CASE(neg_inf_logits_fully_masked_rows_and_ignored_targets_are_exact) {
  const std::size_t V = 1037, N = 5;
  auto p = make<float>(N, V, 41);
  for (std::size_t j = 0; j < V; j += 3) p.x[0 * V + j] = ninf; // row 0: a third of the vocabulary banned
  p.y[0] = 1;                                                   // a finite target
  for (std::size_t j = 0; j < V; ++j) p.x[1 * V + j] = ninf;    // row 1: every logit -inf
  p.x[2 * V + 7] = ninf;
  p.y[2] = 7;                                                  // row 2: target has probability 0
  for (std::size_t j = 0; j < V; ++j) p.x[3 * V + j] = std::numeric_limits<float>::quiet_NaN(); // row 3: never read
  p.y[3] = -100;
  for (std::size_t i = 0; i < N * V; ++i) p.xd[i] = p.x[i];
  isa_guard guard;
  for (k::cpu_isa isa : isas) {
    k::set_isa_cap(isa);
    std::vector<float> lp(N), ent(N), gl{1.f, 1.f, 1.f, 1.f, -2.f}, gx(N * V, 7.f);
    std::vector<double> lse(N);
    const k::matrix_view<const float> xv{p.x.data(), N, V};
    k::selective_log_softmax(xv, p.y, {lp, lse, ent});
    const auto r0 = ref_forward(p.xd.data(), V, p.y[0], 1.0);
    BOOST_TEST(std::abs(lp[0] - r0.logp) <= 1e-5);
    BOOST_TEST(std::abs(ent[0] - r0.entropy) <= 1e-5);
    BOOST_TEST(lp[1] == ninf);
    BOOST_TEST(lse[1] == -HUGE_VAL);
    BOOST_TEST(ent[1] == 0.f);
    BOOST_TEST(lp[2] == ninf);
    BOOST_TEST(std::isfinite(ent[2]));
    BOOST_TEST(lp[3] == 0.f);
    BOOST_TEST(ent[3] == 0.f);
    gl[2] = 0.5f;
    k::selective_log_softmax_backward(xv, p.y, lse, gl, k::matrix_view<float>{gx.data(), N, V});
    for (std::size_t i = 0; i < N * V; ++i) BOOST_TEST_REQUIRE(std::isfinite(gx[i]));
    for (std::size_t j = 0; j < V; j += 3) BOOST_TEST_REQUIRE(gx[j] == 0.f); // exactly zero at -inf logits
    for (std::size_t j = 0; j < V; ++j) {
      BOOST_TEST_REQUIRE(gx[1 * V + j] == 0.f);
      BOOST_TEST_REQUIRE(gx[3 * V + j] == 0.f);
    }
    std::vector<double> ref;
    ref_backward(p.xd.data() + 2 * V, V, 7, 1.0, 0.5, ref);
    for (std::size_t j = 0; j < V; ++j) BOOST_TEST_REQUIRE(std::abs(gx[2 * V + j] - ref[j]) <= 1e-6);
  }
}

BOOST_AUTO_TEST_CASE(strided_rows_and_thread_counts_give_identical_results) {
  const std::size_t N = 13, V = 301, ld = 320;
  auto p = make<float>(N, ld, 51);
  for (auto& t : p.y) t %= static_cast<std::int64_t>(V);
  std::vector<float> a(N), b(N);
  k::selective_log_softmax(k::matrix_view<const float>{p.x.data(), N, V, ld}, p.y, {a, {}, {}}, {.threads = 1});
  k::selective_log_softmax(k::matrix_view<const float>{p.x.data(), N, V, ld}, p.y, {b, {}, {}}, {.threads = 4});
  for (std::size_t i = 0; i < N; ++i) {
    BOOST_TEST(a[i] == b[i]);
    BOOST_TEST(std::abs(a[i] - ref_forward(p.xd.data() + i * ld, V, p.y[i], 1.0).logp) <= 1e-5);
  }
}

// ---- entropy gradient: d (sum_i g_i logp_i + h_i H_i) / d logits ----

struct upstream {
  std::vector<float> g, h; // on logp, on entropy
};

// Mixed rows: both gradients, entropy only, log-prob only, neither.
upstream make_upstream(std::size_t N, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  upstream u{std::vector<float>(N), std::vector<float>(N)};
  for (std::size_t i = 0; i < N; ++i) {
    u.g[i] = n(rng);
    u.h[i] = n(rng);
    if (i % 4 == 1) u.g[i] = 0.f;
    if (i % 4 == 2) u.h[i] = 0.f;
    if (i % 8 == 3) u.g[i] = u.h[i] = 0.f;
  }
  return u;
}

// The size of entry j's entropy term before log p_j + H cancels: |h| p_j (|log p_j| + H) / T, plus
// the double rounding of log p_j = x_j / T - lse (the saved lse is a double; 2^-30 here becomes
// ~1e-15 |lse| once multiplied by the 1e-6 tolerance). fp32 log p_j and H carry ~1e-7 relative
// rounding, which is all that is left where the entropy gradient vanishes (near-uniform rows).
double entropy_term_size(const double* row, std::size_t j, const msrl::lab::ref_row& r, double temp, double h) {
  const double lp = (row[j] / temp - r.zmax) - r.lse_rest, p = std::exp(lp);
  return p > 0.0 ? std::abs(h) * p * (std::abs(lp) + r.entropy + 0x1p-30 * (1.0 + std::abs(r.lse))) / temp : 0.0;
}

// The max over rows and entries of (|got - ref| - fmt |ref|) / (max_j |ref_j| + entropy_term_size_j)
// (fmt: the output format's half ulp, with a 2^-24 floor for fp16 subnormals).
template <class G>
double grad_error(const std::vector<G>& gx, const std::vector<double>& xd, const std::vector<std::int64_t>& y, std::size_t N,
                  std::size_t V, double temp, const upstream& u) {
  const double fmt = std::is_same_v<G, float> ? 0.0 : (std::is_same_v<G, k::bf16> ? 0x1p-8 : 0x1p-11);
  const double floor16 = std::is_same_v<G, float> ? 0.0 : 0x1p-24;
  double worst = 0.0;
  std::vector<double> ref;
  for (std::size_t i = 0; i < N; ++i) {
    const double* row = xd.data() + i * V;
    ref_backward(row, V, y[i], temp, u.g[i], u.h[i], ref);
    const auto r = ref_forward(row, V, y[i], temp);
    double mx = 0.0;
    for (std::size_t j = 0; j < V; ++j) mx = std::max(mx, std::abs(ref[j]));
    for (std::size_t j = 0; j < V; ++j) {
      const double got = k::to_float(gx[i * V + j]);
      if (!std::isfinite(got)) return HUGE_VAL;
      const double scale = mx + (y[i] >= 0 ? entropy_term_size(row, j, r, temp, u.h[i]) : 0.0);
      const double err = std::max(0.0, std::abs(got - ref[j]) - fmt * std::abs(ref[j]) - floor16);
      if (err > 0.0) worst = std::max(worst, scale > 0.0 ? err / scale : HUGE_VAL);
    }
  }
  return worst;
}

template <class T, class G>
void check_entropy_backward(std::size_t N, std::size_t V, double temp, unsigned seed) {
  auto p = make<T>(N, V, seed);
  const upstream u = make_upstream(N, seed + 1);
  isa_guard guard;
  for (k::cpu_isa isa : isas) {
    k::set_isa_cap(isa);
    std::vector<float> lp(N), ent(N);
    std::vector<double> lse(N);
    const k::matrix_view<const T> xv{p.x.data(), N, V};
    k::selective_log_softmax(xv, p.y, {lp, lse, ent}, {.temperature = temp});
    std::vector<G> gx(N * V, k::from_float<G>(12345.f)); // poison: every element must be written
    k::selective_log_softmax_backward(xv, p.y, {lse, u.g, ent, u.h}, k::matrix_view<G>{gx.data(), N, V},
                                      {.temperature = temp, .threads = 3});
    const double err = grad_error(gx, p.xd, p.y, N, V, temp, u);
    BOOST_TEST_INFO("isa " << k::to_string(k::active_isa()) << " in " << k::type_name_v<T> << " out " << k::type_name_v<G> << " V " << V
                           << " T " << temp);
    // fp32: 1e-6 of the row's largest entry; 16-bit outputs: their half-ulp rounding + 1e-6
    BOOST_TEST(err <= 1e-6);
  }
}

BOOST_AUTO_TEST_CASE(entropy_backward_matches_double_reference) {
  // V: 1, below / at / above the AVX2 (8) and AVX-512 (16) widths and the 4 x 16 unrolled block, ragged large
  for (std::size_t V : {1, 2, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 100, 1000, 4099})
    for (double t : {1.0, 0.7, 1.3}) check_entropy_backward<float, float>(16, V, t, static_cast<unsigned>(V * 10) + static_cast<unsigned>(t * 10));
  check_entropy_backward<float, float>(4, 151936, 1.0, 3);
  check_entropy_backward<float, float>(4, 151936 + 5, 0.8, 4);
  check_entropy_backward<k::bf16, k::bf16>(8, 151936, 1.0, 5);
  check_entropy_backward<k::bf16, float>(8, 1037, 0.9, 6);
  check_entropy_backward<k::f16, k::f16>(8, 1003, 1.1, 7);
  check_entropy_backward<float, k::bf16>(8, 517, 1.0, 8);
}

// Central differences of the double forward's L = sum_i g_i logp_i + h_i H_i, the logits taken
// as the exact (widened) values of T; the kernel's gradient stored as G.
template <class T, class G>
void check_entropy_finite_differences(std::size_t V, double temp, double scale, unsigned seed) {
  const std::size_t N = 8;
  const double step = 1e-5;
  auto p = make<T>(N, V, seed, scale);
  upstream u = make_upstream(N, seed + 1);
  u.g[0] = 0.7f, u.h[0] = -1.3f; // row 0 always mixes both
  std::vector<float> lp(N), ent(N);
  std::vector<double> lse(N);
  const k::matrix_view<const T> xv{p.x.data(), N, V};
  k::selective_log_softmax(xv, p.y, {lp, lse, ent}, {.temperature = temp});
  std::vector<G> gx(N * V);
  k::selective_log_softmax_backward(xv, p.y, {lse, u.g, ent, u.h}, k::matrix_view<G>{gx.data(), N, V}, {.temperature = temp});
  const double fmt = std::is_same_v<G, float> ? 0.0 : (std::is_same_v<G, k::bf16> ? 0x1p-8 : 0x1p-11);
  for (std::size_t i = 0; i < N; ++i) {
    std::vector<double> row(p.xd.begin() + static_cast<long>(i * V), p.xd.begin() + static_cast<long>((i + 1) * V)), fd(V);
    auto loss = [&] {
      const auto r = ref_forward(row.data(), V, p.y[i], temp);
      return u.g[i] * r.logp + u.h[i] * r.entropy;
    };
    double mx = 0.0;
    for (std::size_t j = 0; j < V; ++j) {
      const double x0 = row[j];
      row[j] = x0 + step;
      const double up = loss();
      row[j] = x0 - step;
      const double dn = loss();
      row[j] = x0;
      fd[j] = (up - dn) / (2 * step);
      mx = std::max(mx, std::abs(fd[j]));
    }
    const auto r = ref_forward(row.data(), V, p.y[i], temp);
    double err = 0.0;
    for (std::size_t j = 0; j < V; ++j) {
      // central differences: ~1e-10 truncation and rounding, hence the 1e-4 floor
      const double size = std::max(mx + entropy_term_size(row.data(), j, r, temp, u.h[i]), 1e-4);
      err = std::max(err, (std::abs(k::to_float(gx[i * V + j]) - fd[j]) - fmt * std::abs(fd[j])) / size);
    }
    BOOST_TEST_INFO("in " << k::type_name_v<T> << " out " << k::type_name_v<G> << " V " << V << " T " << temp << " row " << i
                          << " g " << u.g[i] << " h " << u.h[i] << " max |fd| " << mx);
    BOOST_TEST(err <= 1e-6);
  }
}

BOOST_AUTO_TEST_CASE(entropy_backward_equals_finite_differences_of_the_double_forward) {
  for (std::size_t V : {5, 37, 133}) {
    check_entropy_finite_differences<float, float>(V, 1.0, 1.0, static_cast<unsigned>(V));
    check_entropy_finite_differences<float, float>(V, 0.8, 3.0, static_cast<unsigned>(V + 1));
    check_entropy_finite_differences<float, float>(V, 1.4, 0.3, static_cast<unsigned>(V + 2)); // near-uniform rows
    check_entropy_finite_differences<k::bf16, k::bf16>(V, 0.8, 2.0, static_cast<unsigned>(V + 3));
    check_entropy_finite_differences<k::bf16, float>(V, 1.0, 2.0, static_cast<unsigned>(V + 4));
  }
}

BOOST_AUTO_TEST_CASE(entropy_backward_neg_inf_logits_masked_rows_and_ignored_targets) {
  const std::size_t V = 1037, N = 6;
  auto p = make<float>(N, V, 43);
  for (std::size_t j = 0; j < V; j += 3) p.x[0 * V + j] = ninf; // row 0: a third of the vocabulary banned
  p.y[0] = 1;
  for (std::size_t j = 0; j < V; ++j) p.x[1 * V + j] = ninf; // row 1: every logit -inf
  p.x[2 * V + 7] = ninf;
  p.y[2] = 7; // row 2: the target has probability 0
  for (std::size_t j = 0; j < V; ++j) p.x[3 * V + j] = std::numeric_limits<float>::quiet_NaN(); // row 3: ignored, never read
  p.y[3] = -100;
  for (std::size_t j = 1; j < V; ++j) p.x[4 * V + j] = ninf; // row 4: one finite logit (p = 1, H = 0)
  p.y[4] = 0;
  for (std::size_t j = 0; j < V; ++j) // row 5: two finite logits, target -inf
    if (j != 10 && j != 900) p.x[5 * V + j] = ninf;
  p.y[5] = 3;
  for (std::size_t i = 0; i < N * V; ++i) p.xd[i] = p.x[i];
  const upstream u{{1.f, 1.f, 0.5f, 1.f, -0.7f, 0.3f}, {-0.8f, 2.f, 1.5f, 3.f, 1.1f, -2.f}};
  isa_guard guard;
  for (k::cpu_isa isa : isas) {
    k::set_isa_cap(isa);
    std::vector<float> lp(N), ent(N), gx(N * V, 7.f);
    std::vector<double> lse(N);
    const k::matrix_view<const float> xv{p.x.data(), N, V};
    k::selective_log_softmax(xv, p.y, {lp, lse, ent});
    BOOST_TEST(ent[4] == 0.f);
    k::selective_log_softmax_backward(xv, p.y, {lse, u.g, ent, u.h}, k::matrix_view<float>{gx.data(), N, V});
    BOOST_TEST_INFO("isa " << k::to_string(k::active_isa()));
    for (std::size_t i = 0; i < N * V; ++i) BOOST_TEST_REQUIRE(std::isfinite(gx[i]));
    for (std::size_t j = 0; j < V; j += 3) BOOST_TEST_REQUIRE(gx[j] == 0.f); // exactly zero at -inf logits
    for (std::size_t j = 0; j < V; ++j) {
      BOOST_TEST_REQUIRE(gx[1 * V + j] == 0.f);
      BOOST_TEST_REQUIRE(gx[3 * V + j] == 0.f);
      if (j != 0) BOOST_TEST_REQUIRE(gx[4 * V + j] == 0.f);
      if (j != 10 && j != 900 && j != 3) BOOST_TEST_REQUIRE(gx[5 * V + j] == 0.f);
    }
    BOOST_TEST(gx[2 * V + 7] == 0.5f); // p_y = 0: g / T, no entropy term
    BOOST_TEST(gx[5 * V + 3] == 0.3f);
    BOOST_TEST(std::abs(gx[4 * V + 0]) <= 1e-7); // p_y = 1: 1 - p_y = 0 and log p_y + H = 0
    BOOST_TEST(grad_error(gx, p.xd, p.y, N, V, 1.0, u) <= 1e-6);
  }
}

BOOST_AUTO_TEST_CASE(entropy_backward_in_place_entropy_only_and_the_plain_path) {
  for (std::size_t V : {5, 4099}) {
    const std::size_t N = 4;
    auto p = make<k::bf16>(N, V, 33);
    const k::matrix_view<const k::bf16> xv{p.x.data(), N, V};
    std::vector<float> lp(N), ent(N), gl{1.f, -0.5f, 0.25f, 0.f}, gh{0.3f, 0.f, -1.f, 2.f}, none(N, 0.f);
    std::vector<double> lse(N);
    k::selective_log_softmax(xv, p.y, {lp, lse, ent});
    // in place equals out of place
    std::vector<k::bf16> out(N * V);
    k::selective_log_softmax_backward(xv, p.y, {lse, gl, ent, gh}, k::matrix_view<k::bf16>{out.data(), N, V});
    // an empty grad_entropy is the plain log-prob backward, bit for bit
    std::vector<k::bf16> plain(N * V), plain2(N * V);
    k::selective_log_softmax_backward(xv, p.y, lse, gl, k::matrix_view<k::bf16>{plain.data(), N, V});
    k::selective_log_softmax_backward(xv, p.y, {lse, gl, {}, {}}, k::matrix_view<k::bf16>{plain2.data(), N, V});
    for (std::size_t i = 0; i < N * V; ++i) BOOST_TEST_REQUIRE(plain[i].bits == plain2[i].bits);
    // an empty grad_logp is 0: the entropy gradient alone, equal to passing zeros
    std::vector<float> a(N * V), b(N * V);
    k::selective_log_softmax_backward(xv, p.y, {lse, {}, ent, gh}, k::matrix_view<float>{a.data(), N, V});
    k::selective_log_softmax_backward(xv, p.y, {lse, none, ent, gh}, k::matrix_view<float>{b.data(), N, V});
    for (std::size_t i = 0; i < N * V; ++i) BOOST_TEST_REQUIRE(a[i] == b[i]);
    BOOST_TEST(grad_error(a, p.xd, p.y, N, V, 1.0, upstream{none, gh}) <= 1e-6);
    // the entropy gradient of a row sums to 0 (softmax is shift invariant)
    for (std::size_t i = 0; i < N; ++i) {
      double s = 0.0, m = 0.0;
      for (std::size_t j = 0; j < V; ++j) s += a[i * V + j], m = std::max(m, static_cast<double>(std::abs(a[i * V + j])));
      BOOST_TEST(std::abs(s) <= 1e-6 * std::max(m, 1e-30) * std::sqrt(static_cast<double>(V)));
    }
    k::selective_log_softmax_backward(xv, p.y, {lse, gl, ent, gh}, k::matrix_view<k::bf16>{p.x.data(), N, V});
    for (std::size_t i = 0; i < N * V; ++i) BOOST_TEST_REQUIRE(p.x[i].bits == out[i].bits);
  }
}

template <class E, class F>
void expect_error(F f, const std::string& needle) {
  try {
    f();
    BOOST_ERROR("no exception; expected one mentioning " << needle);
  } catch (const E& e) {
    BOOST_TEST_INFO(e.what());
    BOOST_TEST(std::string(e.what()).find(needle) != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(bad_arguments_throw_errors_naming_the_argument) {
  std::vector<float> x(4 * 10, 0.f), lp(4), gl(4), gx(40);
  std::vector<double> lse(4);
  std::vector<std::int64_t> y{0, 1, 2, 3};
  const k::matrix_view<const float> xv{x.data(), 4, 10};
  expect_error<msrl::shape_error>([&] { k::selective_log_softmax(xv, std::span(y).first(3), {lp, {}, {}}); }, "'targets'");
  expect_error<msrl::shape_error>([&] { k::selective_log_softmax(xv, y, {std::span(lp).first(2), {}, {}}); }, "'out.logp'");
  expect_error<msrl::invalid_argument>([&] { k::selective_log_softmax(xv, y, {lp, {}, {}}, {.temperature = 0.0}); },
                                       "'options.temperature'");
  expect_error<msrl::invalid_argument>([&] { k::selective_log_softmax(xv, y, {lp, {}, {}}, {.temperature = NAN}); },
                                       "'options.temperature'");
  y[2] = 10;
  expect_error<msrl::value_error>([&] { k::selective_log_softmax(xv, y, {lp, {}, {}}); }, "vocabulary size (10)");
  y[2] = 2;
  expect_error<msrl::shape_error>([&] { k::selective_log_softmax(k::matrix_view<const float>{x.data(), 4, 10, 5}, y, {lp, {}, {}}); },
                                  "'logits.stride'");
  expect_error<msrl::shape_error>([&] { k::selective_log_softmax(k::matrix_view<const float>{x.data(), 4, 0}, y, {lp, {}, {}}); },
                                  "'logits'");
  expect_error<msrl::shape_error>(
      [&] { k::selective_log_softmax_backward(xv, y, std::span<const double>(lse).first(1), gl, k::matrix_view<float>{gx.data(), 4, 10}); },
      "'lse'");
  expect_error<msrl::shape_error>(
      [&] { k::selective_log_softmax_backward(xv, y, lse, gl, k::matrix_view<float>{gx.data(), 4, 9}); }, "'grad_logits'");
  expect_error<msrl::shape_error>(
      [&] { k::selective_log_softmax_backward(xv, y, lse, gl, k::matrix_view<float>{x.data() + 1, 4, 10}); }, "overlap");
  std::vector<float> ent(4), gh(4);
  expect_error<msrl::shape_error>(
      [&] { k::selective_log_softmax_backward(xv, y, {lse, gl, ent, std::span<const float>(gh).first(3)}, k::matrix_view<float>{gx.data(), 4, 10}); },
      "'grad_entropy'");
  expect_error<msrl::shape_error>(
      [&] { k::selective_log_softmax_backward(xv, y, {lse, gl, {}, gh}, k::matrix_view<float>{gx.data(), 4, 10}); }, "'entropy'");
  expect_error<msrl::shape_error>(
      [&] { k::selective_log_softmax_backward(xv, y, {lse, std::span<const float>(gl).first(2), ent, gh}, k::matrix_view<float>{gx.data(), 4, 10}); },
      "'grad_logp'");
}

// ---- sum_v p_v^2 (the optional sum_p2 output, for the optimal token baseline) ----

// Plain double reference: softmax of x / T, then the sum of squares (0 for an all -inf row).
double ref_sum_p2(const double* x, std::size_t V, double temp) {
  double m = -HUGE_VAL;
  for (std::size_t j = 0; j < V; ++j) m = std::max(m, x[j] / temp);
  if (m == -HUGE_VAL) return 0.0;
  double s = 0.0, s2 = 0.0;
  for (std::size_t j = 0; j < V; ++j) {
    const double e = std::exp(x[j] / temp - m);
    s += e;
    s2 += e * e;
  }
  return s2 / (s * s);
}

// Every ISA, with and without the entropy: sum_p2 within 1e-5 relative of the reference, and the
// other outputs bit for bit those of the call without sum_p2. Rows 0-3 (when N >= 4) hold a third
// of -inf logits, only -inf logits, an ignored target over NaN logits (never read) and a single
// finite logit (sum_p2 = 1).
template <class T>
void check_sum_p2(std::size_t N, std::size_t V, double temp, unsigned seed, double scale = 3.0) {
  auto p = make<T>(N, V, seed, scale);
  if (N >= 4) {
    for (std::size_t j = 0; j < V; j += 3) p.x[0 * V + j] = k::from_float<T>(ninf);
    p.y[0] = V > 1 ? 1 : 0;
    if (V == 1) p.x[0] = k::from_float<T>(0.5f);
    for (std::size_t j = 0; j < V; ++j) p.x[1 * V + j] = k::from_float<T>(ninf);
    for (std::size_t j = 0; j < V; ++j) p.x[2 * V + j] = k::from_float<T>(std::numeric_limits<float>::quiet_NaN());
    p.y[2] = -100;
    for (std::size_t j = 0; j < V; ++j) p.x[3 * V + j] = k::from_float<T>(j == V / 2 ? 2.5f : ninf);
    for (std::size_t i = 0; i < N * V; ++i) p.xd[i] = k::to_float(p.x[i]);
  }
  const k::matrix_view<const T> xv{p.x.data(), N, V};
  isa_guard guard;
  for (k::cpu_isa isa : isas) {
    k::set_isa_cap(isa);
    for (bool with_entropy : {false, true}) {
      std::vector<float> lp(N), ent(with_entropy ? N : 0), q2(N, -7.f), lp0(N), ent0(with_entropy ? N : 0);
      std::vector<double> lse(N), lse0(N);
      const k::logprob_options o{.temperature = temp, .threads = 2};
      k::selective_log_softmax(xv, p.y, {lp, lse, ent, q2}, o);
      k::selective_log_softmax(xv, p.y, {lp0, lse0, ent0}, o);
      BOOST_TEST_INFO("isa " << k::to_string(k::active_isa()) << " type " << k::type_name_v<T> << " V " << V << " T " << temp
                             << " entropy " << with_entropy);
      for (std::size_t i = 0; i < N; ++i) {
        BOOST_TEST_INFO("row " << i);
        const double want = p.y[i] < 0 ? 0.0 : ref_sum_p2(p.xd.data() + i * V, V, temp);
        BOOST_TEST(std::abs(q2[i] - want) <= 1e-5 * want, q2[i] << " vs " << want);
        if (with_entropy || sizeof(T) == 4) { // the same online pass with and without sum_p2: same bits
          BOOST_TEST((lp[i] == lp0[i] || (std::isnan(lp[i]) && std::isnan(lp0[i]))));
          BOOST_TEST(lse[i] == lse0[i]);
          if (with_entropy) BOOST_TEST(ent[i] == ent0[i]);
        } else { // half-precision rows without extras take the two-pass forward: equal up to fp32 rounding
          BOOST_TEST((lp[i] == lp0[i] || std::abs(lp[i] - lp0[i]) <= 2e-6f * (1.0f + std::abs(lp0[i])) || (std::isnan(lp[i]) && std::isnan(lp0[i]))),
                     lp[i] << " vs " << lp0[i]);
          BOOST_TEST((std::abs(lse[i] - lse0[i]) <= 1e-6 * (1.0 + std::abs(lse0[i])) || lse[i] == lse0[i]), lse[i] << " vs " << lse0[i]);
        }
      }
      if (N >= 4) {
        BOOST_TEST(q2[1] == 0.f); // every logit -inf
        BOOST_TEST(q2[2] == 0.f); // ignored target
        BOOST_TEST(std::abs(q2[3] - 1.f) <= 1e-6f); // one finite logit: p = (0, ..., 1, ..., 0)
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(sum_p2_matches_double_reference) {
  for (std::size_t V : {1, 2, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 100, 1000, 4099})
    for (double t : {1.0, 0.7}) check_sum_p2<float>(9, V, t, static_cast<unsigned>(V * 10) + static_cast<unsigned>(t * 10));
  check_sum_p2<float>(6, 151936, 1.0, 1); // the Qwen / InternVL3.5 vocabulary
  check_sum_p2<float>(5, 151936 + 5, 0.7, 2);
  check_sum_p2<float>(5, 4099, 1.0, 3, 30.0);  // confident rows: sum_p2 near 1
  check_sum_p2<float>(5, 4099, 0.7, 4, 0.01);  // near-uniform rows: sum_p2 near 1 / V
  check_sum_p2<float>(5, 151936, 1.0, 5, 0.01);
  for (std::size_t V : {1, 9, 33, 1000, 151936})
    for (double t : {1.0, 0.7}) {
      check_sum_p2<k::bf16>(6, V, t, static_cast<unsigned>(V) + 7);
      check_sum_p2<k::f16>(6, V, t, static_cast<unsigned>(V) + 8);
    }
}

BOOST_AUTO_TEST_CASE(sum_p2_strided_rows_threads_and_bad_size) {
  const std::size_t N = 13, V = 301, ld = 320;
  auto p = make<float>(N, ld, 53);
  for (auto& t : p.y) t %= static_cast<std::int64_t>(V);
  std::vector<float> lp(N), a(N), b(N);
  const k::matrix_view<const float> xv{p.x.data(), N, V, ld};
  k::selective_log_softmax(xv, p.y, {lp, {}, {}, a}, {.temperature = 0.7, .threads = 1});
  k::selective_log_softmax(xv, p.y, {lp, {}, {}, b}, {.temperature = 0.7, .threads = 4});
  for (std::size_t i = 0; i < N; ++i) {
    BOOST_TEST(a[i] == b[i]);
    const double want = ref_sum_p2(p.xd.data() + i * ld, V, 0.7);
    BOOST_TEST(std::abs(a[i] - want) <= 1e-5 * want);
  }
  expect_error<msrl::shape_error>([&] { k::selective_log_softmax(xv, p.y, {lp, {}, {}, std::span(a).first(3)}); }, "'out.sum_p2'");
}
