#pragma once
/// \file The MSRL recipe as stages over one output folder, resumable at every optimizer step.
///
///   out/config.json                    the merged configuration of the run
///   out/state.json                     completed stages (written atomically)
///   out/checkpoints/<stage>/           the model after each completed stage (HF layout, tokenizer.json)
///   out/checkpoints/<stage>.resume/    the latest in-stage state: model, optimizer, step (every save_every steps)
///   out/metrics/<stage>.jsonl          one row per optimizer step
///   out/plots/<stage>_*.png            curves per stage
///   out/cmkd/cmkd_sft.jsonl, stats.json  the distilled SFT rows and the selection counts
///   out/eval/report.{json,md}          held-out accuracy per task type (voting@k, both orders);
///   out/eval/caption_report.{json,md}  the same items with captions instead of media (eval.caption_file)
///
/// A killed run restarts where it stopped: completed stages are skipped, the stage in progress
/// resumes from its last saved step (the data order and the sampling seeds depend only on the
/// seed, the stage and the step, so the resumed run draws what the uninterrupted one would have).
/// A completed evaluation runs again, except with run_context::reuse_eval (ablate), where its
/// reports are read back when they are valid for the configured eval.k and rows.
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

/// What a training stage holds while it runs: the trainer (restored from the stage's resume
/// state when there is one), where to start, the metrics file (rank 0) and the progress bar.
/// opt with the configuration's mixed precision (model.autocast) and log-prob route
/// (model.fused_logprobs) applied.
inline msrl::trainer::train_options with_model_options(const run_context& ctx, msrl::trainer::train_options opt) {
  const auto& a = ctx.cfg.model.autocast;
  if (a == "bf16") opt.autocast = at::kBFloat16;
  else if (a == "fp16") opt.autocast = at::kHalf;
  opt.fused_logprobs = ctx.cfg.model.fused_logprobs;
  return opt;
}

struct stage_session {
  msrl::trainer::trainer trainer;
  resume_point start;
  std::optional<metrics_writer> metrics;
  progress_bar bar;

  /// `reference`: the frozen KL reference of a GRPO stage with beta != 0, or none.
  stage_session(const run_context& ctx, const std::string& stage, internvl& m, const msrl::trainer::train_options& opt, std::int64_t total,
                std::optional<internvl> reference = std::nullopt)
      : trainer(m, with_model_options(ctx, opt), std::move(reference)), start(read_resume(ctx, stage)),
        bar({.label = stage, .total = static_cast<std::uint64_t>(total), .enabled = ctx.cfg.progress && ctx.leader()}) {
    if (start.resumed) load_resume(ctx, stage, m, trainer);
    const auto path = ctx.out / "metrics" / (stage + ".jsonl");
    if (ctx.leader()) metrics.emplace(start.resumed ? metrics_writer::resume(path, start.step - 1) : metrics_writer::create(path));
    bar.update(static_cast<std::uint64_t>(start.step));
    if (start.resumed) ctx.say(stage + ": resuming at step " + std::to_string(start.step) + " of " + std::to_string(total));
  }
};

// ---------------------------------------------------------------------------------------------
// SFT

/// One tokenized SFT example: the prompt, then the target and <|im_end|> (the learned tokens).
struct sft_example {
  std::vector<std::int64_t> ids;
  std::vector<std::int64_t> mask;
  at::Tensor pixels;
};

inline sft_example make_sft_example(const run_context& ctx, const internvl& m, const record& r, const std::string& target, int max_length) {
  auto p = encode_prompt(r, r.messages, "", ctx.tok, m->cfg.tokens_per_tile(), ctx.media(m));
  msrl::require(!target.empty(), "msrl-train", "messages", r.source + ": an SFT row needs a final assistant turn");
  auto t = ctx.tok.encode(target);
  t.push_back(ctx.im_end);
  sft_example e;
  e.ids = p.ids;
  e.ids.insert(e.ids.end(), t.begin(), t.end());
  e.mask.assign(p.ids.size(), 0);
  e.mask.resize(e.ids.size(), 1);
  msrl::require(static_cast<int>(e.ids.size()) <= max_length, "msrl-train", "max_length",
                r.source + ": the row has " + std::to_string(e.ids.size()) + " tokens, more than max_length " + std::to_string(max_length));
  e.pixels = p.pixel_values;
  return e;
}

inline msrl::trainer::sft_batch collate(const std::vector<const sft_example*>& ex, std::int64_t pad) {
  std::size_t T = 0;
  for (auto* e : ex) T = std::max(T, e->ids.size());
  auto ids = torch::full({static_cast<std::int64_t>(ex.size()), static_cast<std::int64_t>(T)}, pad, at::kLong);
  auto mask = torch::zeros({static_cast<std::int64_t>(ex.size()), static_cast<std::int64_t>(T)}, at::kLong);
  std::vector<at::Tensor> px;
  for (std::size_t i = 0; i < ex.size(); ++i) {
    const auto n = static_cast<std::int64_t>(ex[i]->ids.size());
    ids[static_cast<std::int64_t>(i)].narrow(0, 0, n).copy_(torch::tensor(ex[i]->ids, at::kLong));
    mask[static_cast<std::int64_t>(i)].narrow(0, 0, n).copy_(torch::tensor(ex[i]->mask, at::kLong));
    if (ex[i]->pixels.defined()) px.push_back(ex[i]->pixels);
  }
  return {ids, mask, px.empty() ? at::Tensor() : torch::cat(px, 0)};
}

/// Per-token loss of the learned tokens with each example's own media and with the media of the
/// next example of the same media shape: how much the model reads the pixels. Uses up to 64 of
/// the examples that share the most common media shape; rows == 0 when fewer than two carry media.
struct grounding {
  double own = 0, swapped = 0;
  std::size_t rows = 0;
};

inline grounding media_grounding(const run_context& ctx, internvl& m, const std::vector<sft_example>& ex) {
  at::NoGradGuard ng;
  m->eval();
  std::map<std::vector<std::int64_t>, std::vector<const sft_example*>> by_shape;
  for (const auto& e : ex)
    if (e.pixels.defined()) by_shape[e.pixels.sizes().vec()].push_back(&e);
  const std::vector<const sft_example*>* group = nullptr;
  for (const auto& [shape, g] : by_shape)
    if (!group || g.size() > group->size()) group = &g;
  if (!group || group->size() < 2) return {};
  const std::size_t n = std::min<std::size_t>(group->size(), 64);
  double own = 0, swapped = 0, tokens = 0;
  for (std::size_t k = 0; k < n; k += 8) {
    const std::vector<const sft_example*> part(group->begin() + static_cast<std::ptrdiff_t>(k),
                                               group->begin() + static_cast<std::ptrdiff_t>(std::min(n, k + 8)));
    const auto b = collate(part, ctx.pad);
    std::vector<at::Tensor> other;
    for (std::size_t i = 0; i < part.size(); ++i) other.push_back((*group)[(k + i + 1) % n]->pixels);
    const auto T = b.input_ids.size(1);
    const auto tgt = b.input_ids.narrow(1, 1, T - 1).unsqueeze(2);
    const auto mask = b.target_mask.narrow(1, 1, T - 1).to(at::kFloat);
    const auto nll = [&](const at::Tensor& px) {
      const auto lp = m->forward(b.input_ids, px).narrow(1, 0, T - 1).to(at::kFloat).log_softmax(-1).gather(2, tgt).squeeze(2);
      return -(lp * mask).sum().item<double>();
    };
    own += nll(b.pixel_values);
    swapped += nll(torch::cat(other, 0));
    tokens += mask.sum().item<double>();
  }
  return {own / tokens, swapped / tokens, n};
}

