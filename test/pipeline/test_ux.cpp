// Pipeline UX utilities: PNG plots decoded back and inspected pixel by pixel, the bitmap font,
// the metrics JSONL round trip and its truncation on resume, the progress bar's terminal and
// plain output, and the pipeline's names for msrl's atomic writers.
#define BOOST_TEST_MODULE pipeline_ux
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <msrl/trainer/image.hpp>
#include <msrl_pipeline/atomic_io.hpp>
#include <msrl_pipeline/font.hpp>
#include <msrl_pipeline/metrics.hpp>
#include <msrl_pipeline/plot.hpp>
#include <msrl_pipeline/plot.hpp> // twice on purpose: the stb_image_write guard must hold
#include <msrl_pipeline/progress.hpp>

#include "scratch.hpp"

namespace fs = std::filesystem;
using msrl_test::scratch;
using msrl_test::slurp;
using msrl_test::spit;
namespace mp = msrl_pipeline;

namespace {

/// Files in `dir` whose name contains `part`.
int count_named(const fs::path& dir, const std::string& part) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(part) != std::string::npos) ++n;
  return n;
}

bool near_colour(const msrl::trainer::rgb_image& img, int x, int y, mp::rgb8 c, int radius) {
  for (int dy = -radius; dy <= radius; ++dy)
    for (int dx = -radius; dx <= radius; ++dx) {
      const int X = x + dx, Y = y + dy;
      if (X < 0 || Y < 0 || X >= img.width || Y >= img.height) continue;
      if (img.at(X, Y, 0) == c.r && img.at(X, Y, 1) == c.g && img.at(X, Y, 2) == c.b) return true;
    }
  return false;
}

/// A manual clock for the progress bar.
struct fake_clock {
  double t = 1000.0;
  std::function<double()> fn() {
    return [this] { return t; };
  }
};

} // namespace

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(font)

BOOST_AUTO_TEST_CASE(every_printable_glyph_has_ink_except_space) {
  for (int c = 33; c <= 126; ++c) {
    int ink = 0;
    for (int r = 0; r < mp::font::glyph_height; ++r)
      for (int col = 0; col < mp::font::glyph_width; ++col) ink += mp::font::ink(static_cast<char>(c), col, r);
    BOOST_TEST(ink > 0, "glyph '" << static_cast<char>(c) << "'");
  }
  for (int r = 0; r < mp::font::glyph_height; ++r)
    for (int col = 0; col < mp::font::glyph_width; ++col) BOOST_TEST(!mp::font::ink(' ', col, r));
  // Distinct glyphs for characters that are easy to mix up.
  BOOST_TEST((mp::font::glyph_of('0') != mp::font::glyph_of('O')));
  BOOST_TEST((mp::font::glyph_of('1') != mp::font::glyph_of('l')));
  BOOST_TEST((mp::font::glyph_of('\x7f') == mp::font::glyph_of('?')));
  BOOST_TEST(mp::font::text_width("abc", 2) == (3 * 6 - 1) * 2);
}

BOOST_AUTO_TEST_CASE(draw_text_puts_ink_inside_the_text_box_only) {
  mp::canvas img(60, 20);
  mp::draw_text(img, 5, 4, "Hi!", {0, 0, 0}, 2);
  int inside = 0, outside = 0;
  const int w = mp::font::text_width("Hi!", 2), h = mp::font::text_height(2);
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      if (img.at(x, y) == mp::rgb8{0, 0, 0}) (x >= 5 && x < 5 + w && y >= 4 && y < 4 + h ? inside : outside)++;
  BOOST_TEST(inside > 20);
  BOOST_TEST(outside == 0);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(plot)

BOOST_AUTO_TEST_CASE(nice_ticks_and_labels) {
  const auto t = mp::nice_ticks(0, 1, 6);
  BOOST_TEST(t.size() == 6u);
  BOOST_TEST(t.front() == 0.0);
  BOOST_TEST(std::abs(t.back() - 1.0) < 1e-12);
  BOOST_TEST(mp::format_tick(0.2, 0.2) == "0.2");
  BOOST_TEST(mp::format_tick(0.05, 0.05) == "0.05");
  BOOST_TEST(mp::format_tick(150, 50) == "150");
  BOOST_TEST(mp::format_tick(0, 0.1) == "0");
  BOOST_TEST(mp::nice_ticks(1, 1).empty());
}

BOOST_AUTO_TEST_CASE(moving_average_keeps_gaps) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const auto m = mp::moving_average({1, 3, nan, 5, 7}, 2);
  BOOST_TEST(m[0] == 1.0);
  BOOST_TEST(m[1] == 2.0);
  BOOST_TEST(std::isnan(m[2]));
  BOOST_TEST(m[3] == 5.0); // window {nan, 5}
  BOOST_TEST(m[4] == 6.0);
  BOOST_TEST(mp::moving_average({1, 2}, 1) == (std::vector<double>{1, 2}));
}

