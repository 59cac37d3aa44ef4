#pragma once
/// \file An InternVL3.5-architecture model in libtorch (component msrl::torch): InternViT vision
/// tower, pixel shuffle (v2, ratio 0.5), MLP projector, Qwen3 decoder, image features spliced in
/// at the image-context token. Sizes come from config.json (either checkpoint flavour), from a
/// tiny test twin to 8B. Weights load from and save to both naming schemes (checkpoint_torch.hpp).
///
///   auto cfg = msrl::trainer::internvl_config::from_file("ckpt/config.json");
///   msrl::trainer::internvl model(cfg);
///   at::Tensor logits = model->forward(input_ids, pixel_values);   // [B, T, vocab]
///
/// Parameter names are the original (GitHub) InternVL names: named_parameters() yields
/// vision_model.*, mlp1.*, language_model.model.*, language_model.lm_head.weight.
/// Semantics follow transformers' modeling_internvl.py / modeling_qwen3.py (eager attention);
/// the test fixture pins the logits of transformers itself (test/trainer/fixtures).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "../core/error.hpp"
#include "internvl_config.hpp"

namespace msrl::trainer {

// ---------------------------------------------------------------------------------------------
// Vision tower (InternViT-300M; original names).

struct vit_attention_impl : torch::nn::Module {
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  std::int64_t heads, head_dim;
  explicit vit_attention_impl(const vision_config& c) : heads(c.num_heads), head_dim(c.hidden_size / c.num_heads) {
    qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(c.hidden_size, 3 * c.hidden_size).bias(c.qkv_bias)));
    proj = register_module("proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
  }
  at::Tensor forward(const at::Tensor& x) {
    const auto B = x.size(0), T = x.size(1), C = x.size(2);
    auto q_k_v = qkv->forward(x).view({B, T, 3, heads, head_dim}).permute({2, 0, 3, 1, 4}); // [3,B,h,T,d]
    auto q = q_k_v[0], k = q_k_v[1], v = q_k_v[2];
    auto att = at::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(head_dim)));
    att = at::softmax(att, -1, at::kFloat).to(q.scalar_type());
    auto o = at::matmul(att, v).transpose(1, 2).reshape({B, T, C});
    return proj->forward(o);
  }
};
TORCH_MODULE_IMPL(vit_attention, vit_attention_impl);

/// LayerNorm computed in its weights' dtype and returned in the input's: under autocast the
/// activations arrive in bf16 while the weights stay fp32 (libtorch's CPU layer_norm needs both
/// in one dtype).
inline at::Tensor layer_norm_as_weights(torch::nn::LayerNorm& ln, const at::Tensor& x) {
  const auto w = ln->weight.scalar_type();
  return x.scalar_type() == w ? ln->forward(x) : ln->forward(x.to(w)).to(x.scalar_type());
}

struct vit_mlp_impl : torch::nn::Module {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  explicit vit_mlp_impl(const vision_config& c) {
    fc1 = register_module("fc1", torch::nn::Linear(c.hidden_size, c.intermediate_size));
    fc2 = register_module("fc2", torch::nn::Linear(c.intermediate_size, c.hidden_size));
  }
  at::Tensor forward(const at::Tensor& x) { return fc2->forward(at::gelu(fc1->forward(x))); }
};
TORCH_MODULE_IMPL(vit_mlp, vit_mlp_impl);

struct vit_layer_impl : torch::nn::Module {
  vit_attention attn{nullptr};
  vit_mlp mlp{nullptr};
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  at::Tensor ls1, ls2;
  explicit vit_layer_impl(const vision_config& c) {
    attn = register_module("attn", vit_attention(c));
    mlp = register_module("mlp", vit_mlp(c));
    norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
    norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
    ls1 = register_parameter("ls1", at::full({c.hidden_size}, 0.1));
    ls2 = register_parameter("ls2", at::full({c.hidden_size}, 0.1));
  }
  at::Tensor forward(at::Tensor h) {
    h = h + attn->forward(layer_norm_as_weights(norm1, h)) * ls1;
    return h + mlp->forward(layer_norm_as_weights(norm2, h)) * ls2;
  }
};
TORCH_MODULE_IMPL(vit_layer, vit_layer_impl);

