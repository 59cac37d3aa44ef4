// Downstream use of msrl: the core entry point plus the Eigen backend, with values checked by hand.
#include <msrl/backend/eigen.hpp>
#include <msrl/grpo.hpp>

#include <Eigen/Core>
#include <cmath>
#include <cstdio>
#include <utility>

int main() {
  Eigen::VectorXd rewards(4), adv(4);
  rewards << 1, 0, 1, 0; // group mean 0.5, unbiased std sqrt(1/3)
  msrl::grpo::advantages(msrl::backend::eigen{}, msrl::eigen::as_span(std::as_const(rewards)), 4,
                         msrl::eigen::as_span(adv), {.std_eps = 0.0});
  const double expect = 0.5 / std::sqrt(1.0 / 3.0);
  if (std::abs(adv(0) - expect) > 1e-12 || std::abs(adv(1) + expect) > 1e-12) {
    std::printf("wrong advantages: %g %g (expected +-%g)\n", adv(0), adv(1), expect);
    return 1;
  }
  std::printf("msrl consumer OK\n");
  return 0;
}
