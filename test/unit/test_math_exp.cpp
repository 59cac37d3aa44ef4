// msrl's exp (grpo/scalar_math.hpp) against libm, in every lane type the host runs: the double
// vector lanes' polynomial (AVX-512 and AVX2) within 2 ulp over the whole double range; the fp32
// lanes' exp within 2 ulp on every 61st float of its range; fp32 k3 KL values and gradients within
// a few ulp where e^d - d - 1 cancels; exact special values everywhere; the fp32 exp's short route
// (all lanes in [-87, 87]) and the double one's (all in [-708, 708]) bit for bit against the general ones.
#define BOOST_TEST_MODULE math_exp
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <msrl/grpo/scalar_math.hpp>

namespace m = msrl::grpo::math;
namespace simd = msrl::simd;

namespace {

// One register of lanes through the formula, compiled for the lanes' ISA. kind 0: exp; 1: the k3
// value; 2: its gradient.
#ifdef MSRL_HAS_VECTOR_LANES
template <class V, class E>
inline void apply(int kind, const E* x, E* y) {
  const V v = simd::load_as<V>(x);
  const m::kl_params kp{msrl::grpo::kl_estimator::k3, false, 20.0, 10.0};
  if (kind == 0) simd::store_as(y, m::exp(v));
  else { // x = ref - logp with logp = 0
    const m::value_grad<V> k = m::kl_penalty(simd::splat<V>(0.0), v, kp);
    simd::store_as(y, kind == 1 ? k.value : k.grad);
  }
}
MSRL_FLATTEN_AVX512 void run_avx512(int kind, const double* x, double* y) { apply<simd::f64x8>(kind, x, y); }
MSRL_FLATTEN_AVX512 void run_avx512(int kind, const float* x, float* y) { apply<simd::f32x16>(kind, x, y); }
MSRL_FLATTEN_AVX2 void run_avx2(int kind, const double* x, double* y) { apply<simd::f64x4>(kind, x, y); }
MSRL_FLATTEN_AVX2 void run_avx2(int kind, const float* x, float* y) { apply<simd::f32x8>(kind, x, y); }
#endif

// f lane-wise over xs on an ISA (16 elements per call covers both widths).
template <class E>
std::vector<E> lanes(msrl::cpu_isa isa, int kind, std::vector<E> xs) {
  while (xs.size() % 16) xs.push_back(0);
  std::vector<E> ys(xs.size());
#ifdef MSRL_HAS_VECTOR_LANES
  const std::size_t W = isa == msrl::cpu_isa::avx512 ? 64 / sizeof(E) : 32 / sizeof(E);
  for (std::size_t i = 0; i < xs.size(); i += W) {
    if (isa == msrl::cpu_isa::avx512) run_avx512(kind, xs.data() + i, ys.data() + i);
    else run_avx2(kind, xs.data() + i, ys.data() + i);
  }
#else
  (void)isa, (void)kind;
#endif
  return ys;
}

std::vector<msrl::cpu_isa> vector_isas() {
  std::vector<msrl::cpu_isa> v;
#ifdef MSRL_HAS_VECTOR_LANES
  if (msrl::detected_isa() >= msrl::cpu_isa::avx2) v.push_back(msrl::cpu_isa::avx2);
  if (msrl::detected_isa() >= msrl::cpu_isa::avx512) v.push_back(msrl::cpu_isa::avx512);
#endif
  if (v.empty()) BOOST_TEST_MESSAGE("no vector ISA on this CPU: only the scalar lanes are checked");
  return v;
}

} // namespace