struct vit_embeddings_impl : torch::nn::Module {
  at::Tensor class_embedding, position_embedding;
  torch::nn::Conv2d patch_embedding{nullptr};
  std::int64_t image_size, patch_size;
  explicit vit_embeddings_impl(const vision_config& c) : image_size(c.image_size), patch_size(c.patch_size) {
    const auto g = c.image_size / c.patch_size;
    class_embedding = register_parameter("class_embedding", at::randn({1, 1, c.hidden_size}) * 0.02);
    position_embedding = register_parameter("position_embedding", at::randn({1, g * g + 1, c.hidden_size}) * 0.02);
    patch_embedding = register_module("patch_embedding",
                                      torch::nn::Conv2d(torch::nn::Conv2dOptions(3, c.hidden_size, c.patch_size).stride(c.patch_size)));
  }
  at::Tensor forward(const at::Tensor& pixels) {
    auto x = patch_embedding->forward(pixels.to(patch_embedding->weight.scalar_type())); // [N,C,g,g]
    x = x.flatten(2).transpose(1, 2);                                                   // [N,g*g,C] row-major
    auto cls = class_embedding.expand({x.size(0), 1, x.size(2)}).to(x.scalar_type());
    return at::cat({cls, x}, 1) + position_embedding.to(x.scalar_type());
  }
};
TORCH_MODULE_IMPL(vit_embeddings, vit_embeddings_impl);

struct vit_encoder_impl : torch::nn::Module {
  torch::nn::ModuleList layers;
  explicit vit_encoder_impl(const vision_config& c) {
    layers = register_module("layers", torch::nn::ModuleList());
    for (std::int64_t i = 0; i < c.num_layers; ++i) layers->push_back(vit_layer(c));
  }
};
TORCH_MODULE_IMPL(vit_encoder, vit_encoder_impl);

struct vision_model_impl : torch::nn::Module {
  vit_embeddings embeddings{nullptr};
  vit_encoder encoder{nullptr};
  explicit vision_model_impl(const vision_config& c) {
    embeddings = register_module("embeddings", vit_embeddings(c));
    encoder = register_module("encoder", vit_encoder(c));
  }
  /// [N,3,S,S] -> last hidden state [N, 1 + g*g, C] (no final norm).
  at::Tensor forward(const at::Tensor& pixels) {
    auto h = embeddings->forward(pixels);
    for (const auto& m : *encoder->layers) h = m->as<vit_layer_impl>()->forward(h);
    return h;
  }
};
TORCH_MODULE_IMPL(vision_model, vision_model_impl);

/// Pixel shuffle v2, ratio 0.5: [N, g*g, C] (row-major grid) -> [N, (g/2)^2, 4C]; output token
/// (i,j) concatenates x[2i,2j], x[2i,2j+1], x[2i+1,2j], x[2i+1,2j+1].
inline at::Tensor pixel_shuffle_v2(const at::Tensor& x) {
  const auto N = x.size(0), C = x.size(2);
  const auto g = static_cast<std::int64_t>(std::llround(std::sqrt(static_cast<double>(x.size(1)))));
  require<shape_error>(g * g == x.size(1) && g % 2 == 0, "pixel_shuffle_v2", "x", "must hold a square, even patch grid");
  return x.reshape({N, g / 2, 2, g / 2, 2, C}).permute({0, 1, 3, 2, 4, 5}).reshape({N, (g / 2) * (g / 2), 4 * C});
}

/// mlp1: LayerNorm(4C, eps 1e-5) -> Linear -> GELU(erf) -> Linear. Registered as "0", "1", "3"
/// like the nn.Sequential of the original code.
struct projector_impl : torch::nn::Module {
  torch::nn::LayerNorm ln{nullptr};
  torch::nn::Linear l1{nullptr}, l2{nullptr};
  projector_impl(std::int64_t in, std::int64_t out, double eps) {
    ln = register_module("0", torch::nn::LayerNorm(torch::nn::LayerNormOptions({in}).eps(eps)));
    l1 = register_module("1", torch::nn::Linear(in, out));
    l2 = register_module("3", torch::nn::Linear(out, out));
  }
  at::Tensor forward(const at::Tensor& x) { return l2->forward(at::gelu(l1->forward(layer_norm_as_weights(ln, x)))); }
};
TORCH_MODULE_IMPL(projector, projector_impl);

