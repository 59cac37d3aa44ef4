#pragma once
/// \file The synthetic visual world of the bundled data (docs/pipeline-data.md): shapes, colours,
/// counts, positions and motions, their phrases, sentences and questions, and their rendering to
/// PNG images and video frames (stb_image_write, compiled in by stb_write.hpp).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <msrl/core/error.hpp>

#include "stb_write.hpp"

namespace msrl_pipeline {

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

} // namespace msrl_pipeline
