#pragma once
/// \file The rows of msrl-train's ms-swift JSONL files, without torch: reading them (with
/// file:line errors naming the field), the A/B mirror of a row and the public benchmark layouts.
/// dataset.hpp adds the media loading and prompt encoding on top.
///
/// A row: {"id", "messages": [{"role", "content"}...], "images": [path...], "videos": [dir...],
/// "solution": "A"|"B", "task_type", "caption", "caption_messages", "order"}. Paths are relative
/// to the JSONL file's folder and must resolve inside it (symbolic links followed) unless
/// row_options::allow_media_outside says otherwise; one that escapes is refused by name.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <istream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <msrl/core/error.hpp>
#include <msrl/core/path_inside.hpp>
#include <msrl/voting/benchmarks.hpp>

namespace msrl_pipeline {

struct message {
  std::string role, content;
};

struct record {
  std::string id;
  std::vector<message> messages;
  std::vector<std::filesystem::path> images; ///< absolute (resolved against the file's folder)
  std::vector<std::filesystem::path> videos; ///< folders of frames
  std::string solution, task_type, caption, order;
  std::vector<message> caption_messages;     ///< the caption-based version of the prompt (CMKD pool)
  std::string category;                      ///< reporting category of a benchmark row ("" = task_type)
  std::string source;                        ///< "file:line" for error messages
};

/// The row with its two candidates swapped: the contents of the "Response A: " / "Response B: "
/// lines (and "Image A: " / "Image B: ", "Video A: " / "Video B: ") of every user turn exchanged,
/// two images or two videos exchanged, the solution A <-> B, and `order` AB <-> BA. The bundled
/// layout (datagen.hpp) and any row in it judge the same item in the other order. A row that has
/// no such pair of lines and no media pair, or whose solution is not A or B, is refused by name.
inline record mirrored(const record& r) {
  constexpr const char* where = "msrl_pipeline::mirrored";
  msrl::require(r.solution == "A" || r.solution == "B", where, "row.solution", r.source + ": must be A or B to swap the candidates");
  record m = r;
  bool swapped = false;
  for (auto& msg : m.messages) {
    if (msg.role != "user") continue;
    for (const char* kind : {"Response", "Image", "Video"}) {
      const std::string a = std::string(kind) + " A: ", b = std::string(kind) + " B: ";
      const auto line_at = [&](const std::string& head) -> std::size_t {
        for (std::size_t pos = 0; (pos = msg.content.find(head, pos)) != std::string::npos; ++pos)
          if (pos == 0 || msg.content[pos - 1] == '\n') return pos;
        return std::string::npos;
      };
      const auto pa = line_at(a), pb = line_at(b);
      if (pa == std::string::npos || pb == std::string::npos || pb < pa) continue;
      const auto ea = msg.content.find('\n', pa), eb = msg.content.find('\n', pb);
      if (ea == std::string::npos || ea > pb) continue;
      const std::string va = msg.content.substr(pa + a.size(), ea - pa - a.size());
      const std::string vb = msg.content.substr(pb + b.size(), (eb == std::string::npos ? msg.content.size() : eb) - pb - b.size());
      // media markers (on either line): the media lists are swapped below; skipping only when A's
      // line is a marker made the mirror of a mirror differ from the row
      const auto marker = [](const std::string& v) { return v == "<image>" || v == "<video>"; };
      if (marker(va) || marker(vb)) continue;
      msg.content = msg.content.substr(0, pa + a.size()) + vb + msg.content.substr(ea, pb + b.size() - ea) + va +
                    (eb == std::string::npos ? std::string() : msg.content.substr(eb));
      swapped = true;
    }
  }
  if (m.images.size() == 2) { std::swap(m.images[0], m.images[1]); swapped = true; }
  if (m.videos.size() == 2) { std::swap(m.videos[0], m.videos[1]); swapped = true; }
  msrl::require(swapped, where, "row", r.source + ": has no candidate pair to swap (Response/Image/Video A: and B: lines, or two media)");
  m.solution = r.solution == "A" ? "B" : "A";
  if (!r.order.empty()) m.order = r.order == "AB" ? "BA" : r.order == "BA" ? "AB" : r.order;
  return m;
}

/// How rows are read.
struct row_options {
  /// Media paths may resolve outside the JSONL file's folder (absolute paths, `..`, links out).
  bool allow_media_outside = false;
};

namespace detail {

inline std::string where_of(const std::filesystem::path& file, std::size_t line) { return file.string() + ":" + std::to_string(line); }

[[noreturn]] inline void bad_row(const std::string& where, const std::string& field, const std::string& rule) {
  throw msrl::parse_error("msrl-train: " + where + ": field '" + field + "': " + rule);
}

inline std::vector<message> read_messages(const nlohmann::json& j, const std::string& where, const char* field) {
  if (!j.is_array() || j.empty()) bad_row(where, field, "must be a non-empty array of {role, content}");
  std::vector<message> out;
  for (const auto& m : j) {
    if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["role"].is_string() || !m["content"].is_string())
      bad_row(where, field, "every message must have string 'role' and 'content'");
    const auto role = m["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant") bad_row(where, field, "role must be system, user or assistant (got '" + role + "')");
    out.push_back({role, m["content"].get<std::string>()});
  }
  return out;
}

/// Calls f(row, "file:line") for every non-blank line of a JSONL file; a line that is not a
/// JSON object throws msrl::parse_error naming file:line. `argument` names the file in errors.
template <class F>
void for_each_jsonl_object(std::istream& in, const std::filesystem::path& file, F&& f) {
  std::string line;
  std::size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto where = where_of(file, n);
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) throw msrl::parse_error("msrl-train: " + where + ": invalid JSON");
    if (!j.is_object()) throw msrl::parse_error("msrl-train: " + where + ": a row must be a JSON object");
    f(j, where, n);
  }
}
template <class F>
void for_each_jsonl_object(const std::filesystem::path& file, const char* argument, F&& f) {
  std::ifstream in(file);
  msrl::require(static_cast<bool>(in), "msrl-train", argument, "must be a readable file ('" + file.string() + "')");
  for_each_jsonl_object(in, file, std::forward<F>(f));
}

