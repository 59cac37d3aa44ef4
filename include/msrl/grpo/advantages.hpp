#pragma once
/// \file Group-relative advantages: GRPO (group mean baseline), RLOO (leave-one-out baseline),
/// std scaling none / group / batch, GDPO per-reward normalisation, NaN-aware multi-reward sums.
///
///   R_i  = sum_k w_k r_ik over the reward columns that scored row i (NaN = "could not score")
///   A_i  = (R_i - b_i) / (s + eps)        b_i: group mean (GRPO) or leave-one-out mean (RLOO)
///                                         s: 1 (none), group std, or batch std
/// See docs/grpo-math.md for every mode and the peer file it matches.
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>
#include <ranges>

#include "../backend/concept.hpp"
#include "../backend/reference.hpp"
#include "../core/error.hpp"
#include "../core/ranges.hpp"

namespace msrl::grpo {

/// Division of the centred reward.
enum class std_scaling : std::uint8_t {
  none,  ///< A = R - baseline (Dr.GRPO; MSRL release `--scale_rewards none`)
  group, ///< divide by the group std (TRL/ms-swift/verl default)
  batch, ///< group-mean baseline, batch std (TRL/ms-swift "batch", LitePPO)
};

/// What a group with fewer than two scored members receives.
enum class singleton_policy : std::uint8_t {
  zero,      ///< A = 0 (TRL nanstd -> NaN -> 0; ms-swift std = 0)
  raw_score, ///< mean 0, std 1: A = R / (1 + eps) with group scaling, else R (verl compute_grpo_outcome_advantage)
};

/// Baseline subtracted from each reward.
enum class baseline : std::uint8_t {
  group_mean,    ///< GRPO
  leave_one_out, ///< RLOO: b_i = (sum_group - R_i) / (n - 1)  (= n/(n-1) * (R_i - mean))
};

/// How several reward columns become one advantage.
enum class reward_aggregation : std::uint8_t {
  sum_then_normalize, ///< R = nansum_k w_k r_k, then the baseline/scaling above (TRL default)
  normalize_then_sum, ///< GDPO: per-column group z-score, weighted sum, then batch z-score
};

/// Rows that no reward column could score (all NaN).
enum class nan_policy : std::uint8_t {
  exclude, ///< row left out of the group/batch statistics, A = 0 (TRL)
  as_zero, ///< NaN terms count as 0 and the row stays in the statistics (ms-swift nansum)
};

struct advantage_options {
  std_scaling scaling = std_scaling::group;
  bool unbiased_std = true;   ///< Bessel's correction (n-1), as every peer; false: divide by n
  double std_eps = 1e-4;      ///< added to the std (TRL/ms-swift 1e-4, verl 1e-6, OpenRLHF 1e-9)
  double var_floor = 0.0;     ///< std = sqrt(max(var, var_floor)) (old verl vectorised: 1e-6)
  singleton_policy singleton = singleton_policy::zero;
  baseline base = baseline::group_mean;
  reward_aggregation aggregation = reward_aggregation::sum_then_normalize;
  nan_policy nans = nan_policy::exclude;
  double zero_std_tol = 1e-8; ///< a group counts as zero-variance when std <= tol (torch.isclose atol)
};

/// Statistics returned with the advantages.
struct advantage_stats {
  std::size_t num_groups = 0;
  std::size_t zero_std_groups = 0;
  double zero_std_fraction = 0.0; ///< TRL/ms-swift "frac_reward_zero_std"
  double reward_mean = 0.0;       ///< over scored rows
  double reward_std = 0.0;        ///< over scored rows (same ddof as the options)
  std::size_t unscorable_rows = 0;
};

/// One weight per reward column, viewed from float or double values (any contiguous range of
/// either: a std::vector, a std::array, a span). Empty = every weight 1.
class reward_weights {
public:
  constexpr reward_weights() = default;
  constexpr reward_weights(std::span<const double> w) : d_(w.data()), n_(w.size()) {}
  constexpr reward_weights(std::span<const float> w) : f_(w.data()), n_(w.size()) {}
  template <std::ranges::contiguous_range R>
    requires std::ranges::sized_range<R> &&
             (std::same_as<std::ranges::range_value_t<R>, double> || std::same_as<std::ranges::range_value_t<R>, float>)
  constexpr reward_weights(const R& w)
      : reward_weights(std::span<const std::ranges::range_value_t<R>>(std::ranges::data(w), std::ranges::size(w))) {}

