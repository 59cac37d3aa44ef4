// The bundled data generator: determinism, the JSONL schema of every file, media that decode
// to exactly what their captions and labels say, balanced labels and tasks, reference
// rationales that msrl's rewards score in full, the generated tokenizer, and rejected inputs.
#define BOOST_TEST_MODULE pipeline_datagen
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <msrl/reward.hpp>
#include <msrl/trainer/image.hpp>
#include <msrl/trainer/tokenizer.hpp>
#include <msrl_pipeline/datagen.hpp>
#include <nlohmann/json.hpp>

#include "scratch.hpp"

namespace fs = std::filesystem;
using msrl_test::scratch;
using msrl_test::slurp;
namespace mp = msrl_pipeline;
namespace mw = msrl_pipeline::world;
using json = nlohmann::json;

namespace {

std::vector<json> read_jsonl(const fs::path& p) {
  std::vector<json> rows;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) rows.push_back(json::parse(line));
  return rows;
}

/// Relative path -> bytes of every file under `dir`.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> m;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) m[fs::relative(e.path(), dir).generic_string()] = slurp(e.path());
  return m;
}

/// The data set with default options, generated once for the whole run.
struct bundled {
  scratch s{"bundled"};
  fs::path dir = s.dir / "data";
  mp::datagen_summary sum;
  double seconds = 0;
  bundled() {
    const auto t0 = std::chrono::steady_clock::now();
    sum = mp::make_bundled_data(dir, {});
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  static bundled& get() {
    static bundled b;
    return b;
  }
};

// ---- reading the world back from pixels --------------------------------------------------------

struct blob {
  int colour = -1;
  std::size_t pixels = 0;
  int x0 = 1 << 20, x1 = -1, y0 = 1 << 20, y1 = -1;
  double cx = 0, cy = 0;
};

int palette_index(const msrl::trainer::rgb_image& im, int x, int y) {
  for (std::size_t k = 0; k < mw::palette.size(); ++k)
    if (im.at(x, y, 0) == mw::palette[k][0] && im.at(x, y, 1) == mw::palette[k][1] && im.at(x, y, 2) == mw::palette[k][2]) return static_cast<int>(k);
  return -1;
}
bool is_background(const msrl::trainer::rgb_image& im, int x, int y) {
  return im.at(x, y, 0) == mw::background[0] && im.at(x, y, 1) == mw::background[1] && im.at(x, y, 2) == mw::background[2];
}

/// 4-connected components of non-background pixels; every pixel must be background or a palette colour.
std::vector<blob> blobs(const msrl::trainer::rgb_image& im) {
  std::vector<int> seen(static_cast<std::size_t>(im.width * im.height), 0);
  std::vector<blob> out;
  for (int y = 0; y < im.height; ++y)
    for (int x = 0; x < im.width; ++x) {
      if (is_background(im, x, y) || seen[static_cast<std::size_t>(y * im.width + x)]) continue;
      const int c = palette_index(im, x, y);
      BOOST_REQUIRE_MESSAGE(c >= 0, "pixel (" << x << "," << y << ") is neither background nor a palette colour");
      blob b;
      b.colour = c;
      std::vector<std::pair<int, int>> stack{{x, y}};
      seen[static_cast<std::size_t>(y * im.width + x)] = 1;
      while (!stack.empty()) {
        const auto [px, py] = stack.back();
        stack.pop_back();
        BOOST_REQUIRE_EQUAL(palette_index(im, px, py), c); // one colour per shape
        ++b.pixels;
        b.cx += px + 0.5;
        b.cy += py + 0.5;
        b.x0 = std::min(b.x0, px), b.x1 = std::max(b.x1, px), b.y0 = std::min(b.y0, py), b.y1 = std::max(b.y1, py);
        for (const auto& [dx, dy] : {std::pair{1, 0}, std::pair{-1, 0}, std::pair{0, 1}, std::pair{0, -1}}) {
          const int nx = px + dx, ny = py + dy;
          if (nx < 0 || ny < 0 || nx >= im.width || ny >= im.height) continue;
          auto& s = seen[static_cast<std::size_t>(ny * im.width + nx)];
          if (s || is_background(im, nx, ny)) continue;
          s = 1;
          stack.emplace_back(nx, ny);
        }
      }
      b.cx /= static_cast<double>(b.pixels);
      b.cy /= static_cast<double>(b.pixels);
      out.push_back(b);
    }
  return out;
}

/// circle / square / triangle from how much of its bounding box a shape fills.
int classify(const blob& b) {
  const double fill = static_cast<double>(b.pixels) / ((b.x1 - b.x0 + 1) * (b.y1 - b.y0 + 1));
  return fill > 0.92 ? 1 : fill > 0.65 ? 0 : 2;
}

/// The phrase an image shows, read from its pixels ("two green triangles on the left").
std::string read_still(const fs::path& p, int size) {
  const auto im = msrl::trainer::decode_image_file(p);
  BOOST_REQUIRE_EQUAL(im.width, size);
  BOOST_REQUIRE_EQUAL(im.height, size);
  const auto bs = blobs(im);
  BOOST_REQUIRE(bs.size() >= 1 && bs.size() <= 3);
  mw::still s;
  s.count = static_cast<int>(bs.size());
  s.colour = static_cast<mw::colour>(bs[0].colour);
  s.shape = static_cast<mw::shape>(classify(bs[0]));
  s.side = bs[0].cx < size / 2.0 ? mw::side::left : mw::side::right;
  for (const auto& b : bs) {
    BOOST_CHECK_EQUAL(b.colour, bs[0].colour);
    BOOST_CHECK_EQUAL(classify(b), classify(bs[0]));
    BOOST_CHECK_EQUAL(b.cx < size / 2.0, bs[0].cx < size / 2.0);
    BOOST_CHECK(b.x1 < size / 2 || b.x0 >= size / 2); // each shape wholly in its half
    // the pixel at the shape's centre has the shape's colour
    BOOST_CHECK_EQUAL(palette_index(im, static_cast<int>(b.cx), static_cast<int>(b.cy)), b.colour);
  }
  return mw::phrase(s);
}

/// The phrase a video shows ("a green triangle moving up"), read from its frames.
std::string read_motion(const fs::path& dir, int size, int frames) {
  BOOST_REQUIRE(fs::is_directory(dir));
  BOOST_REQUIRE(!fs::exists(dir / ("frame_" + std::to_string(frames) + ".png")));
  std::vector<blob> per_frame;
  for (int f = 0; f < frames; ++f) {
    const auto im = msrl::trainer::decode_image_file(dir / ("frame_" + std::to_string(f) + ".png"));
    BOOST_REQUIRE_EQUAL(im.width, size);
    BOOST_REQUIRE_EQUAL(im.height, size);
    const auto bs = blobs(im);
    BOOST_REQUIRE_EQUAL(bs.size(), 1u);
    BOOST_CHECK_EQUAL(palette_index(im, static_cast<int>(bs[0].cx), static_cast<int>(bs[0].cy)), bs[0].colour);
    per_frame.push_back(bs[0]);
  }
  const double dx = per_frame.back().cx - per_frame.front().cx, dy = per_frame.back().cy - per_frame.front().cy;
  BOOST_REQUIRE(std::max(std::abs(dx), std::abs(dy)) > size / 4.0); // it clearly moves
  for (std::size_t f = 1; f < per_frame.size(); ++f) { // monotonically, along one axis
    BOOST_CHECK_EQUAL(per_frame[f].colour, per_frame[0].colour);
    BOOST_CHECK_EQUAL(classify(per_frame[f]), classify(per_frame[0]));
  }
  mw::motion m;
  m.colour = static_cast<mw::colour>(per_frame[0].colour);
  m.shape = static_cast<mw::shape>(classify(per_frame[0]));
  m.direction = std::abs(dx) > std::abs(dy) ? (dx > 0 ? mw::direction::right : mw::direction::left)
                                            : (dy > 0 ? mw::direction::down : mw::direction::up);
  return mw::phrase(m);
}

// ---- reading the text back ---------------------------------------------------------------------

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> w;
  std::istringstream in(s);
  for (std::string t; in >> t;) w.push_back(t);
  return w;
}

