#pragma once
/// \file Training metrics as JSON lines: one object per logged step, flushed line by line so a
/// crash loses at most the line being written, plus a reader that loads a file into columns for
/// plots.
///
///   auto log = msrl_pipeline::metrics_writer::create("run/metrics.jsonl");          // fresh run
///   auto log = msrl_pipeline::metrics_writer::resume("run/metrics.jsonl", 120);     // resumed at step 120
///   log.write(121, "stage3_rl", {{"reward", 0.83}, {"accuracy", 0.71}, {"kl", 0.002}});
///
///   auto t = msrl_pipeline::read_metrics("run/metrics.jsonl", "stage3_rl");
///   const std::vector<double>* r = t.column("reward");   // NaN where a row has no reward
///
/// Row: {"step": 121, "stage": "stage3_rl", "wall_time": 1718000000.25, "elapsed": 512.5,
///       "reward": 0.83, ...}. wall_time is Unix time in seconds; elapsed is training seconds since
/// the run began, continued across resumes (time spent stopped is not counted). Non-finite values
/// are written as null and read back as NaN. `step` is the global step, increasing across stages.
///
/// resume(path, step) keeps the rows with step <= `step`, drops a trailing line without its
/// newline (the write a crash interrupted) and any line that is not a JSON object, rewrites the
/// file atomically and appends from there; a missing file starts empty.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <msrl/core/error.hpp>

#include "atomic_io.hpp"

namespace msrl_pipeline {

/// Reserved keys of a metrics row; every other numeric key is a metric.
inline constexpr std::string_view metrics_reserved_keys[] = {"step", "stage", "wall_time", "elapsed"};

/// What resume() kept and dropped.
struct metrics_resume_report {
  std::size_t kept = 0;
  std::size_t dropped_after_step = 0; ///< complete rows past the resumed step
  std::size_t dropped_invalid = 0;    ///< trailing incomplete line or lines that are not JSON objects
};

namespace detail {

/// Splits `text` into complete lines; `incomplete` gets a trailing line with no newline.
inline std::vector<std::string_view> split_lines(std::string_view text, std::string_view& incomplete) {
  std::vector<std::string_view> lines;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) {
      incomplete = text.substr(pos);
      return lines;
    }
    lines.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  incomplete = {};
  return lines;
}

inline std::string read_all(const std::filesystem::path& p, std::string_view where) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw make_io_error(where, p, "could not be opened for reading", errno);
  std::ostringstream ss;
  ss << in.rdbuf();
  return std::move(ss).str();
}

/// Parses one line; nullopt when it is blank or not a JSON object with a numeric step.
inline std::optional<nlohmann::json> parse_row(std::string_view line) {
  if (line.find_first_not_of(" \t\r") == std::string_view::npos) return std::nullopt;
  auto j = nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  const auto s = j.find("step");
  if (s == j.end() || !s->is_number()) return std::nullopt;
  return j;
}

inline double now_unix_s() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }
inline double now_steady_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

} // namespace detail

class metrics_writer {
public:
  /// Starts a new file at `path` (an existing one is replaced); creates parent directories.
  static metrics_writer create(const std::filesystem::path& path) {
    prepare_dir(path, "metrics_writer::create");
    write_file_atomic(path, std::string_view{});
    return metrics_writer(path, 0.0);
  }

  /// Reopens `path` after a resume at global step `step`: keeps rows with step <= `step` (see the
  /// file comment) and appends after them. `report`, when given, says what was dropped.
  static metrics_writer resume(const std::filesystem::path& path, std::int64_t step, metrics_resume_report* report = nullptr) {
    return resume_if(path, [step](const nlohmann::json& row) { return row["step"].get<double>() <= static_cast<double>(step); }, report);
  }

  /// General form of resume(): keeps the complete, valid rows for which keep(row) is true.
  static metrics_writer resume_if(const std::filesystem::path& path, const std::function<bool(const nlohmann::json&)>& keep,
                                  metrics_resume_report* report = nullptr) {
    constexpr std::string_view where = "metrics_writer::resume";
    msrl::require(static_cast<bool>(keep), where, "keep", "must be callable");
    prepare_dir(path, where);
    metrics_resume_report rep;
    std::string kept;
    double elapsed = 0.0;
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) {
      const std::string text = detail::read_all(path, where);
      std::string_view incomplete;
      for (std::string_view line : detail::split_lines(text, incomplete)) {
        if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
        auto row = detail::parse_row(line);
        if (!row) {
          ++rep.dropped_invalid;
          continue;
        }
        if (!keep(*row)) {
          ++rep.dropped_after_step;
          continue;
        }
        ++rep.kept;
        kept.append(line).push_back('\n');
        if (const auto e = row->find("elapsed"); e != row->end() && e->is_number()) elapsed = std::max(elapsed, e->get<double>());
      }
      if (!incomplete.empty()) ++rep.dropped_invalid;
    }
    write_file_atomic(path, kept);
    if (report) *report = rep;
    return metrics_writer(path, elapsed);
  }

  metrics_writer(metrics_writer&&) noexcept = default;
  metrics_writer& operator=(metrics_writer&&) noexcept = default;

  /// Appends one row and flushes it. Field names must not be the reserved keys.
  void write(std::int64_t step, std::string_view stage, const std::vector<std::pair<std::string, double>>& fields) {
    constexpr std::string_view where = "metrics_writer::write";
    nlohmann::json row = nlohmann::json::object();
    row["step"] = step;
    row["stage"] = std::string(stage);
    row["wall_time"] = detail::now_unix_s();
    row["elapsed"] = elapsed_base_ + (detail::now_steady_s() - opened_steady_);
    for (const auto& [name, value] : fields) {
      for (auto r : metrics_reserved_keys) msrl::require(name != r, where, "fields", "must not use the reserved key '" + name + "'");
      msrl::require(!name.empty(), where, "fields", "must have non-empty names");
      if (std::isfinite(value)) row[name] = value;
      else row[name] = nullptr;
    }
    write_row(row);
  }

  /// Appends an arbitrary JSON object (must contain a numeric "step") and flushes it.
  void write_row(const nlohmann::json& row) {
    constexpr std::string_view where = "metrics_writer::write_row";
    msrl::require(row.is_object() && row.contains("step") && row["step"].is_number(), where, "row", "must be a JSON object with a numeric 'step'");
    // Lines must stay single-line JSON; replace invalid UTF-8 rather than throw mid-training.
    out_ << row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    out_.flush();
    if (!out_) throw make_io_error(where, path_, "could not be appended to", errno);
  }

  const std::filesystem::path& path() const noexcept { return path_; }

