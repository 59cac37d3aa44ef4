// libFuzzer target: tokenizer.json loading, then encoding and decoding arbitrary bytes.
// Input: a tokenizer.json, a NUL byte, then the text to encode. Every malformed file must be
// refused with msrl::error; an accepted one must encode any bytes into ids of its vocabulary that
// decode without error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include <msrl/trainer/tokenizer.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto cut = in.find('\0');
  const std::string_view file = in.substr(0, cut);
  const std::string_view text = cut == std::string_view::npos ? std::string_view() : in.substr(cut + 1);
  const auto j = nlohmann::json::parse(file.begin(), file.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    const auto tok = msrl::trainer::bpe_tokenizer::from_json(j);
    const auto ids = tok.encode(text);
    for (const auto id : ids)
      if (id < 0 || static_cast<std::size_t>(id) >= tok.vocab_size()) std::abort();
    (void)tok.decode(ids);
  } catch (const msrl::error&) {
    // a refused file (parse_error) or an id without a token of its own (value_error)
  } catch (const nlohmann::json::exception&) {
    // a wrong JSON type where the loader reads one with get<>
  }
  return 0;
}
