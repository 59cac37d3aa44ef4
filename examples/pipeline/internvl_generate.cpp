// internvl_generate: sample G answers of an InternVL3.5 checkpoint to one image + question.
//
//   internvl_generate CKPT_DIR IMAGE "QUESTION" [--samples G] [--max-new N] [--temperature T]
//                     [--top-p P] [--top-k K] [--seed S] [--max-tiles M] [--bf16] [--system TEXT]
//
// CKPT_DIR is a downloaded checkpoint folder of either flavour (OpenGVLab/InternVL3_5-1B or
// -1B-HF): config.json, model.safetensors or a sharded index, tokenizer.json.
#include <cstdlib>
#include <iostream>
#include <string>

#include <msrl/trainer/checkpoint_torch.hpp>
#include <msrl/trainer/image.hpp>
#include <msrl/trainer/steps_torch.hpp>
#include <msrl/trainer/tokenizer.hpp>

namespace mt = msrl::trainer;

int main(int argc, char** argv) try {
  if (argc < 4) {
    std::cerr << "usage: internvl_generate CKPT_DIR IMAGE QUESTION [--samples G] [--max-new N] [--temperature T] [--top-p P]"
                 " [--top-k K] [--seed S] [--max-tiles M] [--bf16] [--system TEXT]\n";
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  mt::sampling_options so{.num_samples = 4, .max_new_tokens = 256, .temperature = 1.0};
  int max_tiles = 12;
  bool bf16 = false;
  std::string system;
  for (int i = 4; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw msrl::invalid_argument("internvl_generate: option '" + a + "' needs a value");
      return argv[++i];
    };
    if (a == "--samples") so.num_samples = std::stoll(next());
    else if (a == "--max-new") so.max_new_tokens = std::stoll(next());
    else if (a == "--temperature") so.temperature = std::stod(next());
    else if (a == "--top-p") so.top_p = std::stod(next());
    else if (a == "--top-k") so.top_k = std::stoll(next());
    else if (a == "--seed") so.seed = std::stoull(next());
    else if (a == "--max-tiles") max_tiles = std::stoi(next());
    else if (a == "--bf16") bf16 = true;
    else if (a == "--system") system = next();
    else throw msrl::invalid_argument("internvl_generate: unknown option '" + a + "'");
  }
  auto model = mt::load_internvl(dir, bf16 ? at::kBFloat16 : at::kFloat);
  const auto tok = mt::bpe_tokenizer::from_file(dir / "tokenizer.json");
  if (model->cfg.image_token_id < 0) model->cfg.image_token_id = tok.token_id("<IMG_CONTEXT>"); // original configs omit it
  so.stop_ids = {tok.token_id("<|im_end|>")};
  so.pad_id = tok.token_id("<|endoftext|>");

  const auto img = mt::decode_image_file(argv[2]);
  const auto tiles = mt::preprocess(img, {.image_size = static_cast<int>(model->cfg.vision.image_size), .max_tiles = max_tiles});
  const auto S = model->cfg.vision.image_size;
  at::Tensor pixels = at::from_blob(const_cast<float*>(tiles.pixels.data()), {tiles.tiles, 3, S, S}, at::kFloat).clone();

  std::vector<mt::chat_message> msgs;
  if (!system.empty()) msgs.push_back({.role = "system", .content = system});
  msgs.push_back({.role = "user", .content = argv[3], .image_tiles = {tiles.tiles}});
  const auto ids = tok.encode(mt::chat_prompt(msgs, model->cfg.tokens_per_tile()));
  const at::Tensor prompt = at::tensor(ids, at::kLong);
  std::cerr << "tiles " << tiles.cols << "x" << tiles.rows << (tiles.thumbnail ? " + thumbnail" : "") << ", prompt " << ids.size() << " tokens\n";

  const auto out = mt::sample(model, prompt, pixels, so);
  for (std::int64_t g = 0; g < out.tokens.size(0); ++g) {
    const auto n = out.lengths[static_cast<std::size_t>(g)];
    std::vector<std::int64_t> c(out.tokens[g].data_ptr<std::int64_t>(), out.tokens[g].data_ptr<std::int64_t>() + n);
    std::cout << "--- sample " << g << " (" << n << " tokens, sum logp " << out.logprobs[g].sum().item<double>() << ")\n"
              << tok.decode(c) << "\n";
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "internvl_generate: " << e.what() << "\n";
  return 1;
}
