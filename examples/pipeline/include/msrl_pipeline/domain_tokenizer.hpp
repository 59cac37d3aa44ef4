#pragma once
/// \file The tokenizer of the bundled data: a Qwen2-style byte-level BPE tokenizer.json whose merges
/// make every word of the world, the prompts and the rationales one token.
#include <algorithm>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <msrl/core/error.hpp>
#include <msrl/trainer/tokenizer.hpp>

namespace msrl_pipeline {

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

} // namespace msrl_pipeline