/// SFT over `rows` (each row's final assistant turn, or `targets[i]` when given) with `c`.
inline void run_sft(run_context& ctx, const std::string& stage, internvl& m, const std::vector<record>& rows, const sft_config& c,
                    const std::vector<std::string>& targets = {}) {
  std::vector<sft_example> ex;
  ex.reserve(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i)
    ex.push_back(make_sft_example(ctx, m, rows[i], targets.empty() ? assistant_target(rows[i]) : targets[i], c.max_length));
  const std::size_t n = ex.size(), B = static_cast<std::size_t>(c.batch_size);
  const auto per_epoch = static_cast<std::int64_t>((n + B - 1) / B);
  const std::int64_t total = c.max_steps > 0 ? c.max_steps : per_epoch * c.epochs;
  stage_session ss(ctx, stage, m, {.lr = c.lr, .weight_decay = c.weight_decay, .max_grad_norm = c.max_grad_norm,
                                    .freeze_vision = c.freeze_vision, .freeze_projector = c.freeze_projector, .comm = ctx.comm}, total);
  auto& [t, rp, mw, bar] = ss;
  std::map<std::size_t, std::vector<std::size_t>> perms;
  constexpr std::size_t micro = 8;
  for (std::int64_t step = rp.step; step < total; ++step) {
    std::vector<const sft_example*> mine;
    for (std::size_t j = 0; j < B; ++j)
      if (static_cast<int>(j % static_cast<std::size_t>(ctx.world())) == ctx.rank())
        mine.push_back(&ex[row_at(ctx, stage, n, static_cast<std::size_t>(step) * B + j, perms)]);
    std::vector<msrl::trainer::sft_batch> mb;
    for (std::size_t k = 0; k < mine.size(); k += micro)
      mb.push_back(collate({mine.begin() + static_cast<std::ptrdiff_t>(k), mine.begin() + static_cast<std::ptrdiff_t>(std::min(mine.size(), k + micro))}, ctx.pad));
    const double lr = scheduled_lr(c.lr, c.warmup, step, total);
    t.set_lr(lr);
    const auto st = t.sft_step(mb);
    if (mw) mw->write(step, stage, {{"loss", st.loss}, {"grad_norm", st.grad_norm}, {"tokens", st.tokens}, {"lr", lr}});
    bar.set_metrics(metrics_text({{"loss", st.loss}}));
    bar.update(static_cast<std::uint64_t>(step + 1));
    if ((step + 1) % ctx.cfg.save_every == 0 && step + 1 < total) save_resume(ctx, stage, m, t, step + 1);
  }
  bar.finish();
  if (const auto g = media_grounding(ctx, m, ex); g.rows > 0 && ctx.leader()) {
    char line[256];
    std::snprintf(line, sizeof line, "%s: loss per target token on %zu rows: %.3f with their own media, %.3f with another row's (gap %.3f)",
                  stage.c_str(), g.rows, g.own, g.swapped, g.swapped - g.own);
    ctx.say(line);
  }
}

// ---------------------------------------------------------------------------------------------
// GRPO

struct sampled_group {
  msrl::trainer::sampling_result s;
  std::vector<std::string> texts;
};

/// Prompts that sample_in_chunks encodes and samples in one call (the workers share them).
inline constexpr std::size_t sampling_chunk = 32;

