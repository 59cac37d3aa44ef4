// msrl-train: the MSRL recipe end to end on an InternVL3.5-architecture model (libtorch).
//
//   msrl-train run    --config examples/pipeline/configs/tiny.json   all stages, then the evaluation table
//   msrl-train run    --config C --stages mm_grpo,eval --set model.init=runs/x/checkpoints/cmkd
//   msrl-train eval   --model runs/x/checkpoints/mm_grpo --data data/bundled/eval.jsonl --k 16
//   msrl-train ablate --config C --seeds 2                             the miniature of Table 4
//   msrl-train make-data --out data/bundled [--cmkd 400 ...]          the bundled default data (rows per file)
//
// Data-parallel: start N processes with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set (as
// torchrun does); each takes 1/N of every batch, gradients and normalisers are summed over all.
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <msrl/trainer/distributed_torch.hpp>

#include "msrl_pipeline/ablation.hpp"
#include "msrl_pipeline/blas_threads.hpp"
#include "msrl_pipeline/config.hpp"
#include "msrl_pipeline/datagen.hpp"
#include "msrl_pipeline/run.hpp"

namespace mp = msrl_pipeline;
namespace fs = std::filesystem;

namespace {

std::shared_ptr<msrl::trainer::communicator> make_comm() {
  if (std::getenv("WORLD_SIZE") == nullptr) return nullptr;
  auto c = msrl::trainer::communicator_from_env();
  return c->world_size() > 1 ? c : nullptr;
}

/// Writes the bundled data when data_dir is missing (and generation is on); rank 0 only.
void ensure_data(const mp::pipeline_config& cfg, const std::shared_ptr<msrl::trainer::communicator>& comm) {
  const fs::path d = cfg.data_dir;
  const bool leader = !comm || comm->rank() == 0;
  if (leader && !fs::exists(d / "manifest.json")) {
    msrl::require(cfg.generate_data, "msrl-train config", "data_dir",
                  "must hold the data ('" + d.string() + "' has no manifest.json; set generate_data to write the bundled data)");
    const auto t0 = std::chrono::steady_clock::now();
    mp::make_bundled_data(d, {.seed = 1});
    std::cerr << "msrl-train: wrote the bundled data to " << d.string() << " in "
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s\n";
  }
  if (comm) comm->barrier();
}

mp::run_context make_context(const mp::pipeline_config& cfg, const std::shared_ptr<msrl::trainer::communicator>& comm) {
  mp::run_context ctx;
  ctx.cfg = cfg;
  ctx.out = cfg.output_dir;
  ctx.data = cfg.data_dir;
  ctx.comm = comm;
  const fs::path tokfile = cfg.model.tokenizer.empty()
                               ? (cfg.model.init != "tiny" && fs::exists(fs::path(cfg.model.init) / "tokenizer.json")
                                      ? fs::path(cfg.model.init) / "tokenizer.json"
                                      : ctx.data / "tokenizer.json")
                               : fs::path(cfg.model.tokenizer);
  ctx.tok = msrl::trainer::bpe_tokenizer::from_file(tokfile);
  ctx.im_end = ctx.tok.token_id("<|im_end|>");
  ctx.pad = ctx.tok.token_id("<|endoftext|>");
  return ctx;
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::size_t p = 0;
  while (p <= s.size()) {
    const auto c = s.find(',', p);
    out.push_back(s.substr(p, c == std::string::npos ? std::string::npos : c - p));
    if (c == std::string::npos) break;
    p = c + 1;
  }
  return out;
}

/// An error message on one line: its lines joined with "; ", blank ones dropped.
std::string one_line(const std::string& what) {
  std::string out, line;
  std::istringstream in(what);
  while (std::getline(in, line)) {
    const auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos) continue;
    const auto e = line.find_last_not_of(" \t\r");
    if (!out.empty()) out += "; ";
    out += line.substr(b, e - b + 1);
  }
  return out;
}

} // namespace

#if defined(MSRL_TRAIN_CUDA_KERNELS)
void msrl_install_cuda_kernels(); // cuda_kernels.cu (or test/torch/cuda_kernels_install.cu, the same)
#endif

