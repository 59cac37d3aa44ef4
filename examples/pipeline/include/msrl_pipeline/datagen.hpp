#pragma once
/// \file The bundled data of the msrl-train example: a small synthetic visual world rendered
/// programmatically, written as ms-swift JSONL preference data for every MSRL stage, with a
/// Qwen2-style byte-level BPE tokenizer whose merges make every word of the world one token.
///
///   msrl_pipeline::datagen_summary s = msrl_pipeline::make_bundled_data("data", {.seed = 7});
///   // data/stage1_sft.jsonl, stage1_rl.jsonl, stage2_caption_rl.jsonl, stage2_cmkd.jsonl,
///   // stage3_multimodal_rl.jsonl, eval.jsonl, eval_caption.jsonl, tokenizer.json, manifest.json,
///   // images/iNNNN.png, videos/vNNNN/frame_K.png
///
/// The world (docs/pipeline-data.md): 1-3 solid shapes {circle, square, triangle} of one colour
/// {red, green, blue, yellow, purple, orange} in the left or right half of a light image; videos
/// are frames of one shape moving left, right, up or down. Every task is a choice between two
/// candidates that differ in exactly one attribute, so the label follows from the media alone.
///
/// Determinism: one seed gives the same bytes on every platform (SplitMix64 draws, no
/// std::*_distribution; PNGs are a pure function of the scene). Media are content-addressed:
/// equal scenes share one file, so the data stays small however many rows are drawn.
///
/// Its pieces: task_format.hpp (task types, prompts, rationales), world.hpp (the world and its
/// rendering), domain_tokenizer.hpp (the tokenizer); this header draws the items and writes the files.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <msrl/core/atomic_file.hpp>
#include <msrl/core/error.hpp>
#include <msrl/data/random.hpp>
#include <msrl/trainer/tokenizer.hpp>

#include "domain_tokenizer.hpp"
#include "stb_write.hpp"
#include "task_format.hpp"
#include "world.hpp"

namespace msrl_pipeline {

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

struct datagen_options {
  std::uint64_t seed = 1;
  std::size_t pretrain = 600;   ///< pretrain.jsonl rows (captioning one image -> its description; the backbone-pretraining stand-in)
  std::size_t pretrain_media = 600; ///< pretrain_media.jsonl rows (captioning image pairs, videos, video pairs and single
                                    ///< images in turn: the second pretraining phase)
  std::size_t pretrain_text = 600;  ///< pretrain_text.jsonl rows (comparing two texts: the language-pretraining stand-in)
  std::size_t sft = 560;        ///< stage1_sft.jsonl rows (text, with the assistant rationale)
  /// stage1_rl.jsonl rows (text). Default 4,000, so that the text GRPO stage's 240 steps of 16
  /// prompts see each row about once, as the paper's abundant text preferences are: from the same SFT
  /// checkpoints the stage lifted held-out text voting@16 by 8.5 / 5.0 / 3.0 points (seeds 1-3)
  /// against 4.5 / 2.5 / 0.0 with 840 rows and 120 steps (docs/pipeline.md).
  std::size_t text_rl = 4000;
  std::size_t caption_rl = 400; ///< stage2_caption_rl.jsonl rows (media replaced by captions)
  std::size_t cmkd = 800;       ///< stage2_cmkd.jsonl rows (media + caption_messages)
  std::size_t mm_rl = 400;      ///< stage3_multimodal_rl.jsonl rows (media)
  std::size_t eval = 100;       ///< eval items; eval.jsonl, eval_caption.jsonl and eval_text.jsonl hold 2 rows each (orders AB, BA)
  /// Share of stage 1 text rows, in percent, phrased as "which response matches the prompt" (the text
  /// counterpart of the generation tasks) instead of "text + question" (one draw per row; 0: none,
  /// and no draw). Default 30, with 560 / 840 stage 1 rows (about 400 / 600 in the question form;
  /// 840 was the text_rl default then):
  /// from the foundation that pretrains text comparisons the caption-based judge rose from 74.0 to
  /// 85.5 voting@16 and the CMKD pseudo-labels from 75 % to 91 % right; from the earlier,
  /// captioning-only foundation the same rows lowered it (docs/pipeline.md).
  unsigned text_prompt_percent = 30;
  /// Share of the other stage 1 text rows, in percent, whose context is a bare phrase in the style of
  /// the captions ("Text: two green triangles on the left.") instead of a sentence (0: none, no draw).
  /// Default 50: the caption-based judging of the stage 2 model rose from 57.0 to 64.5 voting@16
  /// (docs/pipeline.md).
  unsigned text_phrase_percent = 50;
  /// Share of pretrain_media.jsonl rows, in percent, that ask for the caption after a judging
  /// context: the media and the question/prompt and both candidates of a task about them (in the
  /// multimodal layout, with the correct slot drawn), then the describe request. Default 50: a
  /// captioner trained without such rows copies a candidate instead of reading the media once the
  /// candidates are in its context (exact captions of the held-out media 97 % bare, 6.5 % after
  /// the judging context; docs/pipeline.md).
  unsigned caption_context_percent = 50;
  /// The layout of the judging rows without media (stage 1 text, stage 2 captions, CMKD's caption
  /// prompts, eval_text, eval_caption): judge_layout (task_format.hpp). Default `typed`.
  judge_layout layout = judge_layout::typed;
  int image_size = 56;          ///< image side in pixels (one InternVL tile of the tiny model)
  int video_frames = 4;         ///< frames per video
};

/// What one JSONL file holds.
struct datagen_file_summary {
  std::string name;
  std::size_t rows = 0, label_a = 0, label_b = 0;
  std::map<std::string, std::size_t> task_types; ///< rows per task_type value
};

struct datagen_summary {
  std::size_t pretrain_rows = 0; ///< pretrain.jsonl (captioning rows; not in `files`)
  std::size_t pretrain_media_rows = 0; ///< pretrain_media.jsonl (captioning rows; not in `files`)
  std::size_t pretrain_text_rows = 0;  ///< pretrain_text.jsonl (text comparison rows; not in `files`)
  std::filesystem::path dir;
  std::vector<datagen_file_summary> files; ///< in the order written (stage1_sft ... eval_caption)
  std::size_t images = 0;                  ///< distinct image files under images/
  std::size_t videos = 0;                  ///< distinct video folders under videos/
  std::uintmax_t bytes = 0;                ///< total size of all files written
  std::size_t tokenizer_vocab = 0;         ///< tokenizer ids (bytes + merges + added tokens)

