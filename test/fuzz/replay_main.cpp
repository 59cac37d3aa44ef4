// Runs a libFuzzer target without libFuzzer: feeds every file named on the command line (or found
// in a directory named there) plus a few built-in inputs. Lets any compiler run the corpus as a test.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {
void feed(const std::string& s) { LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()); }
} // namespace

int main(int argc, char** argv) {
  std::size_t n = 0;
  for (int i = 1; i < argc; ++i) {
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(argv[i])) {
      for (const auto& e : std::filesystem::directory_iterator(argv[i]))
        if (e.is_regular_file()) files.push_back(e.path());
    } else {
      files.emplace_back(argv[i]);
    }
    for (const auto& f : files) {
      std::ifstream in(f, std::ios::binary);
      feed(std::string(std::istreambuf_iterator<char>(in), {}));
      ++n;
    }
  }
  const std::string builtin[] = {"", "<", "<think>", "</think><answer>", std::string(1, '\0'), "\xff\xfe\x1e\x1e",
                                 "<think>a</think><answer>A</answer>\x1e<think>b</think><answer>A</answer>\x1e" "A"};
  for (const auto& s : builtin) feed(s), ++n;
  std::printf("replayed %zu inputs\n", n);
  return 0;
}