/// A media path of a row resolved against the file's folder `base`; outside it (after resolving
/// `..` and symbolic links) it is refused unless allowed.
inline std::filesystem::path media_path(const std::filesystem::path& base, const std::string& p, const std::string& where,
                                        const char* field, const row_options& o) {
  std::filesystem::path path = p;
  if (path.is_relative()) path = base / path;
  if (!o.allow_media_outside && !msrl::resolves_inside(path, base))
    bad_row(where, field, "'" + p + "' resolves outside the data folder " + base.string() +
                              " (set allow_media_outside_data to read media from elsewhere)");
  return path;
}

inline std::string read_label(const nlohmann::json& row, const std::string& where) {
  for (const char* k : {"solution", "chosen", "label"}) {
    auto it = row.find(k);
    if (it == row.end() || it->is_null()) continue;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_number_integer()) return std::to_string(it->get<long long>());
    bad_row(where, k, "must be a string or an integer");
  }
  return {};
}

} // namespace detail

/// Reads every row of a JSONL file (blank lines skipped). Throws msrl::parse_error naming the
/// file, the line and the field for a corrupt record, and msrl::invalid_argument for a missing file.
inline std::vector<record> read_jsonl(std::istream& in, const std::filesystem::path& file, const row_options& opt = {}) {
  const auto base = std::filesystem::absolute(file).parent_path();
  std::vector<record> rows;
  detail::for_each_jsonl_object(in, file, [&](const nlohmann::json& j, const std::string& where, std::size_t n) {
    record r;
    r.source = where;
    if (!j.contains("messages")) detail::bad_row(where, "messages", "is required");
    r.messages = detail::read_messages(j["messages"], where, "messages");
    if (auto it = j.find("caption_messages"); it != j.end() && !it->is_null()) r.caption_messages = detail::read_messages(*it, where, "caption_messages");
    for (const char* k : {"images", "videos"}) {
      auto it = j.find(k);
      if (it == j.end() || it->is_null()) continue;
      if (!it->is_array()) detail::bad_row(where, k, "must be an array of paths");
      for (const auto& p : *it) {
        if (!p.is_string() || p.get<std::string>().empty()) detail::bad_row(where, k, "must be an array of non-empty path strings");
        (std::string(k) == "images" ? r.images : r.videos).push_back(detail::media_path(base, p.get<std::string>(), where, k, opt));
      }
    }
    for (auto [k, dst] : {std::pair{"id", &r.id}, std::pair{"task_type", &r.task_type}, std::pair{"caption", &r.caption}, std::pair{"order", &r.order}}) {
      auto it = j.find(k);
      if (it == j.end() || it->is_null()) continue;
      if (it->is_string()) *dst = it->get<std::string>();
      else if (std::string(k) == "id" && it->is_number_integer()) *dst = std::to_string(it->get<long long>());
      else detail::bad_row(where, k, "must be a string");
    }
    r.solution = detail::read_label(j, where);
    if (r.id.empty()) r.id = file.filename().string() + ":" + std::to_string(n);
    rows.push_back(std::move(r));
  });
  msrl::require(!rows.empty(), "msrl-train", "data file", "must hold at least one row ('" + file.string() + "')");
  return rows;
}
/// The same from a file (a missing or unreadable file: msrl::invalid_argument).
inline std::vector<record> read_jsonl(const std::filesystem::path& file, const row_options& opt = {}) {
  std::ifstream in(file);
  msrl::require(static_cast<bool>(in), "msrl-train", "data file", "must be a readable file ('" + file.string() + "')");
  return read_jsonl(in, file, opt);
}