// ---------------------------------------------------------------------------------------------
// Qwen3 decoder (names as in transformers' Qwen3ForCausalLM, under language_model.).

/// RMSNorm as Qwen3: normalise in fp32, cast back, then multiply by the weight.
struct rms_norm_impl : torch::nn::Module {
  at::Tensor weight;
  double eps;
  rms_norm_impl(std::int64_t n, double e) : eps(e) { weight = register_parameter("weight", at::ones({n})); }
  at::Tensor forward(const at::Tensor& x) {
    auto xf = x.to(at::kFloat);
    xf = xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps);
    return weight * xf.to(x.scalar_type());
  }
};
TORCH_MODULE_IMPL(rms_norm, rms_norm_impl);

/// Per-layer key/value cache for incremental decoding. k/v: [B, n_kv, T_past, head_dim].
///
/// After share_prefix() the keys and values so far (one prompt, B = 1) are the rows' shared
/// prefix, held once (prefix_k / prefix_v [1, n_kv, P, head_dim]), and k/v grow with each row's
/// own tokens after it: attention reads the prefix once for all the rows of a step (one matrix
/// product per key-value head) instead of once per row, and no step copies it.
/// share_prefixes() does the same for several prompts at once, N prompts of B / N consecutive
/// rows each: prefix_k / prefix_v [N, n_kv, P_max, head_dim] right-padded to the longest prompt,
/// `prefix_pad` [N, P_max] true at the padding (attention gives it weight 0) and `positions` [B]
/// int64 each row's next position (its prompt's length plus its own tokens so far).
struct kv_cache {
  std::vector<at::Tensor> k, v, prefix_k, prefix_v;
  at::Tensor prefix_pad, positions;
  std::int64_t prefix_length() const { return prefix_k.empty() ? 0 : prefix_k[0].size(2); }
  std::int64_t own_length() const { return k.empty() || !k[0].defined() ? 0 : k[0].size(2); }
  /// Positions cached per row: the shared prefix and the row's own tokens (with several prompts'
  /// prefixes: the longest prefix; `positions` has each row's own count).
  std::int64_t length() const { return prefix_length() + own_length(); }
  /// Prompts whose prefixes the cache holds (0: none).
  std::int64_t prompts() const { return prefix_k.empty() ? 0 : prefix_k[0].size(0); }
  /// Makes the cached keys and values of one prompt (B = 1) the shared prefix of every row that
  /// continues it (any number of rows).
  void share_prefix() {
    require<shape_error>(!k.empty() && prefix_k.empty() && k[0].defined() && k[0].size(0) == 1, "msrl::trainer::kv_cache::share_prefix", "k",
                         "must hold one row's keys and no shared prefix yet");
    prefix_k = std::exchange(k, std::vector<at::Tensor>(k.size()));
    prefix_v = std::exchange(v, std::vector<at::Tensor>(v.size()));
  }
};

namespace detail {
/// Prompt i of a cache's shared prefixes (padded to the longest, P) has lengths[i] positions:
/// `prefix_pad` [N, P] marks the rest, `positions` [N] is where its rows go on.
inline void set_prefix_lengths(kv_cache& c, const std::vector<std::int64_t>& lengths) {
  const auto dev = c.prefix_k[0].device();
  const auto len = at::tensor(lengths, at::kLong);
  c.prefix_pad = (at::arange(c.prefix_length(), at::TensorOptions().dtype(at::kLong)).unsqueeze(0) >= len.unsqueeze(1)).to(dev);
  c.positions = len.to(dev); // per prompt; hidden() repeats it over each prompt's rows
}
} // namespace detail

