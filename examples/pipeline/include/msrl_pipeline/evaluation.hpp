#pragma once
/// \file Held-out evaluation: acc@1, voting@k and both orders per task type, the reports and
/// completions written, and valid reports read back.
#include "run_context.hpp"
#include "stage_sampling.hpp"

namespace msrl_pipeline {

struct eval_result {
  msrl::voting::accuracy_report at1, at_k, pairs; ///< first sample; voting@k; items right in both orders (voting@k)
  int k = 1;
  std::size_t rows = 0;
  /// Rows whose k samples are all right / none right (an unparsable sample counts as wrong): the
  /// headroom of on-policy GRPO, which gets no gradient from a group whose samples all agree.
  msrl::voting::accuracy_report all_right, none_right;
  /// Whether all_right / none_right were counted (reports written before they existed lack them).
  bool has_agreement_counts() const noexcept { return all_right.correct + all_right.wrong > 0; }
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
  if (e.has_agreement_counts()) {
    std::snprintf(buf, sizeof buf, "\nRows whose %d samples are all right: %.1f %%, none right: %.1f %%.\n", e.k, 100 * e.all_right.micro,
                  100 * e.none_right.micro);
    s += buf;
  }
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
  accuracy_table at1(unparsable_policy::wrong), atk(unparsable_policy::wrong), pairs(unparsable_policy::wrong),
      all_right(unparsable_policy::wrong), none_right(unparsable_policy::wrong);
  std::map<std::string, std::pair<std::string, int>> by_id; // id -> (task, orders right)
  std::map<std::string, int> seen;
  progress_bar bar({.label = label, .total = rows.size(), .enabled = ctx.cfg.progress && ctx.leader()});
  const auto tpt = m->cfg.tokens_per_tile();
  std::vector<double> local(rows.size() * 3, 0.0); // per row: label@1, label@k (0 none, 1 A, 2 B), samples right
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
    local[3 * i] = static_cast<double>(msrl::reward::parse_label(g.texts[0]));
    local[3 * i + 1] = static_cast<double>(v.winner);
    const auto gold = msrl::reward::parse_label(rows[i].solution, msrl::reward::label_format::any);
    for (const auto& t : g.texts) local[3 * i + 2] += gold != msrl::reward::label::none && msrl::reward::parse_label(t) == gold ? 1.0 : 0.0;
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
    const auto l1 = static_cast<msrl::reward::label>(static_cast<int>(local[3 * i]));
    const auto lk = static_cast<msrl::reward::label>(static_cast<int>(local[3 * i + 1]));
    const auto right = static_cast<int>(local[3 * i + 2]);
    const std::string task = !r.category.empty() ? r.category : r.task_type.empty() ? "unknown" : r.task_type;
    at1.add(task, l1, gold);
    atk.add(task, lk, gold);
    // "all right" / "none right" as accuracies: the row counts as correct when it holds
    const auto holds = [&](bool yes) { return yes ? gold : msrl::reward::swapped(gold); };
    all_right.add(task, gold == msrl::reward::label::none ? gold : holds(right == c.k), gold);
    none_right.add(task, gold == msrl::reward::label::none ? gold : holds(right == 0), gold);
    auto& e = by_id[r.id];
    e.first = task;
    e.second += (lk == gold && gold != msrl::reward::label::none) ? 1 : 0;
    ++seen[r.id];
  }
  for (const auto& [id, e] : by_id) {
    const int orders = seen[id];
    pairs.add(e.first, e.second == orders ? msrl::reward::label::a : msrl::reward::label::b, msrl::reward::label::a);
  }
  eval_result res{at1.report(), atk.report(), pairs.report(), c.k, rows.size(), all_right.report(), none_right.report()};
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
          {"both_orders_at_k", report_json(e.pairs)}, {"all_right_at_k", report_json(e.all_right)},
          {"none_right_at_k", report_json(e.none_right)}};
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
    if (!j.is_discarded() && j.is_object() && j.at("k").get<int>() == k && j.at("rows").get<std::size_t>() == rows) {
      eval_result e{report_from_json(j.at("acc_at_1")), report_from_json(j.at("voting_at_k")), report_from_json(j.at("both_orders_at_k")), k, rows};
      // reports written before these two counts existed read back without them
      if (j.contains("all_right_at_k")) e.all_right = report_from_json(j.at("all_right_at_k"));
      if (j.contains("none_right_at_k")) e.none_right = report_from_json(j.at("none_right_at_k"));
      return e;
    }
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

} // namespace msrl_pipeline