BOOST_AUTO_TEST_CASE(png_has_the_requested_size_and_shows_each_series_where_expected) {
  scratch s("plot");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const mp::rgb8 red{220, 20, 20}, blue{20, 40, 220};
  mp::plot_spec spec{.title = "Reward", .y_label = "reward"};
  spec.width = 400;
  spec.height = 300;
  spec.y_min = 0;
  spec.y_max = 1;
  spec.legend = false;
  // A flat red line at 0.25 over x 0..10 and a blue line at 0.75 with a gap at x 4..6.
  std::vector<double> x, low, high;
  for (int i = 0; i <= 10; ++i) {
    x.push_back(i);
    low.push_back(0.25);
    high.push_back(i >= 4 && i <= 6 ? nan : 0.75);
  }
  spec.lines = {{.name = "low", .x = x, .y = low, .colour = red}, {.name = "high", .x = x, .y = high, .colour = blue}};
  const mp::rendered_plot r = mp::render_plot(spec);
  const fs::path png = s.dir / "sub" / "plot.png";
  mp::plot_lines(png, spec);

  const auto img = msrl::trainer::decode_image_file(png);
  BOOST_TEST(img.width == 400);
  BOOST_TEST(img.height == 300);
  // The decoded PNG is the rendered canvas.
  BOOST_TEST((img.data == r.image.pixels));
  const auto& f = r.frame;
  BOOST_TEST(f.left > 0);
  BOOST_TEST(f.right < 399);
  const int y_low = static_cast<int>(std::lround(f.py(0.25))), y_high = static_cast<int>(std::lround(f.py(0.75)));
  for (double xv : {0.5, 2.0, 5.0, 8.0, 9.5}) BOOST_TEST(near_colour(img, static_cast<int>(std::lround(f.px(xv))), y_low, red, 1), "red at x=" << xv);
  for (double xv : {0.5, 2.0, 8.0, 9.5}) BOOST_TEST(near_colour(img, static_cast<int>(std::lround(f.px(xv))), y_high, blue, 1), "blue at x=" << xv);
  BOOST_TEST(!near_colour(img, static_cast<int>(std::lround(f.px(5.0))), y_high, blue, 3)); // the NaN gap
  // Red only near its line: nothing red in the top half of the plot area.
  int red_above = 0;
  for (int y = f.top; y < (f.top + f.bottom) / 2; ++y)
    for (int xx = f.left; xx <= f.right; ++xx) red_above += img.at(xx, y, 0) == red.r && img.at(xx, y, 1) == red.g && img.at(xx, y, 2) == red.b;
  BOOST_TEST(red_above == 0);
  // Title, tick labels and axis label put dark text outside the plot area.
  int dark_above = 0, dark_left = 0;
  for (int y = 0; y < f.top; ++y)
    for (int xx = 0; xx < img.width; ++xx) dark_above += img.at(xx, y, 0) < 80;
  for (int y = f.top; y <= f.bottom; ++y)
    for (int xx = 0; xx < f.left - 4; ++xx) dark_left += img.at(xx, y, 0) < 80;
  BOOST_TEST(dark_above > 10);
  BOOST_TEST(dark_left > 30);
  // No temporary left behind by the atomic write.
  BOOST_TEST(count_named(s.dir / "sub", ".tmp-") == 0);
}

