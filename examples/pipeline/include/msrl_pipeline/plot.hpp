#pragma once
/// \file PNG line plots of training metrics with no plotting library: a small RGB rasteriser
/// (axes, "nice" ticks with numeric labels, grid, title, axis labels, several series in distinct
/// colours with a legend, optional moving-average smoothing, gaps at NaN) and the built-in 5x7
/// font (font.hpp). PNG encoding is stb_image_write's.
///
///   msrl_pipeline::plot_lines("run/plots/reward.png", {
///       .title = "stage 3 reward", .y_label = "reward",
///       .lines = {{.name = "reward", .x = steps, .y = reward}, {.name = "accuracy", .x = steps, .y = acc}},
///       .smooth = 10});
///   // one PNG per metric group (reward & accuracy, kl & clip fraction, entropy, length, loss, ...):
///   auto files = msrl_pipeline::plot_metrics("run/metrics.jsonl", "run/plots", "stage3_rl");
///
/// PNG encoding: stb_image_write, compiled in by stb_write.hpp.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <msrl/core/error.hpp>

#include "atomic_io.hpp"
#include "font.hpp"
#include "metrics.hpp"

#include "stb_write.hpp"

namespace msrl_pipeline {

struct rgb8 {
  std::uint8_t r = 0, g = 0, b = 0;
  friend constexpr bool operator==(rgb8, rgb8) = default;
};

/// `a` moved towards `b` by t in [0, 1].
inline rgb8 mix(rgb8 a, rgb8 b, double t) {
  auto m = [t](std::uint8_t x, std::uint8_t y) { return static_cast<std::uint8_t>(std::lround(x + (y - x) * t)); };
  return {m(a.r, b.r), m(a.g, b.g), m(a.b, b.b)};
}

/// Distinct series colours (a common categorical palette), used in order.
inline constexpr rgb8 plot_palette[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},  {148, 103, 189},
                                        {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};

/// An RGB8 image, row-major, 3 bytes per pixel.
struct canvas {
  int width = 0, height = 0;
  std::vector<std::uint8_t> pixels;

  canvas() = default;
  canvas(int w, int h, rgb8 fill = {255, 255, 255}) : width(w), height(h), pixels(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3) {
    for (std::size_t i = 0; i < pixels.size(); i += 3) {
      pixels[i] = fill.r;
      pixels[i + 1] = fill.g;
      pixels[i + 2] = fill.b;
    }
  }
  bool inside(int x, int y) const noexcept { return x >= 0 && y >= 0 && x < width && y < height; }
  rgb8 at(int x, int y) const {
    const std::size_t i = (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x)) * 3;
    return {pixels[i], pixels[i + 1], pixels[i + 2]};
  }
  void set(int x, int y, rgb8 c) noexcept {
    if (!inside(x, y)) return;
    const std::size_t i = (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x)) * 3;
    pixels[i] = c.r;
    pixels[i + 1] = c.g;
    pixels[i + 2] = c.b;
  }
  void fill_rect(int x0, int y0, int x1, int y1, rgb8 c) noexcept { // inclusive corners
    for (int y = std::max(0, y0); y <= std::min(height - 1, y1); ++y)
      for (int x = std::max(0, x0); x <= std::min(width - 1, x1); ++x) set(x, y, c);
  }
  void rect(int x0, int y0, int x1, int y1, rgb8 c) noexcept {
    for (int x = x0; x <= x1; ++x) set(x, y0, c), set(x, y1, c);
    for (int y = y0; y <= y1; ++y) set(x0, y, c), set(x1, y, c);
  }
};