  /// The summary of `name` (e.g. "eval.jsonl"); msrl::invalid_argument if there is none.
  const datagen_file_summary& file(std::string_view name) const {
    for (const auto& f : files)
      if (f.name == name) return f;
    throw msrl::invalid_argument("datagen_summary::file: argument 'name' must name a written file (got '" + std::string(name) + "')");
  }
};

/// The fixed file names, in writing order.
inline constexpr std::array<std::string_view, 8> datagen_jsonl_files = {"stage1_sft.jsonl",      "stage1_rl.jsonl",
                                                                        "stage2_caption_rl.jsonl", "stage2_cmkd.jsonl",
                                                                        "stage3_multimodal_rl.jsonl", "eval.jsonl",
                                                                        "eval_caption.jsonl",    "eval_text.jsonl"};
/// Captioning rows (no labels) for the backbone-pretraining stand-in; not a preference file.
inline constexpr std::string_view datagen_pretrain_file = "pretrain.jsonl";
/// Captioning rows over every media layout (pairs, videos, video pairs, single images): the second phase.
inline constexpr std::string_view datagen_pretrain_media_file = "pretrain_media.jsonl";
/// Rows that compare two texts of the world (no media, no label): the language-pretraining stand-in.
inline constexpr std::string_view datagen_pretrain_text_file = "pretrain_text.jsonl";
inline constexpr std::string_view datagen_generator_name = "msrl_pipeline::make_bundled_data";

/// One drawn task: the truth, the wrong candidate (differs in the `asked` attribute only) and
/// which candidate slot holds the truth.
struct datagen_item {
  task_type task = task_type::text;
  bool is_motion = false; ///< a video scene (text items may describe either kind)
  /// Text items only: "Prompt: P. Response A/B. Which response matches the prompt?" (the text
  /// counterpart of the generation tasks) instead of "Text: S. Question: Q. Response A/B."
  bool prompt_form = false;
  /// Text items only: the context as a bare phrase ("Text: two green triangles on the left.", the
  /// style of the captions) instead of a sentence ("Text: There are two green triangles on the left.").
  bool phrase_text = false;
  world::attribute asked = world::attribute::colour;
  world::still still_true, still_wrong;
  world::motion motion_true, motion_wrong;
  char label = 'A'; ///< the candidate that is correct

  std::string truth_value() const { return is_motion ? world::value(motion_true, asked) : world::value(still_true, asked); }
  std::string wrong_value() const { return is_motion ? world::value(motion_wrong, asked) : world::value(still_wrong, asked); }
  std::string truth_phrase() const { return is_motion ? world::phrase(motion_true) : world::phrase(still_true); }
  std::string wrong_phrase() const { return is_motion ? world::phrase(motion_wrong) : world::phrase(still_wrong); }
  std::string phrase_a() const { return label == 'A' ? truth_phrase() : wrong_phrase(); }
  std::string phrase_b() const { return label == 'A' ? wrong_phrase() : truth_phrase(); }
  bool generation() const { return task == task_type::image_generation || task == task_type::video_generation; }

