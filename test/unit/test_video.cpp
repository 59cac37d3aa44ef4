// Video frame folders (msrl/trainer/video.hpp) and the image file bounds (image.hpp,
// decode_image_file): which entries count as frames, the sampled frames worked out by hand from
// InternVL's get_index, links that lead out of the folder, the entry and file-size bounds.
#define BOOST_TEST_MODULE video
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include <sys/stat.h>

#include <msrl/trainer/video.hpp>

#include "scratch.hpp"

namespace fs = std::filesystem;
namespace tr = msrl::trainer;

namespace {

// A valid 24 x 16 RGB PNG: the fuzz corpus file after its first byte (fuzz_image's options).
const std::string png = msrl_test::slurp(fs::path(MSRL_CORPUS_DIR) / "image_png_rgb_24x16").substr(1);

void frame(const fs::path& dir, const std::string& name) { std::ofstream(dir / name, std::ios::binary) << png; }

template <class E>
std::string refusal(const auto& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "(not refused)";
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

} // namespace

BOOST_AUTO_TEST_CASE(frames_are_the_png_and_jpeg_files_in_name_order) {
  msrl_test::scratch s("video");
  for (const char* n : {"f_3.png", "f_0.png", "f_4.jpg", "f_1.jpeg", "f_2.png"}) frame(s.dir, n);
  frame(s.dir, "notes.txt");   // other extension
  frame(s.dir, "f_5.gif");     // decodable, but not a frame extension
  fs::create_directory(s.dir / "f_6.png"); // a folder named like a frame
  const auto files = tr::list_video_frames(s.dir, {});
  BOOST_TEST_REQUIRE(files.size() == 5u);
  const char* want[] = {"f_0.png", "f_1.jpeg", "f_2.png", "f_3.png", "f_4.jpg"};
  for (std::size_t i = 0; i < 5; ++i) BOOST_TEST(files[i].filename().string() == want[i]);
}

BOOST_AUTO_TEST_CASE(load_video_samples_as_internvl_get_index) {
  msrl_test::scratch s("video");
  for (int i = 0; i < 5; ++i) frame(s.dir, "f_" + std::to_string(i) + ".png");
  // 5 frames, 3 segments: seg = 4/3; int(seg/2 + round(seg k)) = int(0.67 + {0, 1, 3}) = 0, 1, 3
  const auto v = tr::load_video(s.dir, {.frames = 3, .image_size = 8});
  BOOST_TEST_REQUIRE(v.files.size() == 3u);
  BOOST_TEST(v.files[0].filename().string() == "f_0.png");
  BOOST_TEST(v.files[1].filename().string() == "f_1.png");
  BOOST_TEST(v.files[2].filename().string() == "f_3.png");
  for (const auto& t : v.frames) {
    BOOST_TEST(t.tiles == 1);
    BOOST_TEST(!t.thumbnail);
    BOOST_TEST(t.pixels.size() == 3u * 8 * 8);
  }
  // more segments than frames: as many segments as frames, seg = 4/5 = 0.8;
  // int(0.4 + round(0.8 k)) = int(0.4 + {0, 1, 2, 2, 3}): frame 2 twice, frame 4 never
  const auto all = tr::load_video(s.dir, {.frames = 8, .image_size = 8});
  BOOST_TEST_REQUIRE(all.files.size() == 5u);
  const char* want[] = {"f_0.png", "f_1.png", "f_2.png", "f_2.png", "f_3.png"};
  for (std::size_t i = 0; i < 5; ++i) BOOST_TEST(all.files[i].filename().string() == want[i]);
}

BOOST_AUTO_TEST_CASE(a_link_out_of_the_folder_is_refused_unless_allowed) {
  msrl_test::scratch s("video");
  fs::create_directory(s.dir / "clip");
  fs::create_directory(s.dir / "elsewhere");
  frame(s.dir / "clip", "f_0.png");
  frame(s.dir / "elsewhere", "secret.png");
  fs::create_symlink(s.dir / "elsewhere" / "secret.png", s.dir / "clip" / "f_1.png");
  const auto msg = refusal<msrl::value_error>([&] { tr::list_video_frames(s.dir / "clip", {}, "row 3"); });
  BOOST_TEST(has(msg, "list_video_frames(row 3)"), msg);
  BOOST_TEST(has(msg, "'f_1.png'"), msg);
  BOOST_TEST(has(msg, "resolves outside the folder"), msg);
  BOOST_TEST(tr::list_video_frames(s.dir / "clip", {.allow_outside = true}).size() == 2u);
  // a link that stays inside the folder is a frame
  fs::remove(s.dir / "clip" / "f_1.png");
  fs::create_symlink("f_0.png", s.dir / "clip" / "f_1.png");
  BOOST_TEST(tr::list_video_frames(s.dir / "clip", {}).size() == 2u);
  // a dangling link is not a regular file: skipped
  fs::create_symlink("missing.png", s.dir / "clip" / "f_2.png");
  BOOST_TEST(tr::list_video_frames(s.dir / "clip", {}).size() == 2u);
}

BOOST_AUTO_TEST_CASE(bad_folders_are_refused_by_name) {
  msrl_test::scratch s("video");
  const auto not_folder = refusal<msrl::invalid_argument>([&] { tr::list_video_frames(s.dir / "missing", {}); });
  BOOST_TEST(has(not_folder, "argument 'dir'"), not_folder);
  BOOST_TEST(has(not_folder, "is not a folder"), not_folder);
  const auto empty = refusal<msrl::invalid_argument>([&] { tr::list_video_frames(s.dir, {}); });
  BOOST_TEST(has(empty, "holds none"), empty);
  for (int i = 0; i < 4; ++i) frame(s.dir, "f_" + std::to_string(i) + ".png");
  const auto many = refusal<msrl::value_error>([&] { tr::list_video_frames(s.dir, {.max_entries = 3}); });
  BOOST_TEST(has(many, "at most 3 entries"), many);
  BOOST_TEST(tr::list_video_frames(s.dir, {.max_entries = 4}).size() == 4u);
  const auto frames0 = refusal<msrl::invalid_argument>([&] { tr::load_video(s.dir, {.frames = 0}); });
  BOOST_TEST(has(frames0, "argument 'frames'"), frames0);
  // a frame that does not decode names its file
  std::ofstream(s.dir / "a_bad.png") << "not a png"; // first in name order: always sampled
  const auto bad = refusal<msrl::parse_error>([&] { tr::load_video(s.dir, {.frames = 8, .image_size = 8}); });
  BOOST_TEST(has(bad, "a_bad.png"), bad);
}

BOOST_AUTO_TEST_CASE(image_files_are_bounded_before_they_are_read) {
  msrl_test::scratch s("video");
  // 16 pixels allow 16 * 16 + 1 MiB bytes
  BOOST_TEST(tr::max_image_file_bytes(16) == 16u * 16 + (1u << 20));
  BOOST_TEST(tr::max_image_file_bytes(std::uint64_t{1} << 40) == (std::uint64_t{1} << 31) - 1);
  {
    std::ofstream big(s.dir / "big.png", std::ios::binary);
    big.seekp((1 << 20) + 16 * 16); // one byte over the bound
    big.put('\0');
  }
  const auto over = refusal<msrl::value_error>([&] { tr::decode_image_file(s.dir / "big.png", 16); });
  BOOST_TEST(has(over, "must be at most 1048832 bytes"), over);
  // the size is checked before reading: a bound that admits it gets to the decoder
  const auto undecodable = refusal<msrl::parse_error>([&] { tr::decode_image_file(s.dir / "big.png"); });
  BOOST_TEST(has(undecodable, "not a decodable image"), undecodable);
  // neither a folder nor a pipe is read
  BOOST_TEST(has(refusal<msrl::invalid_argument>([&] { tr::decode_image_file(s.dir); }), "must be a readable file"));
  BOOST_TEST_REQUIRE(::mkfifo((s.dir / "pipe.png").c_str(), 0600) == 0);
  BOOST_TEST(has(refusal<msrl::invalid_argument>([&] { tr::decode_image_file(s.dir / "pipe.png"); }), "must be a readable file"));
  // a valid frame still decodes
  frame(s.dir, "ok.png");
  const auto img = tr::decode_image_file(s.dir / "ok.png");
  BOOST_TEST(img.width == 24);
  BOOST_TEST(img.height == 16);
}
