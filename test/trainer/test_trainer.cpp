// Trainer tests: logit parity against transformers' own fixture, checkpoint round trips in both
// naming schemes and dtypes, and the rejection of bad configs and corrupt safetensors files.
#define BOOST_TEST_MODULE trainer
#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <string>

#include <msrl/trainer/checkpoint_torch.hpp>
#include <msrl/trainer/internvl_torch.hpp>
#include <msrl/trainer/safetensors_torch.hpp>

#include "scratch.hpp"

namespace fs = std::filesystem;
using msrl_test::scratch;
namespace mt = msrl::trainer;

namespace {

const fs::path fixtures = MSRL_TRAINER_FIXTURES;

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) { return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>(); }

bool same_params(mt::internvl& a, mt::internvl& b) {
  auto pa = a->named_parameters(), pb = b->named_parameters();
  if (pa.size() != pb.size()) return false;
  for (const auto& item : pa) {
    const at::Tensor* q = pb.find(item.key());
    if (!q || q->scalar_type() != item.value().scalar_type() || !at::equal(*q, item.value())) return false;
  }
  return true;
}

mt::internvl_config tiny_config() { return mt::internvl_config::from_file(fixtures / "tiny_internvl" / "config.json"); }

void write_bytes(const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }
std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
std::string le64(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}
std::string st_file(const std::string& header, std::size_t data_bytes) { return le64(header.size()) + header + std::string(data_bytes, '\x01'); }

} // namespace

BOOST_AUTO_TEST_CASE(config_reads_both_flavours) {
  const auto c = tiny_config();
  BOOST_TEST(c.hf_format);
  BOOST_TEST(c.vision.image_size == 56);
  BOOST_TEST(c.vision.patch_size == 14);
  BOOST_TEST(c.vision.qkv_bias);
  BOOST_TEST(c.text.head_dim == 32); // explicit, != hidden/heads = 16
  BOOST_TEST(c.text.num_kv_heads == 2);
  BOOST_TEST(c.text.rope_theta == 1e6);
  BOOST_TEST(c.image_token_id == 250);
  BOOST_TEST(c.tokens_per_tile() == 4);
  const auto o = mt::internvl_config::from_json(mt::config_json(c, mt::weight_format::original));
  BOOST_TEST(!o.hf_format);
  BOOST_TEST(o.text.head_dim == 32);
  BOOST_TEST(o.vision.qkv_bias);
  BOOST_TEST(o.image_token_id == 250);
}

BOOST_AUTO_TEST_CASE(config_rejects_bad_values) {
  auto j = mt::config_json(tiny_config(), mt::weight_format::hf);
  auto bad = j;
  bad["text_config"]["num_key_value_heads"] = 3; // does not divide 4 heads
  BOOST_CHECK_EXCEPTION(mt::internvl_config::from_json(bad), msrl::invalid_argument, [](const auto& e) {
    return std::string(e.what()).find("num_key_value_heads") != std::string::npos;
  });
  bad = j;
  bad["vision_config"].erase("hidden_size");
  BOOST_CHECK_THROW(mt::internvl_config::from_json(bad), msrl::parse_error);
  bad = j;
  bad["vision_config"]["use_qk_norm"] = true;
  BOOST_CHECK_THROW(mt::internvl_config::from_json(bad), msrl::invalid_argument);
  bad = j;
  bad["text_config"]["hidden_size"] = "64";
  BOOST_CHECK_THROW(mt::internvl_config::from_json(bad), msrl::parse_error);
  BOOST_CHECK_THROW(mt::internvl_config::from_json(nlohmann::json::array()), msrl::parse_error);
}

BOOST_AUTO_TEST_CASE(config_ranges_are_checked_before_anything_is_built) {
  const auto j = mt::config_json(tiny_config(), mt::weight_format::hf);
  auto names = [](const std::string& key) {
    return [key](const std::exception& e) { return std::string(e.what()).find(key) != std::string::npos; };
  };
  auto bad = j;
  bad["text_config"]["num_attention_heads"] = 0; // divided by when head_dim is derived
  bad["text_config"].erase("head_dim");
  BOOST_CHECK_EXCEPTION(mt::internvl_config::from_json(bad), msrl::invalid_argument, names("text_config.num_attention_heads"));
  bad = j;
  bad["vision_config"]["num_attention_heads"] = 0;
  BOOST_CHECK_EXCEPTION(mt::internvl_config::from_json(bad), msrl::invalid_argument, names("vision_config.num_attention_heads"));
  bad = j;
  bad["image_token_id"] = 256; // vocab_size is 256
  BOOST_CHECK_EXCEPTION(mt::internvl_config::from_json(bad), msrl::invalid_argument, names("image_token_id"));
  bad = j;
  bad["text_config"]["hidden_size"] = 1 << 20; // about 4e12 parameters: refused, nothing allocated
  bad["text_config"]["intermediate_size"] = 1 << 22;
  bad["text_config"]["num_hidden_layers"] = 64;
  bad["text_config"]["head_dim"] = 1 << 18;
  BOOST_CHECK_EXCEPTION(mt::internvl_config::from_json(bad), msrl::invalid_argument, names("max_parameters"));
  // the count itself: within 1 % of the parameters the model builds
  const auto c = tiny_config();
  mt::internvl m(c);
  double n = 0;
  for (const auto& p : m->parameters()) n += static_cast<double>(p.numel());
  BOOST_TEST(std::abs(c.parameter_count() - n) <= 0.01 * n, c.parameter_count() << " vs " << n);
}

BOOST_AUTO_TEST_CASE(a_checkpoint_that_contradicts_its_config_is_refused) {
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  BOOST_REQUIRE(!m->cfg.text.tie_word_embeddings);
  // an untied head that no shard holds
  scratch s("nohead");
  std::vector<std::pair<std::string, at::Tensor>> w;
  for (auto& p : mt::named_weights(m, mt::weight_format::hf))
    if (p.first != "lm_head.weight") w.push_back(p);
  mt::save_checkpoint(s.dir, w);
  write_bytes(s.dir / "config.json", read_bytes(fixtures / "tiny_internvl" / "config.json"));
  BOOST_CHECK_EXCEPTION(mt::load_internvl(s.dir), msrl::invalid_argument, [](const std::exception& e) {
    return std::string(e.what()).find("lm_head.weight") != std::string::npos &&
           std::string(e.what()).find("tie_word_embeddings") != std::string::npos;
  });
  // a config that does not say: tied, as the tensors say
  auto cj = nlohmann::json::parse(read_bytes(fixtures / "tiny_internvl" / "config.json"));
  cj.erase("tie_word_embeddings");
  cj["text_config"].erase("tie_word_embeddings");
  write_bytes(s.dir / "config.json", cj.dump());
  BOOST_CHECK(mt::load_internvl(s.dir)->cfg.text.tie_word_embeddings);
  // head_dim left out: taken from q_norm (32 here, while hidden / heads = 16)
  scratch s2("nohd");
  mt::save_internvl(m, s2.dir);
  cj = nlohmann::json::parse(read_bytes(s2.dir / "config.json"));
  cj["text_config"].erase("head_dim");
  write_bytes(s2.dir / "config.json", cj.dump());
  auto m2 = mt::load_internvl(s2.dir);
  BOOST_TEST(m2->cfg.text.head_dim == 32);
  // neither the config nor a q_norm tensor: refused by name
  std::vector<std::pair<std::string, at::Tensor>> w2;
  for (auto& p : mt::named_weights(m, mt::weight_format::hf))
    if (p.first.find("layers.0.self_attn.q_norm") == std::string::npos) w2.push_back(p);
  scratch s3("noqn");
  mt::save_checkpoint(s3.dir, w2);
  write_bytes(s3.dir / "config.json", cj.dump());
  BOOST_CHECK_EXCEPTION(mt::load_internvl(s3.dir), msrl::invalid_argument, [](const std::exception& e) {
    return std::string(e.what()).find("text_config.head_dim") != std::string::npos;
  });
}

BOOST_AUTO_TEST_CASE(pixel_shuffle_index_map) {
  // x[n, r*4 + c, ch] = 1000 r + 100 c + ch on a 4x4 grid, 2 channels.
  auto x = at::zeros({1, 16, 2});
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c)
      for (int ch = 0; ch < 2; ++ch) x[0][r * 4 + c][ch] = 1000 * r + 100 * c + ch;
  auto y = mt::pixel_shuffle_v2(x);
  BOOST_TEST(y.sizes() == at::IntArrayRef({1, 4, 8}));
  // token (i=1, j=0) = concat x[2,0], x[2,1], x[3,0], x[3,1]
  const float want[8] = {2000, 2001, 2100, 2101, 3000, 3001, 3100, 3101};
  for (int k = 0; k < 8; ++k) BOOST_TEST(y[0][2][k].item<float>() == want[k]);
}

BOOST_AUTO_TEST_CASE(init_weights_follows_the_transformers_rule) {
  torch::manual_seed(3);
  mt::internvl m(tiny_config());
  const auto before = m->vision->embeddings->position_embedding.clone();
  mt::init_weights(m, 0.05);
  at::NoGradGuard ng;
  std::size_t linears = 0;
  for (const auto& mod : m->modules(false)) {
    if (auto* l = mod->as<torch::nn::LinearImpl>()) {
      ++linears;
      if (l->bias.defined()) BOOST_TEST(l->bias.abs().max().item<double>() == 0.0);
    }
    if (auto* n = mod->as<torch::nn::LayerNormImpl>()) BOOST_TEST(n->weight.eq(1).all().item<bool>());
  }
  BOOST_TEST(linears > 0u);
  // the sample standard deviation of the pooled weights is within a few percent of 0.05
  const auto emb = m->language_model->model->embed_tokens->weight;
  BOOST_TEST(emb.std().item<double>() == 0.05, boost::test_tools::tolerance(0.05));
  const auto q = m->language_model->model->layers[0]->as<mt::qwen3_layer_impl>()->self_attn->q_proj->weight;
  BOOST_TEST(q.std().item<double>() == 0.05, boost::test_tools::tolerance(0.1));
  BOOST_TEST(std::abs(q.mean().item<double>()) < 0.01);
  BOOST_TEST(m->vision->embeddings->position_embedding.equal(before)); // kept
  BOOST_CHECK_THROW(mt::init_weights(m, 0.0), msrl::value_error);
  BOOST_CHECK_THROW(mt::init_weights(m, std::nan("")), msrl::value_error);
}

BOOST_AUTO_TEST_CASE(logits_match_transformers_fixture) {
  at::set_num_threads(1);
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  m->eval();
  BOOST_TEST(!m->cfg.text.tie_word_embeddings);
  mt::safetensors_file fx(fixtures / "parity.safetensors");
  at::NoGradGuard ng;
  auto logits = m->forward(fx.load("input_ids"), fx.load("pixel_values"));
  const auto want = fx.load("logits");
  BOOST_TEST(logits.sizes() == want.sizes());
  const double err = max_abs_diff(logits, want);
  BOOST_TEST_MESSAGE("max |logits - transformers| (image prompt) = " << err);
  BOOST_TEST(err < 1e-4);
  BOOST_TEST(want.abs().max().item<double>() > 0.5); // the fixture is not trivially small
  const auto text_logits = m->forward(fx.load("text_input_ids"));
  const double err2 = max_abs_diff(text_logits, fx.load("text_logits"));
  BOOST_TEST_MESSAGE("max |logits - transformers| (text prompt) = " << err2);
  BOOST_TEST(err2 < 1e-4);
  // Image-context tokens without pixels, or a tile count that does not match them, are errors.
  BOOST_CHECK_THROW(m->forward(fx.load("input_ids")), msrl::shape_error);
  BOOST_CHECK_THROW(m->forward(fx.load("input_ids"), fx.load("pixel_values").narrow(0, 0, 2)), msrl::shape_error);
}

BOOST_AUTO_TEST_CASE(bf16_forward_tracks_the_fp32_logits) {
  // The bf16 path (bf16 weights and activations, fp32 norm statistics and softmax) runs and
  // stays near transformers' fp32 logits; the bound is loose, bf16 has 8 mantissa bits.
  auto m = mt::load_internvl(fixtures / "tiny_internvl", at::kBFloat16);
  mt::safetensors_file fx(fixtures / "parity.safetensors");
  at::NoGradGuard ng;
  const auto logits = m->forward(fx.load("input_ids"), fx.load("pixel_values"));
  BOOST_TEST((logits.scalar_type() == at::kBFloat16));
  const auto want = fx.load("logits");
  const double err = max_abs_diff(logits, want), scale = want.abs().max().item<double>();
  BOOST_TEST_MESSAGE("bf16: max |logits - transformers fp32| = " << err << " (max |logit| " << scale << ")");
  BOOST_TEST(err < 0.05 * scale);
  const double agree = logits.to(at::kFloat).argmax(-1).eq(want.argmax(-1)).to(at::kDouble).mean().item<double>();
  BOOST_TEST(agree >= 0.9); // near-ties may flip in bf16
}

BOOST_AUTO_TEST_CASE(kv_cache_matches_full_forward) {
  at::manual_seed(3);
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  m->eval();
  at::NoGradGuard ng;
  mt::safetensors_file fx(fixtures / "parity.safetensors");
  auto ids = fx.load("input_ids");
  auto full = m->forward(ids, fx.load("pixel_values"));
  mt::kv_cache cache;
  const auto T = ids.size(1);
  auto first = m->forward(ids.narrow(1, 0, T - 3), fx.load("pixel_values"), &cache);
  std::vector<at::Tensor> parts{first};
  for (int64_t t = T - 3; t < T; ++t) parts.push_back(m->forward(ids.narrow(1, t, 1), {}, &cache));
  BOOST_TEST(max_abs_diff(at::cat(parts, 1), full) < 1e-5);
  // A shared prefix: three rows continue the first T - 3 tokens with their own tokens (a chunk of
  // two, then one); each row's logits are those of a full forward over prefix + its tokens.
  mt::kv_cache shared;
  m->forward(ids.narrow(1, 0, T - 3), fx.load("pixel_values"), &shared);
  shared.share_prefix();
  BOOST_TEST(shared.length() == T - 3);
  const auto own = at::tensor({11, 12, 13, 20, 21, 22, 30, 5, 32}, at::kLong).view({3, 3});
  const auto a = m->forward(own.narrow(1, 0, 2), {}, &shared);
  const auto b = m->forward(own.narrow(1, 2, 1), {}, &shared);
  BOOST_TEST(shared.length() == T);
  BOOST_TEST(shared.prefix_length() == T - 3);
  for (int64_t r = 0; r < 3; ++r) {
    const auto row = at::cat({ids.narrow(1, 0, T - 3), own.narrow(0, r, 1)}, 1);
    const auto want = m->forward(row, fx.load("pixel_values")).narrow(1, T - 3, 3);
    BOOST_TEST(max_abs_diff(at::cat({a.narrow(0, r, 1), b.narrow(0, r, 1)}, 1), want) < 1e-5, "row " << r);
  }
  BOOST_CHECK_THROW(shared.share_prefix(), msrl::shape_error); // a prefix already
  // Two prompts of different lengths (with the image and a shorter text-only one), two rows each,
  // continued together in one cache: each row's logits are a full forward over its own sequence.
  std::vector<mt::kv_cache> per_prompt(2);
  const auto text = at::tensor({5, 6, 7, 8}, at::kLong).unsqueeze(0);
  m->forward(ids.narrow(1, 0, T - 3), fx.load("pixel_values"), &per_prompt[0]);
  m->forward(text, {}, &per_prompt[1]);
  auto both = mt::share_prefixes(std::move(per_prompt));
  const auto own4 = at::tensor({11, 12, 13, 20, 21, 22, 30, 5, 32, 14, 15, 16}, at::kLong).view({4, 3});
  const auto c = m->forward(own4.narrow(1, 0, 2), {}, &both);
  const auto d = m->forward(own4.narrow(1, 2, 1), {}, &both);
  for (int64_t r = 0; r < 4; ++r) {
    const bool image = r < 2;
    const auto pre = image ? ids.narrow(1, 0, T - 3) : text;
    const auto want = m->forward(at::cat({pre, own4.narrow(0, r, 1)}, 1), image ? fx.load("pixel_values") : at::Tensor()).narrow(1, pre.size(1), 3);
    BOOST_TEST(max_abs_diff(at::cat({c.narrow(0, r, 1), d.narrow(0, r, 1)}, 1), want) < 1e-5, "two prompts, row " << r);
  }
  BOOST_CHECK_THROW(m->forward(at::tensor({3, 4}, at::kLong).view({2, 1}), {}, &both), msrl::shape_error); // 4 rows continue it, not 2
  mt::kv_cache empty;
  BOOST_CHECK_THROW(empty.share_prefix(), msrl::shape_error);
}