/// Threads that sample prompts at once (sampling_workers; 0: `threads`, or one per core).
inline int sampling_workers(const run_context& ctx) {
  if (ctx.cfg.sampling_workers > 0) return ctx.cfg.sampling_workers;
  if (ctx.cfg.threads > 0) return ctx.cfg.threads;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

/// n completions of each prompt (prompt i with seeds[i]) and their texts up to <|im_end|>, on
/// sampling_workers threads; the BLAS runs one thread meanwhile (its own pool would compete with
/// the workers for the cores, on matrices this small).
inline std::vector<sampled_group> sample_texts(const run_context& ctx, internvl& m, const std::vector<encoded_prompt>& prompts,
                                               const std::vector<std::uint64_t>& seeds, std::int64_t n, double temperature, double top_p,
                                               std::int64_t top_k, std::int64_t max_new) {
  std::vector<msrl::trainer::sample_request> req;
  req.reserve(prompts.size());
  for (std::size_t i = 0; i < prompts.size(); ++i) req.push_back({torch::tensor(prompts[i].ids, at::kLong), prompts[i].pixel_values, seeds.at(i)});
  const int workers = std::min<int>(sampling_workers(ctx), static_cast<int>(std::max<std::size_t>(1, req.size())));
  std::vector<msrl::trainer::sampling_result> res;
  {
    const scoped_blas_threads one(workers > 1 ? 1 : 0);
    res = msrl::trainer::sample_many(m, req,
                                     {.num_samples = n, .max_new_tokens = max_new, .temperature = temperature, .top_p = top_p, .top_k = top_k,
                                      .stop_ids = {ctx.im_end}, .pad_id = ctx.pad},
                                     workers);
  }
  std::vector<sampled_group> out(res.size());
  for (std::size_t p = 0; p < res.size(); ++p) {
    auto& g = out[p];
    g.s = std::move(res[p]);
    const at::Tensor tokens = g.s.tokens.to(at::kCPU).contiguous();
    const auto tok = tokens.accessor<std::int64_t, 2>();
    for (std::int64_t i = 0; i < n; ++i) {
      std::vector<std::int64_t> ids;
      for (std::int64_t k = 0; k < g.s.lengths[static_cast<std::size_t>(i)]; ++k) {
        const auto id = tok[i][k];
        if (id == ctx.im_end) break;
        ids.push_back(id);
      }
      g.texts.push_back(ctx.tok.decode(ids));
    }
  }
  return out;
}

/// sample_texts over `count` items, sampling_chunk prompts per call: item(k) gives item k's
/// prompt and seed, each(k, group) receives its n completions, in order.
template <class Item, class Each>
void sample_in_chunks(const run_context& ctx, internvl& m, std::size_t count, std::int64_t n, double temperature, double top_p,
                      std::int64_t top_k, std::int64_t max_new, Item item, Each each) {
  for (std::size_t k0 = 0; k0 < count; k0 += sampling_chunk) {
    const std::size_t k1 = std::min(count, k0 + sampling_chunk);
    std::vector<encoded_prompt> ps;
    std::vector<std::uint64_t> seeds;
    for (std::size_t k = k0; k < k1; ++k) {
      auto [p, seed] = item(k);
      ps.push_back(std::move(p));
      seeds.push_back(seed);
    }
    const auto groups = sample_texts(ctx, m, ps, seeds, n, temperature, top_p, top_k, max_new);
    for (std::size_t k = k0; k < k1; ++k) each(k, groups[k - k0]);
  }
}

/// The fresh rows with rows of `replay_file` mixed in at the fresh:replay `ratio`
/// (msrl::data::mix_plan; the order is seeded by (seed, stage)). `targets`, when not empty, holds
/// the fresh rows' SFT targets and is rewritten to match (a replayed row keeps its own).
inline std::vector<record> mix_replay(const run_context& ctx, const std::string& stage, std::vector<record> fresh,
                                      const std::string& replay_file, const std::string& ratio,
                                      std::vector<std::string>* targets = nullptr) {
  if (replay_file.empty()) return fresh;
  const auto pool = read_jsonl(ctx.data_file(replay_file), ctx.rows());
  const auto [f, r] = parse_ratio(ratio, stage + ".replay_ratio");
  const std::size_t n_replay = fresh.size() * r / f;
  const auto plan = msrl::data::mix_plan(fresh.size(), n_replay, {.ratio = {f, r}, .seed = derive_seed(ctx.cfg.seed, stage, 0, 3)});
  std::vector<record> out;
  std::vector<std::string> tg;
  out.reserve(plan.size());
  for (const auto& slot : plan) {
    out.push_back(slot.replay ? pool[slot.index % pool.size()] : fresh[slot.index]);
    if (targets && !targets->empty()) tg.push_back(slot.replay ? assistant_target(out.back()) : (*targets)[slot.index]);
  }
  if (targets && !targets->empty()) *targets = std::move(tg);
  if (n_replay) ctx.say(stage + ": " + std::to_string(fresh.size()) + " rows + " + std::to_string(n_replay) + " replayed (" + ratio + ")");
  return out;
}

/// Rows of a stage: its file, plus rows of `replay_file` (mix_replay).
inline std::vector<record> mixed_rows(const run_context& ctx, const std::string& stage, const std::string& file, const std::string& replay_file,
                                      const std::string& ratio) {
  return mix_replay(ctx, stage, read_jsonl(ctx.data_file(file), ctx.rows()), replay_file, ratio);
}

inline void run_grpo(run_context& ctx, const std::string& stage, internvl& m, const grpo_stage_config& c) {
  const auto rows = mixed_rows(ctx, stage, c.file, c.replay_file, c.replay_ratio);
  const auto& preset = msrl::grpo::find_preset(c.preset);
  const auto rewards = msrl::reward::preset(c.reward);
  const auto names = rewards.names();
  const auto col = [&](const char* name) {
    auto it = std::find(names.begin(), names.end(), name);
    return it == names.end() ? std::ptrdiff_t{-1} : it - names.begin();
  };
  const auto acc_col = col("accuracy"), fmt_col = col("format");
  const std::size_t n = rows.size(), P = static_cast<std::size_t>(c.prompts_per_step);
  const std::size_t fresh = c.both_orders ? P / 2 : P; // rows drawn per step (both_orders: each with its mirror)
  const auto per_epoch = static_cast<std::int64_t>((n + fresh - 1) / fresh);
  const std::int64_t total = c.max_steps > 0 ? c.max_steps : per_epoch * c.epochs;
  // a preset with a KL term (beta != 0) measures it against the policy this stage started from, as
  // TRL's and verl's reference model; a resumed stage reloads that start, not its resumed weights
  std::optional<internvl> reference;
  if (preset.loss.beta != 0.0 || c.kl_in_reward != 0.0) reference = initial_model(ctx, stage);
  const auto est = msrl::grpo::parse_estimator(c.estimator, "msrl-train config", stage + ".estimator");
  const bool kl_reward = c.kl_in_reward != 0.0;
  const auto kl_est = c.kl_in_reward_estimator == "k3"   ? msrl::grpo::kl_estimator::k3
                      : c.kl_in_reward_estimator == "k2" ? msrl::grpo::kl_estimator::k2
                      : c.kl_in_reward_estimator == "abs" ? msrl::grpo::kl_estimator::abs
                                                          : msrl::grpo::kl_estimator::k1;
  const bool openrlhf = c.estimator.starts_with("openrlhf");
  stage_session ss(ctx, stage, m, {.lr = c.lr, .weight_decay = c.weight_decay, .max_grad_norm = c.max_grad_norm,
                                    .freeze_vision = c.freeze_vision, .freeze_projector = c.freeze_projector, .comm = ctx.comm}, total,
                   std::move(reference));
  auto& [t, rp, mw, bar] = ss;
  {
    // the controllers' settings come from the configuration; a resumed stage keeps their state
    auto& ctl = t.control();
    const auto saved = ctl;
    ctl.kl = {.value = c.kl_in_reward, .target = c.kl_target, .horizon = c.kl_horizon};
    ctl.entropy = {.coef = c.entropy_coeff, .adaptive = c.adaptive_entropy, .coef_min = c.entropy_coef_min, .coef_max = c.entropy_coef_max,
                   .delta = c.entropy_coef_delta, .target = c.entropy_target};
    if (rp.resumed) {
      ctl.kl.value = saved.kl.value;
      ctl.entropy.coef = saved.entropy.coef;
      ctl.entropy.last_entropy = saved.entropy.last_entropy;
    }
  }
  std::map<std::size_t, std::vector<std::size_t>> perms;
  const auto tpt = m->cfg.tokens_per_tile();
  const auto media = ctx.media(m);
  const bool dynamic = c.dynamic_sample != "none";
  const msrl::grpo::group_filter_options filter{
      .rule = c.dynamic_sample == "ms_swift"   ? msrl::grpo::group_filter_rule::ms_swift_zero_std
              : c.dynamic_sample == "openrlhf" ? msrl::grpo::group_filter_rule::openrlhf_range
                                               : msrl::grpo::group_filter_rule::verl_zero_std,
      .lo = c.dynamic_sample_lo,
      .hi = c.dynamic_sample_hi};
  for (std::int64_t step = rp.step; step < total; ++step) {
    std::vector<msrl::trainer::grpo_group> groups;
    std::vector<double> columns; // this rank's reward columns, row-major [completions, functions]
    const auto t_start = std::chrono::steady_clock::now();
    // one slot's group: the row (its mirrored twin for odd slots with both_orders), G completions
    // sampled with `seed`, their rewards; `stats` collects reward, accuracy, format, length and
    // -logp (entropy estimate) sums over the completions
    struct slot_group {
      msrl::trainer::grpo_group group;
      std::array<double, 5> stats{};
      std::vector<double> columns; ///< the reward functions' raw values, [G, functions] (verl_gdpo)
    };
    const auto score_slot = [&](const record& r, const encoded_prompt& p, const sampled_group& g) {
      slot_group out;
      std::vector<double> rw(g.texts.size()), terms(rewards.size());
      for (std::size_t k = 0; k < g.texts.size(); ++k) {
        // the generation facts the length rewards read: token count, and truncation (no stop token)
        const auto len = g.s.lengths[k];
        const bool truncated = len <= 0 || g.s.tokens[static_cast<std::int64_t>(k)][len - 1].item<std::int64_t>() != ctx.im_end;
        rw[k] = rewards.score_terms({.completion = g.texts[k], .solution = r.solution, .task_type = r.task_type,
                                     .completion_tokens = static_cast<std::size_t>(std::max<std::int64_t>(len, 0)), .truncated = truncated},
                                    terms);
        out.columns.insert(out.columns.end(), terms.begin(), terms.end());
        out.stats[0] += rw[k];
        if (acc_col >= 0) out.stats[1] += terms[static_cast<std::size_t>(acc_col)];
        if (fmt_col >= 0) out.stats[2] += terms[static_cast<std::size_t>(fmt_col)];
        out.stats[3] += static_cast<double>(g.s.lengths[k]);
        out.stats[4] -= g.s.logprobs[static_cast<std::int64_t>(k)].sum().item<double>();
      }
      out.group = {.prompt_ids = torch::tensor(p.ids, at::kLong), .pixel_values = p.pixel_values, .completions = g.s.tokens,
                   .mask = g.s.mask, .old_logprobs = g.s.logprobs, .rewards = std::move(rw)};
      return out;
    };
    // sums over this rank's trained completions (the stats above, then their count), replacement
    // draws, and groups the dynamic-sampling rule still drops after the last draw
    double sums[5] = {0, 0, 0, 0, 0}, count = 0, resampled = 0, still_dropped = 0;
    const std::size_t unit = c.both_orders ? 2 : 1; // slots drawn (and replaced) together
    // this rank's units: its slots, the row drawn for them, their groups
    struct unit_draw {
      std::size_t u;
      std::vector<std::size_t> mine;
      const record* drawn;
      std::vector<slot_group> got;
      bool settled = false;
    };
    std::vector<unit_draw> units;
    for (std::size_t u = 0; u < P / unit; ++u) {
      // the rank of a unit: per slot as always without dynamic sampling; per unit with it, so that
      // A/B twins are replaced together
      std::vector<std::size_t> mine;
      for (std::size_t j = u * unit; j < (u + 1) * unit; ++j)
        if (static_cast<int>((dynamic ? u : j) % static_cast<std::size_t>(ctx.world())) == ctx.rank()) mine.push_back(j);
      if (mine.empty()) continue;
      const auto gi = static_cast<std::size_t>(step) * fresh + u;
      units.push_back({.u = u, .mine = std::move(mine), .drawn = &rows[row_at(ctx, stage, n, gi, perms)], .got = {}});
    }
    // rounds: the slots of every unsettled unit sampled together (sampling_workers at a time);
    // with dynamic sampling a unit the rule drops draws another row for the next round
    for (int attempt = 0;; ++attempt) {
      std::vector<record> slot_rows;
      std::vector<encoded_prompt> prompts;
      std::vector<std::uint64_t> seeds;
      std::vector<std::size_t> owner;
      for (std::size_t k = 0; k < units.size(); ++k) {
        if (units[k].settled) continue;
        units[k].got.clear();
        for (const auto j : units[k].mine) {
          slot_rows.push_back(c.both_orders && j % 2 == 1 ? mirrored(*units[k].drawn) : *units[k].drawn);
          prompts.push_back(encode_prompt(slot_rows.back(), slot_rows.back().messages, c.system, ctx.tok, tpt, media));
          seeds.push_back(attempt == 0 ? derive_seed(ctx.cfg.seed, stage, static_cast<std::uint64_t>(step), j)
                                       : derive_seed(ctx.cfg.seed, stage + "/resample", static_cast<std::uint64_t>(step),
                                                     j * 1024 + static_cast<std::uint64_t>(attempt)));
          owner.push_back(k);
        }
      }
      if (prompts.empty()) break;
      auto sampled = sample_texts(ctx, m, prompts, seeds, c.num_generations, c.temperature, c.top_p, c.top_k, c.max_completion);
      for (std::size_t i = 0; i < sampled.size(); ++i) units[owner[i]].got.push_back(score_slot(slot_rows[i], prompts[i], sampled[i]));
      for (auto& ud : units) {
        if (ud.settled) continue;
        ud.settled = true;
        if (!dynamic) continue;
        // keep the unit when any of its groups carries a signal under the rule
        bool keep = false;
        for (const auto& sg : ud.got) {
          std::uint8_t k = 0;
          msrl::grpo::filter_groups(std::span<const double>(sg.group.rewards), sg.group.rewards.size(), filter, std::span<std::uint8_t>(&k, 1));
          keep = keep || k != 0;
        }
        if (keep) continue;
        if (attempt == c.max_resample_times) {
          still_dropped += static_cast<double>(ud.got.size());
          continue;
        }
        resampled += static_cast<double>(ud.got.size());
        ud.settled = false;
        ud.drawn = &rows[derive_seed(ctx.cfg.seed, stage + "/resample-row", static_cast<std::uint64_t>(step), ud.u * 1024 + static_cast<std::uint64_t>(attempt)) % n];
      }
    }
    for (auto& ud : units)
      for (auto& sg : ud.got) {
        for (int k = 0; k < 5; ++k) sums[k] += sg.stats[static_cast<std::size_t>(k)];
        count += static_cast<double>(sg.group.rewards.size());
        columns.insert(columns.end(), sg.columns.begin(), sg.columns.end());
        groups.push_back(std::move(sg.group));
      }
    const double lr = scheduled_lr(c.lr, c.warmup, step, total);
    t.set_lr(lr);
    const auto t_sampled = std::chrono::steady_clock::now();
    // the estimator over this rank's whole step batch (and the KL in the reward), as per-token advantages
    msrl::grpo::estimate_stats es;
    double est_rows = 0;
    if (est != msrl::grpo::estimator::grpo || kl_reward) {
      std::vector<std::int64_t> offsets{0};
      std::vector<double> scores;
      for (const auto& g : groups) {
        const auto G = g.completions.size(0), L = g.completions.size(1);
        for (std::int64_t i = 0; i < G; ++i) offsets.push_back(offsets.back() + L);
        for (const double r : g.rewards) scores.push_back(std::isfinite(r) || est == msrl::grpo::estimator::grpo ? r : 0.0);
      }
      const auto N = static_cast<std::size_t>(offsets.back());
      std::vector<float> old(N), refl(N), adv(N);
      std::vector<std::uint8_t> mask(N);
      std::size_t o = 0;
      for (const auto& g : groups) {
        const auto cnt = static_cast<std::size_t>(g.completions.numel());
        const at::Tensor mk = g.mask.to(at::kCPU, at::kByte).contiguous();
        std::copy_n(mk.data_ptr<std::uint8_t>(), cnt, mask.begin() + static_cast<std::ptrdiff_t>(o));
        if (kl_reward) {
          const at::Tensor ol = g.old_logprobs.to(at::kCPU, at::kFloat).contiguous(), rl = t.reference_logprobs(g, c.temperature);
          std::copy_n(ol.data_ptr<float>(), cnt, old.begin() + static_cast<std::ptrdiff_t>(o));
          std::copy_n(rl.data_ptr<float>(), cnt, refl.begin() + static_cast<std::ptrdiff_t>(o));
        }
        o += cnt;
      }
      const auto G = static_cast<std::size_t>(c.num_generations);
      msrl::grpo::estimate_options eo{.group = preset.advantages, .gamma = c.gamma};
      eo.kl = openrlhf ? msrl::grpo::kl_reward_options::openrlhf(t.control().kl.value, kl_est)
                       : msrl::grpo::kl_reward_options::verl(t.control().kl.value, kl_est);
      if (!kl_reward) eo.kl.beta = 0.0;
      const auto weights = rewards.weights();
      for (auto& v : columns)
        if (!std::isfinite(v)) v = 0.0; // verl's GDPO reads every component; an unscored one counts 0
      const msrl::grpo::estimate_inputs<double, float, std::uint8_t> in{
          msrl::token_layout::packed(std::span<const std::int64_t>(offsets)), std::span<const double>(scores), G,
          std::span<const std::uint8_t>(mask), std::span<const float>(old), std::span<const float>(refl),
          std::span<const double>(columns), rewards.size(), std::span<const double>(weights)};
      es = msrl::grpo::estimate_advantages(msrl::backend::reference{}, est, in, std::span<float>(adv), eo);
      est_rows = static_cast<double>(scores.size());
      o = 0;
      for (auto& g : groups) {
        const auto cnt = static_cast<std::size_t>(g.completions.numel());
        g.advantages = torch::from_blob(adv.data() + o, g.completions.sizes(), at::kFloat).clone();
        o += cnt;
      }
    }
    auto& ctl = t.control();
    const double kl_coef = ctl.kl.value, entropy_coef = ctl.entropy.applied();
    const auto st = t.grpo_step(groups, preset, c.temperature, entropy_coef, ctl.entropy.adaptive);
    if (kl_reward) {
      // the controller's input over every rank: the mean over rows of each row's masked-mean KL
      double kv[2] = {es.kl.row_mean * est_rows, est_rows};
      if (ctx.comm && ctx.world() > 1) {
        auto v = torch::tensor(std::vector<double>(kv, kv + 2), at::kDouble);
        ctx.comm->all_reduce_sum(v);
        kv[0] = v[0].item<double>();
        kv[1] = v[1].item<double>();
      }
      ctl.kl.update(kv[1] > 0 ? kv[0] / kv[1] : 0.0, kv[1]);
      es.kl.row_mean = kv[1] > 0 ? kv[0] / kv[1] : 0.0;
    }
    ctl.entropy.update(st.entropy);
    const double sample_s = std::chrono::duration<double>(t_sampled - t_start).count();
    const double train_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_sampled).count();
    double tot[8] = {sums[0], sums[1], sums[2], sums[3], sums[4], count, resampled, still_dropped};
    if (ctx.comm && ctx.world() > 1) {
      auto v = torch::tensor(std::vector<double>(tot, tot + 8), at::kDouble);
      ctx.comm->all_reduce_sum(v);
      for (int k = 0; k < 8; ++k) tot[k] = v[k].item<double>();
    }
    const double N = std::max(1.0, tot[5]);
    const double reward = tot[0] / N, accuracy = tot[1] / N, fmt = tot[2] / N, length = tot[3] / N;
    const double entropy = tot[3] > 0 ? tot[4] / tot[3] : 0.0;
    if (mw) {
      std::vector<std::pair<std::string, double>> fields{{"reward", reward}, {"accuracy", accuracy}, {"format", fmt}, {"length", length}, {"entropy", entropy},
                              {"kl", st.metrics.kl_mean}, {"clip_fraction", st.metrics.clip_fraction},
                              {"clip_fraction_low", st.metrics.clip_fraction_low}, {"clip_fraction_high", st.metrics.clip_fraction_high},
                              {"ratio_mean", st.metrics.ratio_mean}, {"reward_std", st.advantages.reward_std},
                              {"zero_std_fraction", st.advantages.zero_std_fraction}, {"skipped_groups", st.skipped_groups}, {"loss", st.loss}, {"grad_norm", st.grad_norm}, {"lr", lr},
                              {"sample_seconds", sample_s}, {"train_seconds", train_s}};
      // presets with token shaping (Clip-Cov, KL-Cov, FIPO): what the shaping did
      if (preset.shaping.kind == msrl::grpo::shaping_kind::fipo) fields.emplace_back("fipo_weight_mean", st.fipo_weight_mean);
      else if (preset.shaping.kind != msrl::grpo::shaping_kind::none) fields.emplace_back("selected_tokens", st.selected_tokens);
      // dynamic sampling: groups replaced by a fresh draw, and groups still dropped after the last one
      if (dynamic) {
        fields.emplace_back("resampled_groups", tot[6]);
        fields.emplace_back("dropped_groups", tot[7]);
      }
      // the KL in the reward (its coefficient in this step, the KL it measured) and the entropy controller
      if (kl_reward) {
        fields.emplace_back("kl_in_reward", es.kl.row_mean);
        fields.emplace_back("kl_in_reward_coef", kl_coef);
      }
      if (c.adaptive_entropy) {
        fields.emplace_back("entropy_coef", entropy_coef);
        fields.emplace_back("policy_entropy", st.entropy);
      }
      mw->write(step, stage, fields);
    }
    bar.set_metrics(metrics_text({{"reward", reward}, {"acc", accuracy}, {"len", length}}));
    bar.update(static_cast<std::uint64_t>(step + 1));
    if ((step + 1) % ctx.cfg.save_every == 0 && step + 1 < total) save_resume(ctx, stage, m, t, step + 1);
  }
  bar.finish();
}

