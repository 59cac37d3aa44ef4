#pragma once
/// \file The stage trajectory: held-out accuracy after each training stage on its own task
/// family, one line per evaluation and the table of all of them.
#include "evaluation.hpp"
#include "run_context.hpp"

namespace msrl_pipeline {

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
  std::snprintf(buf, sizeof buf, "%s: held-out %s acc@1 %.1f, voting@%d %.1f, both orders@%d %.1f (%zu rows", stage.c_str(), family.c_str(),
                100 * e.at1.micro, e.k, 100 * e.at_k.micro, e.k, 100 * e.pairs.micro, e.rows);
  std::string s = buf;
  if (e.has_agreement_counts()) {
    std::snprintf(buf, sizeof buf, "; all %d samples right %.1f, none right %.1f", e.k, 100 * e.all_right.micro, 100 * e.none_right.micro);
    s += buf;
  }
  return s + ")";
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

} // namespace msrl_pipeline