/// How many of the attributes (count, colour, shape, side | colour, shape, direction) differ
/// between two phrases of the same kind.
int attribute_differences(const std::string& a, const std::string& b) {
  const auto wa = words(a), wb = words(b);
  BOOST_REQUIRE_EQUAL(wa.size(), wb.size());
  auto norm_shape = [](std::string s) { return s.back() == 's' ? s.substr(0, s.size() - 1) : s; };
  if (wa[0] == "a" || wa[0] == "an") // a COLOUR SHAPE moving DIR
    return (wa[1] != wb[1]) + (wa[2] != wb[2]) + (wa[4] != wb[4]);
  return (wa[0] != wb[0]) + (wa[1] != wb[1]) + (norm_shape(wa[2]) != norm_shape(wb[2])) + (wa[5] != wb[5]);
}

/// The text after `key` up to the end of its line, without a final '.'.
std::string line_after(const std::string& text, const std::string& key) {
  const auto p = text.find(key);
  BOOST_REQUIRE_MESSAGE(p != std::string::npos, "'" << key << "' missing in: " << text);
  auto e = text.find('\n', p);
  std::string v = text.substr(p + key.size(), (e == std::string::npos ? text.size() : e) - p - key.size());
  if (!v.empty() && v.back() == '.') v.pop_back();
  return v;
}

std::size_t occurrences(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

bool is_multimodal_task(const std::string& t) {
  return t == "image_understanding" || t == "image_generation" || t == "video_understanding" || t == "video_generation";
}

void check_messages(const json& m, const std::string& system, bool assistant) {
  BOOST_REQUIRE(m.is_array());
  BOOST_REQUIRE_EQUAL(m.size(), assistant ? 3u : 2u);
  for (const auto& t : m) {
    BOOST_REQUIRE(t.is_object());
    BOOST_REQUIRE_EQUAL(t.size(), 2u);
    BOOST_REQUIRE(t["content"].is_string());
  }
  BOOST_CHECK_EQUAL(m[0]["role"], "system");
  BOOST_CHECK_EQUAL(m[0]["content"].get<std::string>(), system);
  BOOST_CHECK_EQUAL(m[1]["role"], "user");
  if (assistant) BOOST_CHECK_EQUAL(m[2]["role"], "assistant");
}

} // namespace

BOOST_AUTO_TEST_CASE(default_output_files_sizes_and_speed) {
  auto& b = bundled::get();
  BOOST_TEST_MESSAGE("generated in " << b.seconds << " s: " << b.sum.bytes << " bytes, " << b.sum.images << " images, " << b.sum.videos
                                     << " videos, tokenizer " << b.sum.tokenizer_vocab << " ids");
  BOOST_CHECK_LT(b.seconds, 5.0);
  BOOST_CHECK_LT(b.sum.bytes, 5u << 20);
  BOOST_CHECK_EQUAL(b.sum.dir, fs::absolute(b.dir).lexically_normal());
  const mp::datagen_options d{};
  const std::map<std::string, std::size_t> rows = {{"stage1_sft.jsonl", d.sft},   {"stage1_rl.jsonl", d.text_rl},
                                                   {"stage2_caption_rl.jsonl", d.caption_rl}, {"stage2_cmkd.jsonl", d.cmkd},
                                                   {"stage3_multimodal_rl.jsonl", d.mm_rl},   {"eval.jsonl", 2 * d.eval},
                                                   {"eval_caption.jsonl", 2 * d.eval}, {"eval_text.jsonl", 2 * d.eval}};
  BOOST_REQUIRE_EQUAL(b.sum.files.size(), rows.size());
  for (const auto& [name, n] : rows) {
    BOOST_TEST_CONTEXT(name) {
      BOOST_CHECK_EQUAL(b.sum.file(name).rows, n);
      BOOST_CHECK_EQUAL(read_jsonl(b.dir / name).size(), n);
    }
  }
  BOOST_CHECK_THROW(b.sum.file("nope.jsonl"), msrl::invalid_argument);
  const json manifest = json::parse(slurp(b.dir / "manifest.json"));
  BOOST_CHECK_EQUAL(manifest["generator"], std::string(mp::datagen_generator_name));
  BOOST_CHECK_EQUAL(manifest["seed"], 1);
  BOOST_CHECK_EQUAL(manifest["files"]["eval.jsonl"]["rows"], 2 * d.eval);
  std::set<std::string> listed, present;
  for (const auto& e : manifest["entries"]) listed.insert(e.get<std::string>());
  for (const auto& e : fs::directory_iterator(b.dir)) present.insert(e.path().filename().string());
  BOOST_CHECK(listed == present);
  // nothing left beside the output (temporary folders are renamed or removed)
  std::size_t siblings = 0;
  for (const auto& e : fs::directory_iterator(b.dir.parent_path())) siblings += e.path() != b.dir;
  BOOST_CHECK_EQUAL(siblings, 0u);
}

BOOST_AUTO_TEST_CASE(same_seed_same_bytes_other_seed_other_data) {
  scratch s("determinism");
  const mp::datagen_options o{.seed = 42, .sft = 30, .text_rl = 20, .caption_rl = 20, .cmkd = 12, .mm_rl = 16, .eval = 8};
  mp::make_bundled_data(s.dir / "a", o);
  mp::make_bundled_data(s.dir / "b", o);
  auto other = o;
  other.seed = 43;
  mp::make_bundled_data(s.dir / "c", other);
  const auto a = snapshot(s.dir / "a"), b = snapshot(s.dir / "b"), c = snapshot(s.dir / "c");
  BOOST_CHECK(a == b);
  for (const auto f : mp::datagen_jsonl_files) {
    BOOST_TEST_CONTEXT(f) {
      BOOST_REQUIRE(a.count(std::string(f)));
      BOOST_CHECK(a.at(std::string(f)) != c.at(std::string(f)));
    }
  }
  BOOST_CHECK(a.at("tokenizer.json") == c.at("tokenizer.json")); // the vocabulary does not depend on the seed
}