// ---------------------------------------------------------------------------------------------
// CMKD

/// Samples K rationales per row from the caption-based prompt, votes, filters and keeps the most
/// confident one; writes out/cmkd/cmkd_sft.jsonl (multimodal rows + the caption-first target) and
/// stats.json. Returns the kept rows and their targets.
inline std::pair<std::vector<record>, std::vector<std::string>> cmkd_select_rows(run_context& ctx, internvl& m) {
  const auto& c = ctx.cfg.cmkd;
  const auto rows = read_jsonl(ctx.data_file(c.file), ctx.rows());
  msrl::voting::cmkd_options opt{.tie = msrl::voting::tie_policy_from_name(c.tie), .min_agreement = c.min_agreement};
  msrl::voting::cmkd_counts counts;
  std::vector<record> kept;
  std::vector<std::string> targets;
  std::string jsonl;
  progress_bar bar({.label = "cmkd sample", .total = rows.size(), .enabled = ctx.cfg.progress && ctx.leader()});
  const auto tpt = m->cfg.tokens_per_tile();
  const auto item = [&](std::size_t k) {
    msrl::require(!rows[k].caption_messages.empty() && !rows[k].caption.empty(), "msrl-train", "cmkd.file",
                  rows[k].source + ": CMKD rows need 'caption' and 'caption_messages'");
    return std::pair{encode_prompt(rows[k], rows[k].caption_messages, "", ctx.tok, tpt, ctx.media(m), false), derive_seed(ctx.cfg.seed, "cmkd", k)};
  };
  sample_in_chunks(ctx, m, rows.size(), c.k, c.temperature, c.top_p, c.top_k, c.max_completion, item, [&](std::size_t i, const sampled_group& g) {
    const record& r = rows[i];
    std::vector<std::vector<double>> lps(g.texts.size());
    std::vector<msrl::voting::cmkd_candidate> cand;
    for (std::size_t k = 0; k < g.texts.size(); ++k) {
      const auto len = g.s.lengths[k];
      auto row = g.s.logprobs[static_cast<std::int64_t>(k)].narrow(0, 0, len).to(at::kDouble).contiguous();
      lps[k].assign(row.data_ptr<double>(), row.data_ptr<double>() + len);
      cand.push_back({.text = g.texts[k], .token_logprobs = lps[k]});
    }
    msrl::voting::cmkd_selection sel;
    if (c.confidence == "mean") sel = msrl::voting::cmkd_select(std::span<const msrl::voting::cmkd_candidate>(cand), r.caption, opt);
    else if (c.confidence == "sequence") sel = msrl::voting::cmkd_select(std::span<const msrl::voting::cmkd_candidate>(cand), r.caption, opt, msrl::voting::sequence_logprob{});
    else sel = msrl::voting::cmkd_select(std::span<const msrl::voting::cmkd_candidate>(cand), r.caption, opt, msrl::voting::first_eligible{});
    counts.add(sel);
    if (sel.status == msrl::voting::sample_status::kept) {
      // Stage 3 asks for the task type first: <type>…</type><caption>…</caption><think>…</think><answer>X</answer>.
      std::string words = r.task_type;
      std::replace(words.begin(), words.end(), '_', ' ');
      sel.target = (words.empty() ? std::string() : "<type>" + words + "</type>") + sel.target;
      kept.push_back(r);
      targets.push_back(sel.target);
      json row{{"id", r.id}, {"task_type", r.task_type}, {"solution", r.solution}, {"pseudo_label", std::string(1, msrl::reward::to_char(sel.pseudo_label))},
               {"votes", {{"A", sel.votes.a}, {"B", sel.votes.b}, {"invalid", sel.votes.invalid}}}};
      json msgs = json::array();
      for (const auto& mm : r.messages)
        if (mm.role != "assistant") msgs.push_back({{"role", mm.role}, {"content", mm.content}});
      msgs.push_back({{"role", "assistant"}, {"content", sel.target}});
      row["messages"] = msgs;
      json imgs = json::array(), vids = json::array();
      for (const auto& p2 : r.images) imgs.push_back(p2.string());
      for (const auto& p2 : r.videos) vids.push_back(p2.string());
      if (!imgs.empty()) row["images"] = imgs;
      if (!vids.empty()) row["videos"] = vids;
      jsonl += dump_text(row) + "\n";
    }
    bar.update(i + 1);
  });
  bar.finish();
  std::size_t pseudo_right = 0;
  for (std::size_t i = 0; i < kept.size(); ++i) {
    const auto l = msrl::reward::parse_label(targets[i]);
    if (msrl::reward::parse_label(kept[i].solution, msrl::reward::label_format::any) == l) ++pseudo_right;
  }
  json stats{{"samples", counts.samples}, {"kept", counts.kept}, {"dropped", json::object()}, {"candidates", json::object()},
             {"pseudo_label_accuracy", kept.empty() ? 0.0 : static_cast<double>(pseudo_right) / static_cast<double>(kept.size())}};
  for (const auto& [name, n] : counts.dropped_by_reason()) stats["dropped"][std::string(name)] = n;
  for (const auto& [name, n] : counts.candidates_by_outcome()) stats["candidates"][std::string(name)] = n;
  if (ctx.leader()) {
    fs::create_directories(ctx.out / "cmkd");
    write_file_atomic(ctx.out / "cmkd" / "cmkd_sft.jsonl", jsonl);
    write_file_atomic(ctx.out / "cmkd" / "stats.json", stats.dump(2) + "\n");
  }
  ctx.say("cmkd: kept " + std::to_string(counts.kept) + " of " + std::to_string(counts.samples) + " samples (pseudo-labels right: " +
          std::to_string(pseudo_right) + ")");
  return {kept, targets};
}

