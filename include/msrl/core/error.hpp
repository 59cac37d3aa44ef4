#pragma once
/// \file The msrl exception hierarchy. Every message names the function, the argument and the rule.
#include <stdexcept>
#include <string>
#include <string_view>

namespace msrl {

/// Base of every exception msrl throws.
class error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// An argument violates a documented rule (negative epsilon, zero token count, ...).
class invalid_argument : public error {
public:
  using error::error;
};

/// Sizes of arguments disagree (shape mismatch, group size not dividing the batch, ...).
class shape_error : public invalid_argument {
public:
  using invalid_argument::invalid_argument;
};

/// Data values are not allowed (NaN where forbidden, mask not 0/1, ...).
class value_error : public invalid_argument {
public:
  using invalid_argument::invalid_argument;
};

/// A parse failure in text input (JSONL, tags, configuration).
class parse_error : public error {
public:
  using error::error;
};

/// A file-system operation failed (core/atomic_file.hpp); the message names the function, the
/// path and the system error.
class io_error : public error {
public:
  using error::error;
};

namespace detail {
inline std::string format_error(std::string_view where, std::string_view arg, std::string_view rule) {
  std::string m;
  m.reserve(where.size() + arg.size() + rule.size() + 32);
  m.append(where).append(": argument '").append(arg).append("' ").append(rule);
  return m;
}
} // namespace detail

/// Throws E with "where: argument 'arg' rule" unless cond holds.
template <class E = invalid_argument>
inline void require(bool cond, std::string_view where, std::string_view arg, std::string_view rule) {
  if (!cond) throw E(detail::format_error(where, arg, rule));
}

} // namespace msrl
