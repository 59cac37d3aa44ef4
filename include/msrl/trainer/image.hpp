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
/// with Pillow. stb_image is compiled into this header with internal linkage (STB_IMAGE_STATIC),
/// with its PNG, JPEG, BMP and GIF decoders only; define MSRL_TRAINER_NO_STB_IMPLEMENTATION if your
/// program already provides it.
///
/// Images come from data sets, so their size is bounded: decode_image reads the width and height
/// from the file's header first and refuses (msrl::value_error) an image of more than `max_pixels`
/// pixels before stb allocates anything for it; preprocess bounds its resize buffers the same way,
/// and decode_image_file reads only regular files no larger than the budget allows.
/// JPEG decoders differ slightly (stb vs libjpeg), so JPEG pixels are close to, not equal to, PIL's.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "../core/error.hpp"

#ifndef MSRL_TRAINER_NO_STB_IMPLEMENTATION
#ifndef STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
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
#undef STBI_ONLY_PNG
#undef STBI_ONLY_JPEG
#undef STBI_ONLY_BMP
#undef STBI_ONLY_GIF
#undef MSRL_TRAINER_DEFINED_STB
#endif

namespace msrl::trainer {

/// 8-bit RGB, row-major, 3 bytes per pixel.
struct rgb_image {
  int width = 0, height = 0;
  std::vector<std::uint8_t> data;
  std::uint8_t at(int x, int y, int c) const { return data[(static_cast<std::size_t>(y) * width + x) * 3 + c]; }
};

/// The most pixels (width x height) an image may have by default: 2^26 (67 M pixels, 201 MB as
/// RGB8), 27 times the 12 tiles of 448 x 448 that InternVL cuts an image into, and above any camera
/// photo in common use.
inline constexpr std::uint64_t default_max_image_pixels = std::uint64_t{1} << 26;

namespace detail {

/// Two JPEG defects that stb_image (2.27, Debian 12's) does not check and that make it read or
/// write outside its tables: a Huffman table whose 16 code counts add up to more than 256 (the
/// size of the table), and a scan that decodes with a Huffman table no DHT segment has defined
/// (stb's tables are then uninitialised memory). This walks the marker segments as a decoder
/// reaches them (length-prefixed segments whole, entropy-coded data up to the next marker, the end
/// at EOI), reading every DHT the way stb does, and returns what it finds, or nullptr; anything
/// else it leaves to stb to accept or refuse.
inline const char* jpeg_table_defect(const std::uint8_t* b, std::size_t n) {
  std::size_t p = 0;
  while (p < n && b[p] == 0xFF) ++p;                            // SOI, after any number of fill bytes, as stb reads it
  if (p < 1 || p >= n || b[p] != 0xD8) return nullptr;          // not a JPEG
  const auto at = [&](std::size_t i) -> unsigned { return i < n ? b[i] : 0u; }; // stb reads 0 past the end
  bool defined[2][4] = {};                                                       // [DC, AC][table id]
  bool progressive = false;
  ++p;
  while (p < n) {
    if (b[p] != 0xFF) { // entropy-coded data (or bytes stb refuses)
      ++p;
      continue;
    }
    std::size_t q = p + 1;
    while (q < n && b[q] == 0xFF) ++q; // fill bytes
    if (q >= n) break;
    const unsigned m = b[q];
    p = q + 1;
    if (m == 0x00 || m == 0x01 || m == 0xD8 || (m >= 0xD0 && m <= 0xD7)) continue; // stuffed 0xFF, TEM, SOI, RSTn
    if (m == 0xD9) break;                                                          // EOI: the decoder stops here
    const std::size_t len = (at(p) << 8) | at(p + 1);
    if (len < 2) break; // stb refuses the segment
    if (m == 0xC2) progressive = true;
    if (m == 0xC4) { // DHT: tables of (class/id, 16 counts, values) while the length lasts
      std::int64_t left = static_cast<std::int64_t>(len) - 2;
      std::size_t r = p + 2;
      while (left > 0) {
        const unsigned tc = at(r);
        if ((tc >> 4) > 1 || (tc & 15) > 3) return nullptr; // stb refuses the table
        std::size_t codes = 0;
        for (std::size_t i = 1; i <= 16; ++i) codes += at(r + i);
        if (codes > 256) return "a JPEG Huffman table with more than 256 codes";
        defined[tc >> 4][tc & 15] = true;
        r += 17 + codes;
        left -= static_cast<std::int64_t>(17 + codes);
      }
      if (left != 0) return nullptr; // stb refuses the segment and stops
    }
    if (m == 0xDA) { // SOS: components with their DC/AC table ids, then Ss
      const std::size_t ns = at(p + 2);
      const unsigned ss = at(p + 3 + 2 * ns);
      for (std::size_t c = 0; c < ns; ++c) {
        const unsigned t = at(p + 4 + 2 * c), dc = t >> 4, ac = t & 15;
        if (dc > 3 || ac > 3) return nullptr; // stb refuses the scan
        const bool needs_dc = !progressive || ss == 0, needs_ac = !progressive || ss != 0;
        if ((needs_dc && !defined[0][dc]) || (needs_ac && !defined[1][ac])) return "a JPEG scan that uses an undefined Huffman table";
      }
    }
    p += len;
  }
  return nullptr;
}

/// PNG chunks as stb_image (2.27) reads them: it allocates an IDAT chunk's declared length before
/// reading it (up to 2 GB for a file of a few bytes) and copies an empty first IDAT chunk to a null
/// pointer. This walks the chunks up to IEND and returns a chunk longer than the bytes left, or an
/// empty first IDAT, or nullptr; anything else it leaves to stb.
inline const char* png_chunk_defect(const std::uint8_t* b, std::size_t n) {
  static constexpr std::uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (n < 8 || !std::equal(signature, signature + 8, b)) return nullptr; // not a PNG
  bool idat = false;
  for (std::size_t p = 8; p + 8 <= n;) {
    const std::uint64_t len = (std::uint64_t{b[p]} << 24) | (std::uint64_t{b[p + 1]} << 16) | (std::uint64_t{b[p + 2]} << 8) | b[p + 3];
    const bool is_idat = b[p + 4] == 'I' && b[p + 5] == 'D' && b[p + 6] == 'A' && b[p + 7] == 'T';
    if (len > n - p - 8) return "a PNG chunk longer than the file";
    if (is_idat && len == 0 && !idat) return "an empty first PNG IDAT chunk";
    idat = idat || is_idat;
    if (b[p + 4] == 'I' && b[p + 5] == 'E' && b[p + 6] == 'N' && b[p + 7] == 'D') break;
    p += 8 + static_cast<std::size_t>(len) + 4; // length, type, data, CRC
  }
  return nullptr;
}

inline std::string pixel_budget_rule(std::uint64_t w, std::uint64_t h, std::uint64_t max_pixels) {
  return "is a " + std::to_string(w) + " x " + std::to_string(h) + " image (" + std::to_string(w * h) +
         " pixels), more than the pixel budget of " + std::to_string(max_pixels) + " (max_pixels)";
}
} // namespace detail

/// Decodes PNG/JPEG/BMP/GIF bytes to RGB (alpha dropped, grey replicated, like PIL convert("RGB")
/// for opaque images). Corrupt or truncated input throws msrl::parse_error naming `what`; an image
/// of more than `max_pixels` pixels throws msrl::value_error before its pixels are allocated.
inline rgb_image decode_image(const std::uint8_t* bytes, std::size_t size, const std::string& what = "image",
                              std::uint64_t max_pixels = default_max_image_pixels) {
  require(bytes != nullptr || size == 0, "decode_image", "bytes", "must not be null");
  require<parse_error>(size > 0 && size < static_cast<std::size_t>(1) << 31, "decode_image(" + what + ")", "bytes", "must be a non-empty buffer under 2 GiB");
  const auto undecodable = [&] {
    return parse_error("decode_image(" + what + "): argument 'bytes' is not a decodable image (" +
                       std::string(stbi_failure_reason() ? stbi_failure_reason() : "unknown") + ")");
  };
  const char* defect = detail::jpeg_table_defect(bytes, size);
  if (!defect) defect = detail::png_chunk_defect(bytes, size);
  if (defect)
    throw parse_error("decode_image(" + what + "): argument 'bytes' is not a decodable image (" + defect + ")");
  int w = 0, h = 0, n = 0;
  // The header alone: the size is checked against the budget before anything is decoded.
  if (!stbi_info_from_memory(bytes, static_cast<int>(size), &w, &h, &n)) throw undecodable();
  require<value_error>(w > 0 && h > 0 && static_cast<std::uint64_t>(w) * static_cast<std::uint64_t>(h) <= max_pixels,
                       "decode_image(" + what + ")", "bytes", detail::pixel_budget_rule(static_cast<std::uint64_t>(std::max(w, 0)), static_cast<std::uint64_t>(std::max(h, 0)), max_pixels));
  stbi_uc* p = stbi_load_from_memory(bytes, static_cast<int>(size), &w, &h, &n, 3);
  if (!p) throw undecodable();
  if (w <= 0 || h <= 0 || static_cast<std::uint64_t>(w) * static_cast<std::uint64_t>(h) > max_pixels) {
    stbi_image_free(p);
    throw value_error("decode_image(" + what + "): argument 'bytes' " + detail::pixel_budget_rule(static_cast<std::uint64_t>(std::max(w, 0)), static_cast<std::uint64_t>(std::max(h, 0)), max_pixels));
  }
  rgb_image img;
  img.width = w;
  img.height = h;
  img.data.assign(p, p + static_cast<std::size_t>(w) * h * 3);
  stbi_image_free(p);
  return img;
}

/// The most bytes an image file within a budget of `max_pixels` may have: 16 per pixel (PNG at
/// 16-bit RGBA needs 8, BMP 4) plus 1 MiB of headers and ancillary chunks, and under 2 GiB.
inline std::uint64_t max_image_file_bytes(std::uint64_t max_pixels) {
  constexpr std::uint64_t cap = (std::uint64_t{1} << 31) - 1;
  return max_pixels >= (cap >> 4) ? cap : std::min(cap, 16 * max_pixels + (std::uint64_t{1} << 20));
}

/// Reads and decodes an image file. The path must name a regular file (links followed) of at most
/// max_image_file_bytes(max_pixels) bytes: its size is checked before anything is read.
inline rgb_image decode_image_file(const std::filesystem::path& path, std::uint64_t max_pixels = default_max_image_pixels) {
  std::error_code ec;
  require(std::filesystem::is_regular_file(path, ec), "decode_image_file", "path", "must be a readable file ('" + path.string() + "')");
  const auto bytes_on_disk = std::filesystem::file_size(path, ec);
  require(!ec, "decode_image_file", "path", "must be a readable file ('" + path.string() + "': " + ec.message() + ")");
  const auto limit = max_image_file_bytes(max_pixels);
  require<value_error>(bytes_on_disk <= limit, "decode_image_file", "path",
                       "must be at most " + std::to_string(limit) + " bytes for a budget of " + std::to_string(max_pixels) +
                           " pixels ('" + path.string() + "' has " + std::to_string(bytes_on_disk) + ")");
  std::ifstream in(path, std::ios::binary);
  require(static_cast<bool>(in), "decode_image_file", "path", "must be a readable file ('" + path.string() + "')");
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(bytes_on_disk));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  require<parse_error>(in.gcount() == static_cast<std::streamsize>(bytes.size()), "decode_image_file", "path",
                       "must be readable to its end ('" + path.string() + "' changed or failed while read)");
  return decode_image(bytes.data(), bytes.size(), path.string(), max_pixels);
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
  /// The most pixels preprocess accepts in the input image and in each resize buffer (the grid,
  /// image_size^2 x max_tiles, and the horizontal pass, image_size x cols x input height).
  std::uint64_t max_pixels = default_max_image_pixels;
};