/// Draws `text` with its top-left at (x, y) in the 5x7 font magnified `scale` times. `vertical`
/// turns it 90 degrees counter-clockwise (reading bottom to top) with (x, y) its bottom-left.
inline void draw_text(canvas& img, int x, int y, std::string_view text, rgb8 colour, int scale = 1, bool vertical = false) {
  scale = std::max(1, scale);
  for (std::size_t i = 0; i < text.size(); ++i) {
    const int cell = static_cast<int>(i) * font::advance * scale;
    for (int row = 0; row < font::glyph_height; ++row)
      for (int col = 0; col < font::glyph_width; ++col) {
        if (!font::ink(text[i], col, row)) continue;
        for (int dy = 0; dy < scale; ++dy)
          for (int dx = 0; dx < scale; ++dx) {
            const int u = cell + col * scale + dx; // along the text
            const int v = row * scale + dy;        // across, from the top of the glyph
            if (vertical) img.set(x + v, y - u, colour);
            else img.set(x + u, y + v, colour);
          }
      }
  }
}

/// Trailing moving average over the last `window` points, ignoring NaN inside the window; a NaN
/// point stays NaN (a gap). window <= 1 returns `y` unchanged.
inline std::vector<double> moving_average(const std::vector<double>& y, int window) {
  if (window <= 1) return y;
  std::vector<double> out(y.size(), std::numeric_limits<double>::quiet_NaN());
  double sum = 0;
  int count = 0;
  const auto w = static_cast<std::size_t>(window);
  for (std::size_t i = 0; i < y.size(); ++i) {
    if (std::isfinite(y[i])) sum += y[i], ++count;
    if (i >= w && std::isfinite(y[i - w])) sum -= y[i - w], --count;
    if (std::isfinite(y[i]) && count > 0) out[i] = sum / count;
  }
  return out;
}

