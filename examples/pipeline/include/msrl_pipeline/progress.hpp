#pragma once
/// \file A progress bar for the trainer's stderr: label, n/total, percent, rate, elapsed, ETA and a
/// trailing metrics text. On a terminal it redraws one line in place ("\r", at most
/// `redraw_per_s` times a second); otherwise (CI logs, redirected output) it prints a plain line
/// at every `plain_every_percent` of progress or every `plain_every_s` seconds, whichever comes
/// first, so logs stay short and readable.
///
///   msrl_pipeline::progress_bar bar({.label = "stage1 sft", .total = steps});
///   for (...) {
///     ...
///     bar.set_metrics(msrl_pipeline::metrics_text({{"loss", loss}, {"acc", acc}}));
///     bar.advance();
///   }
///   bar.finish();   // also done by the destructor
///
/// Terminal:  stage1 sft [#########...........]  45/100  45% 2.31 it/s 00:19<00:23 loss 0.412 acc 0.71
/// Plain:     stage1 sft  45/100  45% 2.31 it/s 00:19<00:23 loss 0.412 acc 0.71
/// total = 0 means unknown: no bar, percent or ETA ("stage1 sft 45 it 2.31 it/s 00:19").
/// Below one item a second the rate reads "12.5 s/it". Not thread-safe: update from one thread.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

#include <sys/ioctl.h>
#include <unistd.h>

namespace msrl_pipeline {

struct progress_options {
  std::string label;
  std::uint64_t total = 0;              ///< 0 = unknown
  bool enabled = true;                  ///< false: print nothing at all
  std::optional<bool> tty;              ///< nullopt: isatty() when the stream is std::cerr/clog/cout, else false
  double redraw_per_s = 10.0;           ///< terminal: most redraws per second
  double plain_every_percent = 10.0;    ///< plain: a line each time progress crosses a multiple of this
  double plain_every_s = 30.0;          ///< plain: a line at least this often while running
  int bar_width = 20;                   ///< terminal: characters inside [ ]
  std::function<double()> clock;        ///< seconds, monotonic; empty: std::chrono::steady_clock
};

/// "mm:ss", or "h:mm:ss" from one hour; negative or non-finite gives "--:--".
inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%02lld:%02lld", s / 60, s % 60);
  return buf;
}

/// "2.31 it/s", or "12.5 s/it" below one item per second; "-- it/s" when unknown.
inline std::string format_rate(double items_per_s) {
  char buf[32];
  if (!std::isfinite(items_per_s) || items_per_s <= 0) return "-- it/s";
  if (items_per_s >= 1.0) std::snprintf(buf, sizeof buf, items_per_s >= 100 ? "%.0f it/s" : "%.2f it/s", items_per_s);
  else std::snprintf(buf, sizeof buf, "%.3g s/it", 1.0 / items_per_s);
  return buf;
}