  /// The reasoning inside <think> (write_rationale with this item's values).
  std::string think() const {
    const std::string t = truth_value(), w = wrong_value();
    return write_rationale(task, t, label == 'A' ? t : w, label == 'A' ? w : t, prompt_form);
  }
  /// The caption text: the scene phrase (understanding) or "Image A: pa. Image B: pb." (generation);
  /// for text items the context as shown, without its final full stop.
  std::string caption() const {
    if (task == task_type::text && !phrase_text && !prompt_form) {
      std::string s = is_motion ? world::sentence(motion_true) : world::sentence(still_true);
      if (!s.empty() && s.back() == '.') s.pop_back();
      return s;
    }
    if (!generation()) return truth_phrase();
    const std::string noun = task == task_type::image_generation ? "Image" : "Video";
    return noun + " A: " + phrase_a() + ". " + noun + " B: " + phrase_b() + ".";
  }
  /// The reference completion in the layout `style` asks for.
  std::string completion(prompt_style style) const {
    switch (style) {
    case prompt_style::text: return make_completion(think(), label);
    case prompt_style::caption: return make_completion(think(), label, task_type_words(task));
    case prompt_style::multimodal: return make_completion(think(), label, task_type_words(task), caption());
    }
    return {};
  }
  /// The same task with the candidates swapped.
  datagen_item swapped() const {
    datagen_item s = *this;
    s.label = label == 'A' ? 'B' : 'A';
    return s;
  }
};

namespace detail_datagen {

inline world::still draw_still(msrl::data::splitmix64& rng) {
  world::still s;
  s.count = 1 + static_cast<int>(rng.below(3));
  s.colour = static_cast<world::colour>(rng.below(6));
  s.shape = static_cast<world::shape>(rng.below(3));
  s.side = static_cast<world::side>(rng.below(2));
  // slots: one of the 3 (count 1), one of the 3 pairs (count 2), all (count 3)
  const unsigned k = static_cast<unsigned>(rng.below(3));
  s.slots = s.count == 1 ? (1u << k) : s.count == 2 ? (7u & ~(1u << k)) : 7u;
  return s;
}

inline world::motion draw_motion(msrl::data::splitmix64& rng) {
  world::motion m;
  m.colour = static_cast<world::colour>(rng.below(6));
  m.shape = static_cast<world::shape>(rng.below(3));
  m.direction = static_cast<world::direction>(rng.below(4));
  return m;
}

/// A different value of attribute `a` (uniform over the others).
template <class E>
E other(msrl::data::splitmix64& rng, E v, std::uint64_t n) {
  const auto k = (static_cast<std::uint64_t>(v) + 1 + rng.below(n - 1)) % n;
  return static_cast<E>(k);
}

inline world::still change(msrl::data::splitmix64& rng, world::still s, world::attribute a) {
  switch (a) {
  case world::attribute::colour: s.colour = other(rng, s.colour, 6); break;
  case world::attribute::shape: s.shape = other(rng, s.shape, 3); break;
  case world::attribute::position: s.side = s.side == world::side::left ? world::side::right : world::side::left; break;
  case world::attribute::count: {
    s.count = 1 + static_cast<int>((static_cast<std::uint64_t>(s.count - 1) + 1 + rng.below(2)) % 3);
    const unsigned k = static_cast<unsigned>(rng.below(3));
    s.slots = s.count == 1 ? (1u << k) : s.count == 2 ? (7u & ~(1u << k)) : 7u;
    break;
  }
  case world::attribute::direction: break;
  }
  return s;
}

inline world::motion change(msrl::data::splitmix64& rng, world::motion m, world::attribute a) {
  switch (a) {
  case world::attribute::colour: m.colour = other(rng, m.colour, 6); break;
  case world::attribute::shape: m.shape = other(rng, m.shape, 3); break;
  case world::attribute::direction: m.direction = other(rng, m.direction, 4); break;
  case world::attribute::count:
  case world::attribute::position: break;
  }
  return m;
}

/// How text items are phrased: shares in percent (no draw at 0).
struct text_forms {
  unsigned prompt_percent = 0; ///< "which response matches the prompt" instead of "text + question"
  unsigned phrase_percent = 0; ///< of the text + question items: the context as a bare phrase
};

inline datagen_item draw_item(msrl::data::splitmix64& rng, task_type task, char label, text_forms forms = {}) {
  datagen_item it;
  it.task = task;
  it.label = label;
  it.is_motion = task == task_type::video_understanding || task == task_type::video_generation ||
                 (task == task_type::text && rng.below(7) >= 4); // text: 4 still + 3 motion attribute kinds, uniform
  // text: some items compare the responses with a prompt, as the generation tasks do with media
  it.prompt_form = task == task_type::text && forms.prompt_percent > 0 && rng.below(100) < forms.prompt_percent;
  it.phrase_text = task == task_type::text && !it.prompt_form && forms.phrase_percent > 0 && rng.below(100) < forms.phrase_percent;
  if (it.is_motion) {
    constexpr std::array<world::attribute, 3> asks = {world::attribute::colour, world::attribute::shape, world::attribute::direction};
    it.asked = asks[rng.below(3)];
    it.motion_true = draw_motion(rng);
    it.motion_wrong = change(rng, it.motion_true, it.asked);
  } else {
    constexpr std::array<world::attribute, 4> asks = {world::attribute::colour, world::attribute::count, world::attribute::position,
                                                      world::attribute::shape};
    it.asked = asks[rng.below(4)];
    it.still_true = draw_still(rng);
    it.still_wrong = change(rng, it.still_true, it.asked);
  }
  return it;
}

/// Content-addressed media writer: equal scenes share one file, named in first-use order.
class media_store {
public:
  media_store(std::filesystem::path root, int size, int frames) : root_(std::move(root)), size_(size), frames_(frames) {}