int main(int argc, char** argv) {
#if defined(MSRL_TRAIN_CUDA_KERNELS)
  msrl_install_cuda_kernels();
#endif
  CLI::App app{"msrl-train: the MSRL multi-stage recipe (SFT, textual GRPO, caption GRPO with replay, CMKD, multimodal GRPO, voting@k evaluation)"};
  app.require_subcommand(1);

  std::string config_file, stages, out_dir, from;
  std::vector<std::string> sets;
  auto add_common = [&](CLI::App* sc) {
    sc->add_option("--config", config_file, "JSON configuration (defaults mirror the MSRL release scripts)");
    sc->add_option("--set", sets, "override a key: --set text_grpo.lr=1e-5 (repeatable)");
    sc->add_option("--out", out_dir, "output folder (overrides output_dir)");
  };
  auto* run = app.add_subcommand("run", "run the configured stages (resumes an interrupted run in the same output folder)");
  add_common(run);
  run->add_option("--stages", stages, "comma-separated subset of the stages, e.g. mm_grpo,eval");
  run->add_option("--from", from, "checkpoint folder the first stage starts from (sets model.init)");

  int seeds = 1;
  auto* ablate = app.add_subcommand("ablate", "the miniature of Table 4: baseline, MSRL, w/o stage 1/2/3");
  add_common(ablate);
  ablate->add_option("--seeds", seeds, "seeds per variant")->check(CLI::Range(1, 100));

  std::string model_dir, data_file, layout = "msrl";
  int k = 16, max_items = 0;
  auto* eval = app.add_subcommand("eval", "held-out accuracy per task type with voting@k and both A/B orders");
  add_common(eval);
  eval->add_option("--model", model_dir, "checkpoint folder")->required();
  eval->add_option("--data", data_file, "JSONL rows (ms-swift schema, or --layout vlrb|genai)")->required();
  eval->add_option("--k", k, "judgments per row (voting@k)")->check(CLI::Range(1, 1024));
  eval->add_option("--max-items", max_items, "evaluate only the first N rows");
  eval->add_option("--layout", layout, "msrl (ms-swift rows), vlrb (VL-RewardBench) or genai (GenAI-Bench)")
      ->check(CLI::IsMember({"msrl", "vlrb", "genai"}));

  std::string data_out;
  mp::datagen_options data_opt;
  auto* mk = app.add_subcommand("make-data", "write the bundled default data");
  mk->add_option("--out", data_out, "output folder")->required();
  mk->add_option("--seed", data_opt.seed, "generator seed");
  // rows per file (defaults: the bundled sizes)
  for (auto [name, field, what] : {std::tuple{"--pretrain", &data_opt.pretrain, "pretrain.jsonl rows"},
                                   std::tuple{"--pretrain-media", &data_opt.pretrain_media, "pretrain_media.jsonl rows"},
                                   std::tuple{"--pretrain-text", &data_opt.pretrain_text, "pretrain_text.jsonl rows"},
                                   std::tuple{"--sft", &data_opt.sft, "stage1_sft.jsonl rows"},
                                   std::tuple{"--text-rl", &data_opt.text_rl, "stage1_rl.jsonl rows"},
                                   std::tuple{"--caption-rl", &data_opt.caption_rl, "stage2_caption_rl.jsonl rows"},
                                   std::tuple{"--cmkd", &data_opt.cmkd, "stage2_cmkd.jsonl rows"},
                                   std::tuple{"--mm-rl", &data_opt.mm_rl, "stage3_multimodal_rl.jsonl rows"},
                                   std::tuple{"--eval", &data_opt.eval, "evaluation items (two rows each)"}})
    mk->add_option(name, *field, what)->capture_default_str()->check(CLI::Range(std::size_t{1}, std::size_t{1000000}));
  mk->add_option("--text-prompt-percent", data_opt.text_prompt_percent,
                 "share of stage 1 text rows in the 'which response matches the prompt' form, in percent")
      ->capture_default_str()
      ->check(CLI::Range(0u, 100u));
  mk->add_option("--text-phrase-percent", data_opt.text_phrase_percent,
                 "share of the other stage 1 text rows whose context is a bare phrase (caption style), in percent")
      ->capture_default_str()
      ->check(CLI::Range(0u, 100u));
  mk->add_option_function<std::string>(
        "--layout",
        [&data_opt](const std::string& v) {
          data_opt.layout = v == "plain" ? mp::judge_layout::plain : v == "multimodal" ? mp::judge_layout::multimodal : mp::judge_layout::typed;
        },
        "layout of the judging rows without media: plain (stage 1 its own prompt), typed (stage 1 in the stage 2 layout, "
        "the default) or multimodal (every judging row in the multimodal layout, the text copied into <caption>)")
      ->check(CLI::IsMember({"plain", "typed", "multimodal"}));
  mk->add_option("--caption-context-percent", data_opt.caption_context_percent,
                 "share of pretrain_media rows that ask for the caption after a judging context (question and candidates), in percent")
      ->capture_default_str()
      ->check(CLI::Range(0u, 100u));

  CLI11_PARSE(app, argc, argv);
  try {
    if (*mk) {
      mp::make_bundled_data(data_out, data_opt);
      std::cerr << "msrl-train: wrote " << data_out << "\n";
      return 0;
    }
    if (!out_dir.empty()) sets.push_back("output_dir=\"" + out_dir + "\"");
    if (!from.empty()) sets.push_back("model.init=\"" + from + "\"");
    if (!stages.empty()) {
      nlohmann::json arr = split_commas(stages);
      sets.push_back("stages=" + arr.dump());
    }
    if (*eval) {
      msrl::require(fs::exists(fs::path(model_dir) / "config.json"), "msrl-train eval", "--model",
                    "must be a checkpoint folder with config.json (model.init '" + model_dir + "')");
      sets.push_back("eval.file=\"" + fs::absolute(data_file).string() + "\"");
      sets.push_back("eval.k=" + std::to_string(k));
      sets.push_back("eval.layout=" + layout);
      sets.push_back("eval.max_items=" + std::to_string(max_items));
      sets.push_back("model.init=\"" + model_dir + "\"");
      sets.push_back("stages=[\"eval\"]");
    }
    auto cfg = mp::load_config(config_file, sets);
    if (cfg.threads > 0) torch::set_num_threads(cfg.threads);
    if (cfg.blas_threads > 0 && !mp::set_blas_threads(cfg.blas_threads))
      std::cerr << "msrl-train: blas_threads: the BLAS in use has no known thread control (OpenBLAS, BLIS); left as it is\n";
    auto comm = make_comm();
    if (*eval) {
      auto ctx = make_context(cfg, comm);
      auto m = mp::initial_model(ctx, "eval");
      auto e = mp::evaluate_and_write(ctx, m, mp::eval_rows(ctx), "eval");
      if (ctx.leader()) std::cout << mp::eval_table(e);
      return 0;
    }
    ensure_data(cfg, comm);
    if (*ablate) {
      auto ctx = make_context(cfg, comm);
      const fs::path out = cfg.output_dir;
      const auto table = mp::run_ablation(cfg, out, seeds, comm, ctx.tok, std::cerr);
      if (ctx.leader()) {
        mp::write_file_atomic(out / "ablation.md", table);
        std::cout << table;
      }
      return 0;
    }
    auto ctx = make_context(cfg, comm);
    if (ctx.leader()) {
      fs::create_directories(ctx.out);
      mp::write_file_atomic(ctx.out / "config.json", cfg.source.dump(2) + "\n");
    }
    const auto t0 = std::chrono::steady_clock::now();
    const auto outcome = mp::run_pipeline(ctx);
    const auto& result = outcome.final_eval;
    if (ctx.leader()) {
      std::cerr << "msrl-train: finished in " << static_cast<int>(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count())
                << " s; outputs in " << ctx.out.string() << "\n";
      if (!outcome.trajectory.empty())
        std::cout << "\nHeld-out accuracy after each stage (%, " << cfg.eval.text_file << " / " << cfg.eval.caption_file << " / " << cfg.eval.file
                  << "; eval/trajectory.md):\n\n" << mp::trajectory_table(outcome.trajectory, cfg.eval.k);
      if (result) {
        std::cout << "\nHeld-out evaluation (" << cfg.eval.file << "):\n\n" << mp::eval_table(result->eval);
        if (result->caption) std::cout << "\nThe same items with captions instead of media (" << cfg.eval.caption_file << "):\n\n" << mp::eval_table(*result->caption);
      }
    }
    return 0;
  } catch (const c10::Error& e) { // libtorch's own errors: the message without its stack frames
    std::cerr << "msrl-train: error: " << one_line(e.what_without_backtrace()) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "msrl-train: error: " << one_line(e.what()) << "\n";
    return 1;
  }
}