inline void run_cmkd(run_context& ctx, internvl& m) {
  std::vector<record> rows;
  std::vector<std::string> targets;
  const auto file = ctx.out / "cmkd" / "cmkd_sft.jsonl";
  if (fs::exists(file) && fs::exists(ctx.out / "cmkd" / "stats.json")) {
    // Resumed: the selection finished before; train on what it kept.
    // written by this run, pointing at the data folder's media
    if (fs::file_size(file) > 0) rows = read_jsonl(file, {.allow_media_outside = true});
    ctx.say("cmkd: reusing " + file.string() + " (" + std::to_string(rows.size()) + " rows)");
  } else {
    auto sel = cmkd_select_rows(ctx, m);
    rows = std::move(sel.first);
    targets = std::move(sel.second);
  }
  if (rows.empty()) {
    ctx.say("cmkd: no sample kept; the SFT step is skipped");
    return;
  }
  const auto& c = ctx.cfg.cmkd.sft;
  rows = mix_replay(ctx, "cmkd", std::move(rows), c.replay_file, c.replay_ratio, &targets);
  run_sft(ctx, "cmkd", m, rows, c, targets);
}

// ---------------------------------------------------------------------------------------------
// Evaluation

struct eval_result {
  msrl::voting::accuracy_report at1, at_k, pairs; ///< first sample; voting@k; items right in both orders (voting@k)
  int k = 1;
  std::size_t rows = 0;
};

