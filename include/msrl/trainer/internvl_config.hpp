#pragma once
/// \file The InternVL3.5 model configuration (config.json of either checkpoint flavour) without
/// libtorch: the sizes of the vision tower, projector and Qwen3 decoder, their range checks, and
/// the parameter count bounded before any module is built (internvl_torch.hpp builds the model).
///
///   auto cfg = msrl::trainer::internvl_config::from_file("ckpt/config.json");
///   cfg.parameter_count();   // from the sizes alone, before anything is allocated
///
/// from_json refuses every malformed or out-of-range field with a msrl::error naming the key
/// (parse_error for a missing key or a wrong JSON type, invalid_argument for a value out of range).
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"

namespace msrl::trainer {

struct vision_config {
  std::int64_t hidden_size = 1024, num_layers = 24, num_heads = 16, intermediate_size = 4096;
  std::int64_t image_size = 448, patch_size = 14;
  double layer_norm_eps = 1e-6;
  bool qkv_bias = true;
};

struct text_config {
  std::int64_t hidden_size = 1024, num_layers = 28, num_heads = 16, num_kv_heads = 8, head_dim = 128;
  std::int64_t intermediate_size = 3072, vocab_size = 151936;
  double rms_norm_eps = 1e-6, rope_theta = 1e6;
  bool tie_word_embeddings = false;
  /// Where config.json left them out: head_dim (the checkpoint's q_norm then says it) and
  /// tie_word_embeddings (the checkpoint's lm_head then says it). Set by internvl_config::from_json.
  bool head_dim_from_config = true, tie_from_config = true;
};

struct internvl_config {
  vision_config vision;
  text_config text;
  double downsample_ratio = 0.5;
  double projector_ln_eps = 1e-5; ///< nn.LayerNorm default in both reference codes
  std::int64_t image_token_id = -1; ///< <IMG_CONTEXT>; -1 = not in config (take it from the tokenizer)
  bool hf_format = false;           ///< config.json was the transformers (-HF) flavour
  /// The most parameters validate() accepts (a bound checked before any module is built; 100 B by
  /// default, far above InternVL3.5-38B).
  double max_parameters = 100e9;
  /// The most layers validate() accepts per tower (each layer is a module of its own; Qwen3 and
  /// InternViT have at most 94).
  static constexpr std::int64_t max_layers = 1024;
  /// The largest vision image_size validate() accepts (a tile is image_size^2 pixels; InternVL: 448).
  static constexpr std::int64_t max_image_size = 8192;

  /// The model's parameter count (to within the small norm and bias terms) from the sizes alone,
  /// without allocating, in floating point so that absurd sizes cannot overflow.
  double parameter_count() const {
    const double vh = static_cast<double>(vision.hidden_size), vi = static_cast<double>(vision.intermediate_size);
    const double p = static_cast<double>(vision.patch_size), g = static_cast<double>(vision.image_size) / p;
    const double vit = 3 * p * p * vh + vh + (g * g + 1) * vh +
                       static_cast<double>(vision.num_layers) * (4 * vh * vh + 4 * vh + 2 * vh * vi + vh + vi + 6 * vh);
    const double th = static_cast<double>(text.hidden_size), ti = static_cast<double>(text.intermediate_size);
    const double qd = static_cast<double>(text.num_heads) * static_cast<double>(text.head_dim);
    const double kvd = static_cast<double>(text.num_kv_heads) * static_cast<double>(text.head_dim);
    const double layer = th * qd + 2 * th * kvd + qd * th + 3 * th * ti + 2 * th + 2 * static_cast<double>(text.head_dim);
    const double vocab = static_cast<double>(text.vocab_size) * th * (text.tie_word_embeddings ? 1 : 2);
    const double proj = 8 * vh + 4 * vh * th + th + th * th + th;
    return vit + static_cast<double>(text.num_layers) * layer + vocab + th + proj;
  }