/// Tick positions at a 1-2-5 x 10^k step covering [lo, hi] with at most about `max_ticks` ticks.
inline std::vector<double> nice_ticks(double lo, double hi, int max_ticks = 6) {
  std::vector<double> t;
  if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi) || max_ticks < 2) return t;
  const double raw = (hi - lo) / (max_ticks - 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  const double first = std::ceil(lo / step - 1e-9) * step;
  for (double v = first; v <= hi + step * 1e-9; v += step) t.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

/// Tick label: as many decimals as the tick step needs ("0.05", "120", "2.5e+06").
inline std::string format_tick(double v, double step) {
  char buf[32];
  if (v == 0) return "0";
  if (std::abs(v) >= 1e6 || (step > 0 && step < 1e-4)) std::snprintf(buf, sizeof buf, "%.2g", v);
  else {
    const int decimals = step > 0 ? std::clamp(static_cast<int>(std::ceil(-std::log10(step) - 1e-9)), 0, 6) : 2;
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  }
  return buf;
}

struct plot_series {
  std::string name;
  std::vector<double> x; ///< empty: 0, 1, 2, ...
  std::vector<double> y; ///< NaN/inf points leave gaps
  std::optional<rgb8> colour; ///< default: plot_palette in order
};

struct plot_spec {
  std::string title;
  std::string x_label = "step";
  std::string y_label;
  std::vector<plot_series> lines;
  int width = 800, height = 480;
  int smooth = 0;               ///< moving-average window in points (<= 1: none)
  bool raw_under_smooth = true; ///< when smoothing, also draw the raw series faintly
  int line_width = 2;
  bool legend = true;
  std::optional<double> x_min, x_max, y_min, y_max; ///< fixed axis limits; default from the data
};

/// Where the data landed: the plot area in pixels (inclusive) and its data limits.
struct plot_frame {
  int left = 0, top = 0, right = 0, bottom = 0;
  double x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  double px(double x) const { return left + (x - x_min) / (x_max - x_min) * (right - left); }
  double py(double y) const { return bottom - (y - y_min) / (y_max - y_min) * (bottom - top); }
};

struct rendered_plot {
  canvas image;
  plot_frame frame;
};

namespace detail {

inline void brush(canvas& img, const plot_frame& f, int x, int y, int w, rgb8 c) {
  const int lo = -(w / 2), hi = w - 1 - w / 2;
  for (int dy = lo; dy <= hi; ++dy)
    for (int dx = lo; dx <= hi; ++dx) {
      const int X = x + dx, Y = y + dy;
      if (X >= f.left && X <= f.right && Y >= f.top && Y <= f.bottom) img.set(X, Y, c);
    }
}

inline void line(canvas& img, const plot_frame& f, double x0, double y0, double x1, double y1, int w, rgb8 c) {
  // Keep coordinates in a sane range before the integer walk (far-off limits clip anyway).
  auto clampc = [](double v) { return std::clamp(v, -1e5, 1e5); };
  int ax = static_cast<int>(std::lround(clampc(x0))), ay = static_cast<int>(std::lround(clampc(y0)));
  const int bx = static_cast<int>(std::lround(clampc(x1))), by = static_cast<int>(std::lround(clampc(y1)));
  const int dx = std::abs(bx - ax), dy = -std::abs(by - ay), sx = ax < bx ? 1 : -1, sy = ay < by ? 1 : -1;
  int err = dx + dy;
  for (;;) { // Bresenham
    brush(img, f, ax, ay, w, c);
    if (ax == bx && ay == by) break;
    const int e2 = 2 * err;
    if (e2 >= dy) err += dy, ax += sx;
    if (e2 <= dx) err += dx, ay += sy;
  }
}

inline void polyline(canvas& img, const plot_frame& f, const std::vector<double>& x, const std::vector<double>& y, int w, rgb8 c) {
  const std::size_t n = std::min(x.size(), y.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) continue;
    const bool prev = i > 0 && std::isfinite(x[i - 1]) && std::isfinite(y[i - 1]);
    const bool next = i + 1 < n && std::isfinite(x[i + 1]) && std::isfinite(y[i + 1]);
    if (prev) line(img, f, f.px(x[i - 1]), f.py(y[i - 1]), f.px(x[i]), f.py(y[i]), w, c);
    else if (!next) brush(img, f, static_cast<int>(std::lround(f.px(x[i]))), static_cast<int>(std::lround(f.py(y[i]))), w + 2, c); // isolated point
  }
}

/// [lo, hi] of the finite values, or nullopt.
inline std::optional<std::pair<double, double>> finite_range(const std::vector<double>& v) {
  double lo = HUGE_VAL, hi = -HUGE_VAL;
  for (double d : v)
    if (std::isfinite(d)) lo = std::min(lo, d), hi = std::max(hi, d);
  if (lo > hi) return std::nullopt;
  return std::make_pair(lo, hi);
}

inline std::vector<double> x_of(const plot_series& s) {
  if (!s.x.empty()) return s.x;
  std::vector<double> x(s.y.size());
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<double>(i);
  return x;
}

inline void widen_if_flat(double& lo, double& hi) {
  if (hi > lo) return;
  const double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
  lo -= pad;
  hi += pad;
}

} // namespace detail

