#pragma once
/// \file What every stage of msrl-train shares: the run context (configuration, folders,
/// tokenizer, communicator), seeds and learning-rate schedule, completed stages and checkpoints,
/// the seeded data order, the in-stage resume state and the stage session (trainer, metrics,
/// progress bar).
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <msrl/data/random.hpp>
#include <msrl/data/replay.hpp>
#include <msrl/grpo.hpp>
#include <msrl/reward.hpp>
#include <msrl/trainer/checkpoint_torch.hpp>
#include <msrl/trainer/steps_torch.hpp>
#include <msrl/voting/benchmarks.hpp>
#include <msrl/voting/cmkd.hpp>
#include <msrl/voting/vote.hpp>

#include "atomic_io.hpp"
#include "blas_threads.hpp"
#include "config.hpp"
#include "datagen.hpp"
#include "dataset.hpp"
#include "metrics.hpp"
#include "plot.hpp"
#include "progress.hpp"


namespace msrl_pipeline {

namespace fs = std::filesystem;
using msrl::trainer::internvl;

/// One-line JSON of generated text: sampled byte-level tokens need not form valid UTF-8, so
/// invalid bytes are written as U+FFFD instead of failing the write.
inline std::string dump_text(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

/// Seeds derived from (run seed, stage, step, index): resumed runs draw the same numbers.
inline std::uint64_t derive_seed(std::uint64_t seed, std::string_view stage, std::uint64_t step, std::uint64_t index = 0) {
  std::uint64_t h = 1469598103934665603ULL;
  for (char c : stage) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  msrl::data::splitmix64 g(seed ^ h);
  g.next();
  msrl::data::splitmix64 g2(g.next() ^ (step * 0x9E3779B97F4A7C15ULL));
  g2.next();
  msrl::data::splitmix64 g3(g2.next() ^ (index * 0xC2B2AE3D27D4EB4FULL));
  return g3.next();
}

/// Cosine decay to 0 after a linear warm-up over `warmup` of the steps (ms-swift's default schedule).
inline double scheduled_lr(double lr, double warmup, std::int64_t step, std::int64_t total) {
  const auto w = static_cast<std::int64_t>(std::ceil(warmup * static_cast<double>(total)));
  if (step < w) return lr * static_cast<double>(step + 1) / static_cast<double>(w);
  if (total <= w) return lr;
  const double p = static_cast<double>(step - w) / static_cast<double>(total - w);
  return lr * 0.5 * (1.0 + std::cos(M_PI * p));
}

/// Sizes of a random-weight model (model.init = "tiny"); vocabulary and image token from the tokenizer.
inline msrl::trainer::internvl_config tiny_model_config(const json& tiny, const msrl::trainer::bpe_tokenizer& tok) {
  msrl::trainer::internvl_config c;
  c.vision = {.hidden_size = 64, .num_layers = 2, .num_heads = 4, .intermediate_size = 256, .image_size = 56, .patch_size = 14};
  c.text = {.hidden_size = 128, .num_layers = 4, .num_heads = 4, .num_kv_heads = 2, .head_dim = 32, .intermediate_size = 384};
  detail::object_reader r(tiny, "model.tiny");
  r.nested("vision", [&](detail::object_reader& v) {
    v.get("hidden_size", c.vision.hidden_size).get("num_layers", c.vision.num_layers).get("num_heads", c.vision.num_heads)
        .get("intermediate_size", c.vision.intermediate_size).get("image_size", c.vision.image_size).get("patch_size", c.vision.patch_size);
  });
  r.nested("text", [&](detail::object_reader& t) {
    t.get("hidden_size", c.text.hidden_size).get("num_layers", c.text.num_layers).get("num_heads", c.text.num_heads)
        .get("num_kv_heads", c.text.num_kv_heads).get("head_dim", c.text.head_dim).get("intermediate_size", c.text.intermediate_size)
        .get("tie_word_embeddings", c.text.tie_word_embeddings);
  });
  r.finish();
  c.text.vocab_size = static_cast<std::int64_t>(tok.vocab_size());
  c.image_token_id = tok.token_id("<IMG_CONTEXT>");
  c.hf_format = true;
  c.validate("model.tiny");
  return c;
}

/// What every stage needs: configuration, folders, tokenizer, communicator.
struct run_context {
  pipeline_config cfg;
  fs::path out, data;
  msrl::trainer::bpe_tokenizer tok;
  std::shared_ptr<msrl::trainer::communicator> comm;
  std::ostream* log = &std::cerr;
  std::int64_t im_end = -1, pad = 0;
  bool reuse_eval = false; ///< a completed eval stage is read back from out/eval/ instead of run again (ablate)

  int rank() const { return comm ? comm->rank() : 0; }
  int world() const { return comm ? comm->world_size() : 1; }
  bool leader() const { return rank() == 0; }
  void barrier() const { if (comm) comm->barrier(); }
  fs::path data_file(const std::string& f) const { return fs::path(f).is_absolute() ? fs::path(f) : data / f; }
  fs::path checkpoint(const std::string& stage) const { return out / "checkpoints" / stage; }
  /// How data rows are read (allow_media_outside_data).
  row_options rows() const { return {.allow_media_outside = cfg.allow_media_outside_data}; }
  fs::path resume_dir(const std::string& stage) const { return out / "checkpoints" / (stage + ".resume"); }
  media_options media(const internvl& m) const {
    return {.image_size = static_cast<int>(m->cfg.vision.image_size), .max_tiles = m->cfg.vision.image_size <= 64 ? 1 : 12, .video_frames = 8,
            .allow_outside = cfg.allow_media_outside_data};
  }
  void say(const std::string& s) const {
    if (leader()) *log << "msrl-train: " << s << std::endl;
  }
};

// ---------------------------------------------------------------------------------------------
// Run state and checkpoints

inline std::vector<std::string> completed_stages(const run_context& ctx) {
  const auto p = ctx.out / "state.json";
  if (!fs::exists(p)) return {};
  std::ifstream in(p);
  auto j = json::parse(in, nullptr, false);
  msrl::require<msrl::parse_error>(!j.is_discarded() && j.is_object() && j.contains("completed") && j["completed"].is_array(),
                                   "msrl-train", p.string(), "is not a valid run state (delete the output folder to start over)");
  return j["completed"].get<std::vector<std::string>>();
}

inline void mark_completed(const run_context& ctx, const std::string& stage) {
  if (!ctx.leader()) return;
  auto done = completed_stages(ctx);
  if (std::find(done.begin(), done.end(), stage) == done.end()) done.push_back(stage);
  write_file_atomic(ctx.out / "state.json", json{{"completed", done}}.dump(2) + "\n");
}

inline void save_model_dir(const run_context& ctx, internvl& model, const fs::path& dir,
                           const std::function<void(const fs::path&)>& extra = {}) {
  if (!ctx.leader()) return;
  fs::create_directories(dir.parent_path());
  publish_directory_atomic(dir, [&](const fs::path& staging) {
    msrl::trainer::save_internvl(model, staging, {.format = msrl::trainer::weight_format::hf});
    fs::copy_file(ctx.data_file(ctx.cfg.model.tokenizer.empty() ? "tokenizer.json" : ctx.cfg.model.tokenizer), staging / "tokenizer.json",
                  fs::copy_options::overwrite_existing);
    if (extra) extra(staging);
  });
}

inline internvl load_model_dir(const fs::path& dir) { return msrl::trainer::load_internvl(dir, at::kFloat); }

/// The model a stage starts from: the previous completed stage of this run, else model.init.
inline internvl initial_model(const run_context& ctx, const std::string& stage) {
  const auto& order = ctx.cfg.stages;
  const auto done = completed_stages(ctx);
  auto me = std::find(order.begin(), order.end(), stage);
  for (auto it = std::make_reverse_iterator(me); it != order.rend(); ++it)
    if (std::find(done.begin(), done.end(), *it) != done.end() && fs::exists(ctx.checkpoint(*it) / "config.json"))
      return load_model_dir(ctx.checkpoint(*it)); // eval leaves no checkpoint, so it is never picked
  if (ctx.cfg.model.init == "tiny") {
    torch::manual_seed(static_cast<std::uint64_t>(derive_seed(ctx.cfg.seed, "init", 0)));
    internvl m(tiny_model_config(ctx.cfg.model.tiny, ctx.tok));
    if (ctx.cfg.model.init_std > 0) msrl::trainer::init_weights(m, ctx.cfg.model.init_std);
    return m;
  }
  msrl::require(fs::exists(fs::path(ctx.cfg.model.init) / "config.json"), "msrl-train config", "model.init",
                "must be \"tiny\" or a checkpoint folder with config.json ('" + ctx.cfg.model.init + "')");
  auto m = load_model_dir(ctx.cfg.model.init);
  if (m->cfg.image_token_id < 0) m->cfg.image_token_id = ctx.tok.token_id("<IMG_CONTEXT>");
  return m;
}

// ---------------------------------------------------------------------------------------------
// Data order

/// Index of the row used at (step, slot) of a stage whose epochs each visit every row once in a
/// seeded order: the order depends only on (seed, stage, epoch).
inline std::size_t row_at(const run_context& ctx, const std::string& stage, std::size_t n, std::size_t global_index,
                          std::map<std::size_t, std::vector<std::size_t>>& perms) {
  const std::size_t epoch = global_index / n;
  auto it = perms.find(epoch);
  if (it == perms.end()) it = perms.emplace(epoch, msrl::data::seeded_permutation(n, derive_seed(ctx.cfg.seed, stage, epoch, 7))).first;
  return it->second[global_index % n];
}

struct resume_point {
  std::int64_t step = 0; ///< first step still to run
  bool resumed = false;
};

inline resume_point read_resume(const run_context& ctx, const std::string& stage) {
  const auto dir = ctx.resume_dir(stage);
  recover_directory(dir);
  if (!fs::exists(dir / "progress.json")) return {};
  std::ifstream in(dir / "progress.json");
  auto j = json::parse(in, nullptr, false);
  msrl::require<msrl::parse_error>(!j.is_discarded() && j.contains("next_step"), "msrl-train", (dir / "progress.json").string(),
                                   "is not a valid resume state");
  return {j["next_step"].get<std::int64_t>(), true};
}

inline void save_resume(const run_context& ctx, const std::string& stage, internvl& m, msrl::trainer::trainer& t, std::int64_t next_step) {
  if (!ctx.leader()) {
    ctx.barrier();
    return;
  }
  fs::create_directories(ctx.resume_dir(stage).parent_path());
  publish_directory_atomic(ctx.resume_dir(stage), [&](const fs::path& staging) {
    msrl::trainer::save_internvl(m, staging, {.format = msrl::trainer::weight_format::hf});
    t.save_state(staging / "optimizer.pt");
    std::ofstream(staging / "progress.json") << json{{"stage", stage}, {"next_step", next_step}}.dump() << "\n";
  });
  ctx.barrier();
}

/// Loads the stage's resume state into (model, trainer) when there is one.
inline void load_resume(const run_context& ctx, const std::string& stage, internvl& m, msrl::trainer::trainer& t) {
  const auto dir = ctx.resume_dir(stage);
  auto saved = load_model_dir(dir);
  {
    at::NoGradGuard ng;
    auto dst = m->named_parameters();
    for (const auto& p : saved->named_parameters()) dst[p.key()].copy_(p.value());
  }
  t.load_state(dir / "optimizer.pt");
}

inline void finish_stage(const run_context& ctx, const std::string& stage, internvl& m) {
  save_model_dir(ctx, m, ctx.checkpoint(stage));
  ctx.barrier();
  mark_completed(ctx, stage);
  if (ctx.leader()) {
    std::error_code ec;
    fs::remove_all(ctx.resume_dir(stage), ec);
  }
  ctx.barrier();
}

inline void write_plots(const run_context& ctx, const std::string& stage) {
  if (!ctx.leader()) return;
  const auto mf = ctx.out / "metrics" / (stage + ".jsonl");
  if (fs::exists(mf)) plot_metrics(mf, ctx.out / "plots", stage);
}

/// A worker-thread count setting (sampling_workers, train_workers): itself when set (> 0), else
/// `threads` when that is set, else one per core.
inline int worker_count(const run_context& ctx, int configured) {
  if (configured > 0) return configured;
  if (ctx.cfg.threads > 0) return ctx.cfg.threads;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

/// Threads running a training step's micro-batches at once (train_workers).
inline int train_workers(const run_context& ctx) { return worker_count(ctx, ctx.cfg.train_workers); }

/// opt with the configuration's mixed precision (model.autocast), log-prob route
/// (model.fused_logprobs) and training workers (train_workers) applied.
inline msrl::trainer::train_options with_model_options(const run_context& ctx, msrl::trainer::train_options opt) {
  const auto& a = ctx.cfg.model.autocast;
  if (a == "bf16") opt.autocast = at::kBFloat16;
  else if (a == "fp16") opt.autocast = at::kHalf;
  opt.fused_logprobs = ctx.cfg.model.fused_logprobs;
  opt.micro_batch_workers = static_cast<std::size_t>(train_workers(ctx));
  return opt;
}

/// What a training stage holds while it runs: the trainer (restored from the stage's resume
/// state when there is one), where to start, the metrics file (rank 0) and the progress bar.
struct stage_session {
  /// The BLAS at one thread while a stage trains its micro-batches on several workers (its own
  /// pool would compete with them for the cores), as while sampling.
  scoped_blas_threads blas;
  msrl::trainer::trainer trainer;
  resume_point start;
  std::optional<metrics_writer> metrics;
  progress_bar bar;

  /// `reference`: the frozen KL reference of a GRPO stage with beta != 0, or none.
  stage_session(const run_context& ctx, const std::string& stage, internvl& m, const msrl::trainer::train_options& opt, std::int64_t total,
                std::optional<internvl> reference = std::nullopt)
      : blas(train_workers(ctx) > 1 ? 1 : 0), trainer(m, with_model_options(ctx, opt), std::move(reference)), start(read_resume(ctx, stage)),
        bar({.label = stage, .total = static_cast<std::uint64_t>(total), .enabled = ctx.cfg.progress && ctx.leader()}) {
    if (start.resumed) load_resume(ctx, stage, m, trainer);
    const auto path = ctx.out / "metrics" / (stage + ".jsonl");
    if (ctx.leader()) metrics.emplace(start.resumed ? metrics_writer::resume(path, start.step - 1) : metrics_writer::create(path));
    bar.update(static_cast<std::uint64_t>(start.step));
    if (start.resumed) ctx.say(stage + ": resuming at step " + std::to_string(start.step) + " of " + std::to_string(total));
  }
};

} // namespace msrl_pipeline