/// One cache whose prefixes are the prompts' caches (each one prompt's keys and values, B = 1,
/// the same layers): prompt i's rows are the rows [i R, (i + 1) R) of every later step, for any R.
/// One prompt gives share_prefix()'s cache.
inline kv_cache share_prefixes(std::vector<kv_cache> prompts) {
  constexpr const char* where = "msrl::trainer::share_prefixes";
  require<shape_error>(!prompts.empty(), where, "prompts", "must hold at least one prompt's cache");
  for (auto& c : prompts)
    require<shape_error>(!c.k.empty() && c.prefix_k.empty() && c.k[0].defined() && c.k[0].size(0) == 1 && c.k.size() == prompts[0].k.size(), where,
                         "prompts", "must each hold one row's keys for the same layers and no shared prefix yet");
  if (prompts.size() == 1) {
    prompts[0].share_prefix();
    return std::move(prompts[0]);
  }
  const auto N = static_cast<std::int64_t>(prompts.size()), layers = static_cast<std::int64_t>(prompts[0].k.size());
  std::vector<std::int64_t> len;
  for (const auto& c : prompts) len.push_back(c.length());
  const auto P = *std::max_element(len.begin(), len.end());
  kv_cache out;
  out.k.resize(static_cast<std::size_t>(layers));
  out.v.resize(static_cast<std::size_t>(layers));
  for (auto [dst, src] : {std::pair{&out.prefix_k, &kv_cache::k}, std::pair{&out.prefix_v, &kv_cache::v}})
    for (std::int64_t l = 0; l < layers; ++l) {
      const auto& t0 = (prompts[0].*src)[static_cast<std::size_t>(l)];
      auto all = at::zeros({N, t0.size(1), P, t0.size(3)}, t0.options());
      for (std::int64_t i = 0; i < N; ++i)
        all.narrow(0, i, 1).narrow(2, 0, len[static_cast<std::size_t>(i)]).copy_((prompts[static_cast<std::size_t>(i)].*src)[static_cast<std::size_t>(l)]);
      dst->push_back(all);
    }
  detail::set_prefix_lengths(out, len);
  return out;
}

/// The cache of N prompts run as one right-padded batch (k / v [N, n_kv, P, head_dim]; prompt i's
/// own length lengths[i] in [1, P], the positions after it padding) made the shared prefixes of
/// the rows that continue them, as share_prefixes() makes them from one cache per prompt. Causal
/// attention leaves a prompt's own positions as they are alone whatever padding follows them, so
/// one forward pass over the padded batch gives every prompt's keys and values. One prompt
/// without padding gives share_prefix()'s cache.
inline void share_padded_prefixes(kv_cache& c, const std::vector<std::int64_t>& lengths) {
  constexpr const char* where = "msrl::trainer::share_padded_prefixes";
  require<shape_error>(!c.k.empty() && c.prefix_k.empty() && c.k[0].defined() && c.k[0].size(0) == static_cast<std::int64_t>(lengths.size()), where,
                       "c", "must hold one row's keys per prompt and no shared prefix yet");
  const auto P = c.k[0].size(2);
  for (const auto n : lengths) require<shape_error>(n >= 1 && n <= P, where, "lengths", "must each lie in [1, " + std::to_string(P) + "]");
  c.prefix_k = std::exchange(c.k, std::vector<at::Tensor>(c.k.size()));
  c.prefix_v = std::exchange(c.v, std::vector<at::Tensor>(c.v.size()));
  if (lengths.size() > 1 || lengths[0] != P) detail::set_prefix_lengths(c, lengths);
}

/// split-half RoPE tables for per-row positions: positions [B] int64 (each row's first
/// position), T positions from there. cos, sin [B, 1, T, head_dim] in fp32 (broadcast over the
/// heads).
inline std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& positions, std::int64_t T, std::int64_t head_dim, double theta) {
  const auto B = positions.size(0);
  auto opt = at::TensorOptions().dtype(at::kFloat).device(positions.device());
  auto inv = 1.0 / at::pow(theta, at::arange(0, head_dim, 2, opt.dtype(at::kLong)).to(at::kFloat) / static_cast<double>(head_dim));
  auto pos = (positions.unsqueeze(1) + at::arange(T, opt.dtype(at::kLong)).unsqueeze(0)).reshape({-1}).to(at::kFloat);
  auto freqs = at::outer(pos, inv);
  auto emb = at::cat({freqs, freqs}, -1).view({B, 1, T, head_dim});
  return {emb.cos(), emb.sin()};
}