/// Rasterises the plot in memory (plot_lines writes it as PNG).
inline rendered_plot render_plot(const plot_spec& spec) {
  constexpr std::string_view where = "render_plot";
  msrl::require(spec.width >= 120 && spec.height >= 90 && spec.width <= 8192 && spec.height <= 8192, where, "width/height",
                "must be within 120x90 .. 8192x8192 pixels");
  msrl::require(spec.line_width >= 1 && spec.line_width <= 16, where, "line_width", "must be within 1..16");
  for (const auto& s : spec.lines)
    msrl::require<msrl::shape_error>(s.x.empty() || s.x.size() == s.y.size(), where, "lines", "must have x empty or as long as y ('" + s.name + "')");

  const rgb8 white{255, 255, 255}, black{0, 0, 0}, grid{225, 225, 225}, text{30, 30, 30};
  rendered_plot out{canvas(spec.width, spec.height, white), {}};
  canvas& img = out.image;
  plot_frame& f = out.frame;
  const int s = std::max(1, static_cast<int>(std::lround(std::min(spec.width, spec.height) / 320.0)));

  // Data limits.
  std::vector<std::vector<double>> xs, ys;
  for (const auto& l : spec.lines) {
    xs.push_back(detail::x_of(l));
    ys.push_back(l.y);
  }
  double x_lo = HUGE_VAL, x_hi = -HUGE_VAL, y_lo = HUGE_VAL, y_hi = -HUGE_VAL;
  for (std::size_t i = 0; i < xs.size(); ++i)
    for (std::size_t k = 0; k < xs[i].size(); ++k)
      if (std::isfinite(xs[i][k]) && std::isfinite(ys[i][k])) {
        x_lo = std::min(x_lo, xs[i][k]), x_hi = std::max(x_hi, xs[i][k]);
        y_lo = std::min(y_lo, ys[i][k]), y_hi = std::max(y_hi, ys[i][k]);
      }
  const bool has_data = x_lo <= x_hi;
  if (!has_data) x_lo = 0, x_hi = 1, y_lo = 0, y_hi = 1;
  detail::widen_if_flat(x_lo, x_hi);
  detail::widen_if_flat(y_lo, y_hi);
  if (!spec.y_min && !spec.y_max) { // round outwards to whole ticks
    const auto t = nice_ticks(y_lo, y_hi, 6);
    if (t.size() >= 2) {
      const double step = t[1] - t[0];
      y_lo = std::floor(y_lo / step + 1e-9) * step;
      y_hi = std::ceil(y_hi / step - 1e-9) * step;
    }
  }
  f.x_min = spec.x_min.value_or(x_lo);
  f.x_max = spec.x_max.value_or(x_hi);
  f.y_min = spec.y_min.value_or(y_lo);
  f.y_max = spec.y_max.value_or(y_hi);
  msrl::require(f.x_max > f.x_min && f.y_max > f.y_min, where, "x_min/x_max/y_min/y_max", "must give a non-empty range (min < max)");

  // Layout.
  const auto yt = nice_ticks(f.y_min, f.y_max, std::clamp(spec.height / (40 * s), 3, 10));
  const double ystep = yt.size() >= 2 ? yt[1] - yt[0] : 0;
  int label_w = 0;
  for (double v : yt) label_w = std::max(label_w, font::text_width(format_tick(v, ystep), s));
  const int char_h = font::line_height * s;
  f.top = spec.title.empty() ? 10 : 10 + char_h + 8;
  f.left = 8 + (spec.y_label.empty() ? 0 : char_h + 6) + label_w + 8;
  f.bottom = spec.height - 1 - (8 + (spec.x_label.empty() ? 0 : char_h + 6) + char_h + 6);
  f.right = spec.width - 1 - 20 * s;
  msrl::require(f.right - f.left >= 40 && f.bottom - f.top >= 30, where, "width/height", "leave no room for the plot area");
  const auto xt = nice_ticks(f.x_min, f.x_max, std::clamp((f.right - f.left) / (50 * s), 2, 12));
  const double xstep = xt.size() >= 2 ? xt[1] - xt[0] : 0;

  // Grid, then series, then the frame on top.
  for (double v : yt) {
    const int y = static_cast<int>(std::lround(f.py(v)));
    for (int x = f.left; x <= f.right; ++x) img.set(x, y, grid);
  }
  for (double v : xt) {
    const int x = static_cast<int>(std::lround(f.px(v)));
    for (int y = f.top; y <= f.bottom; ++y) img.set(x, y, grid);
  }
  std::vector<rgb8> colours;
  for (std::size_t i = 0; i < spec.lines.size(); ++i)
    colours.push_back(spec.lines[i].colour.value_or(plot_palette[i % std::size(plot_palette)]));
  const bool smoothing = spec.smooth > 1;
  if (smoothing && spec.raw_under_smooth)
    for (std::size_t i = 0; i < spec.lines.size(); ++i) detail::polyline(img, f, xs[i], ys[i], 1, mix(colours[i], white, 0.65));
  for (std::size_t i = 0; i < spec.lines.size(); ++i)
    detail::polyline(img, f, xs[i], smoothing ? moving_average(ys[i], spec.smooth) : ys[i], spec.line_width, colours[i]);
  img.rect(f.left, f.top, f.right, f.bottom, black);

  // Ticks and labels.
  for (double v : yt) {
    const int y = static_cast<int>(std::lround(f.py(v)));
    for (int x = f.left - 4; x < f.left; ++x) img.set(x, y, black);
    const std::string l = format_tick(v, ystep);
    draw_text(img, f.left - 6 - font::text_width(l, s), y - font::text_height(s) / 2, l, text, s);
  }
  for (double v : xt) {
    const int x = static_cast<int>(std::lround(f.px(v)));
    for (int y = f.bottom + 1; y <= f.bottom + 4; ++y) img.set(x, y, black);
    const std::string l = format_tick(v, xstep);
    draw_text(img, x - font::text_width(l, s) / 2, f.bottom + 7, l, text, s);
  }
  if (!spec.title.empty()) draw_text(img, (spec.width - font::text_width(spec.title, s)) / 2, 8, spec.title, black, s);
  if (!spec.x_label.empty())
    draw_text(img, (f.left + f.right - font::text_width(spec.x_label, s)) / 2, f.bottom + 7 + char_h + 6, spec.x_label, text, s);
  if (!spec.y_label.empty())
    draw_text(img, 8, (f.top + f.bottom + font::text_width(spec.y_label, s)) / 2, spec.y_label, text, s, /*vertical=*/true);
  if (!has_data) {
    constexpr std::string_view msg = "no data";
    draw_text(img, (f.left + f.right - font::text_width(msg, s)) / 2, (f.top + f.bottom) / 2, msg, text, s);
  }

  // Legend, top right inside the plot area.
  if (spec.legend && !spec.lines.empty()) {
    const int swatch = 16 * s, pad = 4 * s;
    int name_w = 0;
    for (const auto& l : spec.lines) name_w = std::max(name_w, font::text_width(l.name, s));
    const int box_w = pad + swatch + pad + name_w + pad;
    const int box_h = pad + static_cast<int>(spec.lines.size()) * (char_h + pad);
    const int x0 = f.right - 6 - box_w, y0 = f.top + 6;
    img.fill_rect(x0, y0, x0 + box_w, y0 + box_h, white);
    img.rect(x0, y0, x0 + box_w, y0 + box_h, {160, 160, 160});
    for (std::size_t i = 0; i < spec.lines.size(); ++i) {
      const int row_y = y0 + pad + static_cast<int>(i) * (char_h + pad);
      const int mid = row_y + font::text_height(s) / 2;
      img.fill_rect(x0 + pad, mid - spec.line_width / 2, x0 + pad + swatch - 1, mid + (spec.line_width - 1) / 2, colours[i]);
      draw_text(img, x0 + pad + swatch + pad, row_y, spec.lines[i].name, text, s);
    }
  }
  return out;
}