BOOST_AUTO_TEST_CASE(double_lanes_against_libm) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(-745.0, 709.7);
  std::vector<double> xs;
  for (int i = 0; i < 200000; ++i) xs.push_back(i < 100000 ? u(rng) : (i - 150000) * 1e-3); // wide, then near 0
  for (msrl::cpu_isa isa : vector_isas()) {
    const std::vector<double> ys = lanes(isa, 0, xs);
    double worst = 0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const double e = std::exp(xs[i]);
      if (e < 1e-300) continue; // subnormal results: compare absolutely below
      worst = std::max(worst, std::abs(ys[i] - e) / e);
    }
    BOOST_TEST(worst <= 4.5e-16, msrl::to_string(isa) << ": max relative error " << worst);
    const std::vector<double> sub{-740.0, -744.0, -708.5};
    const std::vector<double> ysub = lanes(isa, 0, sub);
    for (std::size_t i = 0; i < sub.size(); ++i)
      BOOST_TEST(std::abs(ysub[i] - std::exp(sub[i])) <=
                 4 * std::numeric_limits<double>::denorm_min() + 1e-16 * std::exp(sub[i]));
  }
}

BOOST_AUTO_TEST_CASE(special_values) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  BOOST_TEST(std::isnan(m::exp(nan)));
  BOOST_TEST(m::exp(inf) == inf);
  BOOST_TEST(m::exp(-inf) == 0.0);
  BOOST_TEST(m::exp(0.0) == 1.0);
  for (msrl::cpu_isa isa : vector_isas()) {
    const std::vector<double> d = lanes(isa, 0, std::vector<double>{nan, inf, -inf, 710.0, -746.0, 0.0});
    BOOST_TEST(std::isnan(d[0]));
    BOOST_TEST(d[1] == inf);
    BOOST_TEST(d[2] == 0.0);
    BOOST_TEST(d[3] == inf);
    BOOST_TEST(d[4] == 0.0);
    BOOST_TEST(d[5] == 1.0);
    const float finf = std::numeric_limits<float>::infinity();
    const std::vector<float> f = lanes(isa, 0, std::vector<float>{std::numeric_limits<float>::quiet_NaN(), finf, -finf,
                                                                   88.8f, -104.0f, 0.0f, 88.72f});
    BOOST_TEST(std::isnan(f[0]));
    BOOST_TEST(f[1] == finf);
    BOOST_TEST(f[2] == 0.0f);
    BOOST_TEST(f[3] == finf);
    BOOST_TEST(f[4] == 0.0f);
    BOOST_TEST(f[5] == 1.0f);
    BOOST_TEST(std::isfinite(f[6]));
  }
}

// The fp32 exp's bound (2 ulp of the result) on every 61st float in [-87.3, 88.72] (normal
// results), and monotone non-decreasing, with errors measured against the double exp.
BOOST_AUTO_TEST_CASE(float_lanes_within_two_ulp) {
  std::vector<float> xs;
  auto sweep = [&](std::uint32_t lo, std::uint32_t hi) {
    for (std::uint64_t b = lo; b <= hi; b += 61) {
      float x;
      const std::uint32_t bits = static_cast<std::uint32_t>(b);
      std::memcpy(&x, &bits, 4);
      xs.push_back(x);
    }
  };
  float hi_x = 88.72f, lo_x = -87.33f;
  std::uint32_t hi_bits, lo_bits;
  std::memcpy(&hi_bits, &hi_x, 4);
  std::memcpy(&lo_bits, &lo_x, 4);
  sweep(0u, hi_bits);            // +0 .. 88.72
  sweep(0x80000000u, lo_bits);   // -0 .. -87.33
  for (msrl::cpu_isa isa : vector_isas()) {
    const std::vector<float> ys = lanes(isa, 0, xs);
    double worst = 0.0;
    float at = 0.f;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const double e = std::exp(static_cast<double>(xs[i]));
      const double ulp = std::nextafter(static_cast<float>(e), std::numeric_limits<float>::infinity()) -
                         static_cast<double>(static_cast<float>(e));
      const double err = std::abs(ys[i] - e) / ulp;
      if (err > worst) worst = err, at = xs[i];
    }
    BOOST_TEST_MESSAGE(msrl::to_string(isa) << " fp32 exp: " << xs.size() << " points, max error " << worst
                                            << " ulp at x = " << at);
    BOOST_TEST(worst <= 2.0, msrl::to_string(isa) << ": max error " << worst << " ulp at x = " << at);
  }
}