/// The tables for positions [offset, offset+T) shared by every row: cos, sin [T, head_dim].
inline std::pair<at::Tensor, at::Tensor> rope_tables(std::int64_t offset, std::int64_t T, std::int64_t head_dim, double theta, c10::Device dev) {
  auto [cos, sin] = rope_tables(at::full({1}, offset, at::TensorOptions().dtype(at::kLong).device(dev)), T, head_dim, theta);
  return {cos.view({T, head_dim}), sin.view({T, head_dim})};
}

inline at::Tensor rotate_half(const at::Tensor& x) {
  const auto h = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

struct qwen3_attention_impl : torch::nn::Module {
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  rms_norm q_norm{nullptr}, k_norm{nullptr};
  std::int64_t heads, kv_heads, head_dim;
  explicit qwen3_attention_impl(const text_config& c) : heads(c.num_heads), kv_heads(c.num_kv_heads), head_dim(c.head_dim) {
    auto lin = [](std::int64_t i, std::int64_t o) { return torch::nn::Linear(torch::nn::LinearOptions(i, o).bias(false)); };
    q_proj = register_module("q_proj", lin(c.hidden_size, heads * head_dim));
    k_proj = register_module("k_proj", lin(c.hidden_size, kv_heads * head_dim));
    v_proj = register_module("v_proj", lin(c.hidden_size, kv_heads * head_dim));
    o_proj = register_module("o_proj", lin(heads * head_dim, c.hidden_size));
    q_norm = register_module("q_norm", rms_norm(head_dim, c.rms_norm_eps));
    k_norm = register_module("k_norm", rms_norm(head_dim, c.rms_norm_eps));
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, kv_cache* cache, std::size_t layer) {
    const auto B = x.size(0), T = x.size(1);
    auto q = q_norm->forward(q_proj->forward(x).view({B, T, heads, head_dim})).transpose(1, 2);
    auto k = k_norm->forward(k_proj->forward(x).view({B, T, kv_heads, head_dim})).transpose(1, 2);
    auto v = v_proj->forward(x).view({B, T, kv_heads, head_dim}).transpose(1, 2);
    const auto c = cos.to(q.scalar_type()), s = sin.to(q.scalar_type());
    q = q * c + rotate_half(q) * s;
    k = k * c + rotate_half(k) * s;
    std::int64_t past = 0;
    if (cache) {
      if (cache->k.size() <= layer) {
        cache->k.resize(layer + 1);
        cache->v.resize(layer + 1);
      }
      if (cache->k[layer].defined()) {
        past = cache->k[layer].size(2);
        k = at::cat({cache->k[layer], k}, 2);
        v = at::cat({cache->v[layer], v}, 2);
      }
      cache->k[layer] = k;
      cache->v[layer] = v;
    }
    const auto S = k.size(2), rep = heads / kv_heads;
    if (rep > 1) {
      k = k.unsqueeze(2).expand({B, kv_heads, rep, S, head_dim}).reshape({B, heads, S, head_dim});
      v = v.unsqueeze(2).expand({B, kv_heads, rep, S, head_dim}).reshape({B, heads, S, head_dim});
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    auto att = at::matmul(q, k.transpose(-2, -1)) * scale;
    if (T > 1) { // causal: query i (absolute past+i) sees keys j <= past+i
      auto qi = at::arange(past, past + T, at::TensorOptions().dtype(at::kLong).device(x.device())).unsqueeze(1);
      auto kj = at::arange(0, S, at::TensorOptions().dtype(at::kLong).device(x.device())).unsqueeze(0);
      att = att.masked_fill(kj > qi, -std::numeric_limits<float>::infinity());
    }
    const bool prefixed = cache && layer < cache->prefix_k.size();
    const auto P = prefixed ? cache->prefix_k[layer].size(2) : 0, N = prefixed ? cache->prefix_k[layer].size(0) : 1, R = B / N;
    // the shared prefixes (every query sees all of its prompt's): the R x rep x T queries of a
    // prompt's key-value head as the rows of one matrix product against that head's P prefix keys
    const auto by_kv_head = [&](const at::Tensor& t) { // [B, heads, T, n] -> [N kv_heads, R rep T, n]
      return t.reshape({N, R, kv_heads, rep, T, t.size(-1)}).permute({0, 2, 1, 3, 4, 5}).reshape({N * kv_heads, R * rep * T, t.size(-1)});
    };
    const auto by_row = [&](const at::Tensor& t) { // the inverse
      return t.view({N, kv_heads, R, rep, T, t.size(-1)}).permute({0, 2, 1, 3, 4, 5}).reshape({B, heads, T, t.size(-1)});
    };
    if (prefixed) {
      auto sp = at::matmul(by_kv_head(q), cache->prefix_k[layer].reshape({N * kv_heads, P, head_dim}).transpose(-2, -1)) * scale;
      if (cache->prefix_pad.defined()) // shorter prompts' padding
        sp = sp.view({N, kv_heads, R * rep * T, P}).masked_fill(cache->prefix_pad.view({N, 1, 1, P}), -std::numeric_limits<float>::infinity());
      att = at::cat({by_row(sp), att}, -1);
    }
    att = at::softmax(att, -1, at::kFloat).to(q.scalar_type());
    at::Tensor o = at::matmul(att.narrow(-1, P, S), v);
    if (prefixed) o = o + by_row(at::matmul(by_kv_head(att.narrow(-1, 0, P)), cache->prefix_v[layer].reshape({N * kv_heads, P, head_dim})));
    return o_proj->forward(o.transpose(1, 2).reshape({B, T, heads * head_dim}));
  }
};
TORCH_MODULE_IMPL(qwen3_attention, qwen3_attention_impl);

struct qwen3_mlp_impl : torch::nn::Module {
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
  explicit qwen3_mlp_impl(const text_config& c) {
    auto lin = [](std::int64_t i, std::int64_t o) { return torch::nn::Linear(torch::nn::LinearOptions(i, o).bias(false)); };
    gate_proj = register_module("gate_proj", lin(c.hidden_size, c.intermediate_size));
    up_proj = register_module("up_proj", lin(c.hidden_size, c.intermediate_size));
    down_proj = register_module("down_proj", lin(c.intermediate_size, c.hidden_size));
  }
  at::Tensor forward(const at::Tensor& x) { return down_proj->forward(at::silu(gate_proj->forward(x)) * up_proj->forward(x)); }
};
TORCH_MODULE_IMPL(qwen3_mlp, qwen3_mlp_impl);

struct qwen3_layer_impl : torch::nn::Module {
  qwen3_attention self_attn{nullptr};
  qwen3_mlp mlp{nullptr};
  rms_norm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  explicit qwen3_layer_impl(const text_config& c) {
    self_attn = register_module("self_attn", qwen3_attention(c));
    mlp = register_module("mlp", qwen3_mlp(c));
    input_layernorm = register_module("input_layernorm", rms_norm(c.hidden_size, c.rms_norm_eps));
    post_attention_layernorm = register_module("post_attention_layernorm", rms_norm(c.hidden_size, c.rms_norm_eps));
  }
  at::Tensor forward(at::Tensor h, const at::Tensor& cos, const at::Tensor& sin, kv_cache* cache, std::size_t layer) {
    h = h + self_attn->forward(input_layernorm->forward(h), cos, sin, cache, layer);
    return h + mlp->forward(post_attention_layernorm->forward(h));
  }
};
TORCH_MODULE_IMPL(qwen3_layer, qwen3_layer_impl);

struct qwen3_model_impl : torch::nn::Module {
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers;
  rms_norm norm{nullptr};
  explicit qwen3_model_impl(const text_config& c) {
    embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
    layers = register_module("layers", torch::nn::ModuleList());
    for (std::int64_t i = 0; i < c.num_layers; ++i) layers->push_back(qwen3_layer(c));
    norm = register_module("norm", rms_norm(c.hidden_size, c.rms_norm_eps));
  }
};
TORCH_MODULE_IMPL(qwen3_model, qwen3_model_impl);

struct qwen3_causal_lm_impl : torch::nn::Module {
  qwen3_model model{nullptr};
  torch::nn::Linear lm_head{nullptr}; ///< null when tied to embed_tokens
  text_config cfg;
  explicit qwen3_causal_lm_impl(const text_config& c) : cfg(c) {
    model = register_module("model", qwen3_model(c));
    if (!c.tie_word_embeddings)
      lm_head = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(c.hidden_size, c.vocab_size).bias(false)));
  }
  const at::Tensor& head_weight() const { return lm_head ? lm_head->weight : model->embed_tokens->weight; }

  /// Final hidden states [B, T, H] from input embeddings; positions continue the cache.
  /// With several prompts' prefixes in the cache (share_prefixes), B must be a multiple of their
  /// count and each row continues from its own prompt's length.
  at::Tensor hidden(const at::Tensor& embeds, kv_cache* cache = nullptr) {
    const auto B = embeds.size(0), T = embeds.size(1);
    at::Tensor cos, sin;
    const bool per_row = cache && cache->positions.defined();
    if (per_row) {
      const auto N = cache->prompts();
      require<shape_error>(N >= 1 && B % N == 0, "qwen3_causal_lm::hidden", "embeds", "must hold the same number of rows for each of the cache's " +
                                                                                        std::to_string(N) + " prompts");
      if (cache->positions.size(0) == N && N != B) cache->positions = cache->positions.repeat_interleave(B / N); // per prompt -> per row, once
      require<shape_error>(cache->positions.size(0) == B, "qwen3_causal_lm::hidden", "embeds", "must keep the number of rows the cache continues");
      std::tie(cos, sin) = rope_tables(cache->positions, T, cfg.head_dim, cfg.rope_theta);
    } else {
      std::tie(cos, sin) = rope_tables(cache ? cache->length() : 0, T, cfg.head_dim, cfg.rope_theta, embeds.device());
    }
    at::Tensor h = embeds;
    std::size_t i = 0;
    for (const auto& m : *model->layers) h = m->as<qwen3_layer_impl>()->forward(h, cos, sin, cache, i++);
    if (per_row) cache->positions = cache->positions + T;
    return model->norm->forward(h);
  }
  at::Tensor logits(const at::Tensor& hidden_states) { return at::linear(hidden_states, head_weight()); }
};
TORCH_MODULE_IMPL(qwen3_causal_lm, qwen3_causal_lm_impl);

