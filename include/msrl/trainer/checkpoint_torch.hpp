#pragma once
/// \file Loading and saving InternVL weights in both naming schemes (component msrl::torch).
///
///   auto m = msrl::trainer::load_internvl("InternVL3_5-1B-HF");          // config.json + weights
///   msrl::trainer::save_internvl(m, "out", {.format = weight_format::hf, .dtype = at::kBFloat16});
///
/// The model's own parameter names are the original (GitHub) ones. Accepted sources, tried per
/// tensor in this order: original names; transformers names (model.vision_tower.*,
/// model.multi_modal_projector.*, model.language_model.*, lm_head.weight) with the ViT's q/k/v
/// concatenated into the fused qkv; and the legacy transformers layout (no leading "model.",
/// language_model.model.*, language_model.lm_head.weight), which is also what transformers 5
/// writes with save_pretrained. lm_head: used if stored, else tied to embed_tokens.
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "../core/atomic_file.hpp"
#include "../core/error.hpp"
#include "internvl_torch.hpp"
#include "safetensors_torch.hpp"

namespace msrl::trainer {

enum class weight_format { original, hf };

namespace detail {

inline bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
inline bool ends_with(const std::string& s, const std::string& p) { return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0; }
inline std::string replace_once(std::string s, const std::string& from, const std::string& to) {
  const auto i = s.find(from);
  if (i != std::string::npos) s.replace(i, from.size(), to);
  return s;
}

/// transformers (current layout) name(s) of one original parameter; three names for the fused qkv.
inline std::vector<std::string> hf_names(const std::string& n) {
  if (starts_with(n, "language_model.model.")) return {"model.language_model." + n.substr(21)};
  if (n == "language_model.lm_head.weight") return {"lm_head.weight"};
  if (starts_with(n, "mlp1.")) {
    std::string r = "model.multi_modal_projector.";
    const std::string rest = n.substr(5); // "0.weight"
    const std::string idx = rest.substr(0, rest.find('.')), leaf = rest.substr(rest.find('.'));
    r += idx == "0" ? "layer_norm" : idx == "1" ? "linear_1" : "linear_2";
    return {r + leaf};
  }
  std::string s = replace_once(n, "vision_model.", "model.vision_tower.");
  s = replace_once(s, "embeddings.class_embedding", "embeddings.cls_token");
  s = replace_once(s, "embeddings.position_embedding", "embeddings.position_embeddings");
  s = replace_once(s, "embeddings.patch_embedding.", "embeddings.patch_embeddings.projection.");
  s = replace_once(s, "encoder.layers.", "encoder.layer.");
  s = replace_once(s, ".attn.proj.", ".attention.projection_layer.");
  s = replace_once(s, ".norm1.", ".layernorm_before.");
  s = replace_once(s, ".norm2.", ".layernorm_after.");
  if (ends_with(s, ".ls1")) s = s.substr(0, s.size() - 3) + "lambda_1";
  if (ends_with(s, ".ls2")) s = s.substr(0, s.size() - 3) + "lambda_2";
  if (s.find(".attn.qkv.") != std::string::npos) {
    std::vector<std::string> r;
    for (const char* p : {"q_proj", "k_proj", "v_proj"}) r.push_back(replace_once(s, "attn.qkv", std::string("attention.") + p));
    return r;
  }
  return {s};
}

/// The legacy transformers layout of a current-layout name.
inline std::string hf_legacy(const std::string& n) {
  if (starts_with(n, "model.language_model.")) return "language_model.model." + n.substr(21);
  if (n == "lm_head.weight") return "language_model.lm_head.weight";
  if (starts_with(n, "model.")) return n.substr(6);
  return n;
}

inline bool ignorable(const std::string& n) { return ends_with(n, "rotary_emb.inv_freq"); }

inline bool has_any(const checkpoint& ck, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (ck.contains(n)) return true;
  return false;
}

} // namespace detail

struct load_options {
  bool allow_unused = false; ///< tolerate checkpoint tensors the model does not use
};

/// Copies every parameter of `model` from `ck` (cast to the parameter's dtype and device).
/// Missing tensors, shape mismatches and (unless allowed) unused tensors throw, naming the file.
inline void load_weights(internvl& model, const checkpoint& ck, const load_options& opt = {}) {
  at::NoGradGuard ng;
  std::set<std::string> used;
  for (auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    at::Tensor& p = item.value();
    std::vector<std::vector<std::string>> groups{{name}};
    const auto hf = detail::hf_names(name);
    groups.push_back(hf);
    std::vector<std::string> legacy;
    for (const auto& h : hf) legacy.push_back(detail::hf_legacy(h));
    groups.push_back(legacy);
    const std::vector<std::string>* src = nullptr;
    for (const auto& g : groups) {
      bool all = true;
      for (const auto& n : g) all = all && ck.contains(n);
      if (all) {
        src = &g;
        break;
      }
    }
    if (!src)
      throw invalid_argument("load_weights: checkpoint '" + ck.describe() + "' is missing tensor '" + name + "' (also looked for '" + hf[0] +
                             "' and '" + legacy[0] + "')");
    at::Tensor t;
    if (src->size() == 1) {
      t = ck.load((*src)[0]);
    } else {
      std::vector<at::Tensor> parts;
      for (const auto& n : *src) parts.push_back(ck.load(n));
      t = at::cat(parts, 0);
    }
    if (t.sizes() != p.sizes()) {
      std::ostringstream os;
      os << "load_weights: tensor '" << (*src)[0] << "' in '" << ck.file_name((*src)[0]) << "' has shape " << t.sizes() << " but the config gives "
         << p.sizes() << " for '" << name << "'";
      throw shape_error(os.str());
    }
    p.copy_(t);
    for (const auto& n : *src) used.insert(n);
  }
  if (!opt.allow_unused)
    for (const auto& n : ck.names())
      if (!used.count(n) && !detail::ignorable(n))
        throw invalid_argument("load_weights: checkpoint '" + ck.describe() + "' holds tensor '" + n + "' that the model has no place for (wrong config?)");
}

/// (name, tensor) pairs of the model in the chosen naming scheme; qkv split for the HF scheme.
inline std::vector<std::pair<std::string, at::Tensor>> named_weights(internvl& model, weight_format f, std::optional<at::ScalarType> dtype = {}) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : model->named_parameters()) {
    at::Tensor t = item.value().detach();
    if (dtype) t = t.to(*dtype);
    if (f == weight_format::original) {
      out.emplace_back(item.key(), t);
      continue;
    }
    const auto names = detail::hf_names(item.key());
    if (names.size() == 1) {
      out.emplace_back(names[0], t);
    } else {
      auto parts = t.chunk(3, 0);
      for (std::size_t i = 0; i < 3; ++i) out.emplace_back(names[i], parts[i].contiguous());
    }
  }
  return out;
}