// The exp takes a short route when all lanes of a register lie in [-bound, bound] (fp32: 87,
// double: 708) and the general one (clamp, special values, 2^k as two powers) otherwise. One lane
// in every 4 out of range (every register has one, on either width) sends its register down the
// general route: the other lanes must come out with the same bits, and the out-of-range lanes
// with the exact special values (+inf, 0, NaN).
template <class E>
void short_and_general_routes_agree(E bound, E step, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<E> u(-bound, bound);
  std::vector<E> xs(16 * 400);
  for (E& x : xs) x = u(rng);
  for (std::size_t i = 0; i < 16 * 5; ++i) { // both edges
    xs[i] = -bound + step * static_cast<E>(i);
    xs[xs.size() - 1 - i] = bound - step * static_cast<E>(i);
  }
  std::vector<E> mixed = xs;
  const E over[3] = {bound * E(2), -bound * E(2), std::numeric_limits<E>::quiet_NaN()};
  for (std::size_t i = 0; i < mixed.size(); i += 4) mixed[i] = over[(i / 4) % 3];
  for (msrl::cpu_isa isa : vector_isas()) {
    const std::vector<E> a = lanes(isa, 0, xs), b = lanes(isa, 0, mixed);
    std::size_t differ = 0;
    for (std::size_t i = 0; i < xs.size(); ++i)
      if (i % 4 != 0 && std::memcmp(&a[i], &b[i], sizeof(E)) != 0) ++differ;
    BOOST_TEST(differ == 0u, msrl::to_string(isa) << ": " << differ << " lanes differ");
    for (std::size_t i = 0; i < mixed.size(); i += 4) {
      if ((i / 4) % 3 == 0) BOOST_TEST(std::isinf(b[i]));
      else if ((i / 4) % 3 == 1) BOOST_TEST(b[i] == E(0));
      else BOOST_TEST(std::isnan(b[i]));
    }
  }
}

BOOST_AUTO_TEST_CASE(float_exp_short_and_general_routes_agree) { short_and_general_routes_agree<float>(87.f, 0.25f, 5); }
BOOST_AUTO_TEST_CASE(double_exp_short_and_general_routes_agree) { short_and_general_routes_agree<double>(708.0, 0.125, 6); }

// fp32 k3 = e^d - d - 1 and its gradient 1 - e^d (logp = 0, ref = d) against the double formula,
// on |d| from 1e-8 to 2.5 (below the value clamp of 10): within 4 ulp of the value's size (the plain fp32 formula loses every
// digit near d = 0).
BOOST_AUTO_TEST_CASE(float_k3_keeps_its_digits_near_zero) {
  std::vector<float> xs;
  for (double a = 1e-8; a < 2.5; a *= 1.01) xs.push_back(static_cast<float>(a)), xs.push_back(static_cast<float>(-a));
  for (msrl::cpu_isa isa : vector_isas()) {
    const std::vector<float> v = lanes(isa, 1, xs), gr = lanes(isa, 2, xs);
    double worst_v = 0.0, worst_g = 0.0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const double d = xs[i], kv = std::expm1(d) - d, kg = -std::expm1(d);
      worst_v = std::max(worst_v, std::abs(v[i] - kv) / kv);
      worst_g = std::max(worst_g, std::abs(gr[i] - kg) / std::abs(kg));
    }
    BOOST_TEST(worst_v <= 4 * 1.2e-7, msrl::to_string(isa) << ": k3 value max relative error " << worst_v);
    BOOST_TEST(worst_g <= 4 * 1.2e-7, msrl::to_string(isa) << ": k3 gradient max relative error " << worst_g);
  }
}
