#pragma once
/// \file Videos as folders of frame images, the way InternVL-style data sets hand them over:
/// listing a folder's frames, the reference frame sampling (image.hpp, video_frame_indices) and
/// one tile per sampled frame.
///
///   auto v = msrl::trainer::load_video("clips/0042", {.frames = 8, .image_size = 448}, "row 7");
///   // v.frames: up to 8 tiled_image, one tile each (no thumbnail); v.files: the sampled frames
///
/// A folder comes from a data set, so it is read as untrusted input:
///   - frames are the regular files named *.png, *.jpg or *.jpeg, in file-name order; other
///     entries (folders, devices, pipes, other files) are skipped;
///   - at most `max_entries` directory entries are looked at: a larger folder is refused;
///   - a frame that is a symbolic link must resolve inside the folder unless `allow_outside`;
///   - each sampled frame is decoded within the pixel budget (decode_image_file, whose file-size
///     bound follows from the budget).
/// Every refusal is an msrl::error naming `what`, the folder and the rule.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "../core/error.hpp"
#include "../core/path_inside.hpp"
#include "image.hpp"

namespace msrl::trainer {

/// How a frame folder is read and tiled.
struct video_options {
  int frames = 8;                                     ///< segments sampled (fewer if the folder has fewer frames)
  int image_size = 448;                               ///< tile side
  std::size_t max_entries = 100000;                   ///< directory entries looked at, at most
  bool allow_outside = false;                         ///< frames may be links that lead out of the folder
  std::uint64_t max_pixels = default_max_image_pixels; ///< per frame (image.hpp)
};

/// A loaded video: the sampled frame files and their tiles, in order.
struct video_frames {
  std::vector<std::filesystem::path> files;
  std::vector<tiled_image> frames;
};

/// The frame files of folder `dir` in file-name order (the rules in the file comment).
inline std::vector<std::filesystem::path> list_video_frames(const std::filesystem::path& dir, const video_options& o,
                                                            const std::string& what = "video") {
  const std::string where = "list_video_frames(" + what + ")";
  require(o.max_entries >= 1, where, "max_entries", "must be >= 1");
  std::error_code ec;
  require(std::filesystem::is_directory(dir, ec), where, "dir",
          "must name a folder of frame images ('" + dir.string() + "' is not a folder; video files are not decoded)");
  const auto require_readable = [&] {
    require(!ec, where, "dir", "must be a readable folder ('" + dir.string() + "': " + ec.message() + ")");
  };
  std::vector<std::filesystem::path> frames;
  std::size_t entries = 0;
  std::filesystem::directory_iterator it(dir, ec), end;
  require_readable();
  for (; it != end; it.increment(ec)) {
    require<value_error>(++entries <= o.max_entries, where, "dir",
                         "must hold at most " + std::to_string(o.max_entries) + " entries ('" + dir.string() + "' holds more)");
    const auto& e = *it;
    const auto ext = e.path().extension().string();
    if (ext != ".png" && ext != ".jpg" && ext != ".jpeg") continue;
    std::error_code fe;
    if (!e.is_regular_file(fe) || fe) continue; // follows links; folders, devices and pipes are not frames
    if (!o.allow_outside && e.is_symlink(fe))
      require<value_error>(resolves_inside(e.path(), dir), where, "dir",
                           "frame '" + e.path().filename().string() + "' of '" + dir.string() +
                               "' is a link that resolves outside the folder (allow_outside permits it)");
    frames.push_back(e.path());
  }
  require_readable(); // an error while listing ends the iteration: refuse rather than return part of the folder
  std::sort(frames.begin(), frames.end());
  require(!frames.empty(), where, "dir", "must hold .png/.jpg frames ('" + dir.string() + "' holds none)");
  return frames;
}

/// Lists the folder's frames, samples min(frames, count) of them (video_frame_indices) and tiles
/// each into one image_size tile without a thumbnail, as InternVL's video preprocessing.
inline video_frames load_video(const std::filesystem::path& dir, const video_options& o, const std::string& what = "video") {
  require(o.frames >= 1, "load_video(" + what + ")", "frames", "must be >= 1");
  const auto files = list_video_frames(dir, o, what);
  const auto n = static_cast<std::int64_t>(files.size());
  const auto idx = video_frame_indices(n, std::min<std::int64_t>(o.frames, n));
  video_frames v;
  for (const auto i : idx) {
    const auto& f = files[static_cast<std::size_t>(i)];
    v.frames.push_back(preprocess(decode_image_file(f, o.max_pixels),
                                  {.image_size = o.image_size, .max_tiles = 1, .use_thumbnail = false, .max_pixels = o.max_pixels}));
    v.files.push_back(f);
  }
  return v;
}

} // namespace msrl::trainer
