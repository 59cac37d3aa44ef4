#pragma once
/// \file Image input for InternVL: PNG/JPEG decoding (stb_image), the reference dynamic tiling
/// (aspect-ratio grid search, 1-12 tiles, thumbnail), Pillow-exact bicubic resizing, ImageNet
/// normalisation, and the reference video frame sampling. No libtorch: tiles come back as a
/// float CHW buffer the caller wraps (at::from_blob) or copies.
///
///   auto img = msrl::trainer::decode_image_file("cat.jpg");              // RGB8
///   auto t = msrl::trainer::preprocess(img, {.image_size = 448, .max_tiles = 12});
///   // t.pixels: tiles x 3 x 448 x 448 floats; t.tiles; t.cols x t.rows (+1 thumbnail)
///
/// Resizing reproduces Pillow's Image.resize(BICUBIC) on 8-bit RGB (a = -0.5, support scaled by
/// the reduction factor, weights normalised then rounded to 22-bit fixed point, horizontal pass
/// then vertical pass, each rounded and clipped to 8 bits): the test compares it byte for byte
/// with Pillow. stb_image is compiled into this header with internal linkage (STB_IMAGE_STATIC);
/// define MSRL_TRAINER_NO_STB_IMPLEMENTATION if your program already provides it.
/// JPEG decoders differ slightly (stb vs libjpeg), so JPEG pixels are close to, not equal to, PIL's.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"

#ifndef MSRL_TRAINER_NO_STB_IMPLEMENTATION
#ifndef STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define MSRL_TRAINER_DEFINED_STB
#endif
#endif
#if __has_include(<stb/stb_image.h>) // Debian libstb-dev
#include <stb/stb_image.h>
#else
#include <stb_image.h>
#endif
#ifdef MSRL_TRAINER_DEFINED_STB
#undef STB_IMAGE_IMPLEMENTATION
#undef MSRL_TRAINER_DEFINED_STB
#endif

namespace msrl::trainer {

/// 8-bit RGB, row-major, 3 bytes per pixel.
struct rgb_image {
  int width = 0, height = 0;
  std::vector<std::uint8_t> data;
  std::uint8_t at(int x, int y, int c) const { return data[(static_cast<std::size_t>(y) * width + x) * 3 + c]; }
};

/// Decodes PNG/JPEG/BMP/GIF bytes to RGB (alpha dropped, grey replicated, like PIL convert("RGB")
/// for opaque images). Corrupt or truncated input throws msrl::parse_error naming `what`.
inline rgb_image decode_image(const std::uint8_t* bytes, std::size_t size, const std::string& what = "image") {
  require(bytes != nullptr || size == 0, "decode_image", "bytes", "must not be null");
  require<parse_error>(size > 0 && size < static_cast<std::size_t>(1) << 31, "decode_image(" + what + ")", "bytes", "must be a non-empty buffer under 2 GiB");
  int w = 0, h = 0, n = 0;
  stbi_uc* p = stbi_load_from_memory(bytes, static_cast<int>(size), &w, &h, &n, 3);
  if (!p) throw parse_error("decode_image(" + what + "): argument 'bytes' is not a decodable image (" + std::string(stbi_failure_reason() ? stbi_failure_reason() : "unknown") + ")");
  rgb_image img;
  img.width = w;
  img.height = h;
  img.data.assign(p, p + static_cast<std::size_t>(w) * h * 3);
  stbi_image_free(p);
  return img;
}

inline rgb_image decode_image_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  require(static_cast<bool>(in), "decode_image_file", "path", "must be a readable file ('" + path.string() + "')");
  std::vector<std::uint8_t> bytes{std::istreambuf_iterator<char>(in), {}};
  return decode_image(bytes.data(), bytes.size(), path.string());
}