/// The most tiles a grid may have (the reference uses 12; candidates grow as max_tiles log max_tiles).
inline constexpr int max_grid_tiles = 1024;

/// The reference grid choice: candidates (cols, rows) with min <= cols*rows <= max, by area;
/// the smallest |W/H - cols/rows| wins; on an exact tie the later (larger) grid wins only if
/// W*H > 0.5 * size^2 * cols * rows. Among equal areas candidates are taken by cols ascending
/// (the reference iterates a Python set there; equal-area ties need an image whose aspect
/// ratio lies exactly between two ratios).
inline std::pair<int, int> choose_grid(int width, int height, const tiling_options& opt) {
  require(opt.min_tiles >= 1 && opt.max_tiles >= opt.min_tiles && opt.max_tiles <= max_grid_tiles, "choose_grid", "min_tiles/max_tiles",
          "must satisfy 1 <= min <= max <= " + std::to_string(max_grid_tiles));
  require(width > 0 && height > 0, "choose_grid", "width/height", "must be positive");
  std::vector<std::pair<int, int>> cand;
  for (int i = 1; i <= opt.max_tiles; ++i)
    for (int j = 1; j <= opt.max_tiles / i; ++j) // i * j <= max_tiles
      if (i * j >= opt.min_tiles) cand.emplace_back(i, j);
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
  require(opt.max_tiles >= 1 && opt.max_tiles <= max_grid_tiles, "preprocess", "max_tiles", "must be in [1, " + std::to_string(max_grid_tiles) + "]");
  const std::uint64_t s64 = static_cast<std::uint64_t>(opt.image_size);
  require(s64 * s64 <= opt.max_pixels / static_cast<std::uint64_t>(opt.max_tiles), "preprocess", "image_size/max_tiles",
          "must give a grid of at most max_pixels (" + std::to_string(opt.max_pixels) + ") pixels: image_size^2 x max_tiles");
  require<shape_error>(img.width > 0 && img.height > 0 && img.data.size() == static_cast<std::size_t>(img.width) * static_cast<std::size_t>(img.height) * 3,
                       "preprocess", "img", "must be a non-empty RGB8 image");
  require<value_error>(static_cast<std::uint64_t>(img.width) * static_cast<std::uint64_t>(img.height) <= opt.max_pixels, "preprocess", "img",
                       detail::pixel_budget_rule(static_cast<std::uint64_t>(img.width), static_cast<std::uint64_t>(img.height), opt.max_pixels));
  const auto [cols, rows] = choose_grid(img.width, img.height, opt);
  // The horizontal resize pass holds (image_size x cols) x input height pixels.
  require<value_error>(s64 * static_cast<std::uint64_t>(cols) <= opt.max_pixels / static_cast<std::uint64_t>(img.height), "preprocess", "img",
                       "is " + std::to_string(img.width) + " x " + std::to_string(img.height) + ", so extreme an aspect ratio that resizing it to a " +
                           std::to_string(cols) + " x " + std::to_string(rows) + " grid needs more than max_pixels (" + std::to_string(opt.max_pixels) + ") pixels");
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
