#pragma once
/// \file Composition of reward functions into a weighted sum, and batch scoring into the
/// row-major [rows, columns] layout that msrl::grpo::reward_matrix consumes:
///
///   auto rs = msrl::reward::preset("paper");
///   auto scores = rs.score(samples);                       // one column per function
///   msrl::grpo::reward_matrix<double> m{scores.values, scores.columns, scores.weights};
///
/// The total of a row is the ms-swift rule: sum_k w_k r_k over the non-NaN terms (nansum).
#include <cmath>
#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "sample.hpp"

namespace msrl::reward {

/// Per-function scores of a batch.
struct batch_scores {
  std::size_t rows = 0;
  std::size_t columns = 0;
  std::vector<std::string> names; ///< one per column
  std::vector<double> weights;    ///< one per column
  std::vector<double> values;     ///< rows * columns, row-major: values[i * columns + k]
  std::vector<double> totals;     ///< one per row: nansum_k weights[k] * values[i, k]

  /// Column k as a strided copy.
  std::vector<double> column(std::size_t k) const {
    require<shape_error>(k < columns, "msrl::reward::batch_scores::column", "k", "must be < columns");
    std::vector<double> c(rows);
    for (std::size_t i = 0; i < rows; ++i) c[i] = values[i * columns + k];
    return c;
  }
};

/// A named, weighted list of reward functions. Itself a reward_function (returns the total).
class reward_set {
public:
  struct term {
    std::string name;
    double weight;
    std::function<double(const sample&)> fn;
  };

  /// Appends a function. Names must be non-empty and unique; weights finite. A function with a
  /// `validate()` member (the length rewards) is validated here, so invalid options throw now.
  template <reward_function F>
  reward_set& add(std::string name, double weight, F f) {
    constexpr const char* where = "msrl::reward::reward_set::add";
    require(!name.empty(), where, "name", "must not be empty");
    for (const term& t : terms_) require(t.name != name, where, "name", "must be unique (duplicate '" + name + "')");
    require<value_error>(std::isfinite(weight), where, "weight", "must be finite");
    if constexpr (requires { f.validate(); }) f.validate();
    terms_.push_back(term{std::move(name), weight, [g = std::move(f)](const sample& s) {
                            return static_cast<double>(std::invoke(g, s));
                          }});
    return *this;
  }

  std::size_t size() const noexcept { return terms_.size(); }
  const std::vector<term>& terms() const noexcept { return terms_; }

  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (const term& t : terms_) n.push_back(t.name);
    return n;
  }
  std::vector<double> weights() const {
    std::vector<double> w;
    for (const term& t : terms_) w.push_back(t.weight);
    return w;
  }

  /// Writes each function's raw value into out (size() elements); returns the weighted nansum.
  double score_terms(const sample& s, std::span<double> out) const {
    require<shape_error>(out.size() == terms_.size(), "msrl::reward::reward_set::score_terms", "out",
                         "must have one element per function");
    double total = 0.0;
    for (std::size_t k = 0; k < terms_.size(); ++k) {
      out[k] = terms_[k].fn(s);
      if (!std::isnan(out[k])) total += terms_[k].weight * out[k];
    }
    return total;
  }

  /// The weighted nansum of every function.
  double operator()(const sample& s) const {
    double total = 0.0;
    for (const term& t : terms_) {
      const double v = t.fn(s);
      if (!std::isnan(v)) total += t.weight * v;
    }
    return total;
  }

  /// Scores a batch: one column per function, one row per sample.
  batch_scores score(std::span<const sample> batch) const {
    batch_scores b;
    b.rows = batch.size();
    b.columns = terms_.size();
    b.names = names();
    b.weights = weights();
    b.values.resize(b.rows * b.columns);
    b.totals.resize(b.rows);
    for (std::size_t i = 0; i < b.rows; ++i)
      b.totals[i] = score_terms(batch[i], std::span<double>(b.values.data() + i * b.columns, b.columns));
    return b;
  }

private:
  std::vector<term> terms_;
};

static_assert(reward_function<reward_set>);

} // namespace msrl::reward