  /// Tokens per tile after pixel shuffle: (image/patch)^2 * ratio^2.
  std::int64_t tokens_per_tile() const {
    const auto g = vision.image_size / vision.patch_size;
    const auto s = static_cast<std::int64_t>(std::llround(static_cast<double>(g) * downsample_ratio));
    return s * s;
  }

  /// Checks every size rule; throws msrl::invalid_argument naming the key.
  void validate(const std::string& where = "internvl_config") const {
    auto pos = [&](std::int64_t v, const char* k) { require(v > 0, where, k, "must be positive"); };
    pos(vision.hidden_size, "vision_config.hidden_size");
    pos(vision.num_layers, "vision_config.num_hidden_layers");
    pos(vision.num_heads, "vision_config.num_attention_heads");
    pos(vision.intermediate_size, "vision_config.intermediate_size");
    pos(vision.image_size, "vision_config.image_size");
    pos(vision.patch_size, "vision_config.patch_size");
    require(vision.num_layers <= max_layers, where, "vision_config.num_hidden_layers", "must be at most " + std::to_string(max_layers) + " (internvl_config::max_layers)");
    require(vision.image_size <= max_image_size, where, "vision_config.image_size", "must be at most " + std::to_string(max_image_size) + " (internvl_config::max_image_size)");
    require(vision.hidden_size % vision.num_heads == 0, where, "vision_config.num_attention_heads", "must divide vision hidden_size");
    require(vision.image_size % vision.patch_size == 0, where, "vision_config.patch_size", "must divide image_size");
    pos(text.hidden_size, "text_config.hidden_size");
    pos(text.num_layers, "text_config.num_hidden_layers");
    pos(text.num_heads, "text_config.num_attention_heads");
    pos(text.num_kv_heads, "text_config.num_key_value_heads");
    pos(text.head_dim, "text_config.head_dim");
    pos(text.intermediate_size, "text_config.intermediate_size");
    pos(text.vocab_size, "text_config.vocab_size");
    require(text.num_layers <= max_layers, where, "text_config.num_hidden_layers", "must be at most " + std::to_string(max_layers) + " (internvl_config::max_layers)");
    require(text.head_dim % 2 == 0, where, "text_config.head_dim", "must be even (split-half RoPE)");
    require(text.num_heads % text.num_kv_heads == 0, where, "text_config.num_key_value_heads", "must divide num_attention_heads");
    require(downsample_ratio == 0.5, where, "downsample_ratio", "must be 0.5 (pixel shuffle v2 as in InternVL3.5)");
    const auto g = vision.image_size / vision.patch_size;
    require(g % 2 == 0, where, "vision_config.image_size", "must give an even patch grid for pixel shuffle 0.5");
    require(text.rms_norm_eps > 0 && vision.layer_norm_eps > 0 && std::isfinite(text.rms_norm_eps) && std::isfinite(vision.layer_norm_eps), where,
            "rms_norm_eps/layer_norm_eps", "must be positive and finite");
    require(text.rope_theta > 0 && std::isfinite(text.rope_theta), where, "text_config.rope_theta", "must be positive and finite");
    require(image_token_id >= -1, where, "image_token_id", "must be a token id (>= 0), got " + std::to_string(image_token_id));
    require(image_token_id < text.vocab_size, where, "image_token_id",
            "must be below text_config.vocab_size (" + std::to_string(text.vocab_size) + "), got " + std::to_string(image_token_id));
    const double n = parameter_count();
    require(n <= max_parameters, where, "config",
            "describes " + std::to_string(n) + " parameters, more than the bound of " + std::to_string(max_parameters) +
                " (internvl_config::max_parameters); refused before building anything");
  }