// ---------------------------------------------------------------------------------------------

struct internvl_impl : torch::nn::Module {
  internvl_config cfg;
  vision_model vision{nullptr};
  projector mlp1{nullptr};
  qwen3_causal_lm language_model{nullptr};

  explicit internvl_impl(internvl_config c) : cfg(std::move(c)) {
    cfg.validate();
    vision = register_module("vision_model", vision_model(cfg.vision));
    mlp1 = register_module("mlp1", projector(4 * cfg.vision.hidden_size, cfg.text.hidden_size, cfg.projector_ln_eps));
    language_model = register_module("language_model", qwen3_causal_lm(cfg.text));
  }

  /// Image features per tile: [N,3,S,S] -> [N, tokens_per_tile, H_llm].
  at::Tensor image_features(const at::Tensor& pixel_values) {
    const auto S = cfg.vision.image_size;
    require<shape_error>(pixel_values.dim() == 4 && pixel_values.size(1) == 3 && pixel_values.size(2) == S && pixel_values.size(3) == S,
                         "internvl::image_features", "pixel_values", "must have shape [tiles, 3, image_size, image_size] (image_size " + std::to_string(S) + ")");
    auto h = vision->forward(pixel_values);
    h = h.narrow(1, 1, h.size(1) - 1); // drop CLS
    return mlp1->forward(pixel_shuffle_v2(h));
  }