  constexpr std::size_t size() const { return n_; }
  constexpr bool empty() const { return n_ == 0; }
  constexpr double operator[](std::size_t k) const { return d_ ? d_[k] : static_cast<double>(f_[k]); }

private:
  const double* d_ = nullptr;
  const float* f_ = nullptr;
  std::size_t n_ = 0;
};

/// Rewards as a row-major [rows, columns] matrix plus one weight per column (empty = all 1).
template <class T>
struct reward_matrix {
  std::span<const T> values;
  std::size_t columns = 1;
  reward_weights weights = {};
};

namespace detail_adv {

// Weighted row reward; NaN when every column is NaN and the policy excludes such rows.
template <class T>
MSRL_HOST_DEVICE inline double row_reward(const T* r, std::size_t row, std::size_t K, const double* w, bool exclude) {
  double s = 0.0;
  bool any = false;
  for (std::size_t k = 0; k < K; ++k) {
    const double v = static_cast<double>(r[row * K + k]);
    if (v == v) {
      s += (w ? w[k] : 1.0) * v;
      any = true;
    }
  }
  return (any || !exclude) ? s : std::numeric_limits<double>::quiet_NaN();
}

// Group mean/std over the non-NaN values x[0..n) read through get(j).
struct group_moments {
  double mean;
  double std;
  double count;
};
template <class Get>
MSRL_HOST_DEVICE inline group_moments moments(std::size_t n, Get get, bool unbiased, double var_floor) {
  double s = 0.0, c = 0.0;
  for (std::size_t j = 0; j < n; ++j) {
    const double v = get(j);
    if (v == v) { s += v; c += 1.0; }
  }
  const double mean = c > 0.0 ? s / c : 0.0;
  double ss = 0.0;
  for (std::size_t j = 0; j < n; ++j) {
    const double v = get(j);
    if (v == v) ss += (v - mean) * (v - mean);
  }
  const double d = unbiased ? c - 1.0 : c;
  double var = d > 0.0 ? ss / d : 0.0;
  if (var < var_floor) var = var_floor;
  return {mean, std::sqrt(var), c};
}

} // namespace detail_adv

/// Computes advantages into `out` (one per row). Rows are grouped consecutively in groups of
/// `group_size` (rows = groups * group_size). Throws msrl::invalid_argument on bad input.
template <msrl::execution_backend Backend, class T, class U>
advantage_stats advantages(const Backend& exec, reward_matrix<T> rewards, std::size_t group_size, std::span<U> out,
                           const advantage_options& opt = {}) {
  constexpr const char* where = "msrl::grpo::advantages";
  require(rewards.columns >= 1, where, "rewards.columns", "must be at least 1");
  require<shape_error>(rewards.values.size() % rewards.columns == 0, where, "rewards.values",
                       "size must be a multiple of rewards.columns");
  const std::size_t N = rewards.values.size() / rewards.columns, K = rewards.columns;
  require(group_size >= 1, where, "group_size", "must be at least 1");
  require<shape_error>(N % group_size == 0, where, "group_size",
                       "must divide the number of rows (" + std::to_string(N) + ")");
  require<shape_error>(out.size() == N, where, "out", "must have one element per reward row (" + std::to_string(N) + ")");
  require<shape_error>(rewards.weights.empty() || rewards.weights.size() == K, where, "rewards.weights",
                       "must be empty or have one weight per column");
  std::vector<double> host_weights(rewards.weights.size());
  for (std::size_t k = 0; k < host_weights.size(); ++k) {
    host_weights[k] = rewards.weights[k];
    require<value_error>(std::isfinite(host_weights[k]), where, "rewards.weights", "must be finite");
  }
  require(opt.std_eps >= 0.0 && std::isfinite(opt.std_eps), where, "options.std_eps", "must be finite and >= 0");
  require(opt.var_floor >= 0.0 && std::isfinite(opt.var_floor), where, "options.var_floor", "must be finite and >= 0");
  require(opt.zero_std_tol >= 0.0, where, "options.zero_std_tol", "must be >= 0");

  const std::size_t G = group_size, ngroups = N / G;
  advantage_stats st{};
  st.num_groups = ngroups;
  if (N == 0) return st;

  // Weights must be readable by the backend: copy them into its memory.
  typename Backend::template buffer<double> wbuf(K);
  if (!rewards.weights.empty()) wbuf.copy_from_host(std::span<const double>(host_weights));
  const double* w = rewards.weights.empty() ? nullptr : wbuf.data();
  const T* r = rewards.values.data();
  U* a = out.data();
  const bool exclude = opt.nans == nan_policy::exclude;
  const bool unbiased = opt.unbiased_std;
  const double var_floor = opt.var_floor, eps = opt.std_eps, tol = opt.zero_std_tol;

  // Reward values must be finite or NaN (NaN = not scored); +-inf is rejected.
  auto bad = exec.reduce_n(N * K, [r] MSRL_HOST_DEVICE(std::size_t i) {
    const double v = static_cast<double>(r[i]);
    sums<1> s{};
    s[0] = (v == v && (v == HUGE_VAL || v == -HUGE_VAL)) ? 1.0 : 0.0;
    return s;
  }, sums<1>{});
  require<value_error>(bad[0] == 0.0, where, "rewards.values", "must be finite or NaN (NaN marks an unscored term)");

  // Batch statistics of the scalar reward (used for batch scaling and reported).
  auto bsum = exec.reduce_n(N, [=] MSRL_HOST_DEVICE(std::size_t i) {
    const double R = detail_adv::row_reward(r, i, K, w, exclude);
    sums<3> s{};
    if (R == R) { s[0] = R; s[1] = 1.0; } else { s[2] = 1.0; }
    return s;
  }, sums<3>{});
  const double bcount = bsum[1];
  const double bmean = bcount > 0 ? bsum[0] / bcount : 0.0;
  auto bss = exec.reduce_n(N, [=] MSRL_HOST_DEVICE(std::size_t i) {
    const double R = detail_adv::row_reward(r, i, K, w, exclude);
    sums<1> s{};
    s[0] = (R == R) ? (R - bmean) * (R - bmean) : 0.0;
    return s;
  }, sums<1>{});
  const double bden = unbiased ? bcount - 1.0 : bcount;
  double bvar = bden > 0 ? bss[0] / bden : 0.0;
  st.reward_mean = bmean;
  st.reward_std = std::sqrt(bvar);
  st.unscorable_rows = static_cast<std::size_t>(bsum[2]);
  if (bvar < var_floor) bvar = var_floor;
  const double bstd = std::sqrt(bvar);

  const std_scaling scaling = opt.scaling;
  const bool rloo = opt.base == baseline::leave_one_out;
  const bool raw_singleton = opt.singleton == singleton_policy::raw_score;

  if (opt.aggregation == reward_aggregation::sum_then_normalize) {
    auto zs = exec.reduce_n(ngroups, [=] MSRL_HOST_DEVICE(std::size_t g) {
      const std::size_t r0 = g * G;
      auto get = [=](std::size_t j) { return detail_adv::row_reward(r, r0 + j, K, w, exclude); };
      detail_adv::group_moments m = detail_adv::moments(G, get, unbiased, var_floor);
      const bool singleton = m.count < 2.0;
      double mean = m.mean, sd = m.std;
      if (singleton && raw_singleton) { mean = 0.0; sd = 1.0; }
      for (std::size_t j = 0; j < G; ++j) {
        const double R = get(j);
        double adv = 0.0;
        if (R == R && !(singleton && !raw_singleton)) {
          double c = R - mean;
          if (rloo && !singleton) c *= m.count / (m.count - 1.0);
          if (scaling == std_scaling::group) c /= (sd + eps); // raw singleton: R / (1 + eps), as verl
          else if (singleton && raw_singleton) c = R;
          else if (scaling == std_scaling::batch) c /= (bstd + eps);
          adv = c;
        }
        a[r0 + j] = static_cast<U>(adv);
      }
      sums<1> s{};
      s[0] = (m.std <= tol) ? 1.0 : 0.0;
      return s;
    }, sums<1>{});
    st.zero_std_groups = static_cast<std::size_t>(zs[0]);
  } else {
    // GDPO: z-score each column within its group (NaN -> 0), weighted sum, then batch z-score.
    typename Backend::template buffer<double> xbuf(N);
    double* x = xbuf.data();
    auto zs = exec.reduce_n(ngroups, [=] MSRL_HOST_DEVICE(std::size_t g) {
      const std::size_t r0 = g * G;
      for (std::size_t j = 0; j < G; ++j) x[r0 + j] = 0.0;
      double zero_std_all = 1.0;
      for (std::size_t k = 0; k < K; ++k) {
        auto get = [=](std::size_t j) { return static_cast<double>(r[(r0 + j) * K + k]); };
        detail_adv::group_moments m = detail_adv::moments(G, get, unbiased, var_floor);
        if (!(m.std <= tol)) zero_std_all = 0.0;
        for (std::size_t j = 0; j < G; ++j) {
          const double v = get(j);
          if (v == v && m.count >= 2.0)
            x[r0 + j] += (w ? w[k] : 1.0) * (v - m.mean) / (m.std + eps);
        }
      }
      sums<1> s{};
      s[0] = zero_std_all;
      return s;
    }, sums<1>{});
    st.zero_std_groups = static_cast<std::size_t>(zs[0]);
    auto xs = exec.reduce_n(N, [=] MSRL_HOST_DEVICE(std::size_t i) {
      sums<1> s{};
      s[0] = x[i];
      return s;
    }, sums<1>{});
    const double xmean = xs[0] / static_cast<double>(N);
    auto xss = exec.reduce_n(N, [=] MSRL_HOST_DEVICE(std::size_t i) {
      const double d = x[i] - xmean;
      sums<1> s{};
      s[0] = d * d;
      return s;
    }, sums<1>{});
    const double xden = unbiased ? static_cast<double>(N) - 1.0 : static_cast<double>(N);
    double xvar = xden > 0 ? xss[0] / xden : 0.0;
    if (xvar < var_floor) xvar = var_floor;
    const double xstd = std::sqrt(xvar);
    exec.for_each_n(N, [=] MSRL_HOST_DEVICE(std::size_t i) {
      a[i] = static_cast<U>((x[i] - xmean) / (xstd + eps));
    });
  }
  st.zero_std_fraction = ngroups ? static_cast<double>(st.zero_std_groups) / static_cast<double>(ngroups) : 0.0;
  return st;
}

/// Single reward column convenience overload.
template <msrl::execution_backend Backend, class T, class U>
advantage_stats advantages(const Backend& exec, std::span<const T> rewards, std::size_t group_size, std::span<U> out,
                           const advantage_options& opt = {}) {
  return advantages(exec, reward_matrix<T>{rewards, 1, {}}, group_size, out, opt);
}

/// The same with the advantages written to any writable contiguous range (std::vector<float>, ...).
template <msrl::execution_backend Backend, class T, msrl::output_range R>
advantage_stats advantages(const Backend& exec, reward_matrix<T> rewards, std::size_t group_size, R&& out,
                           const advantage_options& opt = {}) {
  return advantages(exec, rewards, group_size, msrl::as_span(out), opt);
}
template <msrl::execution_backend Backend, class T, msrl::output_range R>
advantage_stats advantages(const Backend& exec, std::span<const T> rewards, std::size_t group_size, R&& out,
                           const advantage_options& opt = {}) {
  return advantages(exec, reward_matrix<T>{rewards, 1, {}}, group_size, msrl::as_span(out), opt);
}

/// Overloads without a backend run on the reference backend.
template <class T, class U>
advantage_stats advantages(reward_matrix<T> rewards, std::size_t group_size, std::span<U> out,
                           const advantage_options& opt = {}) {
  return advantages(backend::reference{}, rewards, group_size, out, opt);
}
template <class T, class U>
advantage_stats advantages(std::span<const T> rewards, std::size_t group_size, std::span<U> out,
                           const advantage_options& opt = {}) {
  return advantages(backend::reference{}, rewards, group_size, out, opt);
}
template <class T, msrl::output_range R>
advantage_stats advantages(reward_matrix<T> rewards, std::size_t group_size, R&& out, const advantage_options& opt = {}) {
  return advantages(backend::reference{}, rewards, group_size, msrl::as_span(out), opt);
}

} // namespace msrl::grpo