  std::string image(const world::still& s) {
    const std::string key = std::to_string(s.count) + "-" + std::to_string(static_cast<int>(s.colour)) + "-" +
                            std::to_string(static_cast<int>(s.shape)) + "-" + std::to_string(static_cast<int>(s.side)) + "-" +
                            std::to_string(s.slots);
    auto it = images_.find(key);
    if (it != images_.end()) return it->second;
    char name[48];
    std::snprintf(name, sizeof name, "images/i%04zu.png", images_.size());
    if (images_.empty()) std::filesystem::create_directory(root_ / "images");
    write(root_ / name, world::encode_png(world::render(s, size_)));
    return images_.emplace(key, name).first->second;
  }

  std::string video(const world::motion& m) {
    const std::string key = std::to_string(static_cast<int>(m.colour)) + "-" + std::to_string(static_cast<int>(m.shape)) + "-" +
                            std::to_string(static_cast<int>(m.direction));
    auto it = videos_.find(key);
    if (it != videos_.end()) return it->second;
    char name[48];
    std::snprintf(name, sizeof name, "videos/v%04zu", videos_.size());
    std::filesystem::create_directories(root_ / name);
    for (int f = 0; f < frames_; ++f)
      write(root_ / name / ("frame_" + std::to_string(f) + ".png"), world::encode_png(world::render(m, size_, f, frames_)));
    return videos_.emplace(key, name).first->second;
  }

  std::size_t images() const noexcept { return images_.size(); }
  std::size_t videos() const noexcept { return videos_.size(); }