/// "reward 0.83 acc 0.71": names and values with 3 significant digits (non-finite as "nan").
inline std::string metrics_text(std::initializer_list<std::pair<std::string_view, double>> values) {
  std::string out;
  for (const auto& [name, v] : values) {
    if (!out.empty()) out += ' ';
    out.append(name).append(" ");
    if (!std::isfinite(v)) {
      out += std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");
      continue;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", v);
    out += buf;
  }
  return out;
}

class progress_bar {
public:
  explicit progress_bar(progress_options opt, std::ostream& out = std::cerr) : opt_(std::move(opt)), out_(&out) {
    if (!opt_.clock) {
      opt_.clock = [] { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); };
    }
    tty_ = opt_.tty ? *opt_.tty : detect_tty(out);
    start_ = opt_.clock();
    last_draw_ = last_plain_ = start_;
    if (opt_.enabled && tty_) draw(start_);
  }
  progress_bar(const progress_bar&) = delete;
  progress_bar& operator=(const progress_bar&) = delete;
  ~progress_bar() {
    try {
      finish();
    } catch (...) { // never throw from a destructor; a broken stderr is not worth a crash
    }
  }

  /// Sets the count of completed items (absolute) and redraws when due.
  void update(std::uint64_t n) {
    n_ = n;
    tick();
  }
  /// Adds `k` completed items and redraws when due.
  void advance(std::uint64_t k = 1) { update(n_ + k); }
  /// Text shown after the timing fields until replaced (use metrics_text()).
  void set_metrics(std::string text) { metrics_ = std::move(text); }
  /// Changes the total (0 = unknown), e.g. once a data set size is known.
  void set_total(std::uint64_t total) { opt_.total = total; }

  /// Draws the final state and ends the line. Idempotent.
  void finish() {
    if (finished_) return;
    finished_ = true;
    if (!opt_.enabled) return;
    const double now = opt_.clock();
    if (tty_) {
      draw(now);
      *out_ << '\n' << std::flush;
    } else if (n_ != last_plain_n_ || !printed_plain_) {
      print_plain(now);
    }
  }

  std::uint64_t count() const noexcept { return n_; }
  bool is_tty() const noexcept { return tty_; }

  /// The status line for the current state at time `now` (no "\r", no newline); `with_bar`
  /// adds the [###...] bar when the total is known.
  std::string render(double now, bool with_bar) const {
    const double elapsed = std::max(0.0, now - start_);
    const double rate = elapsed > 0 ? static_cast<double>(n_) / elapsed : 0.0;
    std::string line = opt_.label;
    auto field = [&line](std::string_view s) {
      if (!line.empty()) line += ' ';
      line.append(s);
    };
    char buf[96];
    if (opt_.total > 0) {
      const double frac = std::min(1.0, static_cast<double>(n_) / static_cast<double>(opt_.total));
      if (with_bar && opt_.bar_width > 0) {
        const int w = opt_.bar_width;
        const int full = static_cast<int>(frac * w);
        std::string bar(static_cast<std::size_t>(w) + 2, '.');
        bar.front() = '[';
        bar.back() = ']';
        std::fill_n(bar.begin() + 1, full, '#');
        field(bar);
      }
      const int digits = static_cast<int>(std::to_string(opt_.total).size());
      std::snprintf(buf, sizeof buf, "%*llu/%llu %3d%%", digits, static_cast<unsigned long long>(n_), static_cast<unsigned long long>(opt_.total),
                    static_cast<int>(frac * 100.0));
      field(buf);
      field(format_rate(rate));
      const double eta = n_ >= opt_.total ? 0.0 : (rate > 0 ? static_cast<double>(opt_.total - n_) / rate : -1.0);
      field(format_duration(elapsed) + "<" + format_duration(eta));
    } else {
      std::snprintf(buf, sizeof buf, "%llu it", static_cast<unsigned long long>(n_));
      field(buf);
      field(format_rate(rate));
      field(format_duration(elapsed));
    }
    if (!metrics_.empty()) field(metrics_);
    return line;
  }

private:
  static bool detect_tty(const std::ostream& out) {
    int fd = -1;
    if (&out == &std::cerr || &out == &std::clog) fd = STDERR_FILENO;
    else if (&out == &std::cout) fd = STDOUT_FILENO;
    if (fd < 0 || ::isatty(fd) != 1) return false;
    const char* term = std::getenv("TERM");
    return !(term && std::string_view(term) == "dumb");
  }

  int terminal_columns() const {
    if (opt_.tty) return 0; // forced (tests, custom streams): do not query a real terminal
    winsize ws{};
    const int fd = (out_ == &std::cout) ? STDOUT_FILENO : STDERR_FILENO;
    return (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) ? ws.ws_col : 0;
  }

  void tick() {
    if (!opt_.enabled || finished_) return;
    const double now = opt_.clock();
    if (tty_) {
      const bool done = opt_.total > 0 && n_ >= opt_.total;
      if (done || opt_.redraw_per_s <= 0 || now - last_draw_ >= 1.0 / opt_.redraw_per_s) draw(now);
      return;
    }
    bool due = opt_.plain_every_s > 0 && now - last_plain_ >= opt_.plain_every_s;
    if (opt_.total > 0 && opt_.plain_every_percent > 0) {
      const auto bucket = [&](std::uint64_t n) {
        return static_cast<long long>(std::floor(100.0 * static_cast<double>(n) / static_cast<double>(opt_.total) / opt_.plain_every_percent));
      };
      if (bucket(n_) > bucket(last_plain_n_) || (n_ >= opt_.total && last_plain_n_ < opt_.total)) due = true;
    }
    if (due) print_plain(now);
  }

  void draw(double now) {
    std::string line = render(now, true);
    if (const int cols = terminal_columns(); cols > 1 && static_cast<int>(line.size()) >= cols) line.resize(static_cast<std::size_t>(cols - 1));
    // "\x1b[K" clears what a longer previous line left to the right.
    *out_ << '\r' << line << "\x1b[K" << std::flush;
    last_draw_ = now;
  }

  void print_plain(double now) {
    *out_ << render(now, false) << '\n' << std::flush;
    last_plain_ = now;
    last_plain_n_ = n_;
    printed_plain_ = true;
  }

  progress_options opt_;
  std::ostream* out_;
  bool tty_ = false;
  bool finished_ = false;
  bool printed_plain_ = false;
  std::uint64_t n_ = 0;
  std::uint64_t last_plain_n_ = 0;
  double start_ = 0, last_draw_ = 0, last_plain_ = 0;
  std::string metrics_;
};

} // namespace msrl_pipeline
