// libFuzzer target: config.json to the InternVL model configuration
// (include/msrl/trainer/internvl_config.hpp: internvl_config::from_json).
// Input: any bytes; those that parse as JSON go to from_json. Every malformed or out-of-range
// config must be refused with msrl::error; an accepted one must have positive sizes that divide as
// the model needs, a parameter count within max_parameters, and sizes whose products the model
// builds from fit in 64 bits.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include <msrl/trainer/internvl_config.hpp>

namespace {

std::int64_t mul(std::int64_t a, std::int64_t b) {
  std::int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) std::abort();
  return r;
}

void check(const msrl::trainer::internvl_config& c) {
  const auto& v = c.vision;
  const auto& t = c.text;
  for (const std::int64_t x :
       {v.hidden_size, v.num_layers, v.num_heads, v.intermediate_size, v.image_size, v.patch_size, t.hidden_size,
        t.num_layers, t.num_heads, t.num_kv_heads, t.head_dim, t.intermediate_size, t.vocab_size})
    if (x <= 0) std::abort();
  if (v.hidden_size % v.num_heads != 0 || v.image_size % v.patch_size != 0 || (v.image_size / v.patch_size) % 2 != 0)
    std::abort();
  if (t.num_heads % t.num_kv_heads != 0 || t.head_dim % 2 != 0) std::abort();
  for (const double x : {v.layer_norm_eps, t.rms_norm_eps, t.rope_theta})
    if (!(x > 0) || !std::isfinite(x)) std::abort();
  if (c.image_token_id < -1 || c.image_token_id >= t.vocab_size) std::abort();
  const double n = c.parameter_count();
  if (!(n > 0) || !(n <= c.max_parameters)) std::abort();
  // The products the model's modules and tensors are built from.
  (void)mul(3, v.hidden_size);
  (void)mul(4, mul(v.hidden_size, v.intermediate_size));
  (void)mul(mul(v.patch_size, v.patch_size), mul(3, v.hidden_size));
  (void)mul(mul(v.image_size, v.image_size), 3);
  (void)mul(mul(4, v.hidden_size), t.hidden_size);
  (void)mul(mul(t.num_heads, t.head_dim), t.hidden_size);
  (void)mul(mul(t.num_kv_heads, t.head_dim), t.hidden_size);
  (void)mul(mul(3, t.intermediate_size), t.hidden_size);
  (void)mul(mul(2, t.vocab_size), t.hidden_size);
  const std::int64_t tiles = c.tokens_per_tile();
  if (tiles <= 0) std::abort();
  (void)mul(tiles, mul(4, v.hidden_size));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    check(msrl::trainer::internvl_config::from_json(j, "fuzz.json"));
  } catch (const msrl::error&) {
    // a refused config: parse_error (missing key, wrong type) or invalid_argument (out of range)
  }
  return 0;
}
