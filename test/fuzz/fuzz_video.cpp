// libFuzzer target: video frame folders (include/msrl/trainer/video.hpp): listing a folder's frames,
// links in and out of it, the entry bound, then decoding and tiling the sampled frames.
// Input: one options byte, then entries that are created in a fresh folder `clip`:
//   [kind][name length][name][payload length, 2 bytes LE][payload]
//   kind & 3: 0 file (payload = its bytes), 1 folder, 2 symbolic link (payload = its target),
//             3 file holding a valid 24 x 16 PNG; (kind >> 2) & 3 picks the extension
//             ("", .png, .jpg, .jpeg). Names keep [A-Za-z0-9._-] only; link targets also '/',
//             made relative, so nothing outside the fuzzer's own folder is created.
// A sibling folder `outside` holds a valid frame `o.png` for links to lead out to.
// Every refusal must be an msrl::error; an accepted video must hold min(frames, listed) one-tile
// frames of finite pixels, listed in name order and inside the folder unless allowed.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include <unistd.h>

#include <msrl/trainer/video.hpp>

namespace fs = std::filesystem;

namespace {

// A 24 x 16 RGB PNG (what kind 3 writes and `outside/o.png` holds): every pixel (200, 40, 40).
std::string valid_png() {
  static const std::string png = [] {
    // stb cannot write PNGs here; build one from a stored (uncompressed) zlib stream instead.
    const int w = 24, h = 16;
    std::string raw;
    for (int y = 0; y < h; ++y) {
      raw.push_back('\0'); // filter: none
      for (int x = 0; x < w; ++x) raw += std::string{'\xc8', '\x28', '\x28'};
    }
    auto crc = [](const std::string& s) {
      std::uint32_t c = 0xffffffffu;
      for (const unsigned char ch : s) {
        c ^= ch;
        for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
      }
      return c ^ 0xffffffffu;
    };
    auto be32 = [](std::uint32_t v) {
      return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
    };
    auto chunk = [&](const std::string& type, const std::string& data) {
      return be32(static_cast<std::uint32_t>(data.size())) + type + data + be32(crc(type + data));
    };
    std::uint32_t a = 1, b = 0; // adler32
    for (const unsigned char ch : raw) {
      a = (a + ch) % 65521u;
      b = (b + a) % 65521u;
    }
    const auto n = static_cast<std::uint16_t>(raw.size());
    std::string z = "\x78\x01";
    z += '\x01'; // final stored block
    z += std::string{static_cast<char>(n & 0xff), static_cast<char>(n >> 8), static_cast<char>(~n & 0xff), static_cast<char>((~n >> 8) & 0xff)};
    z += raw + be32((b << 16) | a);
    const std::string ihdr = be32(w) + be32(h) + std::string{'\x08', '\x02', '\0', '\0', '\0'};
    return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) + chunk("IDAT", z) + chunk("IEND", "");
  }();
  return png;
}

const fs::path& base() {
  static const fs::path b = [] {
    const fs::path p = fs::temp_directory_path() / ("msrl_fuzz_video_" + std::to_string(::getpid()));
    fs::create_directories(p / "outside");
    std::ofstream(p / "outside" / "o.png", std::ios::binary) << valid_png();
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(base(), ec);
    });
    return p;
  }();
  return b;
}

std::string keep(const std::uint8_t* p, std::size_t n, bool slashes) {
  std::string s;
  for (std::size_t i = 0; i < n; ++i) {
    const char c = static_cast<char>(p[i]);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
        (slashes && c == '/'))
      s.push_back(c);
  }
  return s;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const fs::path clip = base() / "clip";
  std::error_code ec;
  fs::remove_all(clip, ec);
  fs::create_directories(clip);
  msrl::trainer::video_options o;
  o.frames = 1 + (data[0] & 7);
  o.image_size = (data[0] & 8) ? 16 : 8;
  o.allow_outside = (data[0] & 16) != 0;
  o.max_entries = 2 + (data[0] >> 5);
  o.max_pixels = std::uint64_t{1} << 16;
  static const char* const ext[] = {"", ".png", ".jpg", ".jpeg"};
  std::size_t i = 1;
  while (i + 2 <= size) {
    const std::uint8_t kind = data[i], name_len = data[i + 1];
    i += 2;
    if (i + name_len + 2 > size) break;
    std::string name = keep(data + i, std::min<std::size_t>(name_len, 16), false) + ext[(kind >> 2) & 3];
    i += name_len;
    const std::size_t len = std::min<std::size_t>(data[i] | (std::size_t{data[i + 1]} << 8), size - i - 2);
    i += 2;
    const std::uint8_t* payload = data + i;
    i += len;
    if (name.empty() || name == "." || name == ".." || fs::exists(fs::symlink_status(clip / name, ec))) continue;
    switch (kind & 3) {
    case 0: std::ofstream(clip / name, std::ios::binary).write(reinterpret_cast<const char*>(payload), static_cast<std::streamsize>(len)); break;
    case 1: fs::create_directory(clip / name, ec); break;
    case 2: {
      std::string target = keep(payload, std::min<std::size_t>(len, 64), true);
      target.erase(0, target.find_first_not_of('/')); // relative: stays under base()
      if (!target.empty()) fs::create_symlink(target, clip / name, ec);
      break;
    }
    default: std::ofstream(clip / name, std::ios::binary) << valid_png(); break;
    }
  }
  try {
    const auto listed = msrl::trainer::list_video_frames(clip, o, "fuzz");
    if (listed.empty() || listed.size() > o.max_entries || !std::is_sorted(listed.begin(), listed.end())) std::abort();
    const auto root = fs::weakly_canonical(clip, ec);
    for (const auto& f : listed) {
      const auto rel = fs::weakly_canonical(f, ec).lexically_relative(root);
      if (!o.allow_outside && (ec || rel.empty() || *rel.begin() == "..")) std::abort();
    }
    const auto v = msrl::trainer::load_video(clip, o, "fuzz");
    const auto want = std::min<std::size_t>(static_cast<std::size_t>(o.frames), listed.size());
    if (v.frames.size() != want || v.files.size() != want || !std::is_sorted(v.files.begin(), v.files.end())) std::abort();
    const std::size_t plane = static_cast<std::size_t>(o.image_size) * static_cast<std::size_t>(o.image_size);
    for (const auto& t : v.frames) {
      if (t.tiles != 1 || t.thumbnail || t.pixels.size() != 3 * plane) std::abort();
      for (const float x : t.pixels)
        if (!std::isfinite(x)) std::abort();
    }
  } catch (const msrl::error&) {
    // refused: no frames, too many entries, a link out, an undecodable or oversized frame
  }
  return 0;
}