/// config.json text for the chosen flavour (the keys this library reads).
inline nlohmann::json config_json(const internvl_config& c, weight_format f) {
  nlohmann::json v = {{"hidden_size", c.vision.hidden_size}, {"num_hidden_layers", c.vision.num_layers},
                      {"num_attention_heads", c.vision.num_heads}, {"intermediate_size", c.vision.intermediate_size},
                      {"image_size", c.vision.image_size}, {"patch_size", c.vision.patch_size},
                      {"layer_norm_eps", c.vision.layer_norm_eps}, {"hidden_act", "gelu"}, {"norm_type", "layer_norm"}};
  nlohmann::json t = {{"hidden_size", c.text.hidden_size}, {"num_hidden_layers", c.text.num_layers},
                      {"num_attention_heads", c.text.num_heads}, {"num_key_value_heads", c.text.num_kv_heads},
                      {"head_dim", c.text.head_dim}, {"intermediate_size", c.text.intermediate_size},
                      {"vocab_size", c.text.vocab_size}, {"rms_norm_eps", c.text.rms_norm_eps}, {"rope_theta", c.text.rope_theta},
                      {"hidden_act", "silu"}, {"attention_bias", false}, {"tie_word_embeddings", c.text.tie_word_embeddings}};
  nlohmann::json j = {{"downsample_ratio", c.downsample_ratio}, {"tie_word_embeddings", c.text.tie_word_embeddings}};
  if (c.image_token_id >= 0) j["image_token_id"] = c.image_token_id;
  if (f == weight_format::hf) {
    j["model_type"] = "internvl";
    j["architectures"] = {"InternVLForConditionalGeneration"};
    v["model_type"] = "internvl_vision";
    v["attention_bias"] = c.vision.qkv_bias;
    v["use_qk_norm"] = false;
    t["model_type"] = "qwen3";
    t["architectures"] = {"Qwen3ForCausalLM"};
    j["vision_config"] = v;
    j["text_config"] = t;
    j["vision_feature_layer"] = -1;
    j["vision_feature_select_strategy"] = "default";
    j["projector_hidden_act"] = "gelu";
    j["image_seq_length"] = c.tokens_per_tile();
  } else {
    j["model_type"] = "internvl_chat";
    j["architectures"] = {"InternVLChatModel"};
    v["qkv_bias"] = c.vision.qkv_bias;
    v["qk_normalization"] = false;
    t["architectures"] = {"Qwen3ForCausalLM"};
    j["vision_config"] = v;
    j["llm_config"] = t;
    j["ps_version"] = "v2";
    j["select_layer"] = -1;
    j["force_image_size"] = c.vision.image_size;
    j["template"] = "internvl2_5";
  }
  return j;
}