inline std::string eval_table(const eval_result& e) {
  std::string s = "| task type | rows | acc@1 | voting@" + std::to_string(e.k) + " | both orders@" + std::to_string(e.k) + " | unparsable@1 |\n|---|---|---|---|---|---|\n";
  char buf[256];
  auto find = [](const msrl::voting::accuracy_report& r, const std::string& name) -> const msrl::voting::category_accuracy* {
    for (const auto& c : r.categories)
      if (c.category == name) return &c;
    return nullptr;
  };
  for (const auto& c : e.at_k.categories) {
    const auto* a1 = find(e.at1, c.category);
    const auto* pr = find(e.pairs, c.category);
    std::snprintf(buf, sizeof buf, "| %s | %zu | %.1f | %.1f | %.1f | %zu |\n", c.category.c_str(),
                  c.correct + c.wrong, a1 ? 100 * a1->accuracy() : 0.0, 100 * c.accuracy(), pr ? 100 * pr->accuracy() : 0.0,
                  a1 ? a1->unparsable : 0);
    s += buf;
  }
  std::snprintf(buf, sizeof buf, "| **all (micro)** | %zu | %.1f | %.1f | %.1f | %zu |\n", e.rows, 100 * e.at1.micro, 100 * e.at_k.micro,
                100 * e.pairs.micro, e.at1.unparsable);
  s += buf;
  return s;
}

/// How many of `all` rows an evaluation scores (the first eval.max_items; 0 = all).
inline std::size_t evaluated_rows(const eval_config& c, std::size_t all) {
  return c.max_items > 0 ? std::min(all, static_cast<std::size_t>(c.max_items)) : all;
}

/// Held-out accuracy per task type: k samples per row, voting@k; unparsable judgments count as
/// wrong (never excluded), and an item counts in "both orders" only if both of its orders are right.
inline eval_result run_eval(run_context& ctx, internvl& m, const std::vector<record>& all_rows, const std::string& label = "eval",
                            std::vector<std::vector<std::string>>* completions = nullptr) {
  const auto& c = ctx.cfg.eval;
  std::vector<record> rows = all_rows;
  rows.resize(evaluated_rows(c, rows.size()));
  using msrl::voting::accuracy_table;
  using msrl::voting::unparsable_policy;
  accuracy_table at1(unparsable_policy::wrong), atk(unparsable_policy::wrong), pairs(unparsable_policy::wrong);
  std::map<std::string, std::pair<std::string, int>> by_id; // id -> (task, orders right)
  std::map<std::string, int> seen;
  progress_bar bar({.label = label, .total = rows.size(), .enabled = ctx.cfg.progress && ctx.leader()});
  const auto tpt = m->cfg.tokens_per_tile();
  std::vector<double> local(rows.size() * 2, 0.0); // per row: label@1, label@k (0 none, 1 A, 2 B)
  if (completions) completions->assign(rows.size(), {});
  std::vector<std::size_t> mine; // this rank's rows
  for (std::size_t i = 0; i < rows.size(); ++i)
    if (static_cast<int>(i % static_cast<std::size_t>(ctx.world())) == ctx.rank()) mine.push_back(i);
  const auto item = [&](std::size_t q) {
    return std::pair{encode_prompt(rows[mine[q]], rows[mine[q]].messages, "", ctx.tok, tpt, ctx.media(m)), derive_seed(ctx.cfg.seed, "eval", mine[q])};
  };
  sample_in_chunks(ctx, m, mine.size(), c.k, c.temperature, c.top_p, c.top_k, c.max_completion, item, [&](std::size_t q, const sampled_group& g) {
    const std::size_t i = mine[q];
    std::vector<std::string_view> views(g.texts.begin(), g.texts.end());
    // Ties go to the earliest valid judgment (an even k ties often; abstaining would count them wrong).
    const auto v = msrl::voting::vote_at_k(views, static_cast<std::size_t>(c.k), msrl::reward::label_format::msrl,
                                           msrl::voting::tie_policy::first_vote);
    if (completions) (*completions)[i] = g.texts;
    local[2 * i] = static_cast<double>(msrl::reward::parse_label(g.texts[0]));
    local[2 * i + 1] = static_cast<double>(v.winner);
    bar.update(i + 1);
  });
  bar.finish();
  if (ctx.comm && ctx.world() > 1) {
    auto t = torch::tensor(local, at::kDouble);
    ctx.comm->all_reduce_sum(t);
    for (std::size_t i = 0; i < local.size(); ++i) local[i] = t[static_cast<std::int64_t>(i)].item<double>();
  }
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const record& r = rows[i];
    const auto gold = msrl::reward::parse_label(r.solution, msrl::reward::label_format::any);
    const auto l1 = static_cast<msrl::reward::label>(static_cast<int>(local[2 * i]));
    const auto lk = static_cast<msrl::reward::label>(static_cast<int>(local[2 * i + 1]));
    const std::string task = !r.category.empty() ? r.category : r.task_type.empty() ? "unknown" : r.task_type;
    at1.add(task, l1, gold);
    atk.add(task, lk, gold);
    auto& e = by_id[r.id];
    e.first = task;
    e.second += (lk == gold && gold != msrl::reward::label::none) ? 1 : 0;
    ++seen[r.id];
  }
  for (const auto& [id, e] : by_id) {
    const int orders = seen[id];
    pairs.add(e.first, e.second == orders ? msrl::reward::label::a : msrl::reward::label::b, msrl::reward::label::a);
  }
  eval_result res{at1.report(), atk.report(), pairs.report(), c.k, rows.size()};
  return res;
}

inline json report_json(const msrl::voting::accuracy_report& r) {
  json cats = json::object();
  for (const auto& c : r.categories)
    cats[c.category] = {{"accuracy", c.accuracy()}, {"correct", c.correct}, {"wrong", c.wrong}, {"unparsable", c.unparsable}};
  return {{"micro", r.micro}, {"macro", r.macro}, {"categories", cats}};
}

/// The evaluation rows: the bundled layout, or a benchmark file converted (see read_benchmark).
inline std::vector<record> eval_rows(const run_context& ctx) {
  const auto f = ctx.data_file(ctx.cfg.eval.file);
  if (ctx.cfg.eval.layout == "msrl") return read_jsonl(f, ctx.rows());
  return read_benchmark(f, ctx.cfg.eval.layout, system_prompt(prompt_style::multimodal), ctx.rows());
}

/// An evaluation as JSON: k, rows, and the three reports (read back by result_from_json).
inline json result_json(const eval_result& e) {
  return {{"k", e.k}, {"rows", e.rows}, {"acc_at_1", report_json(e.at1)}, {"voting_at_k", report_json(e.at_k)},
          {"both_orders_at_k", report_json(e.pairs)}};
}

