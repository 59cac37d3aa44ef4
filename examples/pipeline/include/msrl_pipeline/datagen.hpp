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
/// PNG encoding: stb_image_write, compiled in by stb_write.hpp.
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

#include <unistd.h> // getpid: a unique temporary directory name

#include <nlohmann/json.hpp>

#include <msrl/core/error.hpp>
#include <msrl/data/random.hpp>
#include <msrl/trainer/tokenizer.hpp>

#include "stb_write.hpp"

namespace msrl_pipeline {

// ---------------------------------------------------------------------------------------------
// Task types and the text templates the pipeline reuses
// ---------------------------------------------------------------------------------------------

enum class task_type : std::uint8_t { text, image_understanding, image_generation, video_understanding, video_generation };

/// The `task_type` column value: "text", "image_understanding", ...
inline std::string_view task_type_name(task_type t) noexcept {
  constexpr std::array<std::string_view, 5> n = {"text", "image_understanding", "image_generation", "video_understanding",
                                                 "video_generation"};
  return n[static_cast<std::size_t>(t)];
}

/// The words a completion puts in `<type>...</type>` ("image understanding"); msrl's task
/// reward normalises both to the same text.
inline std::string_view task_type_words(task_type t) noexcept {
  constexpr std::array<std::string_view, 5> n = {"text", "image understanding", "image generation", "video understanding",
                                                 "video generation"};
  return n[static_cast<std::size_t>(t)];
}

/// Which answer layout a system prompt asks for.
enum class prompt_style : std::uint8_t {
  text,      ///< stage 1: <think>...</think><answer>A</answer>
  caption,   ///< stage 2 (media given as captions): <type>...</type><think>...</think><answer>A</answer>
  multimodal ///< stage 3, CMKD pool, eval: <type>...</type><caption>...</caption><think>...</think><answer>A</answer>
};

/// The system prompt of each stage (short: a tiny model reads it in every prompt).
inline std::string system_prompt(prompt_style s) {
  switch (s) {
  case prompt_style::text: return "Compare the two responses. Think in <think> </think>, then give A or B in <answer> </answer>.";
  case prompt_style::caption:
    return "Name the task type in <type> </type>, think in <think> </think>, then give A or B in <answer> </answer>.";
  case prompt_style::multimodal:
    return "Name the task type in <type> </type>, describe the media in <caption> </caption>, think in <think> </think>, "
           "then give A or B in <answer> </answer>.";
  }
  return {};
}

/// The reasoning (the text inside <think>) for a choice between two candidates:
///   text:                 "The text says V. Response A says Va, which matches|differs. Response B says Vb, which
///                         matches|differs. Response L is correct."
///   text, `prompt_form`:  "The prompt says V. Response A says Va, ..." (which response matches a prompt: the
///                         text counterpart of the generation tasks)
///   image/video under.:   "The image|video shows V. Response A says Va. ..."
///   image/video gener.:   "The prompt says V. Image|Video A shows Va. Image|Video B shows Vb. Image|Video L is correct."
/// L is the candidate whose value equals `truth`; exactly one must (else msrl::invalid_argument).
/// Stage 2 (captions) and stage 3 (media) share the wording, so CMKD moves reasoning between them.
inline std::string write_rationale(task_type task, std::string_view truth, std::string_view value_a, std::string_view value_b,
                                   bool prompt_form = false) {
  constexpr const char* where = "msrl_pipeline::write_rationale";
  msrl::require(!truth.empty(), where, "truth", "must not be empty");
  msrl::require((value_a == truth) != (value_b == truth), where, "value_a/value_b",
                "must hold the truth in exactly one candidate (truth '" + std::string(truth) + "')");
  const char label = value_a == truth ? 'A' : 'B';
  std::string evidence, candidate, verb;
  switch (task) {
  case task_type::text: evidence = prompt_form ? "The prompt says" : "The text says"; candidate = "Response"; verb = "says"; break;
  case task_type::image_understanding: evidence = "The image shows"; candidate = "Response"; verb = "says"; break;
  case task_type::video_understanding: evidence = "The video shows"; candidate = "Response"; verb = "says"; break;
  case task_type::image_generation: evidence = "The prompt says"; candidate = "Image"; verb = "shows"; break;
  case task_type::video_generation: evidence = "The prompt says"; candidate = "Video"; verb = "shows"; break;
  }
  std::string t;
  t.reserve(128);
  t.append(evidence).append(" ").append(truth).append(". ");
  // One verdict per candidate right after its value: a local comparison a small model learns
  // far sooner than a single comparison at the end.
  t.append(candidate).append(" A ").append(verb).append(" ").append(value_a).append(value_a == truth ? ", which matches. " : ", which differs. ");
  t.append(candidate).append(" B ").append(verb).append(" ").append(value_b).append(value_b == truth ? ", which matches. " : ", which differs. ");
  t.append(candidate).append(" ").push_back(label);
  t.append(" is correct.");
  return t;
}

/// "<type>T</type><caption>C</caption><think>R</think><answer>L</answer>", empty parts left out.
/// With empty type this equals msrl::voting::cmkd_target(caption, think, label).
inline std::string make_completion(std::string_view think, char answer, std::string_view type_words = {}, std::string_view caption = {}) {
  msrl::require(answer == 'A' || answer == 'B', "msrl_pipeline::make_completion", "answer", "must be 'A' or 'B'");
  std::string c;
  if (!type_words.empty()) c.append("<type>").append(type_words).append("</type>");
  if (!caption.empty()) c.append("<caption>").append(caption).append("</caption>");
  c.append("<think>").append(think).append("</think><answer>");
  c.push_back(answer);
  c.append("</answer>");
  return c;
}

// ---------------------------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------------------------
namespace world {

enum class colour : std::uint8_t { red, green, blue, yellow, purple, orange };
enum class shape : std::uint8_t { circle, square, triangle };
enum class side : std::uint8_t { left, right };
enum class direction : std::uint8_t { left, right, up, down };
enum class attribute : std::uint8_t { colour, count, position, shape, direction };

inline constexpr std::array<std::string_view, 6> colour_names = {"red", "green", "blue", "yellow", "purple", "orange"};
inline constexpr std::array<std::string_view, 3> shape_names = {"circle", "square", "triangle"};
inline constexpr std::array<std::string_view, 3> shape_plurals = {"circles", "squares", "triangles"};
inline constexpr std::array<std::string_view, 2> side_names = {"left", "right"};
inline constexpr std::array<std::string_view, 4> direction_names = {"left", "right", "up", "down"};
inline constexpr std::array<std::string_view, 3> count_names = {"one", "two", "three"};

/// RGB of each colour (solid fills; the background is {240, 240, 240}).
inline constexpr std::array<std::array<std::uint8_t, 3>, 6> palette = {{
    {215, 38, 38}, {34, 160, 60}, {40, 90, 215}, {230, 200, 20}, {140, 60, 175}, {245, 135, 20}}};
inline constexpr std::array<std::uint8_t, 3> background = {240, 240, 240};

/// A still image: `count` equal shapes in one half, in the vertical slots set in `slots` (bit k =
/// slot k of 3, top to bottom).
struct still {
  int count = 1;
  world::colour colour = colour::red;
  world::shape shape = shape::circle;
  world::side side = side::left;
  unsigned slots = 1;
  bool operator==(const still&) const = default;
};

/// A video: one shape crossing the frame in `direction` through the middle of the other axis
/// (one lane keeps the number of distinct videos at 72, which keeps the data small).
struct motion {
  world::colour colour = colour::red;
  world::shape shape = shape::circle;
  world::direction direction = direction::left;
  bool operator==(const motion&) const = default;
};

inline std::string_view shape_word(const still& s) {
  return s.count == 1 ? shape_names[static_cast<std::size_t>(s.shape)] : shape_plurals[static_cast<std::size_t>(s.shape)];
}

/// "two green triangles on the left" (captions, responses, prompts).
inline std::string phrase(const still& s) {
  std::string p(count_names[static_cast<std::size_t>(s.count - 1)]);
  p.append(" ").append(colour_names[static_cast<std::size_t>(s.colour)]).append(" ").append(shape_word(s));
  p.append(" on the ").append(side_names[static_cast<std::size_t>(s.side)]);
  return p;
}
/// "a green triangle moving up" ("an orange ...").
inline std::string phrase(const motion& m) {
  std::string p(m.colour == colour::orange ? "an " : "a ");
  p.append(colour_names[static_cast<std::size_t>(m.colour)]).append(" ").append(shape_names[static_cast<std::size_t>(m.shape)]);
  p.append(" moving ").append(direction_names[static_cast<std::size_t>(m.direction)]);
  return p;
}
/// "There are two green triangles on the left." (the stage 1 text context).
inline std::string sentence(const still& s) { return (s.count == 1 ? "There is " : "There are ") + phrase(s) + "."; }
/// "A green triangle moves up." ("An orange ...").
inline std::string sentence(const motion& m) {
  std::string p(m.colour == colour::orange ? "An " : "A ");
  p.append(colour_names[static_cast<std::size_t>(m.colour)]).append(" ").append(shape_names[static_cast<std::size_t>(m.shape)]);
  p.append(" moves ").append(direction_names[static_cast<std::size_t>(m.direction)]).append(".");
  return p;
}

/// The word a rationale quotes for `a` ("green", "two", "left", "triangles", "up").
inline std::string value(const still& s, attribute a) {
  switch (a) {
  case attribute::colour: return std::string(colour_names[static_cast<std::size_t>(s.colour)]);
  case attribute::count: return std::string(count_names[static_cast<std::size_t>(s.count - 1)]);
  case attribute::position: return std::string(side_names[static_cast<std::size_t>(s.side)]);
  case attribute::shape: return std::string(shape_word(s));
  case attribute::direction: break;
  }
  throw msrl::invalid_argument("msrl_pipeline::world::value: argument 'attribute' must be colour, count, position or shape for a still image");
}
inline std::string value(const motion& m, attribute a) {
  switch (a) {
  case attribute::colour: return std::string(colour_names[static_cast<std::size_t>(m.colour)]);
  case attribute::shape: return std::string(shape_names[static_cast<std::size_t>(m.shape)]);
  case attribute::direction: return std::string(direction_names[static_cast<std::size_t>(m.direction)]);
  case attribute::count:
  case attribute::position: break;
  }
  throw msrl::invalid_argument("msrl_pipeline::world::value: argument 'attribute' must be colour, shape or direction for a video");
}

/// The question of an understanding task about `a`.
inline std::string question(const still& s, attribute a) {
  const bool one = s.count == 1;
  const std::string w(shape_word(s));
  switch (a) {
  case attribute::colour: return one ? "What colour is the " + w + "?" : "What colour are the " + w + "?";
  case attribute::count: return "How many " + std::string(shape_plurals[static_cast<std::size_t>(s.shape)]) + " are there?";
  case attribute::position: return one ? "Where is the " + w + "?" : "Where are the " + w + "?";
  case attribute::shape: return one ? "What shape is it?" : "What shape are they?";
  case attribute::direction: break;
  }
  return value(s, a); // throws
}
inline std::string question(const motion& m, attribute a) {
  const std::string w(shape_names[static_cast<std::size_t>(m.shape)]);
  switch (a) {
  case attribute::colour: return "What colour is the " + w + "?";
  case attribute::shape: return "What shape is moving?";
  case attribute::direction: return "Which way does the " + w + " move?";
  case attribute::count:
  case attribute::position: break;
  }
  return value(m, a); // throws
}

/// An 8-bit RGB raster, row-major.
struct canvas {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;
  canvas(int w, int h) : width(w), height(h), rgb(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3) {
    for (std::size_t i = 0; i < rgb.size(); i += 3) std::copy(background.begin(), background.end(), rgb.begin() + static_cast<std::ptrdiff_t>(i));
  }
};

/// Fills one shape of radius r centred at (cx, cy) (pixel centres at +0.5; no anti-aliasing, so
/// every shape pixel holds exactly its palette colour). Triangles point up (base 2r, height 2r);
/// squares have side 1.8r so the three shapes have similar areas.
inline void draw_shape(canvas& c, shape s, colour col, double cx, double cy, double r) {
  const auto& rgb = palette[static_cast<std::size_t>(col)];
  const int x0 = std::max(0, static_cast<int>(std::floor(cx - r))), x1 = std::min(c.width - 1, static_cast<int>(std::ceil(cx + r)));
  const int y0 = std::max(0, static_cast<int>(std::floor(cy - r))), y1 = std::min(c.height - 1, static_cast<int>(std::ceil(cy + r)));
  for (int y = y0; y <= y1; ++y)
    for (int x = x0; x <= x1; ++x) {
      const double dx = x + 0.5 - cx, dy = y + 0.5 - cy;
      bool in = false;
      switch (s) {
      case shape::circle: in = dx * dx + dy * dy <= r * r; break;
      case shape::square: in = std::abs(dx) <= 0.9 * r && std::abs(dy) <= 0.9 * r; break;
      case shape::triangle: in = dy >= -r && dy <= r && std::abs(dx) <= (dy + r) / 2; break;
      }
      if (!in) continue;
      const std::size_t at = (static_cast<std::size_t>(y) * static_cast<std::size_t>(c.width) + static_cast<std::size_t>(x)) * 3;
      std::copy(rgb.begin(), rgb.end(), c.rgb.begin() + static_cast<std::ptrdiff_t>(at));
    }
}

/// Shape radius for an image of `size` pixels (7 at 56).
inline double shape_radius(int size) { return size / 8.0; }
/// Centre of slot k (0..2) of a still image.
inline std::pair<double, double> slot_centre(int size, side sd, int k) {
  return {size * (sd == side::left ? 0.25 : 0.75), size * (1.0 + 2.0 * k) / 6.0};
}
/// Centre of the shape in frame f of `frames`.
inline std::pair<double, double> motion_centre(int size, const motion& m, int f, int frames) {
  const double t = frames > 1 ? static_cast<double>(f) / (frames - 1) : 0.0;
  const double lo = 0.2 * size, hi = 0.8 * size, along_fwd = lo + (hi - lo) * t, along_back = hi - (hi - lo) * t;
  const double across = size / 2.0;
  switch (m.direction) {
  case direction::right: return {along_fwd, across};
  case direction::left: return {along_back, across};
  case direction::down: return {across, along_fwd};
  case direction::up: return {across, along_back};
  }
  return {across, across};
}

inline canvas render(const still& s, int size) {
  canvas c(size, size);
  for (int k = 0; k < 3; ++k)
    if (s.slots & (1u << k)) {
      const auto [x, y] = slot_centre(size, s.side, k);
      draw_shape(c, s.shape, s.colour, x, y, shape_radius(size));
    }
  return c;
}
inline canvas render(const motion& m, int size, int frame, int frames) {
  canvas c(size, size);
  const auto [x, y] = motion_centre(size, m, frame, frames);
  draw_shape(c, m.shape, m.colour, x, y, shape_radius(size));
  return c;
}

/// PNG bytes of a canvas (stb_image_write; deterministic).
inline std::vector<unsigned char> encode_png(const canvas& c) {
  std::vector<unsigned char> out;
  auto sink = [](void* ctx, void* data, int n) {
    auto* v = static_cast<std::vector<unsigned char>*>(ctx);
    const auto* p = static_cast<const unsigned char*>(data);
    v->insert(v->end(), p, p + n);
  };
  if (!stbi_write_png_to_func(sink, &out, c.width, c.height, 3, c.rgb.data(), c.width * 3))
    throw msrl::error("msrl_pipeline::world::encode_png: stb_image_write failed to encode a " + std::to_string(c.width) + "x" +
                      std::to_string(c.height) + " image");
  return out;
}

} // namespace world

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

/// Every word the generated text uses (templates, world words, system prompts, task types, and
/// "Frame" for the video prompt expansion). Letter words get a token with and without a leading
/// space; the punctuation pieces ".\n" and "?\n" get one token each.
inline const std::vector<std::string>& domain_vocabulary() {
  static const std::vector<std::string> v = [] {
    std::vector<std::string> w = {
        // world
        "one", "two", "three", "red", "green", "blue", "yellow", "purple", "orange", "circle", "circles", "square", "squares",
        "triangle", "triangles", "left", "right", "up", "down", "on", "the", "There", "is", "are", "a", "A", "an", "An", "B", "moves",
        "moving",
        // prompts
        "Text", "Image", "Video", "Question", "Prompt", "Response", "What", "colour", "How", "many", "there", "Where", "shape",
        "they", "it", "Which", "way", "does", "move", "image", "video", "response", "matches", "prompt", "Frame",
        // rationales
        "The", "text", "says", "shows", "correct",
        // system prompts and task types
        "Compare", "responses", "Think", "in", "then", "give", "or", "Name", "task", "type", "think", "describe", "media",
        "understanding", "generation", "Describe", "both", "images", "videos", "which", "differs",
        // punctuation pieces
        ".\n", "?\n"};
    return w;
  }();
  return v;
}

/// A Qwen2-style tokenizer.json (the layout msrl::trainer::bpe_tokenizer and HF `tokenizers`
/// read): the 256 GPT-2 byte symbols, BPE merges learned on `vocabulary` (each entry that starts
/// with a letter also as " "+entry) until every entry is one token, then the added tokens
/// <|endoftext|> <|im_start|> <|im_end|> <img> </img> <IMG_CONTEXT> <think> </think> <answer>
/// </answer> <type> </type> <caption> </caption>. Merges are learned greedily (most frequent
/// adjacent pair, ties by byte order), so the result is deterministic; the function checks with
/// bpe_tokenizer that every entry encodes to one token (msrl::value_error otherwise).
inline std::string make_tokenizer_json(std::span<const std::string> vocabulary = domain_vocabulary()) {
  constexpr const char* where = "msrl_pipeline::make_tokenizer_json";
  const auto& sym = msrl::trainer::detail::byte_symbols();
  std::vector<std::string> entries;
  for (const auto& e : vocabulary) {
    msrl::require(!e.empty(), where, "vocabulary", "must not hold an empty entry");
    const auto pieces = msrl::trainer::detail::qwen2_pretokenize(e);
    msrl::require(pieces.size() == 1, where, "vocabulary", "entries must be single pre-tokens ('" + e + "' splits)");
    entries.push_back(e);
    const auto c = static_cast<unsigned char>(e[0]);
    if ((c | 32) >= 'a' && (c | 32) <= 'z') entries.push_back(" " + e);
  }
  std::sort(entries.begin(), entries.end());
  entries.erase(std::unique(entries.begin(), entries.end()), entries.end());

  std::vector<std::vector<std::string>> words;
  for (const auto& e : entries) {
    std::vector<std::string> w;
    for (const char ch : e) w.push_back(sym[static_cast<unsigned char>(ch)]);
    words.push_back(std::move(w));
  }
  std::vector<std::pair<std::string, std::string>> merges;
  for (;;) {
    std::map<std::pair<std::string, std::string>, int> counts; // ordered: ties go to the smallest pair
    for (const auto& w : words)
      for (std::size_t k = 0; k + 1 < w.size(); ++k) ++counts[{w[k], w[k + 1]}];
    if (counts.empty()) break;
    auto best = counts.begin();
    for (auto it = counts.begin(); it != counts.end(); ++it)
      if (it->second > best->second) best = it;
    const auto pair = best->first;
    merges.push_back(pair);
    for (auto& w : words) {
      std::vector<std::string> m;
      m.reserve(w.size());
      for (std::size_t k = 0; k < w.size(); ++k) {
        if (k + 1 < w.size() && w[k] == pair.first && w[k + 1] == pair.second) {
          m.push_back(w[k] + w[k + 1]);
          ++k;
        } else {
          m.push_back(w[k]);
        }
      }
      w = std::move(m);
    }
  }

  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  std::int64_t next = 0;
  // GPT-2 order: printable bytes first (their own code points), then the rest.
  std::vector<std::size_t> order;
  for (std::size_t b = 0; b < 256; ++b)
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) order.push_back(b);
  for (std::size_t b = 0; b < 256; ++b)
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) order.push_back(b);
  for (const auto b : order) vocab[sym[b]] = next++;
  nlohmann::ordered_json merge_list = nlohmann::ordered_json::array();
  for (const auto& [a, b] : merges) {
    merge_list.push_back({a, b});
    if (!vocab.contains(a + b)) vocab[a + b] = next++;
  }
  struct added {
    const char* text;
    bool special;
  };
  constexpr std::array<added, 14> added_tokens = {{{"<|endoftext|>", true},
                                                   {"<|im_start|>", true},
                                                   {"<|im_end|>", true},
                                                   {"<img>", true},
                                                   {"</img>", true},
                                                   {"<IMG_CONTEXT>", true},
                                                   {"<think>", false},
                                                   {"</think>", false},
                                                   {"<answer>", false},
                                                   {"</answer>", false},
                                                   {"<type>", false},
                                                   {"</type>", false},
                                                   {"<caption>", false},
                                                   {"</caption>", false}}};
  nlohmann::ordered_json added_list = nlohmann::ordered_json::array();
  for (const auto& a : added_tokens)
    added_list.push_back({{"id", next++}, {"content", a.text}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                          {"normalized", false}, {"special", a.special}});

  nlohmann::ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added_list;
  j["normalizer"] = {{"type", "NFC"}};
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern",
          {{"Regex", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}}}};
  j["post_processor"] = nullptr;
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = {{"type", "BPE"},          {"dropout", nullptr},         {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
                {"vocab", vocab},          {"merges", merge_list}};

  const auto tok = msrl::trainer::bpe_tokenizer::from_json(nlohmann::json::parse(j.dump()), "generated tokenizer.json");
  for (const auto& e : entries)
    msrl::require<msrl::value_error>(tok.encode(e).size() == 1, where, "vocabulary", "entry '" + e + "' did not become one token");
  return j.dump(1);
}

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