  /// Parses config.json of either flavour: original (`model_type` internvl_chat, `llm_config`)
  /// or transformers (`model_type` internvl, `text_config`).
  static internvl_config from_json(const nlohmann::json& j, const std::string& file = "config.json") {
    using nlohmann::json;
    const std::string where = "internvl_config(" + file + ")";
    require<parse_error>(j.is_object(), where, "config", "must be a JSON object");
    internvl_config c;
    const std::string mt = j.contains("model_type") && j.at("model_type").is_string() ? j.at("model_type").get<std::string>() : std::string();
    const char* tkey = nullptr;
    if (j.contains("llm_config")) tkey = "llm_config";
    else if (j.contains("text_config")) tkey = "text_config";
    require<parse_error>(tkey != nullptr && j.contains("vision_config"), where, "config",
                         "must have vision_config and llm_config (original) or text_config (HF); model_type '" + mt + "'");
    c.hf_format = std::string(tkey) == "text_config";
    const json& v = j.at("vision_config");
    const json& t = j.at(tkey);
    require<parse_error>(v.is_object() && t.is_object(), where, "vision_config/text_config", "must be objects");
    // An integer JSON value as int64 (unsigned ones above INT64_MAX are refused, not wrapped).
    auto as_i64 = [&](const json& x, const std::string& key) {
      require<parse_error>(x.is_number_integer() && !(x.is_number_unsigned() && x.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())), where,
                           key, "must be an integer below 2^63");
      return x.get<std::int64_t>();
    };
    auto get_i = [&](const json& o, const char* sect, const char* k, std::int64_t& dst, bool required) {
      if (!o.contains(k)) {
        require<parse_error>(!required, where, std::string(sect) + "." + k, "is missing");
        return;
      }
      const json& x = o.at(k);
      if (x.is_array() && !x.empty() && x[0].is_number_integer()) {  // HF image_size/patch_size: [h, w]
        require<parse_error>(x.size() == 2 && x[1] == x[0], where, std::string(sect) + "." + k, "must be square ([n, n]) here");
        dst = as_i64(x[0], std::string(sect) + "." + k);
        return;
      }
      require<parse_error>(x.is_number_integer(), where, std::string(sect) + "." + k, "must be an integer");
      dst = as_i64(x, std::string(sect) + "." + k);
    };
    auto get_d = [&](const json& o, const char* sect, const char* k, double& dst) {
      if (!o.contains(k) || o.at(k).is_null()) return;
      require<parse_error>(o.at(k).is_number(), where, std::string(sect) + "." + k, "must be a number");
      dst = o.at(k).get<double>();
    };
    auto get_s = [&](const json& o, const char* k) { return o.contains(k) && o.at(k).is_string() ? o.at(k).get<std::string>() : std::string(); };

    get_i(v, "vision_config", "hidden_size", c.vision.hidden_size, true);
    get_i(v, "vision_config", "num_hidden_layers", c.vision.num_layers, true);
    get_i(v, "vision_config", "num_attention_heads", c.vision.num_heads, true);
    get_i(v, "vision_config", "intermediate_size", c.vision.intermediate_size, true);
    get_i(v, "vision_config", "image_size", c.vision.image_size, true);
    get_i(v, "vision_config", "patch_size", c.vision.patch_size, true);
    get_d(v, "vision_config", "layer_norm_eps", c.vision.layer_norm_eps);
    const char* bias_key = c.hf_format ? "attention_bias" : "qkv_bias";
    if (v.contains(bias_key)) {
      require<parse_error>(v.at(bias_key).is_boolean(), where, std::string("vision_config.") + bias_key, "must be true or false");
      c.vision.qkv_bias = v.at(bias_key).get<bool>();
    } else c.vision.qkv_bias = !c.hf_format; // HF default false, InternViT default true
    const char* qkn = c.hf_format ? "use_qk_norm" : "qk_normalization";
    require(!(v.contains(qkn) && v.at(qkn).is_boolean() && v.at(qkn).get<bool>()), where, std::string("vision_config.") + qkn,
            "must be false (InternViT-6B's q/k RMSNorm is not implemented; InternVL3.5 1B-8B use InternViT-300M)");
    const std::string nt = get_s(v, "norm_type");
    require(nt.empty() || nt == "layer_norm", where, "vision_config.norm_type", "must be layer_norm (got '" + nt + "')");
    const std::string act = get_s(v, "hidden_act");
    require(act.empty() || act == "gelu", where, "vision_config.hidden_act", "must be gelu (exact erf) (got '" + act + "')");

