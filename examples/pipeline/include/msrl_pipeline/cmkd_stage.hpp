#pragma once
/// \file The CMKD stage: K rationales per row from the caption prompt, majority vote and
/// confidence selection (msrl::voting::cmkd_select), then SFT on the media with the caption first.
#include "replay_rows.hpp"
#include "run_context.hpp"
#include "sft_stage.hpp"
#include "stage_sampling.hpp"

namespace msrl_pipeline {

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
  run_sft(ctx, "cmkd", m, rows, c, targets, "cmkd.sft");
}

} // namespace msrl_pipeline