/// PNG bytes of `img` (stb_image_write, RGB8).
inline std::vector<std::uint8_t> encode_png(const canvas& img) {
  msrl::require<msrl::shape_error>(img.width > 0 && img.height > 0 && img.pixels.size() == static_cast<std::size_t>(img.width) * img.height * 3,
                                   "encode_png", "img", "must be a non-empty RGB8 canvas");
  std::vector<std::uint8_t> bytes;
  auto sink = [](void* ctx, void* data, int size) {
    auto* v = static_cast<std::vector<std::uint8_t>*>(ctx);
    v->insert(v->end(), static_cast<std::uint8_t*>(data), static_cast<std::uint8_t*>(data) + size);
  };
  if (stbi_write_png_to_func(sink, &bytes, img.width, img.height, 3, img.pixels.data(), img.width * 3) == 0)
    throw msrl::error("encode_png: argument 'img' could not be encoded as PNG");
  return bytes;
}

/// Renders `spec` and writes it to `png` atomically (parent folders are created).
inline void plot_lines(const std::filesystem::path& png, const plot_spec& spec) {
  msrl::require(!png.empty() && png.has_filename(), "plot_lines", "png", "must name a file");
  std::error_code ec;
  if (png.has_parent_path()) std::filesystem::create_directories(png.parent_path(), ec);
  if (ec) throw make_io_error("plot_lines", png.parent_path(), "could not be created", ec.value());
  const auto bytes = encode_png(render_plot(spec).image);
  write_file_atomic(png, std::span<const std::uint8_t>(bytes));
}