/// Writes out/eval/<file>: one JSON line per evaluated row (id, order, task_type, solution, its k judgments).
inline void write_completions(const run_context& ctx, const std::vector<record>& rows, const std::vector<std::vector<std::string>>& completions,
                              const std::string& file) {
  fs::create_directories(ctx.out / "eval");
  std::string lines;
  for (std::size_t i = 0; i < completions.size(); ++i)
    if (!completions[i].empty())
      lines += dump_text(json{{"id", rows[i].id}, {"order", rows[i].order}, {"task_type", rows[i].task_type}, {"solution", rows[i].solution},
                              {"completions", completions[i]}}) + "\n";
  write_file_atomic(ctx.out / "eval" / file, lines);
}

/// Evaluates `rows` and writes out/eval/<name>.json, <name>.md and <name>_completions.jsonl.
inline eval_result evaluate_and_write(run_context& ctx, internvl& m, const std::vector<record>& rows, const std::string& name) {
  std::vector<std::vector<std::string>> completions;
  auto e = run_eval(ctx, m, rows, name, &completions);
  if (ctx.leader()) {
    write_completions(ctx, rows, completions, name + "_completions.jsonl");
    write_file_atomic(ctx.out / "eval" / (name + ".json"), result_json(e).dump(2) + "\n");
    write_file_atomic(ctx.out / "eval" / (name + ".md"), eval_table(e));
  }
  return e;
}

/// The inverse of report_json (which leaves out the excluded counts).
inline msrl::voting::accuracy_report report_from_json(const json& j) {
  msrl::voting::accuracy_report r;
  for (const auto& [name, c] : j.at("categories").items()) {
    r.categories.push_back({.category = name, .correct = c.at("correct").get<std::size_t>(), .wrong = c.at("wrong").get<std::size_t>(),
                            .unparsable = c.at("unparsable").get<std::size_t>()});
    r.correct += r.categories.back().correct;
    r.wrong += r.categories.back().wrong;
    r.unparsable += r.categories.back().unparsable;
  }
  r.micro = j.at("micro").get<double>();
  r.macro = j.at("macro").get<double>();
  return r;
}

/// The inverse of result_json, or nullopt when `j` is not such a report or holds another k or
/// number of rows.
inline std::optional<eval_result> result_from_json(const json& j, int k, std::size_t rows) {
  try {
    if (!j.is_discarded() && j.is_object() && j.at("k").get<int>() == k && j.at("rows").get<std::size_t>() == rows)
      return eval_result{report_from_json(j.at("acc_at_1")), report_from_json(j.at("voting_at_k")), report_from_json(j.at("both_orders_at_k")), k, rows};
  } catch (const json::exception&) {
  }
  return std::nullopt;
}

/// out/eval/<name>.json read back (evaluate_and_write writes it atomically), or nullopt when it is
/// missing, not a valid report, or was written for another eval.k or number of rows (`all_rows`
/// before eval.max_items).
inline std::optional<eval_result> read_eval_report(const run_context& ctx, const std::string& name, std::size_t all_rows) {
  const auto p = ctx.out / "eval" / (name + ".json");
  const auto& c = ctx.cfg.eval;
  const std::size_t rows = evaluated_rows(c, all_rows);
  std::ifstream in(p);
  if (auto e = result_from_json(json::parse(in, nullptr, false), c.k, rows)) return e;
  ctx.say("eval: " + p.string() + " is missing or not a valid report for this configuration; evaluating again");
  return std::nullopt;
}

/// The completed evaluation stage read back from out/eval/ (see read_eval_report), or nullopt.
inline std::optional<std::pair<eval_result, std::optional<eval_result>>> read_eval_stage(const run_context& ctx) {
  auto e = read_eval_report(ctx, "report", eval_rows(ctx).size());
  if (!e) return std::nullopt;
  std::optional<eval_result> cap;
  if (!ctx.cfg.eval.caption_file.empty()) {
    const auto f = ctx.data_file(ctx.cfg.eval.caption_file);
    if (!fs::exists(f)) return std::nullopt; // final_evaluation names it
    if (!(cap = read_eval_report(ctx, "caption_report", read_jsonl(f, ctx.rows()).size()))) return std::nullopt;
  }
  return std::pair{*e, cap};
}

// ---------------------------------------------------------------------------------------------
// The stage trajectory: held-out accuracy after each training stage

/// The held-out task families, in table order: text judgments (eval.text_file), caption-based
/// judgments (eval.caption_file), media judgments (eval.file).
inline const std::array<std::string, 3>& eval_families() {
  static const std::array<std::string, 3> f = {"text", "caption", "media"};
  return f;
}

/// A family's evaluation file name ("" when the configuration names none).
inline const std::string& family_file(const pipeline_config& cfg, const std::string& family) {
  return family == "text" ? cfg.eval.text_file : family == "caption" ? cfg.eval.caption_file : cfg.eval.file;
}

/// The family a training stage trains: text for sft and text_grpo, caption-based for caption_grpo,
/// media for cmkd and mm_grpo; "" for the pretraining stand-ins (captioning, no judgments).
inline std::string own_family(const std::string& stage) {
  if (stage == "sft" || stage == "text_grpo") return "text";
  if (stage == "caption_grpo") return "caption";
  if (stage == "cmkd" || stage == "mm_grpo") return "media";
  return "";
}

/// The families evaluated after `stage` under eval.trajectory (own | all | none). "own" is the
/// stage's family and, when the next configured stage is a GRPO stage of another family, that one
/// too: the checkpoint it starts from, so the table shows what every GRPO stage lifted (text_grpo
/// then also measures the caption-based family caption_grpo starts from).
inline std::vector<std::string> trajectory_families(const pipeline_config& cfg, const std::string& stage) {
  const auto own = own_family(stage);
  if (cfg.eval.trajectory == "none" || own.empty()) return {};
  std::string next_grpo;
  const auto at = std::find(cfg.stages.begin(), cfg.stages.end(), stage);
  if (at != cfg.stages.end() && at + 1 != cfg.stages.end() && (at + 1)->ends_with("_grpo")) next_grpo = own_family(*(at + 1));
  std::vector<std::string> out;
  for (const auto& f : eval_families())
    if ((cfg.eval.trajectory == "all" || f == own || f == next_grpo) && !family_file(cfg, f).empty()) out.push_back(f);
  return out;
}

/// The rows of a family's evaluation file (media: eval_rows, which converts benchmark layouts).
inline std::vector<record> family_rows(const run_context& ctx, const std::string& family) {
  return family == "media" ? eval_rows(ctx) : read_jsonl(ctx.data_file(family_file(ctx.cfg, family)), ctx.rows());
}

/// One stage's line of the trajectory: the evaluations made after it, by family.
struct stage_evaluation {
  std::string stage;
  std::map<std::string, eval_result> families;
};

/// "sft: held-out text acc@1 71.5, voting@16 80.0, both orders 66.0 (200 rows)".
inline std::string trajectory_line(const std::string& stage, const std::string& family, const eval_result& e) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s: held-out %s acc@1 %.1f, voting@%d %.1f, both orders@%d %.1f (%zu rows)", stage.c_str(), family.c_str(),
                100 * e.at1.micro, e.k, 100 * e.at_k.micro, e.k, 100 * e.pairs.micro, e.rows);
  return buf;
}