BOOST_AUTO_TEST_CASE(every_row_follows_the_schema) {
  auto& b = bundled::get();
  const std::set<std::string> allowed = {"id", "messages", "images", "videos", "solution", "task_type", "caption", "order", "caption_messages"};
  for (const auto f : mp::datagen_jsonl_files) {
    const std::string name(f);
    const bool text = name.starts_with("stage1") || name == "eval_text.jsonl", sft = name == "stage1_sft.jsonl", media = name == "stage2_cmkd.jsonl" ||
                                                                                             name == "stage3_multimodal_rl.jsonl" || name == "eval.jsonl";
    const bool eval = name.starts_with("eval");
    // stage 1 text rows share the stage 2 (caption) system prompt (judge_layout::typed, the default)
    const std::string system = mp::system_prompt(media ? mp::prompt_style::multimodal : mp::prompt_style::caption);
    std::map<std::string, std::vector<json>> by_id;
    for (const auto& row : read_jsonl(b.dir / name)) {
      BOOST_TEST_CONTEXT(name << " " << row.dump()) {
        BOOST_REQUIRE(row.is_object());
        for (auto it = row.begin(); it != row.end(); ++it) BOOST_CHECK(allowed.count(it.key()));
        BOOST_REQUIRE(row["id"].is_string());
        check_messages(row["messages"], system, sft);
        BOOST_CHECK(row["solution"] == "A" || row["solution"] == "B");
        const std::string task = row["task_type"].get<std::string>();
        BOOST_CHECK(text ? task == "text" : is_multimodal_task(task));
        BOOST_CHECK_EQUAL(row.contains("caption"), !text);
        BOOST_CHECK_EQUAL(row.contains("order"), eval);
        BOOST_CHECK_EQUAL(row.contains("caption_messages"), name == "stage2_cmkd.jsonl");
        const std::string user = row["messages"][1]["content"];
        const std::size_t n_img = occurrences(user, "<image>"), n_vid = occurrences(user, "<video>");
        if (media && task.starts_with("image")) {
          BOOST_REQUIRE(row["images"].is_array());
          BOOST_CHECK(!row.contains("videos"));
          BOOST_CHECK_EQUAL(row["images"].size(), task == "image_generation" ? 2u : 1u);
          BOOST_CHECK_EQUAL(n_img, row["images"].size());
          BOOST_CHECK_EQUAL(n_vid, 0u);
        } else if (media) {
          BOOST_REQUIRE(row["videos"].is_array());
          BOOST_CHECK(!row.contains("images"));
          BOOST_CHECK_EQUAL(row["videos"].size(), task == "video_generation" ? 2u : 1u);
          BOOST_CHECK_EQUAL(n_vid, row["videos"].size());
          BOOST_CHECK_EQUAL(n_img, 0u);
        } else {
          BOOST_CHECK(!row.contains("images") && !row.contains("videos"));
          BOOST_CHECK_EQUAL(n_img + n_vid, 0u);
        }
        if (row.contains("caption_messages")) {
          check_messages(row["caption_messages"], mp::system_prompt(mp::prompt_style::caption), false);
          const std::string cap_user = row["caption_messages"][1]["content"];
          BOOST_CHECK_EQUAL(occurrences(cap_user, "<image>") + occurrences(cap_user, "<video>"), 0u);
          // the caption text stands where the media stood
          if (task.ends_with("understanding")) BOOST_CHECK(cap_user.find(row["caption"].get<std::string>()) != std::string::npos);
        }
        by_id[row["id"]].push_back(row);
      }
    }
    for (const auto& [id, rows] : by_id) {
      BOOST_TEST_CONTEXT(name << " " << id) {
        if (!eval) {
          BOOST_CHECK_EQUAL(rows.size(), 1u);
          continue;
        }
        // each eval item in both orders: AB has the correct candidate first
        BOOST_REQUIRE_EQUAL(rows.size(), 2u);
        BOOST_CHECK_EQUAL(rows[0]["order"], "AB");
        BOOST_CHECK_EQUAL(rows[0]["solution"], "A");
        BOOST_CHECK_EQUAL(rows[1]["order"], "BA");
        BOOST_CHECK_EQUAL(rows[1]["solution"], "B");
        BOOST_CHECK_EQUAL(rows[0]["task_type"], rows[1]["task_type"]);
        if (rows[0].contains("images") && rows[0]["images"].size() == 2) {
          BOOST_CHECK_EQUAL(rows[0]["images"][0], rows[1]["images"][1]);
          BOOST_CHECK_EQUAL(rows[0]["images"][1], rows[1]["images"][0]);
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(media_show_what_captions_and_labels_say) {
  auto& b = bundled::get();
  const mp::datagen_options d{};
  std::size_t checked_images = 0, checked_videos = 0;
  for (const std::string name : {"stage2_cmkd.jsonl", "stage3_multimodal_rl.jsonl", "eval.jsonl"}) {
    for (const auto& row : read_jsonl(b.dir / name)) {
      BOOST_TEST_CONTEXT(name << " " << row["id"] << " " << row.value("order", "")) {
        const std::string task = row["task_type"], user = row["messages"][1]["content"], caption = row["caption"];
        const char sol = row["solution"].get<std::string>()[0];
        std::vector<std::string> shown; // phrase read from each medium's pixels
        if (row.contains("images"))
          for (const auto& p : row["images"]) shown.push_back(read_still(b.dir / p.get<std::string>(), d.image_size)), ++checked_images;
        else
          for (const auto& p : row["videos"]) shown.push_back(read_motion(b.dir / p.get<std::string>(), d.image_size, d.video_frames)), ++checked_videos;
        if (task.ends_with("understanding")) {
          BOOST_REQUIRE_EQUAL(shown.size(), 1u);
          BOOST_CHECK_EQUAL(shown[0], caption);
          const std::string ra = line_after(user, "Response A: "), rb = line_after(user, "Response B: ");
          BOOST_CHECK_EQUAL(sol == 'A' ? ra : rb, shown[0]);
          BOOST_CHECK_EQUAL(attribute_differences(ra, rb), 1);
        } else {
          BOOST_REQUIRE_EQUAL(shown.size(), 2u);
          const std::string noun = task == "image_generation" ? "Image" : "Video";
          BOOST_CHECK_EQUAL(caption, noun + " A: " + shown[0] + ". " + noun + " B: " + shown[1] + ".");
          const std::string prompt = line_after(user, "Prompt: ");
          BOOST_CHECK_EQUAL(shown[sol == 'A' ? 0 : 1], prompt);
          BOOST_CHECK_EQUAL(attribute_differences(shown[0], shown[1]), 1);
        }
      }
    }
  }
  BOOST_TEST_MESSAGE("checked " << checked_images << " image and " << checked_videos << " video references");
  // every media file on disk is referenced and decodes (the checks above read every reference)
  BOOST_CHECK_EQUAL(std::distance(fs::directory_iterator(b.dir / "images"), fs::directory_iterator{}), static_cast<long>(b.sum.images));
  BOOST_CHECK_EQUAL(std::distance(fs::directory_iterator(b.dir / "videos"), fs::directory_iterator{}), static_cast<long>(b.sum.videos));
}

// Every captioning row says exactly what its media show (read back from the pixels): the scene
// phrase for one image or video, "Image A: .. Image B: .." for pairs. Returns rows per task type.
static std::map<std::string, std::size_t> check_caption_rows(std::string_view file, std::size_t expected_rows) {
  auto& b = bundled::get();
  const mp::datagen_options d{};
  const auto rows = read_jsonl(b.dir / std::string(file));
  BOOST_CHECK_EQUAL(rows.size(), expected_rows);
  std::map<std::string, std::size_t> tasks;
  for (const auto& row : rows) {
    BOOST_TEST_CONTEXT(row["id"]) {
      const auto& m = row["messages"];
      BOOST_REQUIRE_EQUAL(m.size(), 2u);
      BOOST_CHECK_EQUAL(m[0]["role"], "user");
      BOOST_CHECK_EQUAL(m[1]["role"], "assistant");
      const std::string task = row["task_type"], user = m[0]["content"], said = m[1]["content"];
      ++tasks[task];
      std::vector<std::string> shown;
      if (row.contains("images"))
        for (const auto& p : row["images"]) shown.push_back(read_still(b.dir / p.get<std::string>(), d.image_size));
      else
        for (const auto& p : row["videos"]) shown.push_back(read_motion(b.dir / p.get<std::string>(), d.image_size, d.video_frames));
      std::size_t markers = 0;
      for (const std::string mk : {"<image>", "<video>"})
        for (auto q = user.find(mk); q != std::string::npos; q = user.find(mk, q + 1)) ++markers;
      BOOST_CHECK_EQUAL(markers, shown.size());
      if (task.ends_with("understanding")) {
        BOOST_REQUIRE_EQUAL(shown.size(), 1u);
        BOOST_CHECK_EQUAL(said, shown[0] + ".");
      } else {
        BOOST_REQUIRE_EQUAL(shown.size(), 2u);
        const std::string noun = task == "image_generation" ? "Image" : "Video";
        BOOST_CHECK_EQUAL(said, noun + " A: " + shown[0] + ". " + noun + " B: " + shown[1] + ".");
      }
    }
  }
  return tasks;
}

BOOST_AUTO_TEST_CASE(pretrain_rows_describe_their_media) {
  auto& b = bundled::get();
  const mp::datagen_options d{};
  BOOST_CHECK_EQUAL(b.sum.pretrain_rows, d.pretrain);
  const auto tasks = check_caption_rows(mp::datagen_pretrain_file, d.pretrain);
  // phase 1: single images only (a from-scratch model learns to read one image first)
  BOOST_CHECK_EQUAL(tasks.size(), 1u);
  BOOST_CHECK_EQUAL(tasks.at("image_understanding"), d.pretrain);
}

BOOST_AUTO_TEST_CASE(pretrain_media_rows_cover_pairs_videos_and_video_pairs) {
  auto& b = bundled::get();
  const mp::datagen_options d{};
  BOOST_CHECK_EQUAL(b.sum.pretrain_media_rows, d.pretrain_media);
  const auto tasks = check_caption_rows(mp::datagen_pretrain_media_file, d.pretrain_media);
  // phase 2: the four media layouts in turn, a quarter each
  BOOST_CHECK_EQUAL(tasks.size(), 4u);
  for (const char* t : {"image_generation", "video_understanding", "video_generation", "image_understanding"})
    BOOST_CHECK_EQUAL(tasks.count(t) ? tasks.at(t) : 0u, d.pretrain_media / 4);
}

// Half of the second phase's rows ask for the caption after a judging context (the question or
// prompt and both candidates): the caption must come from the media, and the candidate it matches
// sits in either slot, so copying one slot is right only half the time.
BOOST_AUTO_TEST_CASE(pretrain_media_rows_ask_for_captions_after_a_judging_context) {
  auto& b = bundled::get();
  const mp::datagen_options d{};
  std::size_t context = 0, match_a = 0, match_b = 0;
  for (const auto& row : read_jsonl(b.dir / std::string(mp::datagen_pretrain_media_file))) {
    const std::string task = row["task_type"], user = row["messages"][0]["content"], said = row["messages"][1]["content"];
    const bool pair = task.ends_with("generation");
    const bool has = user.find(pair ? "Prompt: " : "Response A: ") != std::string::npos;
    if (!has) continue;
    ++context;
    BOOST_TEST_CONTEXT(row["id"] << ": " << user) {
      BOOST_CHECK(user.ends_with(pair ? (task == "image_generation" ? "\nDescribe both images." : "\nDescribe both videos.")
                                      : (task == "image_understanding" ? "\nDescribe the image." : "\nDescribe the video.")));
      std::string a, bb, truth;
      if (pair) { // the caption describes both media; the prompt is one of them, the other differs
        const std::string noun = task == "image_generation" ? "Image" : "Video";
        a = said.substr(said.find(noun + " A: ") + noun.size() + 4);
        a = a.substr(0, a.find(". " + noun + " B: "));
        bb = said.substr(said.find(noun + " B: ") + noun.size() + 4);
        if (!bb.empty() && bb.back() == '.') bb.pop_back();
        truth = line_after(user, "Prompt: ");
      } else { // the caption is one of the two responses
        a = line_after(user, "Response A: ");
        bb = line_after(user, "Response B: ");
        truth = said.substr(0, said.size() - 1);
      }
      BOOST_CHECK_NE(a, bb);
      BOOST_CHECK((a == truth) != (bb == truth));
      match_a += a == truth;
      match_b += bb == truth;
    }
  }
  // pretrain.jsonl (phase 1) has none
  for (const auto& row : read_jsonl(b.dir / std::string(mp::datagen_pretrain_file)))
    BOOST_CHECK_EQUAL(row["messages"][0]["content"], "<image>\nDescribe the image.");
  // 50 % of 600 rows: binomial sd 12, so 300 +- 60 is a 5-sigma band; likewise each slot of the
  // context rows
  BOOST_CHECK_EQUAL(d.caption_context_percent, 50u);
  BOOST_CHECK_GT(context, 240u);
  BOOST_CHECK_LT(context, 360u);
  BOOST_CHECK_GT(match_a, context / 2 - 45);
  BOOST_CHECK_GT(match_b, context / 2 - 45);
}

// pretrain_text.jsonl: each answer re-derived from the two texts of its question. Two single words
// are compared as they are; two phrases must differ in exactly one word (same length), and the
// answer names that word of each. "matches" exactly when the two values are equal.
BOOST_AUTO_TEST_CASE(pretrain_text_rows_compare_two_texts) {
  auto& b = bundled::get();
  const mp::datagen_options d{};
  BOOST_CHECK_EQUAL(b.sum.pretrain_text_rows, d.pretrain_text);
  const auto rows = read_jsonl(b.dir / std::string(mp::datagen_pretrain_text_file));
  BOOST_REQUIRE_EQUAL(rows.size(), d.pretrain_text);
  std::size_t word_rows = 0, same = 0;
  for (const auto& row : rows) {
    BOOST_TEST_CONTEXT(row["id"]) {
      BOOST_CHECK_EQUAL(row["task_type"], "text");
      BOOST_CHECK(!row.contains("solution") && !row.contains("images") && !row.contains("videos"));
      const auto& m = row["messages"];
      BOOST_REQUIRE_EQUAL(m.size(), 2u);
      const std::string user = m[0]["content"], said = m[1]["content"];
      const std::string head = "Text A: ", mid = ".\nText B: ", tail = ".\nCompare both.";
      BOOST_REQUIRE(user.starts_with(head) && user.ends_with(tail));
      const auto k = user.find(mid);
      BOOST_REQUIRE(k != std::string::npos);
      const auto ta = words(user.substr(head.size(), k - head.size()));
      const auto tb = words(user.substr(k + mid.size(), user.size() - tail.size() - k - mid.size()));
      BOOST_REQUIRE_EQUAL(ta.size(), tb.size());
      std::string va, vb;
      if (ta.size() == 1) {
        ++word_rows;
        va = ta[0];
        vb = tb[0];
      } else {
        // phrases differ in one attribute: one word (with its article, "a red" / "an orange"), or a
        // count word and then the noun's number ("one circle" / "two circles"); the answer names
        // the value word where they differ
        std::vector<std::size_t> at;
        for (std::size_t i = 0; i < ta.size(); ++i)
          if (ta[i] != tb[i] && !((ta[i] == "a" && tb[i] == "an") || (ta[i] == "an" && tb[i] == "a"))) at.push_back(i);
        BOOST_REQUIRE(at.size() == 1u || at.size() == 2u);
        va = ta[at[0]];
        vb = tb[at[0]];
        if (at.size() == 2u) {
          const std::set<std::string> counts = {"one", "two", "three"};
          BOOST_CHECK(counts.count(va) && counts.count(vb));
          const auto &na = ta[at[1]], &nb = tb[at[1]];
          BOOST_CHECK(na + "s" == nb || nb + "s" == na);
        }
      }
      same += va == vb;
      BOOST_CHECK_EQUAL(said, "Text A says " + va + ". Text B says " + vb + (va == vb ? ", which matches." : ", which differs."));
    }
  }
  // half of the rows are word pairs, half of those equal (binomial sd 12 and 8.7 at 600 rows)
  BOOST_CHECK_GT(word_rows, 240u);
  BOOST_CHECK_LT(word_rows, 360u);
  BOOST_CHECK_GT(same, word_rows / 2 - 45);
  BOOST_CHECK_LT(same, word_rows / 2 + 45);
}

BOOST_AUTO_TEST_CASE(text_and_caption_rows_agree_with_their_labels) {
  auto& b = bundled::get();
  for (const std::string name : {"stage1_sft.jsonl", "stage1_rl.jsonl", "stage2_caption_rl.jsonl", "eval_caption.jsonl", "eval_text.jsonl"}) {
    std::size_t phrase_rows = 0, text_rows = 0, prompt_rows = 0;
    for (const auto& row : read_jsonl(b.dir / name)) {
      text_rows += row["task_type"] == "text";
      BOOST_TEST_CONTEXT(name << " " << row["id"]) {
        const std::string task = row["task_type"], user = row["messages"][1]["content"];
        const char sol = row["solution"].get<std::string>()[0];
        if (task == "text" || task.ends_with("understanding")) {
          std::string truth;
          if (task == "text" && user.starts_with("Prompt: ")) { // which response matches the prompt
            truth = line_after(user, "Prompt: ");
            BOOST_CHECK(user.ends_with("\nWhich response matches the prompt?"));
            ++prompt_rows;
          } else if (task == "text") { // "There are two green triangles on the left." / "A green triangle moves up." / a bare phrase
            std::string sentence = line_after(user, "Text: ");
            if (sentence.starts_with("There is ")) truth = sentence.substr(9);
            else if (sentence.starts_with("There are ")) truth = sentence.substr(10);
            else if (sentence.starts_with("A ") || sentence.starts_with("An ")) {
              truth = "a" + sentence.substr(1);
              truth.replace(truth.find(" moves "), 7, " moving ");
            } else {
              truth = sentence; // "two green triangles on the left", "a green triangle moving up"
              ++phrase_rows;
            }
          } else {
            truth = line_after(user, task.starts_with("image") ? "Image: " : "Video: ");
            BOOST_CHECK_EQUAL(truth, row["caption"].get<std::string>());
          }
          const std::string ra = line_after(user, "Response A: "), rb = line_after(user, "Response B: ");
          BOOST_CHECK_EQUAL(sol == 'A' ? ra : rb, truth);
          BOOST_CHECK_EQUAL(attribute_differences(ra, rb), 1);
        } else {
          const std::string noun = task == "image_generation" ? "Image" : "Video";
          const std::string a = line_after(user, noun + " A: "), bb = line_after(user, noun + " B: ");
          BOOST_CHECK_EQUAL(sol == 'A' ? a : bb, line_after(user, "Prompt: "));
          BOOST_CHECK_EQUAL(attribute_differences(a, bb), 1);
          BOOST_CHECK_EQUAL(row["caption"].get<std::string>(), noun + " A: " + a + ". " + noun + " B: " + bb + ".");
        }
      }
    }
    // the defaults put 30 % of the stage 1 rows in the prompt form and phrase about half of the
    // other contexts (one draw per row; eval_text.jsonl has only 100 draws, each written twice,
    // too few for these bands; 560 and 840 rows: the bands are 4-5 binomial sd wide)
    const std::size_t question_rows = text_rows - prompt_rows;
    if (name != "eval_text.jsonl") BOOST_TEST_CONTEXT(name) {
      BOOST_CHECK_GE(phrase_rows * 5, question_rows * 2);
      BOOST_CHECK_LE(phrase_rows * 5, question_rows * 3);
      BOOST_CHECK_GE(prompt_rows * 10, text_rows * 2);
      BOOST_CHECK_LE(prompt_rows * 10, text_rows * 4);
    }
  }
}

BOOST_AUTO_TEST_CASE(labels_and_task_types_are_balanced) {
  auto& b = bundled::get();
  for (const auto f : mp::datagen_jsonl_files) {
    const std::string name(f);
    BOOST_TEST_CONTEXT(name) {
      std::map<std::string, std::pair<std::size_t, std::size_t>> per_task; // task -> (A, B)
      for (const auto& row : read_jsonl(b.dir / name)) {
        auto& c = per_task[row["task_type"]];
        (row["solution"] == "A" ? c.first : c.second) += 1;
      }
      const auto& s = b.sum.file(name);
      BOOST_CHECK_EQUAL(s.label_a, s.label_b);
      BOOST_CHECK_EQUAL(per_task.size(), name.starts_with("stage1") || name == "eval_text.jsonl" ? 1u : 4u);
      for (const auto& [task, ab] : per_task) {
        BOOST_CHECK_EQUAL(ab.first, ab.second);
        BOOST_CHECK_EQUAL(ab.first + ab.second, s.rows / per_task.size());
        BOOST_CHECK_EQUAL(s.task_types.at(task), ab.first + ab.second);
      }
    }
  }
  // odd sizes stay within one row of balance
  scratch s("odd");
  const auto sum = mp::make_bundled_data(s.dir / "d", {.seed = 5, .sft = 7, .text_rl = 5, .caption_rl = 9, .cmkd = 5, .mm_rl = 7, .eval = 3});
  for (const auto& f : sum.files) {
    BOOST_CHECK_LE(f.label_a > f.label_b ? f.label_a - f.label_b : f.label_b - f.label_a, 1u);
    std::size_t lo = f.rows, hi = 0;
    for (const auto& [t, n] : f.task_types) lo = std::min(lo, n), hi = std::max(hi, n);
    BOOST_CHECK_LE(hi - lo, f.name.starts_with("eval") ? 2u : 1u);
  }
}

BOOST_AUTO_TEST_CASE(reference_rationales_earn_full_rewards) {
  auto& b = bundled::get();
  const auto stage1 = msrl::reward::release_stage1_preset();
  std::size_t n = 0;
  for (const auto& row : read_jsonl(b.dir / "stage1_sft.jsonl")) {
    const std::string completion = row["messages"][2]["content"], solution = row["solution"], task = row["task_type"];
    const msrl::reward::sample smp{completion, solution, task};
    BOOST_TEST_CONTEXT(completion) {
      // the stage 2 layout: the task type first, then the plain <think><answer> of the other styles
      const std::string type = "<type>text</type>";
      BOOST_REQUIRE(completion.starts_with(type));
      const std::string rest = completion.substr(type.size());
      const msrl::reward::sample plain{rest, solution, task};
      BOOST_CHECK_EQUAL(msrl::reward::format_reward{}(smp), 1.0);
      BOOST_CHECK_EQUAL((msrl::reward::format_reward{.style = msrl::reward::format_style::swift}(plain)), 1.0);
      BOOST_CHECK_EQUAL((msrl::reward::format_reward{.style = msrl::reward::format_style::r1reward}(plain)), 1.0);
      BOOST_CHECK_EQUAL(msrl::reward::task_reward{}(smp), msrl::reward::task_reward{}.value);
      BOOST_CHECK_EQUAL(msrl::reward::accuracy_reward{}(smp), 1.0);
      BOOST_CHECK_CLOSE(stage1(smp), 1.2, 1e-9);
      // the wrong label scores no accuracy
      const std::string wrong = solution == "A" ? "B" : "A";
      BOOST_CHECK_EQUAL(msrl::reward::accuracy_reward{}(msrl::reward::sample{completion, wrong, task}), 0.0);
      BOOST_CHECK(completion.find("Response " + solution + " is correct.") != std::string::npos);
    }
    ++n;
  }
  BOOST_CHECK_EQUAL(n, mp::datagen_options{}.sft);

  // stage 2 and 3 layouts, on items of every task type drawn like the generator draws them
  const auto paper = msrl::reward::paper_preset();
  msrl::data::splitmix64 rng(9);
  for (int k = 0; k < 400; ++k) {
    const auto task = static_cast<mp::task_type>(1 + k % 4);
    const auto it = mp::detail_datagen::draw_item(rng, task, k % 8 < 4 ? 'A' : 'B');
    const std::string sol(1, it.label), tname(mp::task_type_name(task));
    const std::string typed = it.completion(mp::prompt_style::caption), full = it.completion(mp::prompt_style::multimodal);
    BOOST_TEST_CONTEXT(full) {
      BOOST_CHECK_CLOSE(paper(msrl::reward::sample{typed, sol, tname}), 2.2, 1e-9);
      BOOST_CHECK_CLOSE(paper(msrl::reward::sample{full, sol, tname}), 2.2, 1e-9);
      BOOST_CHECK(msrl::reward::caption_first(full, /*require_type=*/true));
      BOOST_CHECK(msrl::reward::parse_task(msrl::reward::extract_tag(full, "type")) == static_cast<msrl::reward::task_kind>(static_cast<int>(task) - 1));
      // without the type, the multimodal target is exactly msrl's CMKD target
      BOOST_CHECK_EQUAL(mp::make_completion(it.think(), it.label, {}, it.caption()),
                        msrl::voting::cmkd_target(it.caption(), it.think(), it.label == 'A' ? msrl::reward::label::a : msrl::reward::label::b));
      // swapping the candidates flips the answer and keeps the reasoning valid
      const auto sw = it.swapped();
      BOOST_CHECK_EQUAL(msrl::reward::accuracy_reward{}(msrl::reward::sample{sw.completion(mp::prompt_style::caption), sol, tname}), 0.0);
    }
  }
  BOOST_CHECK_EQUAL(mp::write_rationale(mp::task_type::image_generation, "green", "red", "green"),
                    "The prompt says green. Image A shows red, which differs. Image B shows green, which matches. Image B is correct.");
  BOOST_CHECK_EQUAL(mp::write_rationale(mp::task_type::text, "two", "two", "three"),
                    "The text says two. Response A says two, which matches. Response B says three, which differs. Response A is correct.");
  BOOST_CHECK_EQUAL(mp::write_rationale(mp::task_type::text, "up", "right", "up", /*prompt_form=*/true),
                    "The prompt says up. Response A says right, which differs. Response B says up, which matches. Response B is correct.");
  BOOST_CHECK_THROW(mp::write_rationale(mp::task_type::text, "two", "two", "two"), msrl::invalid_argument);
  BOOST_CHECK_THROW(mp::write_rationale(mp::task_type::text, "two", "one", "three"), msrl::invalid_argument);
  BOOST_CHECK_THROW(mp::write_rationale(mp::task_type::text, "", "one", "three"), msrl::invalid_argument);
  BOOST_CHECK_THROW(mp::make_completion("x", 'C'), msrl::invalid_argument);
}

BOOST_AUTO_TEST_CASE(tokenizer_makes_domain_words_single_tokens_and_round_trips_every_row) {
  auto& b = bundled::get();
  const auto tok = msrl::trainer::bpe_tokenizer::from_file(b.dir / "tokenizer.json");
  BOOST_CHECK_EQUAL(tok.vocab_size(), b.sum.tokenizer_vocab);
  std::set<std::string> vocab;
  for (const auto& w : mp::domain_vocabulary()) {
    vocab.insert(w);
    BOOST_TEST_CONTEXT(w) {
      BOOST_CHECK_EQUAL(tok.encode(w).size(), 1u);
      if (std::isalpha(static_cast<unsigned char>(w[0]))) BOOST_CHECK_EQUAL(tok.encode(" " + w).size(), 1u);
    }
  }
  for (const char* t : {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<think>", "</think>", "<answer>",
                        "</answer>", "<type>", "</type>", "<caption>", "</caption>"}) {
    BOOST_CHECK_EQUAL(tok.encode(t).size(), 1u);
    BOOST_CHECK(tok.has_token(t));
  }
  std::size_t rows = 0, min_len = 1000, max_len = 0, sum_len = 0, max_prompt = 0;
  auto check_text = [&](const std::string& s) {
    const auto ids = tok.encode(s);
    BOOST_CHECK_EQUAL(tok.decode(ids), s);
    // closed vocabulary: every run of letters is a domain word (so each is one token)
    std::string w;
    for (const char ch : s + " ") {
      if (std::isalpha(static_cast<unsigned char>(ch)) || ch == '_' || ch == '|') w += ch;
      else {
        if (!w.empty() && !vocab.count(w)) {
          // tag names inside <...> are added tokens or expanded markers, not words
          static const std::set<std::string> tags = {"think", "answer", "type", "caption", "image", "video"};
          BOOST_CHECK_MESSAGE(tags.count(w), "word '" << w << "' is outside the domain vocabulary");
        }
        w.clear();
      }
    }
    return ids.size();
  };
  for (const auto f : mp::datagen_jsonl_files) {
    for (const auto& row : read_jsonl(b.dir / std::string(f))) {
      ++rows;
      std::size_t prompt = 0;
      for (const auto& m : row["messages"]) {
        const std::size_t n = check_text(m["content"]);
        if (m["role"] == "assistant") {
          min_len = std::min(min_len, n), max_len = std::max(max_len, n), sum_len += n;
        } else {
          prompt += n;
        }
      }
      max_prompt = std::max(max_prompt, prompt);
      if (row.contains("caption")) check_text(row["caption"]);
      if (row.contains("caption_messages"))
        for (const auto& m : row["caption_messages"]) check_text(m["content"]);
    }
  }
  const std::size_t sft = mp::datagen_options{}.sft;
  BOOST_TEST_MESSAGE("round-tripped " << rows << " rows; SFT completions " << min_len << ".." << max_len << " tokens (mean "
                                      << static_cast<double>(sum_len) / sft << "); longest prompt " << max_prompt << " tokens before media");
  BOOST_CHECK_GE(min_len, 15u);
  BOOST_CHECK_LE(max_len, 35u);
  // the chat prompt with one 56 px image (4 context tokens) tokenises with the added tokens intact
  const std::string chat = msrl::trainer::chat_prompt({{"user", "<image>\nWhich way?", {1}}}, 4);
  const auto ids = tok.encode(chat);
  BOOST_CHECK_EQUAL(std::count(ids.begin(), ids.end(), tok.token_id("<IMG_CONTEXT>")), 4);
  BOOST_CHECK_EQUAL(tok.decode(ids), chat);
  // a vocabulary entry that is not one pre-token is refused
  const std::vector<std::string> bad = {"two words"};
  BOOST_CHECK_THROW(mp::make_tokenizer_json(bad), msrl::invalid_argument);
}

BOOST_AUTO_TEST_CASE(text_forms_set_the_share_of_prompt_and_phrase_rows) {
  scratch s("prompt-share");
  auto prompt_rows = [&](unsigned percent) {
    const auto dir = s.dir / std::to_string(percent);
    mp::make_bundled_data(dir, {.sft = 40, .text_rl = 40, .caption_rl = 4, .cmkd = 4, .mm_rl = 4, .eval = 2, .text_prompt_percent = percent});
    std::size_t n = 0;
    for (const char* f : {"stage1_sft.jsonl", "stage1_rl.jsonl"}) {
      for (const auto& row : read_jsonl(dir / f)) {
        const std::string user = row["messages"][1]["content"];
        if (!user.starts_with("Prompt: ")) continue;
        ++n; // which response matches the prompt: the label's response is the prompt, the other differs in one attribute
        BOOST_TEST_CONTEXT(user) {
          BOOST_CHECK(user.ends_with("\nWhich response matches the prompt?"));
          const std::string ra = line_after(user, "Response A: "), rb = line_after(user, "Response B: ");
          BOOST_CHECK_EQUAL(row["solution"] == "A" ? ra : rb, line_after(user, "Prompt: "));
          BOOST_CHECK_EQUAL(attribute_differences(ra, rb), 1);
          if (row["messages"].size() == 3) {
            const std::string completion = row["messages"][2]["content"], think(msrl::reward::extract_tag(completion, "think"));
            BOOST_CHECK(think.starts_with("The prompt says "));
            BOOST_CHECK_EQUAL(msrl::reward::accuracy_reward{}(msrl::reward::sample{completion, row["solution"].get<std::string>(), "text"}), 1.0);
          }
        }
      }
    }
    return n;
  };
  BOOST_CHECK_EQUAL(prompt_rows(0), 0u);
  BOOST_CHECK_EQUAL(prompt_rows(100), 80u);
  const std::size_t half = prompt_rows(50); // one draw per row
  BOOST_CHECK_GT(half, 20u);
  BOOST_CHECK_LT(half, 60u);
  // the phrase form: the context is the correct response's phrase itself
  mp::make_bundled_data(s.dir / "phrase", {.sft = 40, .text_rl = 40, .caption_rl = 4, .cmkd = 4, .mm_rl = 4, .eval = 2,
                                           .text_prompt_percent = 50, .text_phrase_percent = 100});
  std::size_t phrases = 0, prompts = 0;
  for (const auto& row : read_jsonl(s.dir / "phrase" / "stage1_sft.jsonl")) {
    const std::string user = row["messages"][1]["content"];
    BOOST_TEST_CONTEXT(user) {
      if (user.starts_with("Prompt: ")) {
        ++prompts;
        continue;
      }
      ++phrases;
      const std::string context = line_after(user, "Text: "), right = line_after(user, row["solution"] == "A" ? "Response A: " : "Response B: ");
      BOOST_CHECK_EQUAL(context, right);
    }
  }
  BOOST_CHECK_EQUAL(phrases + prompts, 40u);
  BOOST_CHECK_GT(phrases, 10u);
  BOOST_CHECK_GT(prompts, 10u);
  // the prompt form only changes the stage 1 files
  for (const char* f : {"stage2_caption_rl.jsonl", "stage2_cmkd.jsonl", "eval.jsonl", "pretrain.jsonl"})
    BOOST_CHECK_MESSAGE(slurp(s.dir / "0" / f) == slurp(s.dir / "100" / f), f);
}

BOOST_AUTO_TEST_CASE(bad_options_and_output_folders_are_refused) {
  scratch s("refuse");
  auto expect = [&](const mp::datagen_options& o, const std::string& argument) {
    try {
      mp::make_bundled_data(s.dir / "x", o);
      BOOST_ERROR("accepted bad " << argument);
    } catch (const msrl::invalid_argument& e) {
      BOOST_CHECK_MESSAGE(std::string(e.what()).find(argument) != std::string::npos, e.what());
    }
    BOOST_CHECK(!fs::exists(s.dir / "x"));
  };
  expect({.image_size = 10}, "options.image_size");
  expect({.image_size = 1000}, "options.image_size");
  expect({.video_frames = 1}, "options.video_frames");
  expect({.sft = 0}, "options.sft");
  expect({.eval = 0}, "options.eval");
  expect({.mm_rl = 2000000}, "options.mm_rl");
  expect({.text_prompt_percent = 101}, "options.text_prompt_percent");
  expect({.text_phrase_percent = 200}, "options.text_phrase_percent");
  expect({.caption_context_percent = 101}, "options.caption_context_percent");
  BOOST_CHECK_THROW(mp::make_bundled_data("", {}), msrl::invalid_argument);

  const mp::datagen_options small{.sft = 4, .text_rl = 4, .caption_rl = 4, .cmkd = 4, .mm_rl = 4, .eval = 2};
  // a regular file
  std::ofstream(s.dir / "file") << "x";
  BOOST_CHECK_THROW(mp::make_bundled_data(s.dir / "file", small), msrl::invalid_argument);
  BOOST_CHECK_EQUAL(slurp(s.dir / "file"), "x");
  // a folder with foreign content is left alone
  fs::create_directories(s.dir / "foreign");
  std::ofstream(s.dir / "foreign" / "notes.txt") << "mine";
  BOOST_CHECK_THROW(mp::make_bundled_data(s.dir / "foreign", small), msrl::invalid_argument);
  BOOST_CHECK_EQUAL(slurp(s.dir / "foreign" / "notes.txt"), "mine");
  // an empty folder is filled; a previous output is replaced (trailing slash accepted)
  fs::create_directories(s.dir / "out");
  mp::make_bundled_data(s.dir / "out", small);
  const auto first = slurp(s.dir / "out" / "stage1_sft.jsonl");
  auto again = small;
  again.seed = 2;
  mp::make_bundled_data(s.dir / "out/", again);
  BOOST_CHECK(slurp(s.dir / "out" / "stage1_sft.jsonl") != first);
  BOOST_CHECK_EQUAL(json::parse(slurp(s.dir / "out" / "manifest.json"))["seed"], 2);
  // ... but not once something else was added to it
  std::ofstream(s.dir / "out" / "extra.txt") << "added";
  BOOST_CHECK_THROW(mp::make_bundled_data(s.dir / "out", small), msrl::invalid_argument);
  BOOST_CHECK(fs::exists(s.dir / "out" / "extra.txt"));
  BOOST_CHECK_EQUAL(json::parse(slurp(s.dir / "out" / "manifest.json"))["seed"], 2);
  // a manifest from something else does not count
  fs::create_directories(s.dir / "fake");
  std::ofstream(s.dir / "fake" / "manifest.json") << R"({"generator":"other","entries":["manifest.json"]})";
  BOOST_CHECK_THROW(mp::make_bundled_data(s.dir / "fake", small), msrl::invalid_argument);
  // no temporary folders are left behind by any of the above
  for (const auto& e : fs::directory_iterator(s.dir))
    BOOST_CHECK_MESSAGE(e.path().filename().string()[0] != '.', "left behind: " << e.path());
}

// judge_layout::plain writes the earlier stage 1 layout: its own system prompt, no <type>; the
// other files and the stage 1 contents are the same.
BOOST_AUTO_TEST_CASE(plain_text_layout_on_request) {
  auto& b = bundled::get();
  scratch s("datagen_plain");
  mp::datagen_options o;
  o.layout = mp::judge_layout::plain;
  mp::make_bundled_data(s.dir / "plain", o);
  for (const char* f : {"stage1_sft.jsonl", "stage1_rl.jsonl", "eval_text.jsonl"}) {
    const auto typed = read_jsonl(b.dir / f), plain = read_jsonl(s.dir / "plain" / f);
    BOOST_REQUIRE_EQUAL(typed.size(), plain.size());
    for (std::size_t i = 0; i < typed.size(); ++i) {
      BOOST_CHECK_EQUAL(plain[i]["messages"][0]["content"].get<std::string>(), mp::system_prompt(mp::prompt_style::text));
      BOOST_CHECK_EQUAL(plain[i]["messages"][1], typed[i]["messages"][1]);
      if (plain[i]["messages"].size() == 3)
        BOOST_CHECK_EQUAL("<type>text</type>" + plain[i]["messages"][2]["content"].get<std::string>(),
                          typed[i]["messages"][2]["content"].get<std::string>());
    }
  }
  BOOST_CHECK(slurp(s.dir / "plain" / "pretrain_media.jsonl") == slurp(b.dir / "pretrain_media.jsonl"));
  BOOST_CHECK(slurp(s.dir / "plain" / "stage2_caption_rl.jsonl") == slurp(b.dir / "stage2_caption_rl.jsonl"));
}

// judge_layout::multimodal: every judging row without media takes the multimodal prompt (and keeps
// its text); the stage 1 targets copy the context into <caption> after <type>text</type>.
BOOST_AUTO_TEST_CASE(multimodal_layout_copies_the_text_into_the_caption) {
  scratch s("datagen_mm");
  mp::datagen_options o;
  o.layout = mp::judge_layout::multimodal;
  mp::make_bundled_data(s.dir / "mm", o);
  const std::string mm = mp::system_prompt(mp::prompt_style::multimodal);
  for (const char* f : {"stage1_sft.jsonl", "stage1_rl.jsonl", "eval_text.jsonl", "stage2_caption_rl.jsonl", "eval_caption.jsonl"})
    for (const auto& row : read_jsonl(s.dir / "mm" / f)) {
      BOOST_CHECK_EQUAL(row["messages"][0]["content"].get<std::string>(), mm);
      const std::string user = row["messages"][1]["content"];
      BOOST_CHECK(user.find("<image>") == std::string::npos && user.find("<video>") == std::string::npos);
    }
  for (const auto& row : read_jsonl(s.dir / "mm" / "stage2_cmkd.jsonl"))
    BOOST_CHECK_EQUAL(row["caption_messages"][0]["content"].get<std::string>(), mm);
  std::size_t n = 0;
  for (const auto& row : read_jsonl(s.dir / "mm" / "stage1_sft.jsonl")) {
    const std::string user = row["messages"][1]["content"], done = row["messages"][2]["content"];
    // "Text: <context>.\n..." or "Prompt: <context>.\n..." -> "<type>text</type><caption><context></caption><think>..."
    const std::size_t k = user.find(": ") + 2;
    BOOST_REQUIRE(user.starts_with("Text: ") || user.starts_with("Prompt: "));
    const std::string context = user.substr(k, user.find('\n') - 1 - k);
    BOOST_CHECK_EQUAL(done.substr(0, done.find("<think>")), "<type>text</type><caption>" + context + "</caption>");
    ++n;
  }
  BOOST_CHECK_EQUAL(n, o.sft);
}