  static void write(const std::filesystem::path& p, std::string_view bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) throw msrl::error("msrl_pipeline::make_bundled_data: could not write '" + p.string() + "'");
  }
  static void write(const std::filesystem::path& p, const std::vector<unsigned char>& bytes) {
    write(p, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  }

private:
  std::filesystem::path root_;
  int size_, frames_;
  std::unordered_map<std::string, std::string> images_, videos_;
};

using ojson = nlohmann::ordered_json;

inline ojson message(const char* role, std::string content) { return ojson{{"role", role}, {"content", std::move(content)}}; }

/// The user text of `it`: `media` true puts <image>/<video> markers, false the captions (or, for
/// text items, the context sentence).
inline std::string user_text(const datagen_item& it, bool media) {
  std::string u;
  if (it.generation()) {
    const bool img = it.task == task_type::image_generation;
    const std::string noun = img ? "Image" : "Video", marker = img ? "<image>" : "<video>";
    u = "Prompt: " + it.truth_phrase() + ".\n";
    u += noun + " A: " + (media ? marker : it.phrase_a() + ".") + "\n";
    u += noun + " B: " + (media ? marker : it.phrase_b() + ".") + "\n";
    u += "Which " + std::string(img ? "image" : "video") + " matches the prompt?";
    return u;
  }
  if (it.prompt_form) {
    u = "Prompt: " + it.truth_phrase() + ".\n";
    u += "Response A: " + it.phrase_a() + ".\n";
    u += "Response B: " + it.phrase_b() + ".\n";
    u += "Which response matches the prompt?";
    return u;
  }
  if (it.phrase_text) u = "Text: " + it.truth_phrase() + ".\n"; // text items only
  else if (it.task == task_type::text) u = "Text: " + (it.is_motion ? world::sentence(it.motion_true) : world::sentence(it.still_true)) + "\n";
  else if (it.task == task_type::image_understanding) u = media ? "<image>\n" : "Image: " + it.truth_phrase() + ".\n";
  else u = media ? "<video>\n" : "Video: " + it.truth_phrase() + ".\n";
  u += "Question: " + (it.is_motion ? world::question(it.motion_true, it.asked) : world::question(it.still_true, it.asked)) + "\n";
  u += "Response A: " + it.phrase_a() + ".\n";
  u += "Response B: " + it.phrase_b() + ".";
  return u;
}

/// A row of pretrain_text.jsonl: two texts of the world and a comparison of them. Half of the rows
/// (one draw) hold two values of one attribute, equal or not (one draw): "Text A: orange.\nText B:
/// purple.\nCompare both." -> "Text A says orange. Text B says purple, which differs."; the others two
/// scene phrases that differ in one attribute, in a drawn order, answered with the values where
/// they differ ("Text A: one red circle on the left.\nText B: two red circles on the left." -> "Text
/// A says one. Text B says two, which differs.").
inline std::pair<std::string, std::string> comparison_row(msrl::data::splitmix64& rng) {
  const auto it = draw_item(rng, task_type::text, 'A');
  const bool words = (rng.next() & 1) != 0;
  const bool same = words && (rng.next() & 1) != 0;
  const bool swap = (rng.next() & 1) != 0;
  std::string va = it.truth_value(), vb = same ? va : it.wrong_value(), pa = it.truth_phrase(), pb = it.wrong_phrase();
  if (swap) {
    std::swap(va, vb);
    std::swap(pa, pb);
  }
  const std::string user = "Text A: " + (words ? va : pa) + ".\nText B: " + (words ? vb : pb) + ".\nCompare both.";
  return {user, "Text A says " + va + ". Text B says " + vb + (va == vb ? ", which matches." : ", which differs.")};
}

/// The describe request of a captioning row ("Describe both images.").
inline std::string caption_request_words(task_type t) {
  switch (t) {
  case task_type::image_generation: return "Describe both images.";
  case task_type::video_generation: return "Describe both videos.";
  case task_type::video_understanding: return "Describe the video.";
  default: return "Describe the image.";
  }
}

/// The user turn of a captioning (pretraining) row: the media markers, then the request.
inline std::string caption_request(task_type t) {
  switch (t) {
  case task_type::image_generation: return "Image A: <image>\nImage B: <image>\n" + caption_request_words(t);
  case task_type::video_generation: return "Video A: <video>\nVideo B: <video>\n" + caption_request_words(t);
  case task_type::video_understanding: return "<video>\n" + caption_request_words(t);
  default: return "<image>\n" + caption_request_words(t);
  }
}

/// messages for `style` (system + user, plus the reference assistant turn when asked); `media`:
/// the media markers in place of the captions (the judge_layout::multimodal rows without media
/// share the multimodal style and keep their text).
inline ojson messages(const datagen_item& it, prompt_style style, bool with_answer, bool media = false) {
  ojson m = ojson::array();
  m.push_back(message("system", system_prompt(style)));
  m.push_back(message("user", user_text(it, media)));
  if (with_answer) m.push_back(message("assistant", it.completion(style)));
  return m;
}

/// Adds "images" or "videos" (paths relative to the JSONL folder), A then B for generation.
inline void add_media(ojson& row, const datagen_item& it, media_store& store) {
  switch (it.task) {
  case task_type::image_understanding: row["images"] = ojson::array({store.image(it.still_true)}); break;
  case task_type::video_understanding: row["videos"] = ojson::array({store.video(it.motion_true)}); break;
  case task_type::image_generation: {
    const auto& a = it.label == 'A' ? it.still_true : it.still_wrong;
    const auto& b = it.label == 'A' ? it.still_wrong : it.still_true;
    const std::string pa = store.image(a);
    row["images"] = ojson::array({pa, store.image(b)});
    break;
  }
  case task_type::video_generation: {
    const auto& a = it.label == 'A' ? it.motion_true : it.motion_wrong;
    const auto& b = it.label == 'A' ? it.motion_wrong : it.motion_true;
    const std::string pa = store.video(a);
    row["videos"] = ojson::array({pa, store.video(b)});
    break;
  }
  case task_type::text: break;
  }
}

/// Writes rows as JSONL and fills the file summary.
class jsonl_file {
public:
  jsonl_file(const std::filesystem::path& dir, std::string_view name) : path_(dir / name) { sum_.name = std::string(name); }
  void add(const ojson& row) {
    text_ += row.dump();
    text_ += '\n';
    ++sum_.rows;
    // pretraining rows have no label (a const operator[] on a missing key is undefined behaviour)
    if (const auto sol = row.find("solution"); sol != row.end()) (*sol == "A" ? sum_.label_a : sum_.label_b) += 1;
    if (const auto t = row.find("task_type"); t != row.end()) ++sum_.task_types[t->get<std::string>()];
  }
  datagen_file_summary close() {
    media_store::write(path_, text_);
    return sum_;
  }

private:
  std::filesystem::path path_;
  std::string text_;
  datagen_file_summary sum_;
};

/// The (task, label) plan of n rows: task types in equal shares (multimodal: the four media
/// tasks in turn), labels alternating within each task and overall (ABAB BABA ...: every count
/// is within one of balance), then shuffled.
inline std::vector<std::pair<task_type, char>> plan(std::size_t n, bool multimodal, std::uint64_t seed) {
  std::vector<std::pair<task_type, char>> p;
  p.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const task_type t = multimodal ? static_cast<task_type>(1 + i % 4) : task_type::text;
    const std::size_t phase = multimodal ? i + i / 4 : i;
    p.emplace_back(t, phase % 2 == 0 ? 'A' : 'B');
  }
  const auto perm = msrl::data::seeded_permutation(n, seed);
  std::vector<std::pair<task_type, char>> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = p[perm[i]];
  return out;
}

inline std::string row_id(std::string_view prefix, std::size_t i) {
  char b[32];
  std::snprintf(b, sizeof b, "%05zu", i);
  return std::string(prefix) + "-" + b;
}

/// True when `dir` holds exactly a previous generator output (manifest.json written by this
/// generator, and nothing that the manifest does not name).
inline bool is_previous_output(const std::filesystem::path& dir) {
  const auto mf = dir / "manifest.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(mf, ec)) return false;
  nlohmann::json m;
  try {
    std::ifstream in(mf);
    m = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    return false;
  }
  if (!m.is_object() || m.value("generator", std::string()) != datagen_generator_name || !m.contains("entries") || !m["entries"].is_array())
    return false;
  std::vector<std::string> known;
  for (const auto& e : m["entries"])
    if (e.is_string()) known.push_back(e.get<std::string>());
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (std::find(known.begin(), known.end(), n) == known.end()) return false;
  }
  return true;
}

} // namespace detail_datagen