BOOST_AUTO_TEST_CASE(legend_smoothing_and_palette) {
  mp::plot_spec spec{.title = "t"};
  spec.width = 320;
  spec.height = 200;
  spec.smooth = 3;
  std::vector<double> y1, y2;
  for (int i = 0; i < 50; ++i) {
    y1.push_back(std::sin(i * 0.3));
    y2.push_back(std::cos(i * 0.3) * 0.5);
  }
  spec.lines = {{.name = "sin", .y = y1}, {.name = "cos", .y = y2}};
  const auto r = mp::render_plot(spec);
  int c0 = 0, c1 = 0, faint0 = 0;
  const auto faint = mp::mix(mp::plot_palette[0], {255, 255, 255}, 0.65);
  for (int y = 0; y < r.image.height; ++y)
    for (int x = 0; x < r.image.width; ++x) {
      c0 += r.image.at(x, y) == mp::plot_palette[0];
      c1 += r.image.at(x, y) == mp::plot_palette[1];
      faint0 += r.image.at(x, y) == faint;
    }
  BOOST_TEST(c0 > 50);
  BOOST_TEST(c1 > 50);
  BOOST_TEST(faint0 > 0); // the raw series under the smoothed one
}

BOOST_AUTO_TEST_CASE(empty_and_degenerate_inputs_still_render) {
  mp::plot_spec spec;
  spec.width = 200;
  spec.height = 120;
  BOOST_CHECK_NO_THROW(mp::render_plot(spec)); // no series: "no data"
  const double nan = std::numeric_limits<double>::quiet_NaN();
  spec.lines = {{.name = "flat", .y = {2, 2, 2}}, {.name = "nan", .y = {nan, nan}}, {.name = "one", .x = {5}, .y = {2}}};
  BOOST_CHECK_NO_THROW(mp::render_plot(spec));
  spec.lines = {{.name = "bad", .x = {1, 2}, .y = {1}}};
  BOOST_CHECK_THROW(mp::render_plot(spec), msrl::shape_error);
  spec.lines.clear();
  spec.width = 10;
  BOOST_CHECK_THROW(mp::render_plot(spec), msrl::invalid_argument);
}