/// One figure of plot_metrics: the file "<stage>_<stem>.png" with every column whose name is one
/// of `keys` or starts with a key followed by '_', '/' or '.' (so "reward" also takes
/// "reward_format" and "reward/accuracy").
struct metric_group {
  std::string stem;
  std::string title;
  std::string y_label;
  std::vector<std::string> keys;
};

/// reward & accuracy; kl & clip fraction; entropy; completion length; loss; grad norm; learning rate.
inline std::vector<metric_group> default_metric_groups() {
  return {{"reward", "reward and accuracy", "value", {"reward", "rewards", "accuracy", "acc"}},
          {"kl_clip", "KL and clip fraction", "value", {"kl", "clip_fraction", "clip_frac", "clipfrac"}},
          {"entropy", "entropy", "nats", {"entropy"}},
          {"length", "completion length", "tokens", {"length", "completion_length", "response_length"}},
          {"loss", "loss", "loss", {"loss"}},
          {"grad_norm", "gradient norm", "norm", {"grad_norm"}},
          {"lr", "learning rate", "lr", {"lr", "learning_rate"}}};
}

/// Whether metric `name` belongs to `group`.
inline bool metric_in_group(std::string_view name, const metric_group& group) {
  for (const auto& k : group.keys) {
    if (name == k) return true;
    if (name.size() > k.size() && name.substr(0, k.size()) == k && (name[k.size()] == '_' || name[k.size()] == '/' || name[k.size()] == '.')) return true;
  }
  return false;
}

struct plot_metrics_options {
  int width = 800, height = 480;
  int smooth = 0; ///< moving-average window in rows (<= 1: none)
  std::vector<metric_group> groups = default_metric_groups();
};

/// Reads `metrics_file` (rows of `stage`; all rows when empty) and writes one PNG per group that
/// has data into `out_dir`, x = step. Returns the files written, in group order.
inline std::vector<std::filesystem::path> plot_metrics(const std::filesystem::path& metrics_file, const std::filesystem::path& out_dir,
                                                       std::string_view stage, const plot_metrics_options& opt = {}) {
  const metrics_table t = read_metrics(metrics_file, stage);
  std::vector<std::filesystem::path> written;
  std::string prefix = stage.empty() ? std::string("all") : std::string(stage);
  for (char& c : prefix) // a file name, whatever the stage is called
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) c = '_';
  for (const auto& g : opt.groups) {
    plot_spec spec;
    spec.title = prefix + ": " + g.title;
    spec.y_label = g.y_label;
    spec.width = opt.width;
    spec.height = opt.height;
    spec.smooth = opt.smooth;
    for (const auto& [name, col] : t.columns) {
      if (!metric_in_group(name, g)) continue;
      if (!detail::finite_range(col)) continue; // all NaN: nothing to draw
      spec.lines.push_back({.name = name, .x = t.step, .y = col, .colour = std::nullopt});
    }
    if (spec.lines.empty()) continue;
    const auto png = out_dir / (prefix + "_" + g.stem + ".png");
    plot_lines(png, spec);
    written.push_back(png);
  }
  return written;
}

} // namespace msrl_pipeline