/// Writes the bundled data set into `out_dir` and returns what it wrote.
///
/// `out_dir` must not exist, be an empty folder, or hold exactly a previous output of this
/// generator (its manifest.json names every entry); that output is then replaced. Anything else
/// throws msrl::invalid_argument and leaves the folder untouched. Everything is written into a
/// staging folder beside it and swapped in by msrl::publish_directory_atomic, so a failed run leaves
/// no partial data.
/// Same options => byte-identical files. Options out of range throw msrl::invalid_argument.
inline datagen_summary make_bundled_data(const std::filesystem::path& out_dir, const datagen_options& opt = {}) {
  namespace fs = std::filesystem;
  using detail_datagen::ojson;
  constexpr const char* where = "msrl_pipeline::make_bundled_data";
  constexpr std::size_t max_rows = 1000000;
  msrl::require(!out_dir.empty(), where, "out_dir", "must not be empty");
  msrl::require(opt.image_size >= 28 && opt.image_size <= 448, where, "options.image_size",
                "must be in [28, 448] (got " + std::to_string(opt.image_size) + ")");
  msrl::require(opt.video_frames >= 2 && opt.video_frames <= 32, where, "options.video_frames",
                "must be in [2, 32] (got " + std::to_string(opt.video_frames) + ")");
  msrl::require(opt.text_prompt_percent <= 100, where, "options.text_prompt_percent",
                "must be in [0, 100] (got " + std::to_string(opt.text_prompt_percent) + ")");
  msrl::require(opt.text_phrase_percent <= 100, where, "options.text_phrase_percent",
                "must be in [0, 100] (got " + std::to_string(opt.text_phrase_percent) + ")");
  msrl::require(opt.caption_context_percent <= 100, where, "options.caption_context_percent",
                "must be in [0, 100] (got " + std::to_string(opt.caption_context_percent) + ")");
  const std::array<std::pair<const char*, std::size_t>, 9> counts = {
      {{"pretrain", opt.pretrain}, {"pretrain_media", opt.pretrain_media}, {"pretrain_text", opt.pretrain_text}, {"sft", opt.sft}, {"text_rl", opt.text_rl}, {"caption_rl", opt.caption_rl}, {"cmkd", opt.cmkd}, {"mm_rl", opt.mm_rl}, {"eval", opt.eval}}};
  for (const auto& [name, n] : counts)
    msrl::require(n >= 1 && n <= max_rows, where, std::string("options.") + name,
                  "must be in [1, 1000000] (got " + std::to_string(n) + ")");

  fs::path target = fs::absolute(out_dir).lexically_normal();
  if (target.filename().empty()) target = target.parent_path(); // "data/" -> "data"
  msrl::require(target.has_parent_path() && target != target.root_path(), where, "out_dir", "must not be a filesystem root");
  std::error_code ec;
  const bool existed = fs::exists(target, ec);
  if (existed) {
    msrl::require(fs::is_directory(target, ec), where, "out_dir", "must be a folder, not a file ('" + target.string() + "')");
    msrl::require(fs::is_empty(target, ec) || detail_datagen::is_previous_output(target), where, "out_dir",
                  "must be empty or hold only a previous generator output (manifest.json) ('" + target.string() + "')");
  }
  fs::create_directories(target.parent_path());

  datagen_summary sum;
  // built in a staging folder beside the target and swapped in whole (msrl::publish_directory_atomic):
  // a failed or killed run leaves either the previous output or the new one, never a part
  msrl::publish_directory_atomic(target, [&](const fs::path& tmp) {
    detail_datagen::media_store store(tmp, opt.image_size, opt.video_frames);
    std::uint64_t stream = 0;
    auto rng_for = [&](std::uint64_t k) { return msrl::data::splitmix64(msrl::data::splitmix64(opt.seed ^ (0x5851f42d4c957f2dull * (k + 1))).next()); };

    // stage 1: text (SFT with the rationale, RL without); the styles of the rows without media
    const prompt_style text_style = text_style_of(opt.layout), caption_style = caption_style_of(opt.layout);
    for (const auto& [file, n, prefix, with_answer] :
         {std::tuple<std::string_view, std::size_t, std::string_view, bool>{"stage1_sft.jsonl", opt.sft, "sft", true},
          std::tuple<std::string_view, std::size_t, std::string_view, bool>{"stage1_rl.jsonl", opt.text_rl, "rl", false}}) {
      auto rng = rng_for(stream++);
      detail_datagen::jsonl_file out(tmp, file);
      const auto p = detail_datagen::plan(n, false, rng.next());
      for (std::size_t i = 0; i < n; ++i) {
        const auto it = detail_datagen::draw_item(rng, p[i].first, p[i].second, {opt.text_prompt_percent, opt.text_phrase_percent});
        ojson row;
        row["id"] = detail_datagen::row_id(prefix, i);
        row["messages"] = detail_datagen::messages(it, text_style, with_answer);
        row["solution"] = std::string(1, it.label);
        row["task_type"] = task_type_name(it.task);
        out.add(row);
      }
      sum.files.push_back(out.close());
    }

    // captioning rows for the backbone-pretraining stand-in: the media, then their description.
    // Phase 1 (pretrain.jsonl) shows single images only: a from-scratch model learns to read one
    // image there, and does not when pairs and frame sequences are mixed in from the start. Phase 2
    // (pretrain_media.jsonl) then captions image pairs, videos and video pairs, with single images
    // kept in every fourth row.
    const auto write_captions = [&](std::string_view file, std::uint64_t stream_id, std::string_view prefix, std::size_t n,
                                    std::span<const task_type> cycle, unsigned context_percent) {
      auto rng = rng_for(stream_id);
      detail_datagen::jsonl_file out(tmp, file);
      for (std::size_t i = 0; i < n; ++i) {
        const task_type task = cycle[i % cycle.size()];
        // a judging context before the request (one draw per row when the share is not 0)
        const bool context = context_percent > 0 && rng.next() % 100 < context_percent;
        // which slot holds the prompt's match only matters for pairs, and for a single medium only
        // when the candidates are shown (otherwise 'A', no draw)
        const bool pair = task == task_type::image_generation || task == task_type::video_generation;
        const auto it = detail_datagen::draw_item(rng, task, (pair || context) && (rng.next() & 1) ? 'B' : 'A');
        ojson row;
        row["id"] = detail_datagen::row_id(prefix, i);
        ojson m = ojson::array();
        m.push_back(detail_datagen::message(
            "user", context ? detail_datagen::user_text(it, true) + "\n" + detail_datagen::caption_request_words(task)
                            : detail_datagen::caption_request(task)));
        m.push_back(detail_datagen::message("assistant", it.generation() ? it.caption() : it.truth_phrase() + "."));
        row["messages"] = m;
        detail_datagen::add_media(row, it, store);
        row["task_type"] = task_type_name(it.task);
        row["caption"] = it.caption();
        out.add(row);
      }
      return out.close().rows;
    };
    {
      constexpr std::array singles{task_type::image_understanding};
      sum.pretrain_rows = write_captions(datagen_pretrain_file, 0x70726574ull, "pre", opt.pretrain, singles, 0);
      constexpr std::array all{task_type::image_generation, task_type::video_understanding, task_type::video_generation,
                               task_type::image_understanding};
      sum.pretrain_media_rows = write_captions(datagen_pretrain_media_file, 0x70726d64ull, "prm", opt.pretrain_media, all,
                                                opt.caption_context_percent);
    }
    // text comparisons for the language-pretraining stand-in (a stream of its own: the other files'
    // bytes do not depend on it)
    {
      auto rng = rng_for(0x70727478ull);
      detail_datagen::jsonl_file out(tmp, datagen_pretrain_text_file);
      for (std::size_t i = 0; i < opt.pretrain_text; ++i) {
        const auto [user, said] = detail_datagen::comparison_row(rng);
        ojson row;
        row["id"] = detail_datagen::row_id("prt", i);
        row["messages"] = ojson::array({detail_datagen::message("user", user), detail_datagen::message("assistant", said)});
        row["task_type"] = task_type_name(task_type::text);
        out.add(row);
      }
      sum.pretrain_text_rows = out.close().rows;
    }

    // stage 2: caption-based RL (media replaced by captions)
    {
      auto rng = rng_for(stream++);
      detail_datagen::jsonl_file out(tmp, "stage2_caption_rl.jsonl");
      const auto p = detail_datagen::plan(opt.caption_rl, true, rng.next());
      for (std::size_t i = 0; i < opt.caption_rl; ++i) {
        const auto it = detail_datagen::draw_item(rng, p[i].first, p[i].second);
        ojson row;
        row["id"] = detail_datagen::row_id("cap", i);
        row["messages"] = detail_datagen::messages(it, caption_style, false);
        row["solution"] = std::string(1, it.label);
        row["task_type"] = task_type_name(it.task);
        row["caption"] = it.caption();
        out.add(row);
      }
      sum.files.push_back(out.close());
    }

    // stage 2 CMKD pool and stage 3 RL: real media
    for (const auto& [file, n, prefix, cmkd] :
         {std::tuple<std::string_view, std::size_t, std::string_view, bool>{"stage2_cmkd.jsonl", opt.cmkd, "cmkd", true},
          std::tuple<std::string_view, std::size_t, std::string_view, bool>{"stage3_multimodal_rl.jsonl", opt.mm_rl, "mm", false}}) {
      auto rng = rng_for(stream++);
      detail_datagen::jsonl_file out(tmp, file);
      const auto p = detail_datagen::plan(n, true, rng.next());
      for (std::size_t i = 0; i < n; ++i) {
        const auto it = detail_datagen::draw_item(rng, p[i].first, p[i].second);
        ojson row;
        row["id"] = detail_datagen::row_id(prefix, i);
        row["messages"] = detail_datagen::messages(it, prompt_style::multimodal, false, true);
        detail_datagen::add_media(row, it, store);
        row["solution"] = std::string(1, it.label);
        row["task_type"] = task_type_name(it.task);
        row["caption"] = it.caption();
        if (cmkd) row["caption_messages"] = detail_datagen::messages(it, caption_style, false);
        out.add(row);
      }
      sum.files.push_back(out.close());
    }

    // eval: each item in both orders ("AB": the correct candidate is A), media and captions
    {
      auto rng = rng_for(stream++);
      detail_datagen::jsonl_file out(tmp, "eval.jsonl"), out_cap(tmp, "eval_caption.jsonl");
      const auto p = detail_datagen::plan(opt.eval, true, rng.next());
      for (std::size_t i = 0; i < opt.eval; ++i) {
        const auto base = detail_datagen::draw_item(rng, p[i].first, 'A');
        for (const char order : {'A', 'B'}) {
          const auto it = order == 'A' ? base : base.swapped();
          ojson row;
          row["id"] = detail_datagen::row_id("eval", i);
          row["messages"] = detail_datagen::messages(it, prompt_style::multimodal, false, true);
          detail_datagen::add_media(row, it, store);
          row["solution"] = std::string(1, it.label);
          row["task_type"] = task_type_name(it.task);
          row["caption"] = it.caption();
          row["order"] = order == 'A' ? "AB" : "BA";
          out.add(row);
          ojson cap;
          cap["id"] = row["id"];
          cap["messages"] = detail_datagen::messages(it, caption_style, false);
          cap["solution"] = row["solution"];
          cap["task_type"] = row["task_type"];
          cap["caption"] = row["caption"];
          cap["order"] = row["order"];
          out_cap.add(cap);
        }
      }
      sum.files.push_back(out.close());
      sum.files.push_back(out_cap.close());
    }

    // held-out text judgments (stage 1's task family), each item in both orders; a stream of its
    // own after every other file, so adding it left their bytes unchanged
    {
      auto rng = rng_for(stream++);
      detail_datagen::jsonl_file out(tmp, "eval_text.jsonl");
      const auto p = detail_datagen::plan(opt.eval, false, rng.next());
      for (std::size_t i = 0; i < opt.eval; ++i) {
        const auto base = detail_datagen::draw_item(rng, p[i].first, 'A', {opt.text_prompt_percent, opt.text_phrase_percent});
        for (const char order : {'A', 'B'}) {
          const auto it = order == 'A' ? base : base.swapped();
          ojson row;
          row["id"] = detail_datagen::row_id("evtext", i);
          row["messages"] = detail_datagen::messages(it, text_style, false);
          row["solution"] = std::string(1, it.label);
          row["task_type"] = task_type_name(it.task);
          row["order"] = order == 'A' ? "AB" : "BA";
          out.add(row);
        }
      }
      sum.files.push_back(out.close());
    }

    const std::string tok = make_tokenizer_json();
    detail_datagen::media_store::write(tmp / "tokenizer.json", tok);
    const auto tok_json = nlohmann::json::parse(tok);
    sum.tokenizer_vocab = tok_json["model"]["vocab"].size() + tok_json["added_tokens"].size();
    sum.images = store.images();
    sum.videos = store.videos();

    ojson manifest;
    manifest["generator"] = datagen_generator_name;
    manifest["format_version"] = 1;
    manifest["seed"] = opt.seed;
    manifest["options"] = {{"sft", opt.sft},   {"text_rl", opt.text_rl},       {"caption_rl", opt.caption_rl},
                           {"cmkd", opt.cmkd}, {"mm_rl", opt.mm_rl},           {"eval", opt.eval},
                           {"image_size", opt.image_size}, {"video_frames", opt.video_frames},
                           {"text_prompt_percent", opt.text_prompt_percent}, {"text_phrase_percent", opt.text_phrase_percent},
                           {"caption_context_percent", opt.caption_context_percent},
                           {"layout", std::string(judge_layout_name(opt.layout))}};
    ojson files = ojson::object();
    for (const auto& f : sum.files) {
      ojson tt = ojson::object();
      for (const auto& [k, v] : f.task_types) tt[k] = v;
      files[f.name] = {{"rows", f.rows}, {"label_a", f.label_a}, {"label_b", f.label_b}, {"task_types", tt}};
    }
    manifest["files"] = files;
    manifest["images"] = sum.images;
    manifest["videos"] = sum.videos;
    manifest["tokenizer_vocab"] = sum.tokenizer_vocab;
    ojson entries = ojson::array();
    entries.push_back(datagen_pretrain_file);
    entries.push_back(datagen_pretrain_media_file);
    entries.push_back(datagen_pretrain_text_file);
    for (const auto f : datagen_jsonl_files) entries.push_back(f);
    entries.push_back("tokenizer.json");
    entries.push_back("manifest.json");
    if (sum.images) entries.push_back("images");
    if (sum.videos) entries.push_back("videos");
    manifest["entries"] = entries;
    detail_datagen::media_store::write(tmp / "manifest.json", manifest.dump(2) + "\n");

    for (const auto& e : fs::recursive_directory_iterator(tmp))
      if (e.is_regular_file()) sum.bytes += e.file_size();
  });
  sum.dir = target;
  return sum;
}

} // namespace msrl_pipeline