struct datagen_options {
  std::uint64_t seed = 1;
  std::size_t pretrain = 600;   ///< pretrain.jsonl rows (captioning one image -> its description; the backbone-pretraining stand-in)
  std::size_t pretrain_media = 600; ///< pretrain_media.jsonl rows (captioning image pairs, videos, video pairs and single
                                    ///< images in turn: the second pretraining phase)
  std::size_t sft = 400;        ///< stage1_sft.jsonl rows (text, with the assistant rationale)
  std::size_t text_rl = 600;    ///< stage1_rl.jsonl rows (text)
  std::size_t caption_rl = 400; ///< stage2_caption_rl.jsonl rows (media replaced by captions)
  std::size_t cmkd = 200;       ///< stage2_cmkd.jsonl rows (media + caption_messages)
  std::size_t mm_rl = 400;      ///< stage3_multimodal_rl.jsonl rows (media)
  std::size_t eval = 100;       ///< eval items; eval.jsonl, eval_caption.jsonl and eval_text.jsonl hold 2 rows each (orders AB, BA)
  /// Share of stage 1 text rows, in percent, phrased as "which response matches the prompt" (the text
  /// counterpart of the generation tasks) instead of "text + question" (one draw per row; 0: none,
  /// and no draw). Default 0: with 50 the tiny model's text accuracy fell from ~0.8 to ~0.55
  /// (docs/pipeline.md).
  unsigned text_prompt_percent = 0;
  /// Share of the other stage 1 text rows, in percent, whose context is a bare phrase in the style of
  /// the captions ("Text: two green triangles on the left.") instead of a sentence (0: none, no draw).
  /// Default 50: the caption-based judging of the stage 2 model rose from 57.0 to 64.5 voting@16
  /// (docs/pipeline.md).
  unsigned text_phrase_percent = 50;
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
  /// The caption text: the scene phrase (understanding) or "Image A: pa. Image B: pb." (generation).
  std::string caption() const {
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

/// The user turn of a captioning (pretraining) row: the media markers, then the request.
inline std::string caption_request(task_type t) {
  switch (t) {
  case task_type::image_generation: return "Image A: <image>\nImage B: <image>\nDescribe both images.";
  case task_type::video_generation: return "Video A: <video>\nVideo B: <video>\nDescribe both videos.";
  case task_type::video_understanding: return "<video>\nDescribe the video.";
  default: return "<image>\nDescribe the image.";
  }
}

/// messages for `style` (system + user, plus the reference assistant turn when asked).
inline ojson messages(const datagen_item& it, prompt_style style, bool with_answer) {
  ojson m = ojson::array();
  m.push_back(message("system", system_prompt(style)));
  m.push_back(message("user", user_text(it, style == prompt_style::multimodal)));
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
    (row["solution"] == "A" ? sum_.label_a : sum_.label_b) += 1;
    ++sum_.task_types[row["task_type"].get<std::string>()];
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

/// A name beside `target` that no one else uses (pid + clock).
inline std::filesystem::path sibling(const std::filesystem::path& target, std::string_view tag) {
  const auto t = static_cast<unsigned long long>(std::chrono::steady_clock::now().time_since_epoch().count());
  for (unsigned k = 0;; ++k) {
    std::string name(1, '.'); // appended piece by piece: GCC 12 warns falsely (-Wrestrict) on "." + std::string
    name.append(target.filename().string()).append(1, '.').append(tag);
    name.append(1, '-').append(std::to_string(::getpid())).append(1, '-').append(std::to_string(t)).append(1, '-').append(std::to_string(k));
    auto p = target.parent_path() / name;
    std::error_code ec;
    if (!std::filesystem::exists(p, ec)) return p;
  }
}

} // namespace detail_datagen

/// Writes the bundled data set into `out_dir` and returns what it wrote.
///
/// `out_dir` must not exist, be an empty folder, or hold exactly a previous output of this
/// generator (its manifest.json names every entry); that output is then replaced. Anything else
/// throws msrl::invalid_argument and leaves the folder untouched. Everything is written into a
/// temporary sibling folder first and renamed into place, so a failed run leaves no partial data.
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
  const std::array<std::pair<const char*, std::size_t>, 8> counts = {
      {{"pretrain", opt.pretrain}, {"pretrain_media", opt.pretrain_media}, {"sft", opt.sft}, {"text_rl", opt.text_rl}, {"caption_rl", opt.caption_rl}, {"cmkd", opt.cmkd}, {"mm_rl", opt.mm_rl}, {"eval", opt.eval}}};
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

  const fs::path tmp = detail_datagen::sibling(target, "tmp");
  fs::create_directory(tmp);
  datagen_summary sum;
  try {
    detail_datagen::media_store store(tmp, opt.image_size, opt.video_frames);
    std::uint64_t stream = 0;
    auto rng_for = [&](std::uint64_t k) { return msrl::data::splitmix64(msrl::data::splitmix64(opt.seed ^ (0x5851f42d4c957f2dull * (k + 1))).next()); };

    // stage 1: text (SFT with the rationale, RL without)
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
        row["messages"] = detail_datagen::messages(it, prompt_style::text, with_answer);
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
                                    std::span<const task_type> cycle) {
      auto rng = rng_for(stream_id);
      detail_datagen::jsonl_file out(tmp, file);
      for (std::size_t i = 0; i < n; ++i) {
        const task_type task = cycle[i % cycle.size()];
        // which slot holds the prompt's match only matters for pairs (single media: 'A', no draw)
        const bool pair = task == task_type::image_generation || task == task_type::video_generation;
        const auto it = detail_datagen::draw_item(rng, task, pair && (rng.next() & 1) ? 'B' : 'A');
        ojson row;
        row["id"] = detail_datagen::row_id(prefix, i);
        ojson m = ojson::array();
        m.push_back(detail_datagen::message("user", detail_datagen::caption_request(task)));
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
      sum.pretrain_rows = write_captions(datagen_pretrain_file, 0x70726574ull, "pre", opt.pretrain, singles);
      constexpr std::array all{task_type::image_generation, task_type::video_understanding, task_type::video_generation,
                               task_type::image_understanding};
      sum.pretrain_media_rows = write_captions(datagen_pretrain_media_file, 0x70726d64ull, "prm", opt.pretrain_media, all);
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
        row["messages"] = detail_datagen::messages(it, prompt_style::caption, false);
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
        row["messages"] = detail_datagen::messages(it, prompt_style::multimodal, false);
        detail_datagen::add_media(row, it, store);
        row["solution"] = std::string(1, it.label);
        row["task_type"] = task_type_name(it.task);
        row["caption"] = it.caption();
        if (cmkd) row["caption_messages"] = detail_datagen::messages(it, prompt_style::caption, false);
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
          row["messages"] = detail_datagen::messages(it, prompt_style::multimodal, false);
          detail_datagen::add_media(row, it, store);
          row["solution"] = std::string(1, it.label);
          row["task_type"] = task_type_name(it.task);
          row["caption"] = it.caption();
          row["order"] = order == 'A' ? "AB" : "BA";
          out.add(row);
          ojson cap;
          cap["id"] = row["id"];
          cap["messages"] = detail_datagen::messages(it, prompt_style::caption, false);
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
          row["messages"] = detail_datagen::messages(it, prompt_style::text, false);
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
                           {"text_prompt_percent", opt.text_prompt_percent}, {"text_phrase_percent", opt.text_phrase_percent}};
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
    for (const auto f : datagen_jsonl_files) entries.push_back(f);
    entries.push_back("tokenizer.json");
    entries.push_back("manifest.json");
    if (sum.images) entries.push_back("images");
    if (sum.videos) entries.push_back("videos");
    manifest["entries"] = entries;
    detail_datagen::media_store::write(tmp / "manifest.json", manifest.dump(2) + "\n");

    for (const auto& e : fs::recursive_directory_iterator(tmp))
      if (e.is_regular_file()) sum.bytes += e.file_size();

    // publish: move a previous output aside, rename the new one in, then delete the old one
    fs::path old;
    if (fs::exists(target)) {
      old = detail_datagen::sibling(target, "old");
      fs::rename(target, old);
    }
    try {
      fs::rename(tmp, target);
    } catch (...) {
      if (!old.empty()) fs::rename(old, target, ec);
      throw;
    }
    if (!old.empty()) fs::remove_all(old, ec);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  sum.dir = target;
  return sum;
}

} // namespace msrl_pipeline