BOOST_AUTO_TEST_CASE(plot_metrics_writes_one_png_per_group_with_data) {
  scratch s("plotm");
  const fs::path file = s.dir / "metrics.jsonl";
  {
    auto w = mp::metrics_writer::create(file);
    for (int i = 1; i <= 20; ++i) {
      w.write(i, "stage1_sft", {{"loss", 2.0 / i}, {"grad_norm", 1.0}});
      w.write(100 + i, "stage3_rl", {{"reward", 0.1 * (i % 10)}, {"accuracy", 0.5}, {"kl", 0.01 * i}, {"clip_fraction", 0.1}, {"loss", 0.2}});
    }
  }
  const auto files = mp::plot_metrics(file, s.dir / "plots", "stage3_rl", {.width = 320, .height = 200, .smooth = 4});
  std::vector<std::string> names;
  for (const auto& p : files) names.push_back(p.filename().string());
  BOOST_TEST(names == (std::vector<std::string>{"stage3_rl_reward.png", "stage3_rl_kl_clip.png", "stage3_rl_loss.png"}), boost::test_tools::per_element());
  for (const auto& p : files) {
    const auto img = msrl::trainer::decode_image_file(p);
    BOOST_TEST(img.width == 320);
    BOOST_TEST(img.height == 200);
  }
  BOOST_TEST(mp::metric_in_group("reward_format", mp::default_metric_groups()[0]));
  BOOST_TEST(!mp::metric_in_group("rewardx", mp::default_metric_groups()[0]));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(metrics)

BOOST_AUTO_TEST_CASE(round_trip_into_columns) {
  scratch s("metrics");
  const fs::path file = s.dir / "m" / "metrics.jsonl";
  {
    auto w = mp::metrics_writer::create(file);
    w.write(1, "stage1_sft", {{"loss", 1.5}, {"lr", 1e-5}});
    w.write(2, "stage1_sft", {{"loss", 1.25}, {"grad_norm", std::numeric_limits<double>::quiet_NaN()}});
    w.write(3, "stage2_rl", {{"reward", 0.75}, {"kl", 0.01}});
    // Flushed per line: visible before the writer closes.
    const std::string text = slurp(file);
    BOOST_TEST(std::count(text.begin(), text.end(), '\n') == 3);
    BOOST_CHECK_THROW(w.write(4, "x", {{"step", 1.0}}), msrl::invalid_argument);
  }
  const auto t = mp::read_metrics(file);
  BOOST_TEST(t.rows() == 3u);
  BOOST_TEST(t.step == (std::vector<double>{1, 2, 3}), boost::test_tools::per_element());
  BOOST_TEST(t.stage == (std::vector<std::string>{"stage1_sft", "stage1_sft", "stage2_rl"}), boost::test_tools::per_element());
  BOOST_TEST(t.stages() == (std::vector<std::string>{"stage1_sft", "stage2_rl"}), boost::test_tools::per_element());
  const auto* loss = t.column("loss");
  BOOST_TEST_REQUIRE(loss != nullptr);
  BOOST_TEST((*loss)[0] == 1.5);
  BOOST_TEST((*loss)[1] == 1.25);
  BOOST_TEST(std::isnan((*loss)[2]));
  const auto* reward = t.column("reward");
  BOOST_TEST_REQUIRE(reward != nullptr);
  BOOST_TEST(std::isnan((*reward)[0])); // first seen in row 3: NaN before
  BOOST_TEST((*reward)[2] == 0.75);
  BOOST_TEST(std::isnan((*t.column("grad_norm"))[1])); // NaN written as null
  BOOST_TEST(t.column("stage") == nullptr);
  for (double wt : t.wall_time) BOOST_TEST(wt > 1.6e9);
  for (std::size_t i = 1; i < t.elapsed.size(); ++i) BOOST_TEST(t.elapsed[i] >= t.elapsed[i - 1]);

  const auto rl = mp::read_metrics(file, "stage2_rl");
  BOOST_TEST(rl.rows() == 1u);
  BOOST_TEST(rl.column("loss") == nullptr);
  BOOST_CHECK_THROW(mp::read_metrics(s.dir / "missing.jsonl"), mp::io_error);
}

BOOST_AUTO_TEST_CASE(resume_drops_later_steps_and_a_torn_line_then_appends) {
  scratch s("resume");
  const fs::path file = s.dir / "metrics.jsonl";
  spit(file, "{\"step\":1,\"stage\":\"a\",\"elapsed\":10,\"loss\":1}\n"
             "{\"step\":2,\"stage\":\"a\",\"elapsed\":20,\"loss\":0.9}\n"
             "not json\n"
             "{\"step\":3,\"stage\":\"a\",\"elapsed\":30,\"loss\":0.8}\n"
             "{\"step\":4,\"stage\":\"a\",\"elapsed\":40,\"loss\":0.7}\n"
             "{\"step\":5,\"stage\":\"a\",\"elap");
  mp::metrics_resume_report rep;
  {
    auto w = mp::metrics_writer::resume(file, 3, &rep);
    BOOST_TEST(rep.kept == 3u);
    BOOST_TEST(rep.dropped_after_step == 1u);
    BOOST_TEST(rep.dropped_invalid == 2u); // "not json" and the torn last line
    w.write(4, "a", {{"loss", 0.65}});
  }
  const auto t = mp::read_metrics(file);
  BOOST_TEST(t.skipped_lines == 0u);
  BOOST_TEST(t.step == (std::vector<double>{1, 2, 3, 4}), boost::test_tools::per_element());
  BOOST_TEST((*t.column("loss"))[3] == 0.65);
  BOOST_TEST(t.elapsed[3] >= 30.0); // elapsed continues from the last kept row
  BOOST_TEST(t.elapsed[3] < 60.0);
  BOOST_TEST(count_named(s.dir, ".tmp-") == 0);

  // Resume on a missing file starts empty; create() replaces an existing one.
  const fs::path fresh = s.dir / "new.jsonl";
  { auto w = mp::metrics_writer::resume(fresh, 10); }
  BOOST_TEST(fs::exists(fresh));
  BOOST_TEST(fs::file_size(fresh) == 0u);
  { auto w = mp::metrics_writer::create(file); }
  BOOST_TEST(fs::file_size(file) == 0u);
}

BOOST_AUTO_TEST_CASE(reader_skips_a_partial_last_line) {
  scratch s("partial");
  const fs::path file = s.dir / "m.jsonl";
  spit(file, "{\"step\":1,\"x\":true}\n{\"step\":2,\"x\":");
  const auto t = mp::read_metrics(file);
  BOOST_TEST(t.rows() == 1u);
  BOOST_TEST(t.skipped_lines == 1u);
  BOOST_TEST((*t.column("x"))[0] == 1.0);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(progress)

BOOST_AUTO_TEST_CASE(format_helpers) {
  BOOST_TEST(mp::format_duration(0) == "00:00");
  BOOST_TEST(mp::format_duration(65) == "01:05");
  BOOST_TEST(mp::format_duration(3725) == "1:02:05");
  BOOST_TEST(mp::format_duration(-1) == "--:--");
  BOOST_TEST(mp::format_rate(2.3125) == "2.31 it/s");
  BOOST_TEST(mp::format_rate(0.08) == "12.5 s/it");
  BOOST_TEST(mp::format_rate(0) == "-- it/s");
  BOOST_TEST(mp::metrics_text({{"reward", 0.8312}, {"acc", 0.71}}) == "reward 0.831 acc 0.71");
}

BOOST_AUTO_TEST_CASE(tty_redraws_in_place_at_most_ten_times_a_second) {
  fake_clock clk;
  std::ostringstream os;
  {
    mp::progress_bar bar({.label = "sft", .total = 100, .tty = true, .bar_width = 10, .clock = clk.fn()}, os);
    for (int i = 0; i < 50; ++i) {
      clk.t += 0.01; // 100 it/s: a redraw every 10 items at most
      bar.advance();
    }
    bar.set_metrics("loss 0.5");
    clk.t += 0.2;
    bar.advance();
    const std::string out = os.str();
    BOOST_TEST(out.find('\n') == std::string::npos);
    const auto draws = std::count(out.begin(), out.end(), '\r');
    BOOST_TEST(draws >= 5);
    BOOST_TEST(draws <= 8); // initial + ~5 over 0.5 s + the one after the pause
    const std::string last = out.substr(out.rfind('\r') + 1);
    BOOST_TEST(last.find("sft [#####.....]  51/100  51%") == 0u, last);
    BOOST_TEST(last.find("it/s") != std::string::npos);
    BOOST_TEST(last.find("00:01<00:01") != std::string::npos, last);
    BOOST_TEST(last.find("loss 0.5\x1b[K") != std::string::npos, last);
    clk.t += 0.01;
    bar.update(100); // completion always draws
    BOOST_TEST(os.str().substr(os.str().rfind('\r') + 1).find("100/100 100%") != std::string::npos);
  }
  BOOST_TEST(os.str().back() == '\n'); // finish() ends the line
}

BOOST_AUTO_TEST_CASE(plain_lines_every_ten_percent_or_thirty_seconds) {
  fake_clock clk;
  std::ostringstream os;
  {
    mp::progress_bar bar({.label = "rl", .total = 200, .tty = false, .clock = clk.fn()}, os);
    for (int i = 0; i < 200; ++i) {
      clk.t += 0.5;
      bar.advance();
    }
  }
  const std::string out = os.str();
  BOOST_TEST(out.find('\r') == std::string::npos);
  BOOST_TEST(out.find("\x1b") == std::string::npos);
  BOOST_TEST(std::count(out.begin(), out.end(), '\n') == 10); // 10%, 20%, ..., 100%; finish adds none
  BOOST_TEST(out.find("rl  20/200  10% 2.00 it/s 00:10<01:30\n") == 0u, out);
  BOOST_TEST(out.find("rl 200/200 100% 2.00 it/s 01:40<00:00\n") != std::string::npos, out);

  // Slow progress: the 30 s heartbeat.
  std::ostringstream slow;
  {
    mp::progress_bar bar({.label = "gen", .total = 1000, .tty = false, .clock = clk.fn()}, slow);
    for (int i = 0; i < 10; ++i) {
      clk.t += 10;
      bar.advance();
    }
  }
  const std::string slow_out = slow.str();
  BOOST_TEST(std::count(slow_out.begin(), slow_out.end(), '\n') == 4, slow_out); // 30 s, 60 s, 90 s, finish at 100 s
  BOOST_TEST(slow.str().find("10 s/it") != std::string::npos, slow.str());
}

BOOST_AUTO_TEST_CASE(unknown_total_and_disabled) {
  fake_clock clk;
  std::ostringstream os;
  {
    mp::progress_bar bar({.label = "eval", .total = 0, .tty = true, .clock = clk.fn()}, os);
    clk.t += 2;
    bar.update(7);
    std::string last = os.str().substr(os.str().rfind('\r') + 1);
    last = last.substr(0, last.find("\x1b[K"));
    BOOST_TEST(last.find("eval 7 it 3.50 it/s 00:02") == 0u, last);
    BOOST_TEST(last.find('%') == std::string::npos);
    BOOST_TEST(last.find('[') == std::string::npos);
  }
  std::ostringstream plain;
  {
    mp::progress_bar bar({.label = "eval", .total = 0, .tty = false, .clock = clk.fn()}, plain);
    bar.update(3);
  }
  BOOST_TEST(plain.str() == "eval 3 it -- it/s 00:00\n"); // only the final line
  std::ostringstream off;
  {
    mp::progress_bar bar({.label = "x", .total = 10, .enabled = false, .tty = true, .clock = clk.fn()}, off);
    bar.update(10);
  }
  BOOST_TEST(off.str().empty());
  mp::progress_bar to_stream({.label = "x", .total = 3}, os); // a string stream is never a terminal
  BOOST_TEST(!to_stream.is_tty());
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(atomic_io)

// The writers are msrl's (msrl/core/atomic_file.hpp, tested in test/unit/test_atomic_file.cpp);
// the pipeline reaches them under its own namespace.
BOOST_AUTO_TEST_CASE(pipeline_names_are_the_library_writers) {
  static_assert(std::is_same_v<mp::io_error, msrl::io_error>);
  static_assert(std::is_base_of_v<msrl::error, mp::io_error>);
  scratch s("atomic");
  const fs::path p = s.dir / "state.json";
  mp::write_file_atomic(p, std::string_view("old"));
  BOOST_CHECK_THROW(mp::write_file_atomic_with(p, [](std::ostream&) { throw std::runtime_error("disk full"); }), std::runtime_error);
  BOOST_TEST(slurp(p) == "old");
  BOOST_TEST(count_named(s.dir, ".tmp-") == 0);
  BOOST_CHECK_THROW(mp::write_file_atomic(s.dir / "no_such_dir" / "f.txt", std::string_view("x")), mp::io_error);
  mp::publish_directory_atomic(s.dir / "ck", [](const fs::path& d) { spit(d / "model.bin", "v1"); });
  BOOST_TEST(!mp::recover_directory(s.dir / "ck"));
  BOOST_TEST(slurp(s.dir / "ck" / "model.bin") == "v1");
}

BOOST_AUTO_TEST_SUITE_END()