/// Reads `dir`/config.json, builds the model and loads the weights, cast to `dtype`. A checkpoint
/// that contradicts its config is refused, never guessed: an untied lm_head the config asks for
/// but no shard holds, a head_dim neither the config nor the q_norm tensors give. A config that
/// leaves tie_word_embeddings out is tied exactly when the checkpoint has no lm_head; one without
/// head_dim takes it from layer 0's q_norm.
inline internvl load_internvl(const std::filesystem::path& dir, at::ScalarType dtype = at::kFloat, const load_options& opt = {}) {
  constexpr const char* where = "load_internvl";
  auto cfg = internvl_config::from_file(dir / "config.json");
  checkpoint ck(dir);
  const bool has_head = detail::has_any(ck, {"language_model.lm_head.weight", "lm_head.weight"});
  if (cfg.text.tie_from_config && !cfg.text.tie_word_embeddings)
    require(has_head, where, "language_model.lm_head.weight",
            "is missing from '" + ck.describe() + "', but config.json says tie_word_embeddings: false (an untied head)");
  cfg.text.tie_word_embeddings = !has_head;
  if (!cfg.text.head_dim_from_config) {
    std::int64_t hd = 0;
    for (const char* n : {"language_model.model.layers.0.self_attn.q_norm.weight", "model.language_model.layers.0.self_attn.q_norm.weight"})
      if (ck.contains(n) && ck.entry(n).shape.size() == 1) hd = ck.entry(n).shape[0];
    require(hd > 0, where, "text_config.head_dim",
            "is missing from config.json and no layers.0.self_attn.q_norm.weight in '" + ck.describe() + "' gives it");
    cfg.text.head_dim = hd;
    cfg.validate(where + std::string("(") + (dir / "config.json").string() + ")");
  }
  require(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf || dtype == at::kDouble, "load_internvl", "dtype",
          "must be a floating type (float32, bfloat16, float16, float64)");
  // Build the modules directly in `dtype` (no transient fp32 copy: an 8B model needs 16 GB in
  // bf16, not 32 + 16), restoring the process default dtype afterwards, also on error.
  struct default_dtype_guard {
    caffe2::TypeMeta saved = c10::get_default_dtype();
    explicit default_dtype_guard(at::ScalarType t) { c10::set_default_dtype(c10::scalarTypeToTypeMeta(t)); }
    ~default_dtype_guard() { c10::set_default_dtype(saved); }
  };
  internvl m{nullptr};
  {
    default_dtype_guard g(dtype);
    m = internvl(cfg);
  }
  m->to(dtype);
  load_weights(m, ck, opt);
  return m;
}

struct save_model_options {
  weight_format format = weight_format::hf;
  std::optional<at::ScalarType> dtype; ///< cast on save (bf16 / fp16 / fp32); default: as held
  std::uint64_t max_shard_bytes = 0;   ///< 0: single model.safetensors
};

/// Writes config.json and the weights (sharded with an index if max_shard_bytes > 0), each file
/// atomically (msrl/core/atomic_file.hpp). A folder that cannot be written: msrl::invalid_argument.
inline void save_internvl(internvl& model, const std::filesystem::path& dir, const save_model_options& opt = {}) {
  std::filesystem::create_directories(dir);
  try {
    write_file_atomic(dir / "config.json", config_json(model->cfg, opt.format).dump(2) + "\n");
  } catch (const io_error& e) {
    throw invalid_argument(std::string("save_internvl: argument 'dir' must name a writable folder: ") + e.what());
  }
  save_checkpoint(dir, named_weights(model, opt.format, opt.dtype), {.max_shard_bytes = opt.max_shard_bytes});
}

} // namespace msrl::trainer