BOOST_AUTO_TEST_CASE(round_trip_is_bit_identical) {
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  for (auto fmt : {mt::weight_format::hf, mt::weight_format::original}) {
    for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
      scratch s("rt");
      auto src = mt::load_internvl(fixtures / "tiny_internvl", dt);
      mt::save_internvl(src, s.dir, {.format = fmt, .max_shard_bytes = fmt == mt::weight_format::hf ? 200'000u : 0u});
      BOOST_TEST(fs::exists(s.dir / (fmt == mt::weight_format::hf ? "model.safetensors.index.json" : "model.safetensors")));
      auto back = mt::load_internvl(s.dir, dt);
      BOOST_TEST((c10::get_default_dtype() == caffe2::TypeMeta::Make<float>())); // restored
      BOOST_TEST((back->language_model->model->norm->weight.scalar_type() == dt));
      BOOST_TEST(same_params(src, back), "format " << int(fmt) << " dtype " << dt);
      BOOST_TEST(back->cfg.hf_format == (fmt == mt::weight_format::hf));
      if (dt == at::kFloat) { // the re-read config.json + weights still give transformers' logits
        mt::safetensors_file fx(fixtures / "parity.safetensors");
        at::NoGradGuard ng;
        BOOST_TEST(max_abs_diff(back->forward(fx.load("input_ids"), fx.load("pixel_values")), fx.load("logits")) < 1e-4);
      }
    }
  }
  // Saving a fp32 model as bf16 stores exactly the bf16 rounding of each weight.
  scratch s("bf16");
  mt::save_internvl(m, s.dir, {.format = mt::weight_format::original, .dtype = at::kBFloat16});
  mt::safetensors_file f(s.dir / "model.safetensors");
  BOOST_TEST(f.entry("mlp1.1.weight").dtype == at::kBFloat16);
  BOOST_TEST(at::equal(f.load("mlp1.1.weight"), m->mlp1->l1->weight.detach().to(at::kBFloat16)));
  // The fused qkv is exactly the concatenation of transformers' q/k/v.
  mt::safetensors_file orig(fixtures / "tiny_internvl" / "model.safetensors");
  auto q = orig.load("vision_tower.encoder.layer.1.attention.k_proj.weight");
  auto qkv = m->vision->encoder->layers[1]->as<mt::vit_layer_impl>()->attn->qkv->weight.detach();
  BOOST_TEST(at::equal(qkv.narrow(0, 64, 64), q));
}

BOOST_AUTO_TEST_CASE(safetensors_header_layout) {
  scratch s("layout");
  mt::save_safetensors(s.dir / "a.safetensors", {{"b", at::arange(3, at::kShort)}, {"a", at::ones({2, 2}, at::kDouble)}, {"e", at::empty({0})}});
  const std::string bytes = read_bytes(s.dir / "a.safetensors");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  BOOST_TEST(n % 8 == 0);
  BOOST_TEST(bytes.size() == 8 + n + 32 + 6);
  mt::safetensors_file f(s.dir / "a.safetensors");
  BOOST_TEST(f.entry("a").begin == 0u); // 8-byte elements first
  BOOST_TEST(f.entry("b").begin == 32u);
  BOOST_TEST(f.metadata().at("format") == "pt");
  BOOST_TEST(at::equal(f.load("b"), at::arange(3, at::kShort)));
  BOOST_TEST(f.load("e").numel() == 0);
  // Written through msrl::atomic_file: no temporary left; an unwritable path is an
  // invalid_argument naming it, and the old file stays whole.
  for (const auto& e : fs::directory_iterator(s.dir)) BOOST_TEST(e.path().filename() == "a.safetensors");
  const fs::path bad = s.dir / "no_such_dir" / "b.safetensors";
  try {
    mt::save_safetensors(bad, {{"a", at::ones({2})}});
    BOOST_FAIL("expected msrl::invalid_argument");
  } catch (const msrl::invalid_argument& e) {
    BOOST_TEST(std::string(e.what()).find(bad.string()) != std::string::npos, e.what());
  }
  BOOST_TEST(read_bytes(s.dir / "a.safetensors") == bytes);
}

BOOST_AUTO_TEST_CASE(corrupt_safetensors_are_rejected) {
  scratch s("bad");
  auto expect_parse_error = [&](const std::string& bytes, const std::string& needle) {
    const fs::path p = s.dir / "x.safetensors";
    write_bytes(p, bytes);
    bool thrown = false;
    try {
      mt::safetensors_file f(p);
    } catch (const msrl::parse_error& e) {
      thrown = true;
      const std::string w = e.what();
      BOOST_TEST((w.find(needle) != std::string::npos && w.find("x.safetensors") != std::string::npos), w);
    }
    BOOST_TEST(thrown, "no parse_error for case '" << needle << "'");
  };
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  expect_parse_error("abc", "shorter");
  expect_parse_error(le64(1ull << 40) + "{}", "limit");
  expect_parse_error(le64(500) + "{}", "truncated");
  expect_parse_error(st_file(ok, 4), "past the data buffer");
  expect_parse_error(st_file(ok, 12), "trailing bytes");
  expect_parse_error(st_file("[1,2]", 0), "start with '{'");
  expect_parse_error(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 8), "not valid JSON");
  expect_parse_error(st_file(R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", 8), "unsupported dtype");
  expect_parse_error(st_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "does not match");
  expect_parse_error(st_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "non-negative");
  expect_parse_error(st_file(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", 8), "overflows");
  expect_parse_error(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "begin > end");
  expect_parse_error(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12), "overlapping");
  expect_parse_error(st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "hole");
  expect_parse_error(st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "twice");
  expect_parse_error(st_file(R"({"__metadata__":{"k":1}})", 0), "not a string");
  // Every truncation of a valid file is rejected cleanly, never read past its end.
  mt::save_safetensors(s.dir / "good.safetensors", {{"w", at::randn({3, 5})}, {"b", at::randn({5}, at::kBFloat16)}});
  const std::string good = read_bytes(s.dir / "good.safetensors");
  for (std::size_t len = 0; len < good.size(); ++len) {
    write_bytes(s.dir / "t.safetensors", good.substr(0, len));
    BOOST_CHECK_THROW(mt::safetensors_file(s.dir / "t.safetensors"), msrl::parse_error);
  }
  BOOST_CHECK_NO_THROW(mt::safetensors_file(s.dir / "good.safetensors"));
  BOOST_CHECK_THROW(mt::safetensors_file(s.dir / "missing.safetensors"), msrl::parse_error);
}

BOOST_AUTO_TEST_CASE(checkpoint_mismatches_are_named) {
  scratch s("mis");
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  // Missing tensor.
  auto w = mt::named_weights(m, mt::weight_format::hf);
  std::vector<std::pair<std::string, at::Tensor>> fewer;
  for (auto& p : w)
    if (p.first != "model.multi_modal_projector.linear_2.bias") fewer.push_back(p);
  mt::save_checkpoint(s.dir, fewer);
  mt::internvl m2(m->cfg);
  BOOST_CHECK_EXCEPTION(mt::load_weights(m2, mt::checkpoint(s.dir)), msrl::invalid_argument, [](const auto& e) {
    return std::string(e.what()).find("mlp1.3.bias") != std::string::npos;
  });
  // Shape mismatch: a config with a wider MLP.
  mt::internvl_config c = m->cfg;
  c.text.intermediate_size = 96;
  mt::internvl m3(c);
  BOOST_CHECK_EXCEPTION(mt::load_weights(m3, mt::checkpoint(fixtures / "tiny_internvl")), msrl::shape_error, [](const auto& e) {
    return std::string(e.what()).find("gate_proj") != std::string::npos;
  });
  // Unused tensor.
  w.emplace_back("extra.weight", at::zeros({2}));
  scratch s2("extra");
  mt::save_checkpoint(s2.dir, w);
  BOOST_CHECK_THROW(mt::load_weights(m2, mt::checkpoint(s2.dir)), msrl::invalid_argument);
  BOOST_CHECK_NO_THROW(mt::load_weights(m2, mt::checkpoint(s2.dir), {.allow_unused = true}));
  // Index pointing at a shard that lacks the tensor.
  scratch s3("idx");
  mt::save_checkpoint(s3.dir, w, {.max_shard_bytes = 100'000});
  auto idx = nlohmann::json::parse(read_bytes(s3.dir / "model.safetensors.index.json"));
  idx["weight_map"]["extra.weight"] = "model-00001-of-00002.safetensors";
  write_bytes(s3.dir / "model.safetensors.index.json", idx.dump());
  BOOST_CHECK_THROW(mt::checkpoint(s3.dir), msrl::parse_error);
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

#include <msrl/trainer/tokenizer.hpp>

BOOST_AUTO_TEST_CASE(tokenizer_matches_hf_tokenizers) {
  const auto tok = mt::bpe_tokenizer::from_file(fixtures / "tokenizer.json");
  std::ifstream in(fixtures / "tokenizer_cases.json");
  const auto cases = nlohmann::json::parse(in);
  std::size_t n = 0;
  for (const auto& c : cases["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const auto want = c["ids"].get<std::vector<std::int64_t>>();
    const auto got = tok.encode(text);
    BOOST_TEST(got == want, "text: " << text);
    BOOST_TEST(tok.decode(got) == text);
    ++n;
  }
  BOOST_TEST(n >= 10u);
  BOOST_TEST(tok.token_id("<IMG_CONTEXT>") == tok.encode("<IMG_CONTEXT>").at(0));
  BOOST_TEST(tok.encode("<IMG_CONTEXT><IMG_CONTEXT><IMG_CONTEXT>").size() == 3u);
}

BOOST_AUTO_TEST_CASE(tokenizer_pretokenizer_rules) {
  auto split = [](std::string_view s) {
    std::vector<std::string> v;
    for (auto p : mt::detail::qwen2_pretokenize(s)) v.emplace_back(p);
    return v;
  };
  using V = std::vector<std::string>;
  BOOST_TEST((split("Hello world") == V{"Hello", " world"}));
  BOOST_TEST((split("it's 42") == V{"it", "'s", " ", "4", "2"}));
  BOOST_TEST((split("a   b") == V{"a", "  ", " b"}));
  BOOST_TEST((split("x \n\n y") == V{"x", " \n\n", " y"}));
  BOOST_TEST((split("end  ") == V{"end", "  "}));
  BOOST_TEST((split("f(x);\n") == V{"f", "(x", ");\n"}));
  BOOST_TEST((split("\xC3\xA9t\xC3\xA9") == V{"\xC3\xA9t\xC3\xA9"})); // été: letters
}

BOOST_AUTO_TEST_CASE(tokenizer_rejects_bad_files) {
  auto j = nlohmann::json::parse(std::ifstream(fixtures / "tokenizer.json"));
  auto bad = j;
  bad["model"]["type"] = "WordPiece";
  BOOST_CHECK_THROW(mt::bpe_tokenizer::from_json(bad), msrl::parse_error);
  bad = j;
  bad["model"]["merges"][0] = 7;
  BOOST_CHECK_THROW(mt::bpe_tokenizer::from_json(bad), msrl::parse_error);
  bad = j;
  bad["model"]["vocab"].erase("a");
  BOOST_CHECK_THROW(mt::bpe_tokenizer::from_json(bad), msrl::parse_error);
  BOOST_CHECK_THROW(mt::bpe_tokenizer::from_file(fixtures / "no_such_tokenizer.json"), msrl::invalid_argument);
  // ids beyond twice the file's entries + 65,536 would size the id table from one number: refused
  // before any allocation, as are negative added-token ids (they used to index the table unchecked)
  bad = j;
  bad["model"]["vocab"]["a"] = std::int64_t{1} << 40;
  BOOST_CHECK_THROW(mt::bpe_tokenizer::from_json(bad), msrl::parse_error);
  bad = j;
  bad["added_tokens"] = nlohmann::json::array({{{"content", "<x>"}, {"id", -3}}});
  BOOST_CHECK_THROW(mt::bpe_tokenizer::from_json(bad), msrl::parse_error);
  bad = j;
  bad["added_tokens"] = nlohmann::json::array({{{"content", "<x>"}, {"id", 66000}}}); // within the bound: accepted
  BOOST_TEST(mt::bpe_tokenizer::from_json(bad).token_id("<x>") == 66000);
  const auto tok = mt::bpe_tokenizer::from_json(j);
  BOOST_CHECK_THROW(tok.decode({-1}), msrl::value_error);
  BOOST_CHECK_THROW(tok.token_id("<nope>"), msrl::invalid_argument);
}

BOOST_AUTO_TEST_CASE(chat_prompt_layout) {
  const std::string p = mt::chat_prompt({{.role = "system", .content = "Judge."}, {.role = "user", .content = "Which?", .image_tiles = {2}}}, 3);
  std::string img = "<img>";
  for (int k = 0; k < 6; ++k) img += "<IMG_CONTEXT>";
  img += "</img>";
  BOOST_TEST(p == "<|im_start|>system\nJudge.<|im_end|>\n<|im_start|>user\n" + img + "\nWhich?<|im_end|>\n<|im_start|>assistant\n");
  const auto tok = mt::bpe_tokenizer::from_file(fixtures / "tokenizer.json");
  const auto ids = tok.encode(p);
  BOOST_TEST(std::count(ids.begin(), ids.end(), tok.token_id("<IMG_CONTEXT>")) == 6);
  BOOST_TEST(ids.front() == tok.token_id("<|im_start|>"));
  // Video layout: one single-tile image per frame, expanded in order.
  const std::string v = mt::chat_prompt({{.role = "user", .content = "Frame-1: <image>\nFrame-2: <image>\nWhat happens?", .image_tiles = {1, 1}}}, 2, false);
  BOOST_TEST(v == "<|im_start|>user\nFrame-1: <img><IMG_CONTEXT><IMG_CONTEXT></img>\nFrame-2: <img><IMG_CONTEXT><IMG_CONTEXT></img>\nWhat happens?<|im_end|>\n");
  BOOST_CHECK_THROW(mt::chat_prompt({{.role = "robot", .content = "x"}}, 4), msrl::invalid_argument);
  BOOST_CHECK_THROW(mt::chat_prompt({{.role = "user", .content = "<image><image>", .image_tiles = {1}}}, 4), msrl::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// Sampling and training steps

#include <msrl/trainer/steps_torch.hpp>
#include <msrl/trainer/grpo_updates_torch.hpp>

namespace {
struct tiny_inputs {
  at::Tensor prompt, pixels;
};
tiny_inputs tiny_prompt() {
  mt::safetensors_file fx(fixtures / "parity.safetensors");
  return {fx.load("input_ids").squeeze(0), fx.load("pixel_values")};
}
/// The fixture model with every weight moved by seeded N(0, 0.01^2) noise: a KL reference that differs from it.
mt::internvl perturbed_reference() {
  auto ref = mt::load_internvl(fixtures / "tiny_internvl");
  at::NoGradGuard ng;
  at::manual_seed(1);
  for (auto& p : ref->parameters()) p.add_(at::randn_like(p) * 0.01);
  return ref;
}
/// Every parameter's .grad after a step (zeros where it has none), cloned.
std::vector<at::Tensor> step_grads(mt::internvl& m) {
  std::vector<at::Tensor> g;
  for (auto& p : m->parameters()) g.push_back(p.grad().defined() ? p.grad().clone() : at::zeros_like(p));
  return g;
}
/// The largest difference between two gradient sets and the largest entry of the first.
std::pair<double, double> grad_gap(const std::vector<at::Tensor>& ga, const std::vector<at::Tensor>& gb) {
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < ga.size(); ++i) {
    worst = std::max(worst, max_abs_diff(ga[i], gb[i]));
    scale = std::max(scale, ga[i].abs().max().item<double>());
  }
  return {worst, scale};
}
} // namespace

BOOST_AUTO_TEST_CASE(sampling_is_seeded_and_logprobs_match_a_full_forward) {
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  const auto in = tiny_prompt();
  const mt::sampling_options opt{.num_samples = 4, .max_new_tokens = 12, .temperature = 0.8, .top_p = 0.95, .top_k = 50,
                                 .stop_ids = {3, 7}, .pad_id = 0, .seed = 11};
  const auto a = mt::sample(m, in.prompt, in.pixels, opt);
  const auto b = mt::sample(m, in.prompt, in.pixels, opt);
  BOOST_TEST(at::equal(a.tokens, b.tokens));
  BOOST_TEST(at::equal(a.logprobs, b.logprobs));
  auto opt2 = opt;
  opt2.seed = 12;
  BOOST_TEST(!at::equal(mt::sample(m, in.prompt, in.pixels, opt2).tokens, a.tokens));
  BOOST_TEST(a.tokens.size(0) == 4);
  BOOST_TEST(a.tokens.ne(250).all().item<bool>()); // never the image-context token
  for (std::int64_t g = 0; g < 4; ++g) {
    const auto len = a.lengths[static_cast<std::size_t>(g)];
    BOOST_TEST(a.mask[g].sum().item<std::int64_t>() == len);
    if (len < a.tokens.size(1)) {
      const auto last = a.tokens[g][len - 1].item<std::int64_t>();
      BOOST_TEST((last == 3 || last == 7)); // stopped on a stop id
    }
  }
  // Independent route: a cache-free forward over prompt + completion gives the same log-probs.
  at::NoGradGuard ng;
  const auto lp = mt::completion_logprobs(m, in.prompt, in.pixels, a.tokens, 0.8);
  const auto mask = a.mask.to(at::kFloat);
  BOOST_TEST(max_abs_diff(lp * mask, a.logprobs) < 1e-5);
  // top_k = 1 is greedy.
  const auto g1 = mt::sample(m, in.prompt, in.pixels, {.num_samples = 2, .max_new_tokens = 6, .temperature = 1.0, .top_k = 1, .seed = 5});
  const auto g0 = mt::sample(m, in.prompt, in.pixels, {.num_samples = 1, .max_new_tokens = 6, .temperature = 0.0});
  BOOST_TEST(at::equal(g1.tokens[0], g0.tokens[0]));
  BOOST_TEST(at::equal(g1.tokens[1], g0.tokens[0]));
  BOOST_CHECK_THROW(mt::sample(m, in.prompt, in.pixels, {.top_p = 0.0}), msrl::invalid_argument);
}

namespace {
/// Two routes' parameter gradients (torch::autograd::grad, undefined where a parameter has none):
/// defined for the same parameters, more than ten of them, not all zero, and within 1e-5 of the
/// largest (or absolutely, below 1).
void check_same_gradients(const std::vector<at::Tensor>& ga, const std::vector<at::Tensor>& gb) {
  BOOST_TEST_REQUIRE(ga.size() == gb.size());
  double worst = 0, scale = 0;
  std::size_t with_grad = 0;
  for (std::size_t i = 0; i < ga.size(); ++i) {
    BOOST_TEST(ga[i].defined() == gb[i].defined());
    if (!ga[i].defined() || !gb[i].defined()) continue;
    ++with_grad;
    worst = std::max(worst, max_abs_diff(ga[i], gb[i]));
    scale = std::max(scale, gb[i].abs().max().item<double>());
  }
  BOOST_TEST(with_grad > 10u);
  BOOST_TEST(scale > 0.0);
  BOOST_TEST(worst <= 1e-5 * std::max(1.0, scale), "gradient difference " << worst << " (scale " << scale << ")");
}
} // namespace

// completion_logits runs the prompt once and shares its keys and values between the G rows.
// Independent route: model->forward over each row's whole sequence (prompt + completion), with no
// cache. Logits and the parameter gradients of a random functional of them must agree, with an
// image and without, for L = 1 (no completion pass at all) and L > 1.
BOOST_AUTO_TEST_CASE(completion_logits_share_the_prompt_and_match_full_forwards) {
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  m->train();
  const auto in = tiny_prompt();
  const auto text_only = at::tensor({5, 6, 7, 8, 9, 10}, at::kLong);
  at::Generator gen = at::detail::createCPUGenerator(17);
  for (const bool image : {true, false})
    for (const std::int64_t L : {1, 5}) {
      const at::Tensor prompt = image ? in.prompt : text_only, pix = image ? in.pixels : at::Tensor();
      const std::int64_t G = 3, Tp = prompt.size(0);
      const auto comp = at::randint(11, 200, {G, L}, gen, at::kLong);
      const auto w = at::randn({G, L, m->cfg.text.vocab_size}, gen);
      const auto params = m->parameters();
      const auto grads_of = [&](const at::Tensor& loss) { return torch::autograd::grad({loss}, params, {}, false, false, true); };
      const auto got = mt::detail::completion_logits(m, prompt, pix, comp, 1.0, "test");
      BOOST_TEST_REQUIRE((got.sizes() == at::IntArrayRef{G, L, m->cfg.text.vocab_size}));
      std::vector<at::Tensor> rows;
      for (std::int64_t g = 0; g < G; ++g) {
        const auto ids = at::cat({prompt, comp[g]}).unsqueeze(0);
        rows.push_back(m->forward(ids, pix).narrow(1, Tp - 1, L));
      }
      const auto want = at::cat(rows, 0);
      BOOST_TEST(max_abs_diff(got, want) < 1e-5);
      BOOST_TEST_CONTEXT("image " << image << " L " << L) { check_same_gradients(grads_of((got * w).sum()), grads_of((want * w).sum())); }
    }
  BOOST_CHECK_THROW(mt::detail::completion_logits(m, text_only, {}, at::zeros({2, 0}, at::kLong), 1.0, "test"), msrl::invalid_argument);
}

// completion_logits over several groups runs their prompts as one right-padded batch and their
// completions as another. Independent route: model->forward over each row's whole sequence, no
// cache, one row at a time. Groups with an image and without, prompts of different lengths,
// completions of different lengths (1 among them): logits and the parameter gradients of a random
// functional of all groups' logits must agree.
BOOST_AUTO_TEST_CASE(completion_logits_of_several_groups_match_full_forwards) {
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  m->train();
  const auto in = tiny_prompt();
  const auto text_only = at::tensor({5, 6, 7, 8, 9, 10}, at::kLong), text_short = at::tensor({12, 13, 14}, at::kLong);
  at::Generator gen = at::detail::createCPUGenerator(23);
  const std::int64_t G = 3, V = m->cfg.text.vocab_size;
  const std::vector<std::pair<at::Tensor, at::Tensor>> prompts{{in.prompt, in.pixels}, {text_only, {}}, {in.prompt, in.pixels}, {text_short, {}}};
  const std::vector<std::int64_t> lengths{5, 1, 7, 4};
  std::vector<mt::completion_group> groups;
  std::vector<at::Tensor> w;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    groups.push_back({prompts[i].first, prompts[i].second, at::randint(11, 200, {G, lengths[i]}, gen, at::kLong)});
    w.push_back(at::randn({G, lengths[i], V}, gen));
  }
  const auto params = m->parameters();
  const auto grads_of = [&](const at::Tensor& loss) { return torch::autograd::grad({loss}, params, {}, false, false, true); };
  const auto got = mt::detail::completion_logits(m, groups, 1.0, "test");
  BOOST_TEST_REQUIRE(got.size() == groups.size());
  at::Tensor fa, fb;
  for (std::size_t i = 0; i < groups.size(); ++i) {
    const auto& g = groups[i];
    BOOST_TEST_REQUIRE((got[i].sizes() == at::IntArrayRef{G, lengths[i], V}));
    const auto Tp = g.prompt_ids.size(0);
    std::vector<at::Tensor> rows;
    for (std::int64_t r = 0; r < G; ++r) rows.push_back(m->forward(at::cat({g.prompt_ids, g.completions[r]}).unsqueeze(0), g.pixel_values).narrow(1, Tp - 1, lengths[i]));
    const auto want = at::cat(rows, 0);
    BOOST_TEST(max_abs_diff(got[i], want) < 1e-5, "group " << i << ": " << max_abs_diff(got[i], want));
    fa = fa.defined() ? fa + (got[i] * w[i]).sum() : (got[i] * w[i]).sum();
    fb = fb.defined() ? fb + (want * w[i]).sum() : (want * w[i]).sum();
  }
  check_same_gradients(grads_of(fa), grads_of(fb));
  // refused: no group, groups of different G, a prompt without its image's tokens, int32 ids
  BOOST_CHECK_THROW(mt::detail::completion_logits(m, std::span<const mt::completion_group>(), 1.0, "test"), msrl::shape_error);
  std::vector<mt::completion_group> uneven{groups[0], {text_only, {}, at::zeros({2, 3}, at::kLong)}};
  BOOST_CHECK_THROW(mt::detail::completion_logits(m, uneven, 1.0, "test"), msrl::shape_error);
  std::vector<mt::completion_group> misplaced{{text_only, in.pixels, groups[0].completions}, {in.prompt, {}, groups[0].completions}};
  BOOST_CHECK_THROW(mt::detail::completion_logits(m, misplaced, 1.0, "test"), msrl::shape_error);
  std::vector<mt::completion_group> int32_ids{groups[1], {text_only.to(at::kInt), {}, groups[1].completions}};
  BOOST_CHECK_THROW(mt::detail::completion_logits(m, int32_ids, 1.0, "test"), msrl::shape_error);
}

// sample_many runs sample() per request on worker threads: each request's tokens and log-probs
// are those of sample() with its seed, whatever the worker count; errors come back to the caller.
BOOST_AUTO_TEST_CASE(sample_many_matches_sample_per_request) {
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  m->train();
  const auto in = tiny_prompt();
  const auto text_only = at::tensor({5, 6, 7, 8, 9, 10}, at::kLong);
  const std::vector<mt::sample_request> req{{in.prompt, in.pixels, 11}, {text_only, {}, 12}, {in.prompt, in.pixels, 13}, {text_only, {}, 14}, {in.prompt, in.pixels, 11}};
  const mt::sampling_options opt{.num_samples = 3, .max_new_tokens = 9, .temperature = 0.9, .stop_ids = {3}, .seed = 999};
  const int threads_before = at::get_num_threads();
  for (const int workers : {1, 2, 3}) {
    const auto got = mt::sample_many(m, req, opt, workers);
    BOOST_TEST_REQUIRE(got.size() == req.size());
    BOOST_TEST(at::get_num_threads() == threads_before);
    BOOST_TEST(m->is_training()); // restored
    for (std::size_t i = 0; i < req.size(); ++i) {
      auto one = opt;
      one.seed = req[i].seed;
      const auto ref = mt::sample(m, req[i].prompt_ids, req[i].pixel_values, one);
      BOOST_TEST(at::equal(got[i].tokens, ref.tokens));
      BOOST_TEST(at::equal(got[i].mask, ref.mask));
      BOOST_TEST(max_abs_diff(got[i].logprobs, ref.logprobs) < 1e-6);
      BOOST_TEST(got[i].lengths == ref.lengths);
    }
    BOOST_TEST(at::equal(got[0].tokens, got[4].tokens)); // same prompt, same seed
    BOOST_TEST(!at::equal(got[0].tokens, got[2].tokens)); // same prompt, another seed
  }
  // a request that fails inside a worker (image-context tokens without pixels) is reported
  std::vector<mt::sample_request> bad = req;
  bad[3] = {in.prompt, {}, 1};
  BOOST_CHECK_THROW(mt::sample_many(m, bad, opt, 2), msrl::shape_error);
  BOOST_TEST(at::get_num_threads() == threads_before);
  BOOST_TEST(m->is_training());
  bad[3] = {at::zeros({0}, at::kLong), {}, 1};
  BOOST_CHECK_THROW(mt::sample_many(m, bad, opt, 2), msrl::shape_error);
  BOOST_CHECK_THROW(mt::sample_many(m, req, opt, 0), msrl::invalid_argument);
  BOOST_TEST(mt::sample_many(m, std::span<const mt::sample_request>(), opt, 2).empty());
}

// prompts_per_pass > 1 decodes several prompts' rows in one pass, the shorter prompts left-padded
// in the KV cache. Independent routes: sample() of each request alone (same seed: the same draws,
// so the same tokens) and a cache-free forward over prompt + completion (the log-probs).
BOOST_AUTO_TEST_CASE(sample_many_decodes_prompts_of_different_lengths_in_one_pass) {
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  const auto in = tiny_prompt();
  const auto text6 = at::tensor({5, 6, 7, 8, 9, 10}, at::kLong), text3 = at::tensor({12, 40, 9}, at::kLong);
  const std::vector<mt::sample_request> req{{in.prompt, in.pixels, 11}, {text6, {}, 12}, {text3, {}, 13}, {in.prompt, in.pixels, 14},
                                            {text6, {}, 15}, {text3, {}, 16}, {text6, {}, 17}};
  BOOST_TEST_REQUIRE(in.prompt.numel() > 6); // three prompt lengths in one pass
  for (const double temperature : {0.9, 0.0}) {
    const mt::sampling_options opt{.num_samples = 3, .max_new_tokens = 10, .temperature = temperature, .top_p = 0.97, .top_k = 40, .stop_ids = {3}};
    for (const std::int64_t per : {2, 3, 7})
      for (const int workers : {1, 2}) {
        const auto got = mt::sample_many(m, req, opt, workers, per);
        BOOST_TEST_REQUIRE(got.size() == req.size());
        for (std::size_t i = 0; i < req.size(); ++i) {
          auto one = opt;
          one.seed = req[i].seed;
          const auto ref = mt::sample(m, req[i].prompt_ids, req[i].pixel_values, one);
          BOOST_TEST(at::equal(got[i].tokens, ref.tokens), "request " << i << ", " << per << " per pass, T " << temperature);
          BOOST_TEST(at::equal(got[i].mask, ref.mask));
          BOOST_TEST(got[i].lengths == ref.lengths);
          BOOST_TEST(max_abs_diff(got[i].logprobs, ref.logprobs) < 1e-5);
          at::NoGradGuard ng;
          const auto lp = mt::completion_logprobs(m, req[i].prompt_ids, req[i].pixel_values, got[i].tokens, temperature == 0.0 ? 1.0 : temperature);
          BOOST_TEST(max_abs_diff(lp * got[i].mask.to(at::kFloat), got[i].logprobs) < 1e-5);
        }
      }
  }
  BOOST_CHECK_THROW(mt::sample_many(m, req, {.num_samples = 2}, 1, 0), msrl::invalid_argument);
  // two prompts' prefixes continue only in the same number of rows for each
  at::NoGradGuard ng;
  std::vector<mt::kv_cache> two(2);
  m->forward(text6.unsqueeze(0), {}, &two[0]);
  m->forward(text3.unsqueeze(0), {}, &two[1]);
  auto cache = mt::share_prefixes(std::move(two));
  BOOST_TEST(cache.prompts() == 2);
  BOOST_CHECK_THROW(m->forward(at::tensor({{3}, {4}, {5}}, at::kLong), {}, &cache), msrl::shape_error);
  BOOST_CHECK_THROW(mt::share_prefixes({}), msrl::shape_error);
}

BOOST_AUTO_TEST_CASE(filter_logits_keeps_top_k_and_nucleus) {
  auto x = at::log(at::tensor({0.5f, 0.3f, 0.15f, 0.05f})).unsqueeze(0);
  auto k2 = mt::detail::filter_logits(x, 2, 1.0);
  BOOST_TEST(at::isinf(k2).sum().item<int>() == 2);
  BOOST_TEST(!at::isinf(k2[0][1]).item<bool>());
  auto p = mt::detail::filter_logits(x, 0, 0.8); // 0.5 + 0.3 reaches 0.8: keep two
  BOOST_TEST(at::isinf(p).sum().item<int>() == 2);
  auto p2 = mt::detail::filter_logits(x, 0, 0.81); // needs the third
  BOOST_TEST(at::isinf(p2).sum().item<int>() == 1);
}

BOOST_AUTO_TEST_CASE(sft_step_lowers_the_loss_and_freezing_holds) {
  at::manual_seed(0);
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  const auto vision_before = m->vision->embeddings->position_embedding.detach().clone();
  const auto proj_before = m->mlp1->l1->weight.detach().clone();
  const auto in = tiny_prompt();
  auto ids = at::cat({in.prompt, at::tensor({40, 41, 42, 43, 44, 3}, at::kLong)}).unsqueeze(0);
  auto target = at::zeros_like(ids);
  target.narrow(1, ids.size(1) - 6, 6).fill_(1);
  mt::trainer t(m, {.lr = 3e-3, .max_grad_norm = 1.0, .freeze_vision = true});
  const std::vector<mt::sft_batch> batch{{ids, target, in.pixels}};
  const double first = t.sft_step(batch).loss;
  double last = first;
  for (int k = 0; k < 4; ++k) last = t.sft_step(batch).loss;
  BOOST_TEST_MESSAGE("SFT loss " << first << " -> " << last);
  BOOST_TEST(last < first - 0.1);
  BOOST_TEST(at::equal(m->vision->embeddings->position_embedding.detach(), vision_before)); // frozen
  BOOST_TEST(!at::equal(m->mlp1->l1->weight.detach(), proj_before));                       // trained
  auto m2 = mt::load_internvl(fixtures / "tiny_internvl");
  const auto proj2 = m2->mlp1->l2->weight.detach().clone();
  const auto head2 = m2->language_model->lm_head->weight.detach().clone();
  mt::trainer t2(m2, {.lr = 3e-3, .freeze_projector = true});
  t2.sft_step(batch);
  BOOST_TEST(at::equal(m2->mlp1->l2->weight.detach(), proj2));
  BOOST_TEST(!at::equal(m2->language_model->lm_head->weight.detach(), head2));
  BOOST_CHECK_THROW(t2.sft_step({{ids, at::zeros_like(ids), in.pixels}}), msrl::value_error); // no targets
}

// Open choices (sft_batch::alternative_ids): the loss of a position with an alternative is the
// cross-entropy against the soft target 1 - w, w on the pair (w = 1/2 and 0.2 here). Independent
// route: the probabilities of libtorch's softmax in double on a second copy of the model, the soft
// target's cross-entropy sum_v q_v log p_v written out over the whole vocabulary, autograd for the
// gradient; both log-prob routes of the trainer (fused kernels and libtorch's) against it.
BOOST_AUTO_TEST_CASE(sft_open_choice_trains_a_soft_target) {
  const auto in = tiny_prompt();
  const auto ids = at::cat({in.prompt, at::tensor({40, 41, 42, 43, 44, 3}, at::kLong)}).unsqueeze(0);
  const auto T = ids.size(1);
  auto target = at::zeros_like(ids);
  target.narrow(1, T - 6, 6).fill_(1);
  auto alt = at::full_like(ids, -1);
  alt[0][T - 5] = 45; // the second target token: 41 or 45
  alt[0][T - 3] = 7;  // the fourth: 43 or 7
  for (const double w : {0.5, 0.2}) {
    const std::vector<mt::sft_batch> batch{{ids, target, in.pixels, alt, w}};

    // independent route: loss and gradients from the model's logits
    auto ref_model = mt::load_internvl(fixtures / "tiny_internvl");
    const auto logits = ref_model->forward(ids, in.pixels).narrow(1, 0, T - 1).to(at::kDouble);
    const auto p = logits.softmax(-1)[0];
    at::Tensor sum = at::zeros({}, at::kDouble);
    for (std::int64_t t = T - 6; t < T; ++t) {
      auto q = at::zeros({p.size(1)}, at::kDouble); // the soft target over the vocabulary
      const auto a = alt[0][t].item<std::int64_t>();
      q[ids[0][t].item<std::int64_t>()] = a >= 0 ? 1.0 - w : 1.0;
      if (a >= 0) q[a] = w;
      sum = sum + (q * p[t - 1].log()).sum();
    }
    const auto want_loss = -sum / 6.0;
    want_loss.backward();
    std::vector<at::Tensor> want_grad;
    for (auto& q : ref_model->parameters()) want_grad.push_back(q.grad().defined() ? q.grad().clone() : at::zeros_like(q));
    double scale = 0;
    for (const auto& g : want_grad) scale = std::max(scale, g.abs().max().item<double>());
    BOOST_TEST(scale > 1e-4);

    for (const bool fused : {true, false}) {
      auto m = mt::load_internvl(fixtures / "tiny_internvl");
      mt::trainer t(m, {.lr = 0.0, .max_grad_norm = 0.0, .freeze_vision = false, .freeze_projector = false, .fused_logprobs = fused});
      const auto st = t.sft_step(batch);
      BOOST_TEST_INFO("w " << w << ", fused " << fused << ": loss " << st.loss << " vs " << want_loss.item<double>());
      BOOST_TEST(std::abs(st.loss - want_loss.item<double>()) < 1e-5);
      BOOST_TEST(st.tokens == 6.0); // an open choice is one target
      double worst = 0;
      std::size_t i = 0;
      for (auto& q : m->parameters()) {
        worst = std::max(worst, max_abs_diff(q.grad().defined() ? q.grad() : at::zeros_like(q), want_grad[i]));
        ++i;
      }
      BOOST_TEST_INFO("w " << w << ", fused " << fused << ": grad diff " << worst << " of " << scale);
      BOOST_TEST(worst <= 1e-5 * std::max(1.0, scale));
      // without the alternatives the loss is the plain cross-entropy, a different value
      auto m2 = mt::load_internvl(fixtures / "tiny_internvl");
      mt::trainer t2(m2, {.lr = 0.0, .fused_logprobs = fused});
      BOOST_TEST(std::abs(t2.sft_step({{ids, target, in.pixels}}).loss - st.loss) > 1e-3);
    }
  }

  // bad alternatives are refused, naming the argument
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  mt::trainer t(m, {.lr = 0.0});
  auto same = alt.clone();
  same[0][T - 5] = 41; // the token itself
  BOOST_CHECK_EXCEPTION(t.sft_step({{ids, target, in.pixels, same}}), msrl::value_error,
                        [](const msrl::value_error& e) { return std::string(e.what()).find("alternative_ids") != std::string::npos; });
  auto off_target = alt.clone();
  off_target[0][1] = 5; // outside the learned tokens
  BOOST_CHECK_THROW(t.sft_step({{ids, target, in.pixels, off_target}}), msrl::value_error);
  auto beyond = alt.clone();
  beyond[0][T - 5] = m->language_model->model->embed_tokens->weight.size(0);
  BOOST_CHECK_THROW(t.sft_step({{ids, target, in.pixels, beyond}}), msrl::value_error);
  auto below = alt.clone();
  below[0][T - 5] = -2;
  BOOST_CHECK_THROW(t.sft_step({{ids, target, in.pixels, below}}), msrl::value_error);
  BOOST_CHECK_THROW(t.sft_step({{ids, target, in.pixels, alt.narrow(1, 0, T - 1)}}), msrl::shape_error);
  BOOST_CHECK_THROW(t.sft_step({{ids, target, in.pixels, alt, 1.0}}), msrl::invalid_argument);
  BOOST_CHECK_THROW(t.sft_step({{ids, target, in.pixels, alt, 0.0}}), msrl::invalid_argument);
}

// bf16 autocast (CPU here; the same switch drives CUDA autocast): the step's loss and gradients
// follow the fp32 ones to bf16 precision, while weights, gradients and optimizer stay fp32.
BOOST_AUTO_TEST_CASE(bf16_autocast_steps_track_fp32) {
  const auto in = tiny_prompt();
  auto ids = at::cat({in.prompt, at::tensor({40, 41, 42, 43, 44, 3}, at::kLong)}).unsqueeze(0);
  auto target = at::zeros_like(ids);
  target.narrow(1, ids.size(1) - 6, 6).fill_(1);
  const std::vector<mt::sft_batch> batch{{ids, target, in.pixels}};
  auto m0 = mt::load_internvl(fixtures / "tiny_internvl");
  const auto s = mt::sample(m0, in.prompt, in.pixels, {.num_samples = 3, .max_new_tokens = 6, .seed = 21});
  const std::vector<double> rewards{0.0, 1.0, 0.5};
  struct run {
    double sft_loss, grpo_loss;
    std::vector<at::Tensor> sft_grad, grpo_grad;
  };
  const auto go = [&](std::optional<at::ScalarType> ac) {
    auto m = mt::load_internvl(fixtures / "tiny_internvl");
    mt::trainer t(m, {.lr = 0.0, .max_grad_norm = 0.0, .autocast = ac});
    run r;
    const auto grads = [&] {
      std::vector<at::Tensor> g;
      for (auto& p : m->parameters()) {
        BOOST_REQUIRE(p.scalar_type() == at::kFloat);
        if (p.grad().defined()) BOOST_REQUIRE(p.grad().scalar_type() == at::kFloat);
        g.push_back(p.grad().defined() ? p.grad().reshape(-1).clone() : at::zeros({p.numel()}));
      }
      return at::cat(g);
    };
    r.sft_loss = t.sft_step(batch).loss;
    r.sft_grad = {grads()};
    r.grpo_loss = t.grpo_step({{in.prompt, in.pixels, s.tokens, s.mask, s.logprobs, rewards}}, msrl::grpo::presets::msrl_release).loss;
    r.grpo_grad = {grads()};
    BOOST_TEST(!at::autocast::is_cpu_enabled()); // restored after every step
    return r;
  };
  const run f = go(std::nullopt), b = go(at::kBFloat16);
  const auto cosine = [](const at::Tensor& x, const at::Tensor& y) {
    return (x * y).sum().item<double>() / (x.norm().item<double>() * y.norm().item<double>());
  };
  BOOST_TEST_MESSAGE("bf16 autocast: SFT loss " << f.sft_loss << " vs " << b.sft_loss << ", grad cosine "
                                                << cosine(f.sft_grad[0], b.sft_grad[0]) << "; GRPO grad cosine "
                                                << cosine(f.grpo_grad[0], b.grpo_grad[0]));
  BOOST_TEST(b.sft_loss != f.sft_loss); // autocast took effect
  BOOST_TEST(std::abs(b.sft_loss - f.sft_loss) < 3e-2 * std::abs(f.sft_loss));
  BOOST_TEST(cosine(f.sft_grad[0], b.sft_grad[0]) > 0.99);
  BOOST_TEST(cosine(f.grpo_grad[0], b.grpo_grad[0]) > 0.99);
  BOOST_CHECK_EXCEPTION(mt::trainer(m0, {.autocast = at::kHalf}), msrl::invalid_argument,
                        [](const msrl::invalid_argument& e) { return std::string(e.what()).find("bfloat16 on the CPU") != std::string::npos; });
}

BOOST_AUTO_TEST_CASE(grpo_step_raises_the_best_completion) {
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  const auto in = tiny_prompt();
  const auto s = mt::sample(m, in.prompt, in.pixels, {.num_samples = 4, .max_new_tokens = 8, .temperature = 1.0, .seed = 3});
  const std::vector<double> rewards{0.0, 1.0, 0.0, 0.0};
  auto seq_logp = [&] {
    at::NoGradGuard ng;
    return (mt::completion_logprobs(m, in.prompt, in.pixels, s.tokens) * s.mask.to(at::kFloat)).sum(1);
  };
  const auto before = seq_logp();
  mt::trainer t(m, {.lr = 1e-3, .max_grad_norm = 0.0});
  const auto st = t.grpo_step({{in.prompt, in.pixels, s.tokens, s.mask, s.logprobs, rewards}}, msrl::grpo::presets::msrl_release);
  const auto after = seq_logp();
  BOOST_TEST_MESSAGE("GRPO best completion seq logp " << before[1].item<double>() << " -> " << after[1].item<double>() << ", grad norm " << st.grad_norm);
  BOOST_TEST(after[1].item<double>() > before[1].item<double>() + 1e-3);
  BOOST_TEST(st.grad_norm > 0);
  BOOST_TEST(std::abs(st.metrics.ratio_mean - 1.0) < 1e-4); // on-policy: old == new
}

BOOST_AUTO_TEST_CASE(skipping_flat_groups_leaves_the_step_unchanged) {
  // A group whose rewards are all equal has advantages 0, loss 0 and gradient 0: skipping its
  // forward and backward must give bit-identical parameters, loss and gradient norm over steps
  // that mix flat and informative groups, and a step of flat groups only.
  const auto in = tiny_prompt();
  auto base = mt::load_internvl(fixtures / "tiny_internvl");
  const auto s1 = mt::sample(base, in.prompt, in.pixels, {.num_samples = 4, .max_new_tokens = 8, .temperature = 1.0, .seed = 5});
  const auto s2 = mt::sample(base, in.prompt, in.pixels, {.num_samples = 4, .max_new_tokens = 6, .temperature = 1.0, .seed = 6});
  const std::vector<mt::grpo_group> mixed{{in.prompt, in.pixels, s1.tokens, s1.mask, s1.logprobs, {0.0, 1.0, 1.0, 0.0}},
                                          {in.prompt, in.pixels, s2.tokens, s2.mask, s2.logprobs, {1.0, 1.0, 1.0, 1.0}}};
  const std::vector<mt::grpo_group> flat{{in.prompt, in.pixels, s2.tokens, s2.mask, s2.logprobs, {0.0, 0.0, 0.0, 0.0}}};
  std::vector<std::vector<at::Tensor>> params;
  std::vector<std::vector<double>> stats;
  for (const bool skip : {false, true}) {
    auto m = mt::load_internvl(fixtures / "tiny_internvl");
    mt::trainer t(m, {.lr = 1e-3, .weight_decay = 0.01, .skip_flat_groups = skip});
    std::vector<double> s;
    for (const auto* groups : {&mixed, &flat, &mixed}) {
      const auto st = t.grpo_step(*groups, msrl::grpo::presets::msrl_release); // beta 0: skipping allowed
      s.insert(s.end(), {st.loss, st.grad_norm, st.advantages.zero_std_fraction, static_cast<double>(st.skipped_groups)});
    }
    stats.push_back(s);
    std::vector<at::Tensor> p;
    for (const auto& x : m->parameters()) p.push_back(x.detach().clone());
    params.push_back(p);
  }
  for (std::size_t i = 0; i < params[0].size(); ++i) BOOST_TEST(at::equal(params[0][i], params[1][i]), "parameter " << i);
  for (std::size_t k = 0; k < stats[0].size(); k += 4) {
    BOOST_TEST(stats[0][k] == stats[1][k]);         // loss
    BOOST_TEST(stats[0][k + 1] == stats[1][k + 1]); // gradient norm
    BOOST_TEST(stats[0][k + 2] == stats[1][k + 2]); // zero-std fraction
    BOOST_TEST(stats[0][k + 3] == 0.0);
  }
  BOOST_TEST(stats[1][3] == 1.0);  // step 1: the flat group of two
  BOOST_TEST(stats[1][7] == 1.0);  // step 2: the only group
  BOOST_TEST(stats[1][11] == 1.0); // step 3
}

BOOST_AUTO_TEST_CASE(given_advantages_per_row_or_per_token_match_the_presets) {
  // grpo_group::advantages replaces the preset's group advantages: the preset's own values given
  // as [G] and broadcast to [G, L] must train exactly as the preset route does.
  const auto in = tiny_prompt();
  auto base = mt::load_internvl(fixtures / "tiny_internvl");
  const auto s1 = mt::sample(base, in.prompt, in.pixels, {.num_samples = 4, .max_new_tokens = 8, .temperature = 1.0, .seed = 5});
  const auto s2 = mt::sample(base, in.prompt, in.pixels, {.num_samples = 4, .max_new_tokens = 6, .temperature = 1.0, .seed = 6});
  const auto& preset = msrl::grpo::presets::msrl_release;
  std::vector<mt::grpo_group> groups{{in.prompt, in.pixels, s1.tokens, s1.mask, s1.logprobs, {0.0, 1.0, 1.0, 0.5}},
                                     {in.prompt, in.pixels, s2.tokens, s2.mask, s2.logprobs, {1.0, 0.0, 0.0, 0.0}}};
  std::vector<std::vector<at::Tensor>> params;
  std::vector<double> losses;
  for (int mode = 0; mode < 3; ++mode) {
    auto gs = groups;
    for (auto& g : gs) {
      if (mode == 0) continue;
      std::vector<double> a(g.rewards.size());
      msrl::grpo::advantages(std::span<const double>(g.rewards), g.rewards.size(), std::span<double>(a), preset.advantages);
      const at::Tensor row = at::tensor(a, at::kFloat);
      g.advantages = mode == 1 ? row : row.unsqueeze(1).expand(g.completions.sizes()).contiguous();
    }
    auto m = mt::load_internvl(fixtures / "tiny_internvl");
    mt::trainer t(m, {.lr = 1e-3});
    for (int step = 0; step < 2; ++step) losses.push_back(t.grpo_step(gs, preset).loss);
    std::vector<at::Tensor> p;
    for (const auto& x : m->parameters()) p.push_back(x.detach().clone());
    params.push_back(p);
  }
  for (int mode = 1; mode < 3; ++mode) {
    for (std::size_t i = 0; i < params[0].size(); ++i)
      BOOST_TEST(at::allclose(params[0][i], params[mode][i], 1e-6, 1e-7), "mode " << mode << " parameter " << i);
    for (int step = 0; step < 2; ++step)
      BOOST_TEST(std::abs(losses[mode * 2 + step] - losses[step]) <= 1e-6 * std::max(1.0, std::abs(losses[step])));
  }
  BOOST_TEST(losses[0] != 0.0);
  auto bad = groups;
  bad[0].advantages = at::zeros({3});
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  mt::trainer t(m, {.lr = 1e-3});
  BOOST_CHECK_THROW(t.grpo_step(bad, preset), msrl::shape_error);
}

BOOST_AUTO_TEST_CASE(controllers_follow_verl_and_trl_and_resume) {
  // verl/OpenRLHF AdaptiveKLController: err = clip(kl / target - 1, -0.2, 0.2), beta *= 1 + err n / horizon
  mt::kl_controller kl{.value = 0.1, .target = 0.1, .horizon = 100};
  kl.update(0.15, 8); // err clipped to 0.2
  BOOST_TEST(kl.value == 0.1 * (1 + 0.2 * 8 / 100.0), boost::test_tools::tolerance(1e-15));
  kl.update(0.09, 8); // err -0.1
  BOOST_TEST(kl.value == 0.1 * 1.016 * (1 - 0.1 * 8 / 100.0), boost::test_tools::tolerance(1e-15));
  mt::kl_controller fixed{.value = 0.2};
  fixed.update(5.0, 8);
  BOOST_TEST(fixed.value == 0.2);
  // TRL adaptive entropy: no bonus before a measurement; +-delta within [min, max]; gated on H <= target
  mt::entropy_controller ec{.coef = 0.01, .adaptive = true, .coef_min = 0.0, .coef_max = 0.012, .delta = 0.005, .target = 0.2};
  BOOST_TEST(ec.applied() == 0.0);
  ec.update(0.1);
  BOOST_TEST(ec.coef == 0.012); // clipped at max
  BOOST_TEST(ec.applied() == 0.012);
  ec.update(0.3);
  BOOST_TEST(ec.coef == 0.007, boost::test_tools::tolerance(1e-15));
  BOOST_TEST(ec.applied() == 0.0);
  ec.update(0.5);
  ec.update(0.5);
  BOOST_TEST(ec.coef == 0.0); // clipped at min
  BOOST_CHECK_THROW((mt::kl_controller{.value = 0.1, .target = 0.0, .horizon = 10}.update(0.1, 1)), msrl::invalid_argument);
  // saved with the optimizer state, restored by load_state
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  mt::trainer t(m, {.lr = 1e-3});
  t.control().kl = kl;
  t.control().entropy = ec;
  scratch sc("controllers");
  const auto dir = sc.dir;
  t.save_state(dir / "state.pt");
  auto m2 = mt::load_internvl(fixtures / "tiny_internvl");
  mt::trainer t2(m2, {.lr = 1e-3});
  t2.load_state(dir / "state.pt");
  BOOST_TEST(t2.control().kl.value == kl.value);
  BOOST_TEST(t2.control().entropy.coef == ec.coef);
  BOOST_TEST(t2.control().entropy.last_entropy == ec.last_entropy);
}

BOOST_AUTO_TEST_CASE(grpo_step_metrics_cover_every_group) {
  // Independent route: the clip fractions, ratio mean and zero-variance count written out by hand
  // from the current log-probs over both groups (not the last group only).
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  const auto in = tiny_prompt();
  const auto s1 = mt::sample(m, in.prompt, in.pixels, {.num_samples = 4, .max_new_tokens = 8, .temperature = 1.0, .seed = 3});
  const auto s2 = mt::sample(m, in.prompt, in.pixels, {.num_samples = 4, .max_new_tokens = 6, .temperature = 1.0, .seed = 4});
  // off-policy old log-probs: shifted by +-0.5 per token, so ratios leave [0.8, 1.28] both ways
  const auto shift = [](const at::Tensor& lp, double sign) {
    auto d = at::full_like(lp, 0.5);
    d.index_put_({at::indexing::Slice(), at::indexing::Slice(at::indexing::None, at::indexing::None, 2)}, -0.5);
    return lp + sign * d;
  };
  const auto old1 = shift(s1.logprobs, 1.0), old2 = shift(s2.logprobs, -1.0);
  const std::vector<double> r1{0.0, 1.0, 0.0, 1.0}, r2{1.0, 1.0, 1.0, 1.0}; // the second group has no variance
  const auto& preset = msrl::grpo::presets::msrl_release;                  // eps 0.2 / 0.28, advantages r - mean
  double low = 0, high = 0, ratio = 0, tokens = 0;
  const auto count = [&](const mt::sampling_result& s, const at::Tensor& old, const std::vector<double>& r) {
    at::NoGradGuard ng;
    const auto lp = mt::completion_logprobs(m, in.prompt, in.pixels, s.tokens);
    const double mean = std::accumulate(r.begin(), r.end(), 0.0) / static_cast<double>(r.size());
    for (std::int64_t i = 0; i < s.tokens.size(0); ++i)
      for (std::int64_t t = 0; t < s.tokens.size(1); ++t) {
        if (!s.mask[i][t].item<bool>()) continue;
        const double q = std::exp(lp[i][t].item<double>() - old[i][t].item<double>()), a = r[static_cast<std::size_t>(i)] - mean;
        low += (q < 0.8 && a < 0) ? 1 : 0;
        high += (q > 1.28 && a > 0) ? 1 : 0;
        ratio += q;
        tokens += 1;
      }
  };
  count(s1, old1, r1);
  count(s2, old2, r2);
  mt::trainer t(m, {.lr = 0.0, .max_grad_norm = 0.0, .skip_flat_groups = false}); // metrics over every group
  const auto st = t.grpo_step({{in.prompt, in.pixels, s1.tokens, s1.mask, old1, r1}, {in.prompt, in.pixels, s2.tokens, s2.mask, old2, r2}}, preset);
  BOOST_TEST_MESSAGE("step metrics: tokens " << st.metrics.tokens << ", clip low " << st.metrics.clip_fraction_low << ", high "
                                             << st.metrics.clip_fraction_high << ", ratio " << st.metrics.ratio_mean);
  BOOST_TEST(st.metrics.tokens == tokens);
  BOOST_TEST(st.metrics.sequences == 8.0);
  BOOST_TEST(low > 0);
  BOOST_TEST(high > 0);
  BOOST_TEST(std::abs(st.metrics.clip_fraction_low - low / tokens) < 1e-12);
  BOOST_TEST(std::abs(st.metrics.clip_fraction_high - high / tokens) < 1e-12);
  BOOST_TEST(std::abs(st.metrics.clip_fraction - (low + high) / tokens) < 1e-12);
  BOOST_TEST(std::abs(st.metrics.ratio_mean - ratio / tokens) < 1e-5 * ratio / tokens);
  BOOST_TEST(st.advantages.num_groups == 2u);
  BOOST_TEST(st.advantages.zero_std_groups == 1u);
  BOOST_TEST(st.advantages.zero_std_fraction == 0.5);
  BOOST_TEST(std::abs(st.advantages.reward_mean - 0.75) < 1e-12);                 // 6 of 8
  BOOST_TEST(std::abs(st.advantages.reward_std - std::sqrt(0.75 * 0.25)) < 1e-12); // population std of 0/1 rewards
}

BOOST_AUTO_TEST_CASE(grpo_updates_train_one_batch_several_times) {
  // Independent route: the second update's ratios and clip fractions written out by hand from the
  // policy after one grpo_step (a second copy of the model) against the sampler's log-probs, and
  // the weights after two updates compared with two grpo_step calls on that copy.
  auto m1 = mt::load_internvl(fixtures / "tiny_internvl"), m2 = mt::load_internvl(fixtures / "tiny_internvl");
  const auto in = tiny_prompt();
  const auto s = mt::sample(m1, in.prompt, in.pixels, {.num_samples = 4, .max_new_tokens = 8, .temperature = 1.0, .seed = 3});
  const std::vector<double> r{0.0, 1.0, 0.0, 1.0}; // advantages -0.5 / +0.5 (msrl_release: r - mean)
  const auto& preset = msrl::grpo::presets::msrl_release; // eps 0.2 / 0.28
  const std::vector<mt::grpo_group> groups{{in.prompt, in.pixels, s.tokens, s.mask, s.logprobs, r}};
  const mt::train_options opt{.lr = 3e-4, .max_grad_norm = 0.0};
  mt::trainer t1(m1, opt), t2(m2, opt);
  const auto first = t1.grpo_step(groups, preset);
  double low = 0, high = 0, ratio = 0, tokens = 0;
  {
    at::NoGradGuard ng;
    const auto lp = mt::completion_logprobs(m1, in.prompt, in.pixels, s.tokens);
    for (std::int64_t i = 0; i < s.tokens.size(0); ++i)
      for (std::int64_t k = 0; k < s.tokens.size(1); ++k) {
        if (!s.mask[i][k].item<bool>()) continue;
        const double q = std::exp(lp[i][k].item<double>() - s.logprobs[i][k].item<double>()), a = r[static_cast<std::size_t>(i)] - 0.5;
        low += (q < 0.8 && a < 0) ? 1 : 0;
        high += (q > 1.28 && a > 0) ? 1 : 0;
        ratio += q;
        tokens += 1;
      }
  }
  const auto second = t1.grpo_step(groups, preset);
  const auto both = mt::grpo_updates(t2, groups, preset, {.num_iterations = 2});
  BOOST_TEST_MESSAGE("second update: ratio mean " << ratio / tokens << ", clipped " << (low + high) << " of " << tokens);
  BOOST_TEST(std::abs(first.metrics.ratio_mean - 1.0) < 1e-4); // the first update is on-policy
  BOOST_TEST(std::abs(ratio / tokens - 1.0) > 1e-3);           // the second one is not
  BOOST_TEST(low + high > 0);                                   // and its clip acts
  BOOST_TEST(std::abs(second.metrics.ratio_mean - ratio / tokens) < 1e-5);
  BOOST_TEST(std::abs(second.metrics.clip_fraction - (low + high) / tokens) < 1e-12);
  BOOST_TEST(std::abs(both.metrics.ratio_mean - (first.metrics.ratio_mean + ratio / tokens) / 2) < 1e-5);
  BOOST_TEST(std::abs(both.metrics.clip_fraction - (first.metrics.clip_fraction + (low + high) / tokens) / 2) < 1e-12);
  BOOST_TEST(std::abs(both.loss - (first.loss + second.loss) / 2) < 1e-6);
  BOOST_TEST(std::abs(both.grad_norm - (first.grad_norm + second.grad_norm) / 2) < 1e-6);
  BOOST_TEST(both.advantages.num_groups == 1u);
  BOOST_TEST(same_params(m1, m2)); // two updates, the same weights as two grpo_step calls
  BOOST_CHECK_EXCEPTION(mt::grpo_updates(t2, groups, preset, {.num_iterations = 0}), msrl::invalid_argument,
                        [](const msrl::invalid_argument& e) { return std::string(e.what()).find("num_iterations") != std::string::npos; });
}

BOOST_AUTO_TEST_CASE(grpo_gradient_matches_autograd_of_the_same_loss) {
  // Independent route: for the msrl_paper preset with no clipping active (on-policy), the loss is
  // seq_mean_token_mean of -A * exp(logp - sg(logp)) + beta * k3; write it with torch ops,
  // differentiate with autograd, compare parameter gradients with the trainer's host route.
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  auto ref = mt::load_internvl(fixtures / "tiny_internvl");
  {
    at::NoGradGuard ng;
    for (auto& p : ref->parameters()) p.add_(at::randn_like(p) * 0.01);
  }
  const auto in = tiny_prompt();
  const auto s = mt::sample(m, in.prompt, in.pixels, {.num_samples = 3, .max_new_tokens = 5, .stop_ids = {3}, .seed = 9});
  const std::vector<double> rewards{0.2, 1.0, -0.5};
  auto preset = msrl::grpo::presets::msrl_paper;
  mt::trainer t(m, {.lr = 0.0, .max_grad_norm = 0.0}, ref);
  t.grpo_step({{in.prompt, in.pixels, s.tokens, s.mask, at::Tensor(), rewards}}, preset);
  std::vector<at::Tensor> g1;
  for (auto& p : m->parameters()) g1.push_back(p.grad().clone());

  for (auto& p : m->parameters()) p.mutable_grad().zero_();
  std::vector<double> adv(3);
  msrl::grpo::advantages(std::span<const double>(rewards), 3, std::span<double>(adv), preset.advantages);
  auto lp = mt::completion_logprobs(m, in.prompt, in.pixels, s.tokens);
  at::Tensor rlp;
  {
    at::NoGradGuard ng;
    rlp = mt::completion_logprobs(ref, in.prompt, in.pixels, s.tokens);
  }
  const auto mask = s.mask.to(at::kFloat);
  const auto A = at::tensor(adv, at::kFloat).unsqueeze(1);
  const auto ratio = at::exp(lp - lp.detach());
  const auto k3 = at::exp(rlp - lp) - (rlp - lp) - 1;
  const auto per_tok = -A * ratio + preset.loss.beta * k3;
  const auto loss = ((per_tok * mask).sum(1) / mask.sum(1).clamp_min(1)).mean();
  loss.backward();
  double worst = 0, scale = 0;
  std::size_t i = 0;
  for (auto& p : m->parameters()) {
    worst = std::max(worst, max_abs_diff(p.grad(), g1[i]));
    scale = std::max(scale, g1[i].abs().max().item<double>());
    ++i;
  }
  BOOST_TEST_MESSAGE("GRPO grad: max abs diff " << worst << " (max |grad| " << scale << ")");
  BOOST_TEST(scale > 1e-3);
  BOOST_TEST(worst < 1e-5 * std::max(1.0, scale));
}

BOOST_AUTO_TEST_CASE(grpo_step_applies_the_presets_token_shaping) {
  // verl's Clip-Cov / KL-Cov and ms-swift's FIPO need the current log-probs before the loss
  // (preset::shaping). Independent route: each peer's loss written with torch ops from its
  // formula (verl core_algos.py compute_policy_loss_clip_cov / _kl_cov; ms-swift
  // _compute_fipo_influence), the selection made by torch (topk; Clip-Cov with ratio 1 so that every
  // candidate is zeroed and no random draw enters), differentiated by autograd; compared with the
  // trainer's parameter gradients, off-policy.
  const auto in = tiny_prompt();
  auto m0 = mt::load_internvl(fixtures / "tiny_internvl");
  const auto s = mt::sample(m0, in.prompt, in.pixels, {.num_samples = 4, .max_new_tokens = 8, .stop_ids = {3}, .seed = 21});
  const std::vector<double> rewards{1.0, 0.0, 0.5, -0.5};
  const auto mask = s.mask.to(at::kFloat);
  at::manual_seed(5);
  const at::Tensor old = (s.logprobs + at::randn_like(s.logprobs) * 0.15 * mask).detach();

  auto check = [&](msrl::grpo::preset p, auto&& torch_loss, const char* name) {
    auto m = mt::load_internvl(fixtures / "tiny_internvl");
    mt::trainer t(m, {.lr = 0.0, .max_grad_norm = 0.0});
    const auto st = t.grpo_step({{in.prompt, in.pixels, s.tokens, s.mask, old, rewards}}, p);
    std::vector<at::Tensor> g1;
    for (auto& q : m->parameters()) g1.push_back(q.grad().clone());
    for (auto& q : m->parameters()) q.mutable_grad().zero_();
    std::vector<double> adv(4);
    msrl::grpo::advantages(std::span<const double>(rewards), 4, std::span<double>(adv), p.advantages);
    const auto A = at::tensor(adv, at::kFloat).unsqueeze(1).expand({4, s.tokens.size(1)});
    const auto lp = mt::completion_logprobs(m, in.prompt, in.pixels, s.tokens);
    const std::pair<at::Tensor, double> r = torch_loss(lp, A, p);
    const at::Tensor& loss = r.first;
    loss.backward();
    double worst = 0, scale = 0;
    std::size_t i = 0;
    for (auto& q : m->parameters()) {
      worst = std::max(worst, max_abs_diff(q.grad(), g1[i]));
      scale = std::max(scale, g1[i].abs().max().item<double>());
      ++i;
    }
    BOOST_TEST_MESSAGE(name << ": loss " << st.loss << " vs " << loss.item<double>() << ", grad max abs diff " << worst
                            << " (max |grad| " << scale << "), selected " << st.selected_tokens);
    BOOST_TEST(std::abs(st.loss - loss.item<double>()) < 1e-6);
    BOOST_TEST(scale > 1e-4);
    BOOST_TEST(worst < 1e-5 * std::max(1.0, scale));
    return std::make_pair(st, r.second);
  };
  const double n_valid = mask.sum().item<double>();
  const auto valid = mask > 0;
  // covariance over the unmasked tokens, verl's (A - mean A)(logp - mean logp), detached
  auto cov_of = [&](const at::Tensor& lp, const at::Tensor& A) {
    const auto l = lp.detach();
    const auto ma = (A * mask).sum() / n_valid, ml = (l * mask).sum() / n_valid;
    return (A - ma) * (l - ml);
  };

  { // KL-Cov: -A rho everywhere, + coef |logp - old| on the top-k covariance tokens
    auto p = msrl::grpo::presets::verl_kl_cov;
    p.shaping.kl_cov.ratio = 0.25;
    const auto [st, sel] = check(p, [&](const at::Tensor& lp, const at::Tensor& A, const msrl::grpo::preset& q) {
      const auto lr = lp - old;
      const auto ratio = at::exp(lr);
      auto cov = cov_of(lp, A).masked_fill(~valid, -std::numeric_limits<float>::infinity());
      const auto k = std::max<std::int64_t>(1, static_cast<std::int64_t>(q.shaping.kl_cov.ratio * n_valid));
      const auto top = std::get<1>(cov.flatten().topk(k));
      auto chosen = at::zeros({cov.numel()}, at::kFloat).index_fill_(0, top, 1.0).view_as(cov);
      const auto per_tok = -A * ratio + q.loss.kl_cov_coef * lr.abs() * chosen;
      return std::make_pair((per_tok * mask).sum() / n_valid, chosen.sum().item<double>());
    }, "verl_kl_cov");
    BOOST_TEST(st.selected_tokens == sel);
    BOOST_TEST(sel >= 2);
  }
  { // Clip-Cov: tokens where the clipped branch does not win and lower < cov < upper get loss 0
    auto p = msrl::grpo::presets::verl_clip_cov;
    p.shaping.clip_cov.ratio = 1.0; // k >= candidates: every candidate zeroed, no draw
    p.shaping.clip_cov.lower = 0.0;
    const auto [st, sel] = check(p, [&](const at::Tensor& lp, const at::Tensor& A, const msrl::grpo::preset& q) {
      const auto ratio = at::exp(lp - old);
      const auto pg1 = -A * ratio, pg2 = -A * at::clamp(ratio, 1 - q.loss.clip_low, 1 + q.loss.clip_high);
      const auto clip_by_origin = (pg2 > pg1).detach();
      const auto cov = cov_of(lp, A);
      const auto cand = valid & ~clip_by_origin & (cov > q.shaping.clip_cov.lower) & (cov < q.shaping.clip_cov.upper);
      const auto corr = 1 - cand.to(at::kFloat);
      return std::make_pair((at::maximum(pg1, pg2) * corr * mask).sum() / n_valid, cand.sum().item<double>());
    }, "verl_clip_cov");
    BOOST_TEST(st.selected_tokens == sel);
    BOOST_TEST(sel >= 1);
    BOOST_TEST(sel < n_valid);
  }
  { // FIPO: the clipped surrogate times clamp(exp(discounted future log-ratio), 1, 1 + c), detached
    auto p = msrl::grpo::presets::ms_swift_fipo;
    p.loss.beta = 0.0; // the KL path is the plain preset's (tested elsewhere)
    const auto [st, unused] = check(p, [&](const at::Tensor& lp, const at::Tensor& A, const msrl::grpo::preset& q) {
      const auto L = lp.size(1);
      const auto ratio = at::exp(lp - old);
      const double gamma = std::pow(2.0, -1.0 / q.shaping.fipo.decay_rate);
      const auto pos = at::arange(L, at::kDouble);
      const auto diff = pos.unsqueeze(0) - pos.unsqueeze(1); // [t, u] = u - t
      const auto W = at::where(diff >= 0, at::pow(gamma, diff), at::zeros_like(diff)).to(at::kFloat);
      const auto d = (lp.detach() - old) * mask;
      const auto F = d.matmul(W.t()) * mask;
      auto w = at::clamp(at::exp(F), 1.0, 1.0 + q.shaping.fipo.clip_range);
      const auto unsafe = (A < 0) & (ratio.detach() > q.shaping.fipo.safety_threshold);
      w = at::where(unsafe, at::clamp(w, 0.8, 1.0), w);
      const auto pg = at::maximum(-A * ratio, -A * at::clamp(ratio, 1 - q.loss.clip_low, 1 + q.loss.clip_high));
      return std::make_pair((pg * w * mask).sum() / n_valid, (w * mask).sum().item<double>() / n_valid);
    }, "ms_swift_fipo");
    BOOST_TEST(std::abs(st.fipo_weight_mean - unused) < 1e-6);
    BOOST_TEST(st.fipo_weight_mean > 1.0); // some weights away from 1
  }
}

BOOST_AUTO_TEST_CASE(grpo_entropy_bonus_matches_autograd_of_the_same_loss) {
  // Independent route for verl's entropy bonus: logits from the model's full forward over
  // prompt + completion (not the trainer's embed/hidden path), entropy as logsumexp(z) - sum p z,
  // loss = seq_mean_token_mean(-A * ratio) - c * seq_mean_token_mean(H); autograd vs the trainer.
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  const auto in = tiny_prompt();
  const double T = 0.7, c = 0.3;
  const auto s = mt::sample(m, in.prompt, in.pixels, {.num_samples = 3, .max_new_tokens = 5, .temperature = T, .stop_ids = {3}, .seed = 4});
  const std::vector<double> rewards{0.0, 1.0, 0.5};
  const auto preset = msrl::grpo::presets::msrl_release;
  mt::trainer t(m, {.lr = 0.0, .max_grad_norm = 0.0});
  const auto st = t.grpo_step({{in.prompt, in.pixels, s.tokens, s.mask, s.logprobs, rewards}}, preset, T, c);
  std::vector<at::Tensor> g1;
  for (auto& p : m->parameters()) g1.push_back(p.grad().defined() ? p.grad().clone() : at::zeros_like(p));

  for (auto& p : m->parameters())
    if (p.grad().defined()) p.mutable_grad().zero_();
  std::vector<double> adv(3);
  msrl::grpo::advantages(std::span<const double>(rewards), 3, std::span<double>(adv), preset.advantages);
  const auto G = s.tokens.size(0), L = s.tokens.size(1), Tp = in.prompt.size(0);
  const auto ids = at::cat({in.prompt.unsqueeze(0).expand({G, Tp}), s.tokens}, 1);
  const auto z = m->forward(ids, at::cat({in.pixels, in.pixels, in.pixels}, 0)).narrow(1, Tp - 1, L).to(at::kFloat) / T;
  const auto lp = (z - z.logsumexp(-1, true)).gather(2, s.tokens.unsqueeze(2)).squeeze(2);
  const auto H = z.logsumexp(-1) - (z.softmax(-1) * z).sum(-1);
  const auto mask = s.mask.to(at::kFloat);
  const auto A = at::tensor(adv, at::kFloat).unsqueeze(1);
  const auto seq_mean = [&](const at::Tensor& x) { return ((x * mask).sum(1) / mask.sum(1).clamp_min(1)).mean(); };
  const auto ent = seq_mean(H);
  const auto loss = seq_mean(-A * at::exp(lp - lp.detach())) - c * ent;
  loss.backward();
  double worst = 0, scale = 0;
  std::size_t i = 0;
  for (auto& p : m->parameters()) {
    const auto gi = p.grad().defined() ? p.grad() : at::zeros_like(p);
    worst = std::max(worst, max_abs_diff(gi, g1[i]));
    scale = std::max(scale, g1[i].abs().max().item<double>());
    ++i;
  }
  BOOST_TEST_MESSAGE("GRPO + entropy bonus grad: max abs diff " << worst << " (max |grad| " << scale << "), entropy " << st.entropy);
  BOOST_TEST(scale > 1e-3);
  BOOST_TEST(worst < 1e-5 * std::max(1.0, scale));
  BOOST_TEST(st.entropy == ent.item<double>(), boost::test_tools::tolerance(1e-5));
  BOOST_TEST(st.loss == loss.item<double>(), boost::test_tools::tolerance(1e-5));
  BOOST_CHECK_THROW(t.grpo_step({{in.prompt, in.pixels, s.tokens, s.mask, s.logprobs, rewards}}, preset, T, std::nan("")),
                    msrl::invalid_argument);
}

BOOST_AUTO_TEST_CASE(fused_logprobs_match_the_libtorch_route) {
  // The trainer's default (msrl::torch_ops' fused kernels) against libtorch's log_softmax + gather
  // (train_options::fused_logprobs = false): log-probs, entropy, and the SFT / GRPO (+ entropy
  // bonus, + KL to a reference) steps' losses and parameter gradients.
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  const auto in = tiny_prompt();
  const double T = 0.8;
  const auto s = mt::sample(m, in.prompt, in.pixels, {.num_samples = 3, .max_new_tokens = 6, .temperature = T, .stop_ids = {3}, .seed = 5});
  const auto a = mt::completion_logprobs(m, in.prompt, in.pixels, s.tokens, T, true);
  const auto b = mt::completion_logprobs(m, in.prompt, in.pixels, s.tokens, T, false);
  BOOST_TEST(max_abs_diff(a, b) < 1e-5);
  BOOST_TEST(max_abs_diff(a * s.mask, s.logprobs * s.mask) < 1e-4); // and the sampler's own log-probs
  const auto [la, ha] = mt::completion_logprobs_entropy(m, in.prompt, in.pixels, s.tokens, T, true);
  const auto [lb, hb] = mt::completion_logprobs_entropy(m, in.prompt, in.pixels, s.tokens, T, false);
  BOOST_TEST(max_abs_diff(la, lb) < 1e-5);
  BOOST_TEST(max_abs_diff(ha, hb) < 1e-5);

  auto grads_of = [&](bool fused, auto&& step) {
    auto mm = mt::load_internvl(fixtures / "tiny_internvl");
    mt::trainer t(mm, {.lr = 0.0, .max_grad_norm = 0.0, .fused_logprobs = fused}, perturbed_reference()); // the same reference for both routes
    const double loss = step(t);
    return std::pair{loss, step_grads(mm)};
  };
  auto compare = [&](const char* what, auto&& step) {
    const auto [l1, g1] = grads_of(true, step);
    const auto [l2, g2] = grads_of(false, step);
    const auto [worst, scale] = grad_gap(g2, g1); // scale: the libtorch route's largest entry
    BOOST_TEST_INFO(what << ": loss " << l1 << " vs " << l2 << ", grad diff " << worst << " of " << scale);
    BOOST_TEST(scale > 1e-4);
    BOOST_TEST(std::abs(l1 - l2) <= 1e-5 * std::max(1.0, std::abs(l2)));
    BOOST_TEST(worst <= 1e-5 * std::max(1.0, scale));
  };
  auto ids = at::cat({in.prompt, at::tensor({40, 41, 42, 43, 44, 3}, at::kLong)}).unsqueeze(0);
  auto target = at::zeros_like(ids);
  target.narrow(1, ids.size(1) - 6, 6).fill_(1);
  compare("sft", [&](mt::trainer& t) { return t.sft_step({{ids, target, in.pixels}}).loss; });
  const std::vector<double> rewards{0.0, 1.0, 0.4};
  compare("grpo + kl + entropy", [&](mt::trainer& t) {
    auto preset = msrl::grpo::presets::verl_default;
    preset.loss.beta = 0.04;
    return t.grpo_step({{in.prompt, in.pixels, s.tokens, s.mask, s.logprobs, rewards}}, preset, T, 0.2).loss;
  });
}

namespace {
/// The host kernel set behind a counter of GRPO-loss calls: shows which route a step took.
class loss_counting_kernels final : public msrl::torch_ops::kernel_set {
public:
  mutable int losses = 0;
  const char* name() const noexcept override { return "loss-counting host"; }
  void forward(const msrl::torch_ops::device_context& ctx, const msrl::torch_ops::logits_ref& x, const std::int64_t* t, double T, float* logp,
               double* lse, float* ent) const override {
    host_.forward(ctx, x, t, T, logp, lse, ent);
  }
  void backward(const msrl::torch_ops::device_context& ctx, const msrl::torch_ops::logits_ref& x, const std::int64_t* t, double T,
                const msrl::torch_ops::backward_arrays& in, void* grad) const override {
    host_.backward(ctx, x, t, T, in, grad);
  }
  msrl::grpo::loss_result grpo_loss(const msrl::torch_ops::device_context& ctx, const msrl::torch_ops::logits_ref& x,
                                    const std::int64_t* t, const msrl::grpo::loss_arrays<float>& in,
                                    const msrl::grpo::loss_options& o, const msrl::grpo::loss_normalizer& n, double T,
                                    void* grad) const override {
    ++losses;
    return host_.grpo_loss(ctx, x, t, in, o, n, T, grad);
  }

private:
  msrl::torch_ops::host_kernel_set host_;
};
/// Installs a kernel set as the CPU's for a scope, restoring the previous one whatever happens.
struct scoped_cpu_kernels {
  const msrl::torch_ops::kernel_set* previous;
  explicit scoped_cpu_kernels(const msrl::torch_ops::kernel_set* k) : previous(msrl::torch_ops::install_kernels(msrl::torch_ops::device_kind::cpu, k)) {}
  ~scoped_cpu_kernels() { msrl::torch_ops::install_kernels(msrl::torch_ops::device_kind::cpu, previous); }
  scoped_cpu_kernels(const scoped_cpu_kernels&) = delete;
  scoped_cpu_kernels& operator=(const scoped_cpu_kernels&) = delete;
};
} // namespace

BOOST_AUTO_TEST_CASE(fused_grpo_loss_route_matches_the_host_route) {
  // The GRPO step's loss through msrl::torch_ops::grpo_loss (train_options::fused_loss, the default)
  // against the host route (log-probs, msrl::grpo::policy_loss on host copies, d loss / d logp
  // through autograd): loss, step metrics and parameter gradients, over two groups with clipping
  // active both ways (off-policy old log-probs) and a KL term to a reference model.
  const auto in = tiny_prompt();
  const double T = 0.9;
  auto m0 = mt::load_internvl(fixtures / "tiny_internvl");
  const auto s1 = mt::sample(m0, in.prompt, in.pixels, {.num_samples = 4, .max_new_tokens = 7, .temperature = T, .stop_ids = {3}, .seed = 8});
  const auto s2 = mt::sample(m0, in.prompt, in.pixels, {.num_samples = 3, .max_new_tokens = 5, .temperature = T, .stop_ids = {3}, .seed = 9});
  const auto old1 = s1.logprobs + 0.4 * at::randn_like(s1.logprobs), old2 = s2.logprobs - 0.3;
  const std::vector<double> r1{0.0, 1.0, 0.4, 1.2}, r2{1.0, 0.0, 0.5};
  for (const auto* base : {&msrl::grpo::presets::msrl_release, &msrl::grpo::presets::dr_grpo, &msrl::grpo::presets::trl_default}) {
    auto preset = *base;
    preset.loss.beta = 0.04;
    const auto run = [&](bool fused) {
      auto mm = mt::load_internvl(fixtures / "tiny_internvl");
      mt::trainer t(mm, {.lr = 0.0, .max_grad_norm = 0.0, .fused_loss = fused}, perturbed_reference());
      loss_counting_kernels counting;
      const scoped_cpu_kernels guard(&counting); // the counting set for this step only
      const auto st = t.grpo_step({{in.prompt, in.pixels, s1.tokens, s1.mask, old1, r1}, {in.prompt, in.pixels, s2.tokens, s2.mask, old2, r2}}, preset, T);
      BOOST_TEST(counting.losses == (fused ? 2 : 0)); // one fused loss call per group, or none
      return std::pair{st, step_grads(mm)};
    };
    const auto [a, ga] = run(true);
    const auto [b, gb] = run(false);
    const auto [worst, scale] = grad_gap(gb, ga); // scale: the host route's largest entry
    BOOST_TEST_INFO(preset.name << ": loss " << a.loss << " vs " << b.loss << ", grad diff " << worst << " of " << scale << ", clip "
                                << a.metrics.clip_fraction << " vs " << b.metrics.clip_fraction);
    BOOST_TEST(scale > 1e-4);
    BOOST_TEST(b.metrics.clip_fraction > 0);
    BOOST_TEST(std::abs(a.loss - b.loss) <= 1e-6 * std::max(1.0, std::abs(b.loss)));
    BOOST_TEST(worst <= 1e-6 * std::max(1.0, scale));
    BOOST_TEST(a.metrics.tokens == b.metrics.tokens);
    BOOST_TEST(std::abs(a.metrics.clip_fraction - b.metrics.clip_fraction) < 1e-12);
    BOOST_TEST(std::abs(a.metrics.kl_mean - b.metrics.kl_mean) < 1e-6);
    BOOST_TEST(std::abs(a.metrics.ratio_mean - b.metrics.ratio_mean) < 1e-6);
  }
}

namespace {
/// Two GRPO steps over the same groups that must agree: loss and ratio / KL metrics to 1e-6, clip
/// fractions to 1e-12, counts exactly, every parameter's gradient to 1e-5 of the largest (which
/// must exceed 1e-4), with clipping active.
void check_same_grpo_step(const mt::step_stats& a, const std::vector<at::Tensor>& ga, const mt::step_stats& b, const std::vector<at::Tensor>& gb) {
  const auto [worst, scale] = grad_gap(ga, gb);
  BOOST_TEST_INFO("loss " << a.loss << " vs " << b.loss << ", grad diff " << worst << " of " << scale);
  BOOST_TEST(scale > 1e-4);
  BOOST_TEST(a.metrics.clip_fraction > 0);
  BOOST_TEST(std::abs(a.loss - b.loss) <= 1e-6 * std::max(1.0, std::abs(a.loss)));
  BOOST_TEST(worst <= 1e-5 * std::max(1.0, scale));
  BOOST_TEST(a.metrics.tokens == b.metrics.tokens);
  BOOST_TEST(a.skipped_groups == b.skipped_groups);
  BOOST_TEST(std::abs(a.metrics.clip_fraction - b.metrics.clip_fraction) < 1e-12);
  BOOST_TEST(std::abs(a.metrics.kl_mean - b.metrics.kl_mean) < 1e-6);
  BOOST_TEST(std::abs(a.metrics.ratio_mean - b.metrics.ratio_mean) < 1e-6);
}

/// Five GRPO groups sampled from the fixture at temperature T: the image prompt and a text-only
/// one in turn, G = 4, 4, 4, 3, 3, completions of up to 7 tokens, the second group flat (every
/// reward 1), off-policy old log-probs (shifted by +0.35 / -0.3) so that clipping acts.
std::vector<mt::grpo_group> five_groups(double T) {
  const auto in = tiny_prompt();
  const auto text_only = at::tensor({5, 6, 7, 8, 9, 10}, at::kLong);
  auto m0 = mt::load_internvl(fixtures / "tiny_internvl");
  const auto draw = [&](const at::Tensor& p, const at::Tensor& pix, std::int64_t G, std::int64_t L, std::uint64_t seed) {
    return mt::sample(m0, p, pix, {.num_samples = G, .max_new_tokens = L, .temperature = T, .stop_ids = {3}, .seed = seed});
  };
  const std::vector<mt::sampling_result> s{draw(in.prompt, in.pixels, 4, 7, 8), draw(text_only, {}, 4, 5, 9), draw(in.prompt, in.pixels, 4, 6, 10),
                                         draw(text_only, {}, 3, 6, 11), draw(in.prompt, in.pixels, 3, 4, 12)};
  const std::vector<std::vector<double>> r{{0.0, 1.0, 0.4, 1.2}, {1.0, 1.0, 1.0, 1.0}, {1.0, 0.0, 0.0, 0.3}, {1.0, 0.0, 0.5}, {0.2, 0.9, 0.1}};
  std::vector<mt::grpo_group> groups;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const bool image = i % 2 == 0;
    groups.push_back({image ? in.prompt : text_only, image ? in.pixels : at::Tensor(), s[i].tokens, s[i].mask,
                      s[i].logprobs + (i % 2 ? -0.3 : 0.35), r[i]});
  }
  return groups;
}
} // namespace

BOOST_AUTO_TEST_CASE(grpo_groups_per_pass_match_one_group_per_pass) {
  // train_options::groups_per_pass: the fused route's logits of several groups from one pass of the
  // model. Against one group per pass: loss, step metrics, parameter gradients and the fused loss
  // calls (one per group either way), over five groups — with an image and without, G = 4 and
  // G = 3 (a pass holds groups of one G), one flat group (skipped) — off-policy so that clipping is
  // active, with a KL term to a reference model.
  const double T = 0.9;
  const auto groups = five_groups(T);
  for (const double beta : {0.0, 0.04}) {
    auto preset = msrl::grpo::presets::msrl_release;
    preset.loss.beta = beta;
    const auto run = [&](std::size_t per_pass) {
      auto mm = mt::load_internvl(fixtures / "tiny_internvl");
      mt::trainer t(mm, {.lr = 0.0, .max_grad_norm = 0.0, .groups_per_pass = per_pass}, perturbed_reference());
      loss_counting_kernels counting;
      const scoped_cpu_kernels guard(&counting);
      const auto st = t.grpo_step(groups, preset, T);
      BOOST_TEST(counting.losses == (beta == 0.0 ? 4 : 5)); // the flat group is skipped without a KL term
      return std::pair{st, step_grads(mm)};
    };
    const auto [a, ga] = run(1);
    for (const std::size_t per_pass : {2u, 5u}) {
      const auto [b, gb] = run(per_pass);
      BOOST_TEST_CONTEXT("beta " << beta << ", " << per_pass << " per pass") { check_same_grpo_step(a, ga, b, gb); }
    }
  }
  auto mm = mt::load_internvl(fixtures / "tiny_internvl");
  BOOST_CHECK_THROW(mt::trainer(mm, {.groups_per_pass = 0}), msrl::invalid_argument);
}


// detail::micro_batch_backward on its own. Independent route: the gradients written out by hand.
// Three losses over two parameters, one of which the third loss does not reach and one a fourth
// "loss" that needs no gradient; a gradient that autograd hands back as an expanded view (d sum / d p)
// must be summed like any other; an existing .grad is added to; a parameter no loss reaches keeps an
// undefined .grad.
BOOST_AUTO_TEST_CASE(micro_batch_backward_sums_the_losses_gradients_in_order) {
  for (const std::size_t workers : {1u, 2u, 3u, 8u}) {
    BOOST_TEST_CONTEXT("workers " << workers) {
      auto a = at::tensor({1.0, -2.0, 0.5}, at::kDouble).requires_grad_(true);
      auto b = at::tensor({3.0, 4.0}, at::kDouble).requires_grad_(true);
      auto unused = at::tensor({7.0}, at::kDouble).requires_grad_(true);
      b.mutable_grad() = at::tensor({10.0, 20.0}, at::kDouble); // a gradient from before: added to
      const int threads = at::get_num_threads();
      std::vector<int> seen(4, -1);
      mt::detail::micro_batch_backward({a, b, unused}, 4, workers, [&](std::size_t i) -> at::Tensor {
        seen[i] = at::get_num_threads();
        if (i == 0) return (a * a).sum() + b.sum();   // 2a, 1
        if (i == 1) return 3.0 * (a * b.sum()).sum(); // 3 sum(b), 3 sum(a)
        if (i == 2) return a.sum();                   // 1 (an expanded view)
        return at::ones({1}, at::kDouble);            // needs no gradient
      });
      BOOST_TEST(at::get_num_threads() == threads);
      for (const int s : seen) BOOST_TEST(s == (workers > 1 ? 1 : threads)); // one intra-op thread per worker
      const double sb = 7.0, sa = -0.5;
      BOOST_TEST(at::allclose(a.grad(), at::tensor({2.0 * 1.0 + 3 * sb + 1, 2.0 * -2.0 + 3 * sb + 1, 2.0 * 0.5 + 3 * sb + 1}, at::kDouble)));
      BOOST_TEST(at::allclose(b.grad(), at::tensor({10.0 + 1 + 3 * sa, 20.0 + 1 + 3 * sa}, at::kDouble)));
      BOOST_TEST(!unused.grad().defined());
    }
  }
  // An error in a worker reaches the caller after every worker has stopped; no .grad changes.
  auto p = at::tensor({1.0, 2.0}, at::kDouble).requires_grad_(true);
  const int threads = at::get_num_threads();
  BOOST_CHECK_THROW(mt::detail::micro_batch_backward({p}, 5, 2, [&](std::size_t i) -> at::Tensor {
                      if (i == 3) throw std::runtime_error("micro-batch 3");
                      return (p * p).sum();
                    }),
                    std::runtime_error);
  BOOST_TEST(!p.grad().defined());
  BOOST_TEST(at::get_num_threads() == threads);
}

// train_options::micro_batch_workers: an SFT step's micro-batches and a GRPO step's passes on
// several threads against one after the other (the independent route: the sequential backward,
// whose own gradients the other tests check against autograd and finite differences). Loss, metrics
// and every parameter's gradient, with the vision tower frozen (no gradient for it either way);
// the same worker count twice gives the same bits.
BOOST_AUTO_TEST_CASE(micro_batch_workers_match_one_after_the_other) {
  const auto in = tiny_prompt();
  const auto text_only = at::tensor({5, 6, 7, 8, 9, 10}, at::kLong);
  const auto sft_row = [](const at::Tensor& prompt, std::vector<std::int64_t> answer) {
    const auto n = static_cast<std::int64_t>(answer.size());
    auto ids = at::cat({prompt, at::tensor(answer, at::kLong)}).unsqueeze(0);
    auto target = at::zeros_like(ids);
    target.narrow(1, ids.size(1) - n, n).fill_(1);
    return std::pair{ids, target};
  };
  const auto [i1, t1] = sft_row(in.prompt, {40, 41, 42, 43, 44, 3});
  const auto [i2, t2] = sft_row(text_only, {50, 51, 3});
  const auto [i3, t3] = sft_row(text_only, {60, 61, 62, 63, 3});
  const std::vector<mt::sft_batch> micro{{i1, t1, in.pixels}, {i2, t2, {}}, {i3, t3, {}}};
  const auto sft = [&](std::size_t workers) {
    auto m = mt::load_internvl(fixtures / "tiny_internvl");
    mt::trainer t(m, {.lr = 0.0, .max_grad_norm = 0.0, .freeze_vision = true, .micro_batch_workers = workers});
    const auto st = t.sft_step(micro);
    BOOST_TEST(!m->vision->embeddings->position_embedding.grad().defined()); // frozen
    return std::pair{st, step_grads(m)};
  };
  const auto [s1, g1] = sft(1);
  for (const std::size_t workers : {2u, 3u}) {
    const auto [s, g] = sft(workers);
    const auto [worst, scale] = grad_gap(g1, g);
    BOOST_TEST_INFO("SFT, " << workers << " workers: loss " << s1.loss << " vs " << s.loss << ", grad diff " << worst << " of " << scale);
    BOOST_TEST(scale > 1e-3);
    BOOST_TEST(std::abs(s.loss - s1.loss) <= 1e-6 * std::max(1.0, s1.loss));
    BOOST_TEST(s.tokens == s1.tokens);
    BOOST_TEST(worst <= 1e-5 * std::max(1.0, scale));
    const auto [again, g_again] = sft(workers);
    BOOST_TEST(again.loss == s.loss);
    for (std::size_t k = 0; k < g.size(); ++k) BOOST_TEST(at::equal(g[k], g_again[k]));
  }

  const double T = 0.9;
  const auto groups = five_groups(T);
  for (const double beta : {0.0, 0.04}) {
    auto preset = msrl::grpo::presets::msrl_release;
    preset.loss.beta = beta;
    const auto grpo = [&](std::size_t workers, std::size_t per_pass) {
      auto mm = mt::load_internvl(fixtures / "tiny_internvl");
      mt::trainer t(mm, {.lr = 0.0, .max_grad_norm = 0.0, .groups_per_pass = per_pass, .micro_batch_workers = workers}, perturbed_reference());
      const auto st = t.grpo_step(groups, preset, T);
      return std::pair{st, step_grads(mm)};
    };
    for (const std::size_t per_pass : {1u, 2u}) {
      const auto [a, ga] = grpo(1, per_pass);
      for (const std::size_t workers : {2u, 4u}) {
        const auto [b, gb] = grpo(workers, per_pass);
        BOOST_TEST_CONTEXT("GRPO, beta " << beta << ", " << per_pass << " per pass, " << workers << " workers") { check_same_grpo_step(a, ga, b, gb); }
      }
    }
  }
  auto mm = mt::load_internvl(fixtures / "tiny_internvl");
  BOOST_CHECK_THROW(mt::trainer(mm, {.micro_batch_workers = 0}), msrl::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// Images

#include <msrl/trainer/image.hpp>

BOOST_AUTO_TEST_CASE(preprocessing_matches_pillow_fixture) {
  mt::safetensors_file fx(fixtures / "images.safetensors");
  for (const std::string name : {"wide", "tall"}) {
    const auto img = mt::decode_image_file(fixtures / ("image_" + name + ".png"));
    const auto grid = fx.load(name + "_grid");
    const mt::tiling_options opt{.image_size = 28, .max_tiles = static_cast<int>(grid[2].item<std::int64_t>())};
    const auto t = mt::preprocess(img, opt);
    BOOST_TEST(t.cols == grid[0].item<std::int64_t>());
    BOOST_TEST(t.rows == grid[1].item<std::int64_t>());
    const auto u8 = fx.load(name + "_u8"); // [n, 28, 28, 3] from Pillow
    BOOST_TEST(t.tiles == u8.size(0));
    std::int64_t mismatched = 0;
    for (int n = 0; n < t.tiles; ++n) {
      const auto want = u8[n].contiguous();
      const auto* w = want.data_ptr<std::uint8_t>();
      for (std::size_t i = 0; i < t.tiles_u8[static_cast<std::size_t>(n)].data.size(); ++i) mismatched += t.tiles_u8[static_cast<std::size_t>(n)].data[i] != w[i];
    }
    BOOST_TEST(mismatched == 0, name << ": " << mismatched << " bytes differ from Pillow");
    const auto pix = at::from_blob(const_cast<float*>(t.pixels.data()), {t.tiles, 3, 28, 28}, at::kFloat);
    BOOST_TEST(max_abs_diff(pix, fx.load(name + "_pixels")) < 1e-6);
  }
}

BOOST_AUTO_TEST_CASE(tiling_rules_and_bad_images) {
  const mt::tiling_options opt{};
  BOOST_TEST((mt::choose_grid(448, 448, opt) == std::pair<int, int>{1, 1}));
  BOOST_TEST((mt::choose_grid(896, 448, opt) == std::pair<int, int>{2, 1}));
  // Square and large: the tie between 1x1, 2x2, 3x3 goes to the largest grid whose area is
  // under twice the image area: 1344^2 > 0.5 * 448^2 * 9.
  BOOST_TEST((mt::choose_grid(1344, 1344, opt) == std::pair<int, int>{3, 3}));
  BOOST_TEST((mt::choose_grid(600, 600, opt) == std::pair<int, int>{1, 1})); // 600^2 < 0.5 * 448^2 * 4
  BOOST_TEST((mt::choose_grid(800, 800, opt) == std::pair<int, int>{2, 2})); // > 0.5 * 448^2 * 4, < ... * 9
  BOOST_TEST((mt::video_frame_indices(100, 8) == std::vector<std::int64_t>{6, 18, 31, 43, 56, 68, 80, 93}));
  BOOST_TEST((mt::video_frame_indices(10, 4) == std::vector<std::int64_t>{1, 3, 5, 8}));
  // Resizing to the same size is the identity; a constant image stays constant.
  mt::rgb_image flat{5, 4, std::vector<std::uint8_t>(60, 77)};
  BOOST_TEST((mt::resize_bicubic(flat, 5, 4).data == flat.data));
  BOOST_TEST((mt::resize_bicubic(flat, 13, 2).data == std::vector<std::uint8_t>(13 * 2 * 3, 77)));
  // Corrupt and truncated files are rejected.
  const std::string png = read_bytes(fixtures / "image_wide.png");
  for (std::size_t len : {std::size_t{0}, std::size_t{8}, std::size_t{40}, png.size() / 2}) {
    BOOST_CHECK_THROW(mt::decode_image(reinterpret_cast<const std::uint8_t*>(png.data()), len, "cut.png"), msrl::parse_error);
  }
  std::string bad = png;
  for (std::size_t i = 100; i < bad.size(); i += 7) bad[i] = static_cast<char>(bad[i] ^ 0x5a);
  BOOST_CHECK_THROW(mt::decode_image(reinterpret_cast<const std::uint8_t*>(bad.data()), bad.size(), "bad.png"), msrl::parse_error);
  BOOST_CHECK_THROW(mt::decode_image_file(fixtures / "no_such.png"), msrl::invalid_argument);
}

BOOST_AUTO_TEST_CASE(image_pixel_budget_is_checked_before_decoding) {
  // The default fits InternVL's 12 tiles of 448 x 448 many times over.
  BOOST_TEST(mt::default_max_image_pixels >= 16u * 12u * 448u * 448u);
  // A PNG whose header alone declares 16000 x 16000 pixels (no image data follows; under stb's own
  // 1 GiB limit): refused by the budget, by name, before stb allocates or decodes anything.
  std::string png("\x89PNG\r\n\x1a\n", 8);
  const auto be32 = [&](std::uint32_t v) {
    for (int i = 3; i >= 0; --i) png += static_cast<char>((v >> (8 * i)) & 0xff);
  };
  be32(13);
  png += "IHDR";
  be32(16000);
  be32(16000);
  png += std::string("\x08\x02\x00\x00\x00", 5);
  be32(0); // CRC (stb does not check it)
  const auto* huge = reinterpret_cast<const std::uint8_t*>(png.data());
  BOOST_CHECK_EXCEPTION(mt::decode_image(huge, png.size(), "huge.png"), msrl::value_error, [](const msrl::value_error& e) {
    const std::string w = e.what();
    return w.find("huge.png") != std::string::npos && w.find("16000 x 16000") != std::string::npos && w.find("max_pixels") != std::string::npos;
  });
  // The budget is a parameter: a real image at exactly its size passes, one pixel less refuses it.
  const auto img = mt::decode_image_file(fixtures / "image_wide.png");
  const auto pixels = static_cast<std::uint64_t>(img.width) * static_cast<std::uint64_t>(img.height);
  BOOST_CHECK_NO_THROW(mt::decode_image_file(fixtures / "image_wide.png", pixels));
  BOOST_CHECK_THROW(mt::decode_image_file(fixtures / "image_wide.png", pixels - 1), msrl::value_error);
  // preprocess bounds its input and its resize buffers by tiling_options::max_pixels.
  BOOST_CHECK_THROW(mt::preprocess(img, {.image_size = 8, .max_tiles = 4, .max_pixels = pixels - 1}), msrl::value_error);
  BOOST_CHECK_THROW(mt::preprocess(img, {.image_size = 448, .max_tiles = 12, .max_pixels = 448 * 448 * 11}), msrl::invalid_argument);
  const mt::rgb_image thin{1, 100000, std::vector<std::uint8_t>(300000, 9)}; // 448 x 100000 after the horizontal pass
  BOOST_CHECK_EXCEPTION(mt::preprocess(thin, {.max_pixels = 1u << 24}), msrl::value_error,
                        [](const msrl::value_error& e) { return std::string(e.what()).find("aspect ratio") != std::string::npos; });
  BOOST_CHECK_THROW(mt::choose_grid(10, 10, {.max_tiles = mt::max_grid_tiles + 1}), msrl::invalid_argument);
}

BOOST_AUTO_TEST_CASE(end_to_end_image_prompt_to_samples) {
  // Tokenizer + chat prompt + image tiling + model + sampling together, on a random model whose
  // vocabulary is the fixture tokenizer's.
  const auto tok = mt::bpe_tokenizer::from_file(fixtures / "tokenizer.json");
  auto cfg = tiny_config();
  cfg.text.vocab_size = static_cast<std::int64_t>(tok.vocab_size());
  cfg.image_token_id = tok.token_id("<IMG_CONTEXT>");
  at::manual_seed(1);
  mt::internvl m(cfg);
  const auto img = mt::decode_image_file(fixtures / "image_tall.png");
  const auto t = mt::preprocess(img, {.image_size = static_cast<int>(cfg.vision.image_size), .max_tiles = 4});
  BOOST_TEST(t.tiles == t.cols * t.rows + (t.thumbnail ? 1 : 0));
  const auto S = cfg.vision.image_size;
  const auto pixels = at::from_blob(const_cast<float*>(t.pixels.data()), {t.tiles, 3, S, S}, at::kFloat).clone();
  const auto ids = tok.encode(mt::chat_prompt({{.role = "user", .content = "Describe it.", .image_tiles = {t.tiles}}}, cfg.tokens_per_tile()));
  BOOST_TEST(std::count(ids.begin(), ids.end(), cfg.image_token_id) == t.tiles * cfg.tokens_per_tile());
  const auto im_end = tok.token_id("<|im_end|>");
  const auto s = mt::sample(m, at::tensor(ids, at::kLong), pixels, {.num_samples = 3, .max_new_tokens = 10, .stop_ids = {im_end}, .pad_id = 0, .seed = 2});
  BOOST_TEST(s.tokens.size(0) == 3);
  for (std::int64_t g = 0; g < 3; ++g) {
    std::vector<std::int64_t> c(s.tokens[g].data_ptr<std::int64_t>(), s.tokens[g].data_ptr<std::int64_t>() + s.lengths[static_cast<std::size_t>(g)]);
    BOOST_TEST(tok.encode(tok.decode(c)).size() >= 1u);
  }
}

BOOST_AUTO_TEST_CASE(random_header_mutations_never_crash) {
  // Flip random bytes inside the header of a valid file: each mutant either loads with a
  // consistent header or raises msrl::parse_error; nothing else (run under ASan in CI's asan job).
  scratch s("mut");
  mt::save_safetensors(s.dir / "good.safetensors", {{"w", at::randn({4, 3})}, {"b", at::randn({6}, at::kHalf)}, {"i", at::arange(5)}});
  const std::string good = read_bytes(s.dir / "good.safetensors");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(good[static_cast<std::size_t>(i)]);
  std::mt19937 rng(123);
  int parsed = 0, rejected = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::string bad = good;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) {
      const std::size_t at = 8 + rng() % n;
      bad[at] = "0123456789{}[],:\"-e. x"[rng() % 22];
    }
    write_bytes(s.dir / "m.safetensors", bad);
    try {
      mt::safetensors_file f(s.dir / "m.safetensors");
      for (const auto& name : f.names()) (void)f.load(name);
      ++parsed;
    } catch (const msrl::parse_error&) {
      ++rejected;
    }
  }
  BOOST_TEST(rejected > 100);
  BOOST_TEST(parsed + rejected == 400);
}

BOOST_AUTO_TEST_CASE(tokenizer_is_lossless_on_arbitrary_bytes) {
  const auto tok = mt::bpe_tokenizer::from_file(fixtures / "tokenizer.json");
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(rng() % 40, '\0');
    for (auto& c : s) c = static_cast<char>(trial % 2 ? rng() % 256 : " \n\tab'1\xC3\xA9<>|"[rng() % 13]);
    BOOST_TEST(tok.decode(tok.encode(s)) == s);
  }
}

BOOST_AUTO_TEST_CASE(grpo_accumulation_uses_the_global_token_count) {
  // Two groups in one step with token_mean aggregation (TRL "dapo"): the summed micro-batch
  // gradients equal autograd of sum over both groups of -A * ratio * mask / (all tokens).
  auto m = mt::load_internvl(fixtures / "tiny_internvl");
  const auto in = tiny_prompt();
  const auto s1 = mt::sample(m, in.prompt, in.pixels, {.num_samples = 2, .max_new_tokens = 6, .stop_ids = {3, 9, 17}, .seed = 21});
  const auto s2 = mt::sample(m, in.prompt.narrow(0, 0, 4), {}, {.num_samples = 3, .max_new_tokens = 4, .stop_ids = {5, 6}, .seed = 22});
  const std::vector<double> r1{1.0, 0.0}, r2{0.3, 0.9, 0.1};
  const auto& preset = msrl::grpo::presets::trl_default;
  mt::trainer t(m, {.lr = 0.0, .max_grad_norm = 0.0});
  t.grpo_step({{in.prompt, in.pixels, s1.tokens, s1.mask, s1.logprobs, r1}, {in.prompt.narrow(0, 0, 4), {}, s2.tokens, s2.mask, s2.logprobs, r2}}, preset);
  std::vector<at::Tensor> g1;
  for (auto& p : m->parameters()) g1.push_back(p.grad().clone());
  for (auto& p : m->parameters()) p.mutable_grad().zero_();

  const double total = s1.mask.sum().item<double>() + s2.mask.sum().item<double>();
  auto part = [&](const at::Tensor& prompt, const at::Tensor& pix, const mt::sampling_result& s, const std::vector<double>& r) {
    std::vector<double> adv(r.size());
    msrl::grpo::advantages(std::span<const double>(r), r.size(), std::span<double>(adv), preset.advantages);
    auto lp = mt::completion_logprobs(m, prompt, pix, s.tokens);
    const auto ratio = at::exp(lp - s.logprobs); // old = sampling log-probs
    return (-at::tensor(adv, at::kFloat).unsqueeze(1) * ratio * s.mask.to(at::kFloat)).sum() / total;
  };
  (part(in.prompt, in.pixels, s1, r1) + part(in.prompt.narrow(0, 0, 4), {}, s2, r2)).backward();
  double worst = 0, scale = 0;
  std::size_t i = 0;
  for (auto& p : m->parameters()) {
    worst = std::max(worst, max_abs_diff(p.grad(), g1[i]));
    scale = std::max(scale, g1[i].abs().max().item<double>());
    ++i;
  }
  BOOST_TEST_MESSAGE("GRPO accumulation grad: max abs diff " << worst << " (max |grad| " << scale << ")");
  BOOST_TEST(scale > 1e-3);
  BOOST_TEST(worst < 1e-5 * std::max(1.0, scale));
}