/// Evaluates the model a stage left on the families eval.trajectory names and writes
/// out/eval/<stage>.json ({"stage", "families": {family: report}}) and the completions per family
/// (out/eval/<stage>_<family>_completions.jsonl). A valid out/eval/<stage>.json from an earlier
/// call (same eval.k and rows) is read back instead; `model` is loaded from the stage's checkpoint
/// only when something has to be evaluated. Prints one line per family.
inline stage_evaluation evaluate_stage(run_context& ctx, const std::string& stage, internvl* model = nullptr) {
  stage_evaluation se{stage, {}};
  const auto families = trajectory_families(ctx.cfg, stage);
  if (families.empty()) return se;
  const auto file = ctx.out / "eval" / (stage + ".json");
  json previous = json::object();
  if (fs::exists(file)) {
    std::ifstream in(file);
    previous = json::parse(in, nullptr, false);
  }
  std::optional<internvl> loaded;
  json out{{"stage", stage}, {"families", json::object()}};
  for (const auto& f : families) {
    if (f != "media" && !fs::exists(ctx.data_file(family_file(ctx.cfg, f)))) {
      // data written before the file existed (eval_text.jsonl); the final evaluation still names a missing eval file
      ctx.say(stage + ": no held-out " + f + " evaluation: " + ctx.data_file(family_file(ctx.cfg, f)).string() +
              " is missing (msrl-train make-data writes it)");
      continue;
    }
    const auto rows = family_rows(ctx, f);
    const auto n = evaluated_rows(ctx.cfg.eval, rows.size());
    std::optional<eval_result> e;
    if (previous.is_object() && previous.contains("families") && previous["families"].is_object() && previous["families"].contains(f))
      e = result_from_json(previous["families"][f], ctx.cfg.eval.k, n);
    if (!e) {
      if (!model) {
        if (!loaded) loaded = load_model_dir(ctx.checkpoint(stage));
        model = &*loaded;
      }
      std::vector<std::vector<std::string>> completions;
      e = run_eval(ctx, *model, rows, stage + " " + f, &completions);
      if (ctx.leader()) write_completions(ctx, rows, completions, stage + "_" + f + "_completions.jsonl");
    }
    out["families"][f] = result_json(*e);
    se.families.emplace(f, *e);
    ctx.say(trajectory_line(stage, f, *e));
  }
  if (ctx.leader() && out != previous) {
    fs::create_directories(ctx.out / "eval");
    write_file_atomic(file, out.dump(2) + "\n");
  }
  return se;
}

/// The final evaluation (eval.file as "report", eval.caption_file as "caption_report"). A family
/// the stage trajectory already evaluated on the same model (`last`: the trajectory of the stage
/// whose checkpoint the eval stage loads) is copied, not sampled again: the same rows, k and
/// seeds give the same judgments.
inline std::pair<eval_result, std::optional<eval_result>> final_evaluation(run_context& ctx, internvl& m,
                                                                           const stage_evaluation* last) {
  auto one = [&](const std::string& family, const std::string& name, const std::vector<record>& rows) {
    if (last)
      if (auto it = last->families.find(family); it != last->families.end()) {
        const auto src = ctx.out / "eval" / (last->stage + "_" + family + "_completions.jsonl");
        if (fs::exists(src)) {
          ctx.say("eval: " + name + " = the " + family + " evaluation after " + last->stage + " (same model, rows and seeds)");
          if (ctx.leader()) {
            std::ifstream in(src, std::ios::binary);
            write_file_atomic(ctx.out / "eval" / (name + "_completions.jsonl"),
                              std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()));
            write_file_atomic(ctx.out / "eval" / (name + ".json"), result_json(it->second).dump(2) + "\n");
            write_file_atomic(ctx.out / "eval" / (name + ".md"), eval_table(it->second));
          }
          return it->second;
        }
      }
    return evaluate_and_write(ctx, m, rows, name);
  };
  auto e = one("media", "report", eval_rows(ctx));
  std::optional<eval_result> cap;
  if (!ctx.cfg.eval.caption_file.empty()) {
    const auto f = ctx.data_file(ctx.cfg.eval.caption_file);
    msrl::require(fs::exists(f), "msrl-train config", "eval.caption_file", "must name an existing file or be empty ('" + f.string() + "')");
    cap = one("caption", "caption_report", read_jsonl(f, ctx.rows()));
  }
  return {e, cap};
}

/// The trajectory as a Markdown table: one row per evaluated stage, per family acc@1 / voting@k /
/// both orders@k in percent ("-" where the family was not evaluated after that stage).
inline std::string trajectory_table(const std::vector<stage_evaluation>& t, int k) {
  std::string s = "| after stage |";
  std::string rule = "|---|";
  for (const auto& f : eval_families()) {
    s += " " + f + " acc@1 | " + f + " voting@" + std::to_string(k) + " | " + f + " both orders |";
    rule += "---|---|---|";
  }
  s += "\n" + rule + "\n";
  char buf[64];
  for (const auto& se : t) {
    if (se.families.empty()) continue;
    s += "| " + se.stage + " |";
    for (const auto& f : eval_families()) {
      const auto it = se.families.find(f);
      if (it == se.families.end()) {
        s += " - | - | - |";
        continue;
      }
      std::snprintf(buf, sizeof buf, " %.1f | %.1f | %.1f |", 100 * it->second.at1.micro, 100 * it->second.at_k.micro, 100 * it->second.pairs.micro);
      s += buf;
    }
    s += "\n";
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// The pipeline

/// Runs every configured stage that is not completed yet. Returns the evaluation when it ran.
struct pipeline_result {
  eval_result eval;                   ///< eval.file (media)
  std::optional<eval_result> caption; ///< eval.caption_file (captions instead of media)
};

/// What run_pipeline returns: the final evaluation when the eval stage ran, and the held-out
/// accuracy after each training stage (eval.trajectory; out/eval/trajectory.md).
struct pipeline_outcome {
  std::optional<pipeline_result> final_eval;
  std::vector<stage_evaluation> trajectory;
};

inline pipeline_outcome run_pipeline(run_context& ctx) {
  pipeline_outcome out;
  auto& result = out.final_eval;
  const auto done = completed_stages(ctx);
  const auto trajectory = [&](const std::string& stage, internvl* m) {
    if (auto se = evaluate_stage(ctx, stage, m); !se.families.empty()) out.trajectory.push_back(std::move(se));
  };
  for (const auto& stage : ctx.cfg.stages) {
    const bool was_done = std::find(done.begin(), done.end(), stage) != done.end();
    if (was_done && stage != "eval") {
      ctx.say(stage + ": done before, skipped");
      trajectory(stage, nullptr);
      continue;
    }
    if (was_done && ctx.reuse_eval)
      if (auto r = read_eval_stage(ctx)) {
        ctx.say("eval: done before, reusing " + (ctx.out / "eval" / "report.json").string());
        result = pipeline_result{r->first, r->second};
        continue;
      }
    auto m = initial_model(ctx, stage);
    const auto t0 = std::chrono::steady_clock::now();
    ctx.say(stage + ": start");
    if (is_pretraining_stage(stage) || stage == "sft") {
      const auto& c = stage == "pretrain" ? ctx.cfg.pretrain : stage == "pretrain_media" ? ctx.cfg.pretrain_media : ctx.cfg.sft;
      run_sft(ctx, stage, m, mixed_rows(ctx, stage, c.file, c.replay_file, c.replay_ratio), c);
    }
    else if (stage == "text_grpo") run_grpo(ctx, stage, m, ctx.cfg.text_grpo);
    else if (stage == "caption_grpo") run_grpo(ctx, stage, m, ctx.cfg.caption_grpo);
    else if (stage == "cmkd") run_cmkd(ctx, m);
    else if (stage == "mm_grpo") run_grpo(ctx, stage, m, ctx.cfg.mm_grpo);
    else if (stage == "eval") {
      // the stage the eval stage's model comes from: the one before it in the list
      const auto at = std::find(ctx.cfg.stages.begin(), ctx.cfg.stages.end(), stage);
      const stage_evaluation* last = nullptr;
      if (at != ctx.cfg.stages.begin() && !out.trajectory.empty() && out.trajectory.back().stage == *(at - 1))
        last = &out.trajectory.back();
      auto [e, cap] = final_evaluation(ctx, m, last);
      result = pipeline_result{e, cap};
      mark_completed(ctx, stage);
      continue;
    }
    write_plots(ctx, stage);
    finish_stage(ctx, stage, m);
    ctx.say(stage + ": done in " + std::to_string(static_cast<int>(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count())) + " s");
    trajectory(stage, &m);
  }
  if (!out.trajectory.empty() && ctx.leader()) {
    fs::create_directories(ctx.out / "eval");
    write_file_atomic(ctx.out / "eval" / "trajectory.md", trajectory_table(out.trajectory, ctx.cfg.eval.k));
  }
  return out;
}

} // namespace msrl_pipeline