  /// Token embeddings with image features written, in order, at every image_token_id position.
  at::Tensor embed(const at::Tensor& input_ids, const at::Tensor& pixel_values = {}) {
    require<shape_error>(input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong, "internvl::embed", "input_ids", "must be int64 [B, T]");
    const auto V = cfg.text.vocab_size;
    require<value_error>(input_ids.numel() == 0 || (input_ids.min().item<std::int64_t>() >= 0 && input_ids.max().item<std::int64_t>() < V),
                         "internvl::embed", "input_ids", "must lie in [0, vocab_size)");
    auto e = language_model->model->embed_tokens->forward(input_ids);
    const bool has_img = pixel_values.defined() && pixel_values.numel() > 0;
    const auto n_img = cfg.image_token_id >= 0 ? input_ids.eq(cfg.image_token_id).sum().item<std::int64_t>() : 0;
    if (!has_img) {
      require<shape_error>(n_img == 0, "internvl::embed", "pixel_values", "must be given when input_ids hold image-context tokens");
      return e;
    }
    require(cfg.image_token_id >= 0, "internvl::embed", "image_token_id", "must be set (config or tokenizer) to splice images");
    auto feats = image_features(pixel_values);
    require<shape_error>(feats.size(0) * feats.size(1) == n_img, "internvl::embed", "input_ids",
                         "must hold tiles x tokens_per_tile = " + std::to_string(feats.size(0) * feats.size(1)) +
                             " image-context tokens (found " + std::to_string(n_img) + ")");
    const auto H = e.size(-1);
    auto idx = input_ids.reshape({-1}).eq(cfg.image_token_id).nonzero().squeeze(1);
    return e.reshape({-1, H}).index_copy(0, idx, feats.reshape({-1, H}).to(e.scalar_type())).reshape(e.sizes());
  }