namespace detail {

inline double bicubic_weight(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

/// Per output index: first input index and fixed-point weights (Pillow's resampling bounds).
struct resample_plan {
  std::vector<int> first;
  std::vector<std::vector<std::int32_t>> weights;
};

constexpr int precision_bits = 32 - 8 - 2;

inline resample_plan plan_axis(int in, int out) {
  const double scale = static_cast<double>(in) / out;
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;
  resample_plan p;
  p.first.resize(static_cast<std::size_t>(out));
  p.weights.resize(static_cast<std::size_t>(out));
  for (int o = 0; o < out; ++o) {
    const double center = (o + 0.5) * scale;
    int lo = static_cast<int>(center - support + 0.5);
    int hi = static_cast<int>(center + support + 0.5);
    lo = std::max(lo, 0);
    hi = std::min(hi, in);
    std::vector<double> k(static_cast<std::size_t>(std::max(hi - lo, 0)));
    double sum = 0;
    for (int x = lo; x < hi; ++x) {
      const double w = bicubic_weight((x - center + 0.5) / filterscale);
      k[static_cast<std::size_t>(x - lo)] = w;
      sum += w;
    }
    auto& kk = p.weights[static_cast<std::size_t>(o)];
    for (double w : k) {
      const double v = sum != 0.0 ? w / sum : w;
      kk.push_back(static_cast<std::int32_t>(v < 0 ? -0.5 + v * (1 << precision_bits) : 0.5 + v * (1 << precision_bits)));
    }
    p.first[static_cast<std::size_t>(o)] = lo;
  }
  return p;
}

inline std::uint8_t clip8(std::int64_t v) {
  if (v >= (static_cast<std::int64_t>(1) << precision_bits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<std::uint8_t>(v >> precision_bits);
}

} // namespace detail

/// Pillow Image.resize((w, h), BICUBIC) for RGB8.
inline rgb_image resize_bicubic(const rgb_image& src, int w, int h) {
  require(w > 0 && h > 0, "resize_bicubic", "w/h", "must be positive");
  require<shape_error>(src.width > 0 && src.height > 0 && src.data.size() == static_cast<std::size_t>(src.width) * src.height * 3, "resize_bicubic", "src",
                       "must be a non-empty RGB8 image");
  if (w == src.width && h == src.height) return src;
  rgb_image cur = src;
  if (w != src.width) { // horizontal pass
    const auto p = detail::plan_axis(src.width, w);
    rgb_image out{w, src.height, std::vector<std::uint8_t>(static_cast<std::size_t>(w) * src.height * 3)};
    for (int y = 0; y < src.height; ++y)
      for (int x = 0; x < w; ++x)
        for (int c = 0; c < 3; ++c) {
          std::int64_t s = std::int64_t{1} << (detail::precision_bits - 1);
          const auto& k = p.weights[static_cast<std::size_t>(x)];
          for (std::size_t i = 0; i < k.size(); ++i) s += static_cast<std::int64_t>(cur.at(p.first[static_cast<std::size_t>(x)] + static_cast<int>(i), y, c)) * k[i];
          out.data[(static_cast<std::size_t>(y) * w + x) * 3 + c] = detail::clip8(s);
        }
    cur = std::move(out);
  }
  if (h != src.height) { // vertical pass
    const auto p = detail::plan_axis(src.height, h);
    rgb_image out{cur.width, h, std::vector<std::uint8_t>(static_cast<std::size_t>(cur.width) * h * 3)};
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < cur.width; ++x)
        for (int c = 0; c < 3; ++c) {
          std::int64_t s = std::int64_t{1} << (detail::precision_bits - 1);
          const auto& k = p.weights[static_cast<std::size_t>(y)];
          for (std::size_t i = 0; i < k.size(); ++i) s += static_cast<std::int64_t>(cur.at(x, p.first[static_cast<std::size_t>(y)] + static_cast<int>(i), c)) * k[i];
          out.data[(static_cast<std::size_t>(y) * cur.width + x) * 3 + c] = detail::clip8(s);
        }
    cur = std::move(out);
  }
  return cur;
}

struct tiling_options {
  int image_size = 448;
  int min_tiles = 1;
  int max_tiles = 12;
  bool use_thumbnail = true;
  float mean[3] = {0.485f, 0.456f, 0.406f};
  float std[3] = {0.229f, 0.224f, 0.225f};
};

/// The reference grid choice: candidates (cols, rows) with min <= cols*rows <= max, by area;
/// the smallest |W/H - cols/rows| wins; on an exact tie the later (larger) grid wins only if
/// W*H > 0.5 * size^2 * cols * rows. Among equal areas candidates are taken by cols ascending
/// (the reference iterates a Python set there; equal-area ties need an image whose aspect
/// ratio lies exactly between two ratios).
inline std::pair<int, int> choose_grid(int width, int height, const tiling_options& opt) {
  require(opt.min_tiles >= 1 && opt.max_tiles >= opt.min_tiles, "choose_grid", "min_tiles/max_tiles", "must satisfy 1 <= min <= max");
  require(width > 0 && height > 0, "choose_grid", "width/height", "must be positive");
  std::vector<std::pair<int, int>> cand;
  for (int i = 1; i <= opt.max_tiles; ++i)
    for (int j = 1; j <= opt.max_tiles; ++j)
      if (i * j >= opt.min_tiles && i * j <= opt.max_tiles) cand.emplace_back(i, j);
  std::stable_sort(cand.begin(), cand.end(), [](auto a, auto b) { return a.first * a.second < b.first * b.second; });
  const double aspect = static_cast<double>(width) / height;
  const double area = static_cast<double>(width) * height;
  double best_diff = HUGE_VAL;
  std::pair<int, int> best{1, 1};
  for (const auto& [c, r] : cand) {
    const double diff = std::abs(aspect - static_cast<double>(c) / r);
    if (diff < best_diff) {
      best_diff = diff;
      best = {c, r};
    } else if (diff == best_diff && area > 0.5 * opt.image_size * opt.image_size * c * r) {
      best = {c, r};
    }
  }
  return best;
}

struct tiled_image {
  int tiles = 0, cols = 0, rows = 0;
  bool thumbnail = false;
  std::vector<rgb_image> tiles_u8;  ///< the 8-bit tiles (row-major crops, thumbnail last)
  std::vector<float> pixels;        ///< tiles x 3 x S x S, (x/255 - mean)/std in float32
};

inline rgb_image crop(const rgb_image& img, int x0, int y0, int w, int h) {
  rgb_image out{w, h, std::vector<std::uint8_t>(static_cast<std::size_t>(w) * h * 3)};
  for (int y = 0; y < h; ++y)
    std::copy_n(img.data.begin() + static_cast<std::ptrdiff_t>((static_cast<std::size_t>(y0 + y) * img.width + x0) * 3), static_cast<std::size_t>(w) * 3,
                out.data.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(y) * w * 3));
  return out;
}

/// InternVL dynamic preprocessing: grid choice, bicubic resize to (S*cols, S*rows), row-major
/// crops, a thumbnail (whole image at S x S) when there is more than one tile, normalisation.
inline tiled_image preprocess(const rgb_image& img, const tiling_options& opt = {}) {
  require(opt.image_size > 0, "preprocess", "image_size", "must be positive");
  const auto [cols, rows] = choose_grid(img.width, img.height, opt);
  const int S = opt.image_size;
  const rgb_image big = resize_bicubic(img, S * cols, S * rows);
  tiled_image t;
  t.cols = cols;
  t.rows = rows;
  for (int k = 0; k < cols * rows; ++k) t.tiles_u8.push_back(crop(big, (k % cols) * S, (k / cols) * S, S, S));
  if (opt.use_thumbnail && cols * rows != 1) {
    t.tiles_u8.push_back(resize_bicubic(img, S, S));
    t.thumbnail = true;
  }
  t.tiles = static_cast<int>(t.tiles_u8.size());
  const std::size_t plane = static_cast<std::size_t>(S) * S;
  t.pixels.resize(t.tiles_u8.size() * 3 * plane);
  for (std::size_t n = 0; n < t.tiles_u8.size(); ++n)
    for (int c = 0; c < 3; ++c)
      for (std::size_t i = 0; i < plane; ++i) {
        const float v = static_cast<float>(t.tiles_u8[n].data[i * 3 + static_cast<std::size_t>(c)]) / 255.0f; // ToTensor
        t.pixels[(n * 3 + static_cast<std::size_t>(c)) * plane + i] = (v - opt.mean[c]) / opt.std[c];      // Normalize
      }
  return t;
}

/// Reference video sampling (InternVL README get_index without a time bound): frame
/// int(seg/2 + round(seg*k)) for k < num_segments, seg = (num_frames-1)/num_segments, with
/// round-half-to-even like numpy. Each frame then becomes one tile (max_tiles 1, no thumbnail).
inline std::vector<std::int64_t> video_frame_indices(std::int64_t num_frames, std::int64_t num_segments) {
  require(num_frames >= 1, "video_frame_indices", "num_frames", "must be >= 1");
  require(num_segments >= 1, "video_frame_indices", "num_segments", "must be >= 1");
  const double seg = static_cast<double>(num_frames - 1) / static_cast<double>(num_segments);
  std::vector<std::int64_t> idx;
  for (std::int64_t k = 0; k < num_segments; ++k)
    idx.push_back(static_cast<std::int64_t>(seg / 2 + std::nearbyint(seg * static_cast<double>(k))));
  return idx;
}

} // namespace msrl::trainer