    get_i(t, tkey, "hidden_size", c.text.hidden_size, true);
    get_i(t, tkey, "num_hidden_layers", c.text.num_layers, true);
    get_i(t, tkey, "num_attention_heads", c.text.num_heads, true);
    c.text.num_kv_heads = c.text.num_heads;
    get_i(t, tkey, "num_key_value_heads", c.text.num_kv_heads, false);
    // Without head_dim: hidden / heads here (num_heads > 0 is checked by validate); load_internvl
    // takes it from the checkpoint's q_norm instead, as a dimension the tensors determine.
    c.text.head_dim = c.text.num_heads > 0 ? c.text.hidden_size / c.text.num_heads : 0;
    c.text.head_dim_from_config = t.contains("head_dim") && !t.at("head_dim").is_null();
    if (c.text.head_dim_from_config) get_i(t, tkey, "head_dim", c.text.head_dim, true);
    get_i(t, tkey, "intermediate_size", c.text.intermediate_size, true);
    get_i(t, tkey, "vocab_size", c.text.vocab_size, true);
    get_d(t, tkey, "rms_norm_eps", c.text.rms_norm_eps);
    get_d(t, tkey, "rope_theta", c.text.rope_theta);
    if (t.contains("rope_parameters") && t.at("rope_parameters").is_object())
      get_d(t.at("rope_parameters"), tkey, "rope_theta", c.text.rope_theta);
    const std::string tact = get_s(t, "hidden_act");
    require(tact.empty() || tact == "silu", where, std::string(tkey) + ".hidden_act", "must be silu (got '" + tact + "')");
    require(!(t.contains("attention_bias") && t.at("attention_bias").is_boolean() && t.at("attention_bias").get<bool>()), where,
            std::string(tkey) + ".attention_bias", "must be false (Qwen3)");
    c.text.tie_from_config = false;
    for (const json* o : {&t, &j})
      if (o->contains("tie_word_embeddings") && o->at("tie_word_embeddings").is_boolean()) {
        c.text.tie_word_embeddings = o->at("tie_word_embeddings").get<bool>();
        c.text.tie_from_config = true;
      }
    get_d(j, "config", "downsample_ratio", c.downsample_ratio);
    for (const char* k : {"image_token_id", "img_context_token_id", "image_token_index"})
      if (j.contains(k) && j.at(k).is_number_integer()) c.image_token_id = as_i64(j.at(k), k);
    if (j.contains("ps_version")) require(get_s(j, "ps_version") == "v2", where, "ps_version", "must be v2");
    for (const char* k : {"select_layer", "vision_feature_layer"})
      if (j.contains(k) && j.at(k).is_number_integer())
        require(!j.at(k).is_number_unsigned() && j.at(k).get<std::int64_t>() == -1, where, k, "must be -1 (last ViT layer)");
    if (j.contains("force_image_size") && j.at("force_image_size").is_number_integer())
      c.vision.image_size = as_i64(j.at("force_image_size"), "force_image_size");
    c.validate(where);
    return c;
  }

  static internvl_config from_file(const std::filesystem::path& p) {
    std::ifstream in(p);
    require(static_cast<bool>(in), "internvl_config::from_file", "path", "must be a readable file ('" + p.string() + "')");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw parse_error("internvl_config::from_file: '" + p.string() + "' is not valid JSON: " + e.what());
    }
    return from_json(j, p.string());
  }
};

} // namespace msrl::trainer
