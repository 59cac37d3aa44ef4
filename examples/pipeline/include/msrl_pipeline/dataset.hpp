#pragma once
/// \file ms-swift JSONL rows for msrl-train: reading them (dataset_rows.hpp, torch-free), media
/// loading and prompt encoding for the InternVL chat template.
///
/// A row: {"id", "messages": [{"role", "content"}...], "images": [path...], "videos": [dir...],
/// "solution": "A"|"B", "task_type", "caption", "caption_messages", "order"}. Paths are relative
/// to the JSONL file's folder. A video is a folder of frame images (sorted by file name); the
/// `<video>` marker becomes "Frame-1: <image>\nFrame-2: <image>\n..." with one tile per frame.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "dataset_rows.hpp"

#include <msrl/core/error.hpp>
#include <msrl/trainer/image.hpp>
#include <msrl/trainer/internvl_torch.hpp>
#include <msrl/trainer/tokenizer.hpp>
#include <msrl/trainer/video.hpp>

namespace msrl_pipeline {

/// How media become pixels for a model.
struct media_options {
  int image_size = 448;
  int max_tiles = 12;     ///< images (1 for the tiny model's 56 px tiles)
  int video_frames = 8;   ///< frames sampled per video (fewer if the folder has fewer)
  bool allow_outside = false; ///< video frames may be links that lead out of their folder (allow_media_outside_data)
};

/// A prompt's token ids and pixels, ready for sampling or training.
struct encoded_prompt {
  std::vector<std::int64_t> ids;
  at::Tensor pixel_values; ///< [tiles, 3, S, S] or undefined
};

/// Builds the chat prompt (system override, the row's messages up to the last user turn, the
/// generation prompt) and the pixels of its images and video frames.
/// `messages` is the row's `messages` or `caption_messages`; trailing assistant turns are dropped.
inline encoded_prompt encode_prompt(const record& r, const std::vector<message>& messages, const std::string& system,
                                    const msrl::trainer::bpe_tokenizer& tok, std::int64_t tokens_per_tile, const media_options& media,
                                    bool with_media = true) {
  std::size_t end = messages.size();
  while (end > 0 && messages[end - 1].role == "assistant") --end;
  msrl::require(end > 0, "msrl-train", "messages", r.source + ": needs a user turn");
  std::vector<msrl::trainer::chat_message> chat;
  if (!system.empty()) chat.push_back({"system", system, {}});
  std::vector<float> pixels;
  std::int64_t tiles_total = 0;
  const int S = media.image_size;
  auto add_tiles = [&](const msrl::trainer::tiled_image& t) {
    pixels.insert(pixels.end(), t.pixels.begin(), t.pixels.end());
    tiles_total += t.tiles;
  };
  std::size_t next_image = 0, next_video = 0;
  for (std::size_t i = 0; i < end; ++i) {
    const auto& m = messages[i];
    if (m.role == "system" && !system.empty()) continue;
    msrl::trainer::chat_message cm{m.role, {}, {}};
    if (!with_media || m.role != "user") {
      cm.content = m.content;
      chat.push_back(std::move(cm));
      continue;
    }
    // Expand <video> into frames and collect every image's tiles in marker order.
    const std::string& c = m.content;
    std::size_t pos = 0;
    while (pos < c.size()) {
      const auto pi = c.find("<image>", pos), pv = c.find("<video>", pos);
      const auto p = std::min(pi, pv);
      cm.content += c.substr(pos, p == std::string::npos ? std::string::npos : p - pos);
      if (p == std::string::npos) break;
      if (p == pi) {
        msrl::require(next_image < r.images.size(), "msrl-train", "images", r.source + ": more <image> markers than images");
        auto t = msrl::trainer::preprocess(msrl::trainer::decode_image_file(r.images[next_image++]),
                                           {.image_size = S, .max_tiles = media.max_tiles});
        cm.content += "<image>";
        cm.image_tiles.push_back(t.tiles);
        add_tiles(t);
        pos = p + 7;
      } else {
        msrl::require(next_video < r.videos.size(), "msrl-train", "videos", r.source + ": more <video> markers than videos");
        const auto v = msrl::trainer::load_video(r.videos[next_video++],
                                                 {.frames = media.video_frames, .image_size = S, .allow_outside = media.allow_outside}, r.source);
        for (std::size_t f = 0; f < v.frames.size(); ++f) {
          cm.content += "Frame-" + std::to_string(f + 1) + ": <image>\n";
          cm.image_tiles.push_back(v.frames[f].tiles);
          add_tiles(v.frames[f]);
        }
        pos = p + 7;
      }
    }
    chat.push_back(std::move(cm));
  }
  if (with_media) {
    msrl::require(next_image == r.images.size(), "msrl-train", "images", r.source + ": has images without an <image> marker");
    msrl::require(next_video == r.videos.size(), "msrl-train", "videos", r.source + ": has videos without a <video> marker");
  }
  encoded_prompt out;
  out.ids = tok.encode(msrl::trainer::chat_prompt(chat, tokens_per_tile));
  if (tiles_total > 0)
    out.pixel_values = torch::from_blob(pixels.data(), {tiles_total, 3, S, S}, at::kFloat).clone();
  return out;
}

/// The row's final assistant turn ("" if none).
inline std::string assistant_target(const record& r) {
  return !r.messages.empty() && r.messages.back().role == "assistant" ? r.messages.back().content : std::string();
}

} // namespace msrl_pipeline
