// msrl's exp (grpo/scalar_math.hpp) against libm: <= 2 ulp over the whole double range, exact
// special values, and identical results in scalar and vector lanes.
#define BOOST_TEST_MODULE math_exp
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <random>

#include <msrl/grpo/scalar_math.hpp>

namespace m = msrl::grpo::math;

BOOST_AUTO_TEST_CASE(accuracy_against_libm) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(-745.0, 709.7);
  double worst = 0;
  for (int i = 0; i < 200000; ++i) {
    const double x = i < 100000 ? u(rng) : (i - 150000) * 1e-3; // wide range, then dense near 0
    const double e = std::exp(x), y = m::exp(x);
    if (e < 1e-300) continue; // subnormal results: compare absolutely below
    worst = std::max(worst, std::abs(y - e) / e);
  }
  BOOST_TEST(worst <= 4.5e-16, "max relative error " << worst);
  for (double x : {-740.0, -744.0, -708.5})
    BOOST_TEST(std::abs(m::exp(x) - std::exp(x)) <= 4 * std::numeric_limits<double>::denorm_min() + 1e-16 * std::exp(x));
}

BOOST_AUTO_TEST_CASE(special_values) {
  const double inf = std::numeric_limits<double>::infinity();
  BOOST_TEST(std::isnan(m::exp(std::numeric_limits<double>::quiet_NaN())));
  BOOST_TEST(m::exp(inf) == inf);
  BOOST_TEST(m::exp(-inf) == 0.0);
  BOOST_TEST(m::exp(710.0) == inf);
  BOOST_TEST(m::exp(-746.0) == 0.0);
  BOOST_TEST(m::exp(0.0) == 1.0);
  BOOST_TEST(m::exp(1.0) == std::exp(1.0), boost::test_tools::tolerance(3e-16));
}

#ifdef MSRL_HAS_VECTOR_LANES
BOOST_AUTO_TEST_CASE(vector_lanes_equal_scalar_lanes) {
  using V = msrl::simd::vdouble;
  constexpr int W = msrl::simd::vector_width;
  std::mt19937_64 rng(5);
  std::normal_distribution<double> n(0.0, 30.0);
  for (int rep = 0; rep < 1000; ++rep) {
    V x{};
    for (int j = 0; j < W; ++j) x[j] = n(rng);
    const V y = m::exp(x);
    for (int j = 0; j < W; ++j) BOOST_TEST(y[j] == m::exp(x[j]));
  }
}
#endif
