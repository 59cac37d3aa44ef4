// libFuzzer target: image decoding (PNG/JPEG/BMP/GIF through stb_image) with a small pixel budget,
// then the InternVL dynamic tiling with small tiling options.
// Input: one byte of tiling options, then the image file. Every malformed or oversized image must
// be refused with msrl::error; an accepted one must tile into tiles x 3 x S x S finite floats.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include <msrl/trainer/image.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  constexpr std::uint64_t budget = std::uint64_t{1} << 18; // 512 x 512
  msrl::trainer::tiling_options opt;
  opt.image_size = 8 + 8 * (data[0] & 3);   // 8 .. 32
  opt.max_tiles = 1 + ((data[0] >> 2) & 7); // 1 .. 8
  opt.min_tiles = 1 + ((data[0] >> 5) & 3); // 1 .. 4 (above max_tiles: refused by name)
  opt.use_thumbnail = (data[0] & 0x80) != 0;
  opt.max_pixels = budget;
  try {
    const auto img = msrl::trainer::decode_image(data + 1, size - 1, "fuzz", budget);
    if (img.width <= 0 || img.height <= 0 ||
        static_cast<std::uint64_t>(img.width) * static_cast<std::uint64_t>(img.height) > budget ||
        img.data.size() != static_cast<std::size_t>(img.width) * static_cast<std::size_t>(img.height) * 3)
      std::abort();
    const auto t = msrl::trainer::preprocess(img, opt);
    const int cells = t.cols * t.rows;
    if (t.cols < 1 || t.rows < 1 || cells < opt.min_tiles || cells > opt.max_tiles) std::abort();
    if (t.tiles != cells + (t.thumbnail ? 1 : 0) || t.thumbnail != (opt.use_thumbnail && cells != 1)) std::abort();
    const std::size_t plane = static_cast<std::size_t>(opt.image_size) * static_cast<std::size_t>(opt.image_size);
    if (t.pixels.size() != static_cast<std::size_t>(t.tiles) * 3 * plane) std::abort();
    for (const float v : t.pixels)
      if (!std::isfinite(v)) std::abort();
  } catch (const msrl::error&) {
    // a refused image: not decodable (parse_error), over the pixel budget (value_error), or tiling
    // options the grid search refuses (invalid_argument)
  }
  return 0;
}
