// Downstream use of msrl: the core entry point plus the Eigen backend, with values checked by hand.
#include <msrl/backend/eigen.hpp>
#include <msrl/grpo.hpp>
#include <msrl/kernels/linear_logprob_eigen.hpp>

#include <Eigen/Core>
#include <cmath>
#include <cstdio>
#include <cstring>
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
  // fused linear log-prob, H = 1, V = 2: logits (h w0, h w1) = (1, 0) -> log p(0) = -log(1 + e^-1)
  const float h[1] = {1.f}, w[2] = {1.f, 0.f};
  const std::int64_t y[1] = {0};
  float lp[1] = {0.f};
  msrl::kernels::linear_selective_log_softmax({h, 1, 1}, {w, 2, 1}, y, lp);
  if (std::abs(lp[0] + std::log1p(std::exp(-1.0))) > 1e-6) {
    std::printf("wrong linear log-prob: %g\n", static_cast<double>(lp[0]));
    return 1;
  }
#ifdef CONSUMER_EXPECTS_BLAS
  const char* want = "blas";
#else
  const char* want = "eigen";
#endif
  if (std::strcmp(msrl::kernels::detail::host_gemm_name, want) != 0) {
    std::printf("host GEMM is %s, expected %s\n", msrl::kernels::detail::host_gemm_name, want);
    return 1;
  }
  std::printf("msrl consumer OK (host GEMM: %s)\n", want);
  return 0;
}