  /// Logits [B, T, vocab] (input_ids right-padded if rows differ in length; causal attention
  /// makes padding after a row's last token harmless).
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& pixel_values = {}, kv_cache* cache = nullptr) {
    return language_model->logits(language_model->hidden(embed(input_ids, pixel_values), cache));
  }
};
TORCH_MODULE_IMPL(internvl, internvl_impl);

namespace detail {
/// One prompt as [1, T] (from [T] or [1, T] int64 ids), refused with a shape_error naming `name`
/// unless it is defined, of that shape and non-empty. The check of sample, sample_many and
/// completion_logprobs.
inline at::Tensor one_prompt(const at::Tensor& prompt_ids, const char* where, const std::string& name) {
  require<shape_error>(prompt_ids.defined(), where, name, "must be one non-empty prompt [T] or [1, T]");
  at::Tensor prompt = prompt_ids.dim() == 1 ? prompt_ids.unsqueeze(0) : prompt_ids;
  require<shape_error>(prompt.dim() == 2 && prompt.size(0) == 1 && prompt.size(1) >= 1, where, name, "must be one non-empty prompt [T] or [1, T]");
  return prompt;
}
} // namespace detail

/// Re-initialises a freshly built model the way transformers' `_init_weights` does for a model
/// trained from scratch: every Linear / Conv2d weight and every Embedding ~ N(0, std), their
/// biases 0, LayerNorm / RMSNorm weights 1 and biases 0; class and position embeddings and the
/// layer scales keep their construction values. libtorch's defaults (Embedding ~ N(0, 1), Kaiming
/// uniform Linear) give token embeddings ~50x larger than the projected image features, which
/// leaves a small model reading the text only. Seed with torch::manual_seed first.
inline void init_weights(internvl& model, double std = 0.02) {
  require<value_error>(std > 0 && std::isfinite(std), "msrl::trainer::init_weights", "std", "must be positive and finite");
  at::NoGradGuard ng;
  for (const auto& m : model->modules(/*include_self=*/false)) {
    if (auto* l = m->as<torch::nn::LinearImpl>()) {
      l->weight.normal_(0.0, std);
      if (l->bias.defined()) l->bias.zero_();
    } else if (auto* c = m->as<torch::nn::Conv2dImpl>()) {
      c->weight.normal_(0.0, std);
      if (c->bias.defined()) c->bias.zero_();
    } else if (auto* e = m->as<torch::nn::EmbeddingImpl>()) {
      e->weight.normal_(0.0, std);
    } else if (auto* n = m->as<torch::nn::LayerNormImpl>()) {
      n->weight.fill_(1.0);
      n->bias.zero_();
    } else if (auto* r = m->as<rms_norm_impl>()) {
      r->weight.fill_(1.0);
    }
  }
}

} // namespace msrl::trainer