/// Rows of a public benchmark file (JSONL) in the judge layout of the bundled data, each item in
/// both A/B orders (same id, order "AB" / "BA"):
///   vlrb  VL-RewardBench: id, query, image, response [2], human_ranking ([0,1]: response[0] preferred);
///         category = its group (general / hallucination / reasoning).
///   genai GenAI-Bench: prompt, left_image/right_image (or left_video/right_video, folders of frames),
///         vote_type; ties and both-bad items are skipped, as the reference scripts do.
/// `system` is the system prompt to judge with (the stage-3 one).
inline std::vector<record> read_benchmark(std::istream& in, const std::filesystem::path& file, const std::string& layout,
                                          const std::string& system, const row_options& opt = {}) {
  msrl::require(layout == "vlrb" || layout == "genai", "msrl-train", "eval.layout", "must be msrl, vlrb or genai");
  const auto base = std::filesystem::absolute(file).parent_path();
  std::vector<record> rows;
  detail::for_each_jsonl_object(in, file, [&](const nlohmann::json& j, const std::string& where, std::size_t n) {
    auto str = [&](const char* k) {
      if (!j.contains(k) || !j[k].is_string()) detail::bad_row(where, k, "must be a string");
      return j[k].get<std::string>();
    };
    const auto resolve_field = [&](const char* k) { return detail::media_path(base, str(k), where, k, opt); };
    record r;
    r.source = where;
    std::string first, second, user_ab, user_ba;
    char gold = 'A';
    if (layout == "vlrb") {
      r.id = j.contains("id") && j["id"].is_string() ? j["id"].get<std::string>() : std::to_string(n);
      if (!j.contains("response") || !j["response"].is_array() || j["response"].size() != 2 || !j["response"][0].is_string() || !j["response"][1].is_string())
        detail::bad_row(where, "response", "must be a list of two strings");
      // read as integers only after checking they are 0 and 1 (a float beyond int's range, or a
      // string, must be refused by name, not converted)
      const auto rank_is = [&](std::size_t i, int v) {
        const auto& x = j["human_ranking"][i];
        return x.is_number_integer() && x.get<long long>() == v;
      };
      if (!j.contains("human_ranking") || !j["human_ranking"].is_array() || j["human_ranking"].size() != 2 ||
          !((rank_is(0, 0) && rank_is(1, 1)) || (rank_is(0, 1) && rank_is(1, 0))))
        detail::bad_row(where, "human_ranking", "must be [0,1] or [1,0]");
      const int rank0 = rank_is(0, 0) ? 0 : 1;
      gold = rank0 == 0 ? 'A' : 'B';
      r.images.push_back(resolve_field("image"));
      r.task_type = "image_understanding";
      r.category = std::string(msrl::voting::vlrb_group(r.id));
      const std::string q = str("query"), a = j["response"][0].get<std::string>(), b = j["response"][1].get<std::string>();
      user_ab = "<image>\nQuestion: " + q + "\nResponse A: " + a + "\nResponse B: " + b;
      user_ba = "<image>\nQuestion: " + q + "\nResponse A: " + b + "\nResponse B: " + a;
    } else {
      r.id = j.contains("id") && j["id"].is_string() ? j["id"].get<std::string>() : std::to_string(n);
      const auto g = msrl::voting::genai_gold(str("vote_type"));
      if (g == msrl::reward::label::none) return;
      gold = g == msrl::reward::label::a ? 'A' : 'B';
      const bool video = j.contains("left_video") || j.contains("video_left");
      const char* lk = video ? (j.contains("left_video") ? "left_video" : "video_left") : "left_image";
      const char* rk = video ? (j.contains("right_video") ? "right_video" : "video_right") : "right_image";
      auto& media = video ? r.videos : r.images;
      media.push_back(resolve_field(lk));
      media.push_back(resolve_field(rk));
      r.task_type = video ? "video_generation" : "image_generation";
      r.category = r.task_type;
      const std::string noun = video ? "Video" : "Image", marker = video ? "<video>" : "<image>";
      user_ab = "Prompt: " + str("prompt") + "\n" + noun + " A: " + marker + "\n" + noun + " B: " + marker + "\nWhich " +
                (video ? "video" : "image") + " matches the prompt?";
      user_ba = user_ab;
    }
    for (int o = 0; o < 2; ++o) {
      record x = r;
      x.order = o == 0 ? "AB" : "BA";
      x.solution = std::string(1, o == 0 ? gold : (gold == 'A' ? 'B' : 'A'));
      if (o == 1) {
        if (!x.images.empty() && layout == "genai") std::swap(x.images[0], x.images[1]);
        if (!x.videos.empty()) std::swap(x.videos[0], x.videos[1]);
      }
      if (!system.empty()) x.messages.push_back({"system", system});
      x.messages.push_back({"user", o == 0 ? user_ab : user_ba});
      rows.push_back(std::move(x));
    }
  });
  msrl::require(!rows.empty(), "msrl-train", "eval.file", "must hold at least one scorable item ('" + file.string() + "')");
  return rows;
}
inline std::vector<record> read_benchmark(const std::filesystem::path& file, const std::string& layout, const std::string& system,
                                          const row_options& opt = {}) {
  msrl::require(layout == "vlrb" || layout == "genai", "msrl-train", "eval.layout", "must be msrl, vlrb or genai");
  std::ifstream in(file);
  msrl::require(static_cast<bool>(in), "msrl-train", "eval.file", "must be a readable file ('" + file.string() + "')");
  return read_benchmark(in, file, layout, system, opt);
}

} // namespace msrl_pipeline
