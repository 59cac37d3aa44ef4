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
#include <string>
#include <vector>

#include "cmkd_stage.hpp"
#include "evaluation.hpp"
#include "grpo_stage.hpp"
#include "run_context.hpp"
#include "sft_stage.hpp"
#include "trajectory.hpp"

namespace msrl_pipeline {

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