private:
  metrics_writer(std::filesystem::path path, double elapsed_base)
      : path_(std::move(path)), elapsed_base_(elapsed_base), opened_steady_(detail::now_steady_s()) {
    out_.open(path_, std::ios::binary | std::ios::app);
    if (!out_) throw make_io_error("metrics_writer", path_, "could not be opened for appending", errno);
  }

  static void prepare_dir(const std::filesystem::path& path, std::string_view where) {
    msrl::require(!path.empty() && path.has_filename(), where, "path", "must name a file");
    std::error_code ec;
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) throw make_io_error(where, path.parent_path(), "could not be created", ec.value());
  }

  std::filesystem::path path_;
  std::ofstream out_;
  double elapsed_base_ = 0.0;
  double opened_steady_ = 0.0;
};

/// A metrics file as columns, one entry per row, in file order.
struct metrics_table {
  std::vector<double> step;
  std::vector<std::string> stage;
  std::vector<double> wall_time; ///< NaN when a row has none
  std::vector<double> elapsed;   ///< NaN when a row has none
  std::map<std::string, std::vector<double>> columns; ///< every numeric (or null) key; NaN where a row lacks it
  std::size_t skipped_lines = 0; ///< lines that were not JSON objects with a step, or a trailing partial line

  std::size_t rows() const noexcept { return step.size(); }
  /// The column called `name`, or nullptr.
  const std::vector<double>* column(std::string_view name) const {
    const auto it = columns.find(std::string(name));
    return it == columns.end() ? nullptr : &it->second;
  }
  /// Stage names in order of first appearance.
  std::vector<std::string> stages() const {
    std::vector<std::string> out;
    for (const auto& s : stage)
      if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
    return out;
  }
};

/// Loads `path` into columns; when `stage` is not empty, only rows of that stage. A trailing line
/// without newline (a writer still busy, or a crash) and invalid lines are skipped and counted.
/// Booleans read as 0/1; strings, arrays and objects other than "stage" are ignored.
inline metrics_table read_metrics(const std::filesystem::path& path, std::string_view stage = {}) {
  constexpr std::string_view where = "read_metrics";
  const std::string text = detail::read_all(path, where);
  std::string_view incomplete;
  const auto lines = detail::split_lines(text, incomplete);
  metrics_table t;
  if (!incomplete.empty()) ++t.skipped_lines;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (std::string_view line : lines) {
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const auto row = detail::parse_row(line);
    if (!row) {
      ++t.skipped_lines;
      continue;
    }
    std::string st;
    if (const auto s = row->find("stage"); s != row->end() && s->is_string()) st = s->get<std::string>();
    if (!stage.empty() && st != stage) continue;
    const std::size_t r = t.rows();
    auto num = [&](const nlohmann::json& v) {
      if (v.is_number()) return v.get<double>();
      if (v.is_boolean()) return v.get<bool>() ? 1.0 : 0.0;
      return nan;
    };
    t.step.push_back((*row)["step"].get<double>());
    t.stage.push_back(std::move(st));
    t.wall_time.push_back(row->contains("wall_time") ? num((*row)["wall_time"]) : nan);
    t.elapsed.push_back(row->contains("elapsed") ? num((*row)["elapsed"]) : nan);
    for (auto it = row->begin(); it != row->end(); ++it) {
      const std::string& key = it.key();
      bool reserved = false;
      for (auto k : metrics_reserved_keys) reserved = reserved || key == k;
      if (reserved || !(it->is_number() || it->is_boolean() || it->is_null())) continue;
      auto& col = t.columns[key];
      col.resize(r, nan); // a column first seen now is NaN for the earlier rows
      col.push_back(num(*it));
    }
    for (auto& [key, col] : t.columns) col.resize(r + 1, nan);
  }
  return t;
}

} // namespace msrl_pipeline
