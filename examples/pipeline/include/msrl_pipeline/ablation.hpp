#pragma once
/// \file A miniature of the MSRL paper's Table 4: the same configuration run as five variants,
/// several seeds each, reusing shared stage prefixes (a variant whose first stages equal another
/// variant's starts from that variant's checkpoint instead of training them again).
///
///   baseline        pretrain, sft, mm_grpo                         (multimodal RL only)
///   msrl            pretrain, sft, text_grpo, caption_grpo, cmkd, mm_grpo
///   w/o stage 1     pretrain, sft, caption_grpo, cmkd, mm_grpo     (no textual RL)
///   w/o stage 2     pretrain, sft, text_grpo, mm_grpo              (no caption RL, no CMKD)
///   w/o stage 3     pretrain, sft, text_grpo, caption_grpo, cmkd   (no multimodal RL)
///
/// Every variant ends with the same evaluation. The pretraining stages of the configuration
/// ("pretrain", "pretrain_media", when listed) and "sft" are shared by all rows: pretraining stands in
/// for the backbone's, and the format SFT is the cold start every generative reward model in the
/// paper starts from.
#include <string>
#include <vector>

#include "run.hpp"

namespace msrl_pipeline {

struct ablation_variant {
  std::string name;
  std::vector<std::string> stages; ///< without eval
};

/// The five variants, each after `pretraining` (the configuration's pretraining stages, in order).
inline std::vector<ablation_variant> table4_variants(const std::vector<std::string>& pretraining) {
  std::vector<ablation_variant> v{
      {"MSRL (full)", {"sft", "text_grpo", "caption_grpo", "cmkd", "mm_grpo"}},
      {"w/o Stage 3", {"sft", "text_grpo", "caption_grpo", "cmkd"}},
      {"w/o Stage 2", {"sft", "text_grpo", "mm_grpo"}},
      {"w/o Stage 1", {"sft", "caption_grpo", "cmkd", "mm_grpo"}},
      {"Generative baseline (multimodal only)", {"sft", "mm_grpo"}},
  };
  for (auto& x : v) x.stages.insert(x.stages.begin(), pretraining.begin(), pretraining.end());
  return v;
}

struct ablation_row {
  std::string name;
  std::vector<double> micro; ///< voting@k accuracy per seed
  std::vector<double> at1;   ///< acc@1 per seed
  std::vector<double> pairs; ///< items right in both A/B orders (voting@k) per seed
  std::vector<double> caption; ///< voting@k on the caption-based evaluation per seed
  std::map<std::string, std::vector<double>> per_task;
};

inline std::string prefix_key(const std::vector<std::string>& stages, std::size_t n) {
  std::string k;
  for (std::size_t i = 0; i < n; ++i) k += (i ? "+" : "") + stages[i];
  return k;
}

inline std::string mean_sd(const std::vector<double>& v) {
  double m = 0, s = 0;
  for (double x : v) m += x;
  m /= static_cast<double>(v.size());
  for (double x : v) s += (x - m) * (x - m);
  char buf[64];
  if (v.size() > 1) std::snprintf(buf, sizeof buf, "%.1f ± %.1f", 100 * m, 100 * std::sqrt(s / static_cast<double>(v.size() - 1)));
  else std::snprintf(buf, sizeof buf, "%.1f", 100 * m);
  return buf;
}

/// Runs every variant for seeds [seed, seed + seeds) under out/seed-<s>/<variant>/ and returns
/// the markdown table. Completed runs are skipped when the command is repeated (resume); a
/// completed evaluation is read back from the variant's eval/report.json (run_context::reuse_eval).
inline std::string run_ablation(const pipeline_config& base, const fs::path& out, int seeds,
                                const std::shared_ptr<msrl::trainer::communicator>& comm, const msrl::trainer::bpe_tokenizer& tok,
                                std::ostream& log) {
  std::vector<std::string> pretraining;
  std::copy_if(base.stages.begin(), base.stages.end(), std::back_inserter(pretraining), is_pretraining_stage);
  const auto variants = table4_variants(pretraining);
  std::vector<ablation_row> rows(variants.size());
  std::set<std::string> tasks;
  for (int si = 0; si < seeds; ++si) {
    const std::uint64_t seed = base.seed + static_cast<std::uint64_t>(si);
    std::map<std::string, fs::path> done_prefix; // "a+b+c" -> checkpoint folder after stage c
    for (std::size_t vi = 0; vi < variants.size(); ++vi) {
      const auto& v = variants[vi];
      std::string dir = v.name;
      for (char& ch : dir)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      run_context ctx;
      ctx.cfg = base;
      ctx.cfg.seed = seed;
      // the table needs only the final evaluations: the stage trajectory runs here only when the
      // configuration asks for it by name (eval.trajectory)
      if (!(base.source.contains("eval") && base.source["eval"].is_object() && base.source["eval"].contains("trajectory")))
        ctx.cfg.eval.trajectory = "none";
      ctx.out = out / ("seed-" + std::to_string(seed)) / dir;
      ctx.data = base.data_dir;
      ctx.tok = tok;
      ctx.comm = comm;
      ctx.log = &log;
      ctx.reuse_eval = true;
      ctx.im_end = tok.token_id("<|im_end|>");
      ctx.pad = tok.token_id("<|endoftext|>");
      // Longest prefix another variant already trained.
      std::size_t start = 0;
      for (std::size_t k = v.stages.size(); k > 0; --k)
        if (auto it = done_prefix.find(prefix_key(v.stages, k)); it != done_prefix.end()) {
          start = k;
          ctx.cfg.model.init = it->second.string();
          break;
        }
      ctx.cfg.stages.assign(v.stages.begin() + static_cast<std::ptrdiff_t>(start), v.stages.end());
      ctx.cfg.stages.push_back("eval");
      if (ctx.leader()) {
        fs::create_directories(ctx.out);
        write_file_atomic(ctx.out / "config.json", json{{"variant", v.name}, {"stages", v.stages}, {"starts_from", ctx.cfg.model.init}}.dump(2) + "\n");
      }
      log << "msrl-train ablate: seed " << seed << ", " << v.name << (start ? " (from " + ctx.cfg.model.init + ")" : std::string()) << "\n";
      auto e = run_pipeline(ctx).final_eval;
      for (std::size_t k = start + 1; k <= v.stages.size(); ++k) done_prefix[prefix_key(v.stages, k)] = ctx.checkpoint(v.stages[k - 1]);
      rows[vi].name = v.name;
      rows[vi].micro.push_back(e->eval.at_k.micro);
      rows[vi].at1.push_back(e->eval.at1.micro);
      rows[vi].pairs.push_back(e->eval.pairs.micro);
      if (e->caption) rows[vi].caption.push_back(e->caption->at_k.micro);
      for (const auto& c : e->eval.at_k.categories) {
        rows[vi].per_task[c.category].push_back(c.accuracy());
        tasks.insert(c.category);
      }
    }
  }
  std::string t = "| variant | stages |";
  for (const auto& task : tasks) t += " " + task + " |";
  t += " overall voting@" + std::to_string(base.eval.k) + " | overall acc@1 | both orders@" + std::to_string(base.eval.k) + " | caption-based voting@" +
       std::to_string(base.eval.k) + " |\n|---|---|";
  for (std::size_t i = 0; i < tasks.size() + 4; ++i) t += "---|";
  t += "\n";
  for (std::size_t vi = 0; vi < variants.size(); ++vi) {
    std::string st;
    for (const auto& s : variants[vi].stages) st += (st.empty() ? "" : ", ") + s;
    t += "| " + rows[vi].name + " | " + st + " |";
    for (const auto& task : tasks) t += " " + (rows[vi].per_task.count(task) ? mean_sd(rows[vi].per_task[task]) : std::string("-")) + " |";
    t += " " + mean_sd(rows[vi].micro) + " | " + mean_sd(rows[vi].at1) + " | " + mean_sd(rows[vi].pairs) + " | " +
         (rows[vi].caption.empty() ? std::string("-") : mean_sd(rows[vi].caption)) + " |\n";
  }
  t += "\n" + std::to_string(seeds) + " seed(s) (" + std::to_string(base.seed) + (seeds > 1 ? "…" + std::to_string(base.seed + static_cast<std::uint64_t>(seeds) - 1) : std::string()) +
       "); accuracy in %, mean ± sample standard deviation over seeds; unparsable judgments count as wrong.\n";
  return t;
}

} // namespace msrl_pipeline
