// The `msrl` command-line tool: MSRL rewards, CMKD selection, voting, replay mixing and benchmark
// scoring over JSONL files in ms-swift's dataset format. See docs/cli.md.
//
// Every subcommand streams its input one line at a time, writes its output through
// msrl::atomic_file (published only on success), and reports bad input as
// FILE:LINE: field 'NAME': rule.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <msrl/core/atomic_file.hpp>
#include <msrl/reward.hpp>

namespace {

using json = nlohmann::ordered_json;
namespace rw = msrl::reward;
namespace vt = msrl::voting;

/// A failure to report as "msrl: error: <message>" with exit status 1.
struct tool_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------------------------
// Input: JSONL, one row at a time.

struct row_ref {
  const std::string* file;
  std::size_t line;
  std::string where() const { return *file + ":" + std::to_string(line); }
};

[[noreturn]] void field_error(const row_ref& at, std::string_view field, std::string_view rule) {
  throw tool_error(at.where() + ": field '" + std::string(field) + "': " + std::string(rule));
}

class jsonl_reader {
public:
  explicit jsonl_reader(std::string path) : path_(std::move(path)), in_(path_, std::ios::binary) {
    if (!in_) throw tool_error(path_ + ": cannot open for reading: " + std::strerror(errno));
  }
  /// Next non-blank row; false at the end of the file.
  bool next(json& row) {
    while (std::getline(in_, buf_)) {
      ++line_;
      if (!buf_.empty() && buf_.back() == '\r') buf_.pop_back();
      if (buf_.find_first_not_of(" \t") == std::string::npos) continue;
      try {
        row = json::parse(buf_);
      } catch (const json::parse_error& e) {
        throw tool_error(where() + ": invalid JSON: " + e.what());
      }
      if (!row.is_object()) throw tool_error(where() + ": row must be a JSON object");
      return true;
    }
    if (in_.bad()) throw tool_error(path_ + ": read error");
    return false;
  }
  const std::string& raw() const noexcept { return buf_; }
  row_ref at() const noexcept { return {&path_, line_}; }
  std::string where() const { return at().where(); }

private:
  std::string path_;
  std::ifstream in_;
  std::string buf_;
  std::size_t line_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Output: msrl::atomic_file (a unique hidden temporary in the output's directory, fsync'ed and
// renamed into place on commit; removed when a run fails before that).

void put_line(msrl::atomic_file& out, std::string_view s) {
  out.write(s);
  out.write("\n");
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// ---------------------------------------------------------------------------------------------
// Field access with file:line:field errors.

std::vector<std::string> string_list(const json& row, const row_ref& at, const char* field, bool required = true) {
  std::vector<std::string> out;
  const auto it = row.find(field);
  if (it == row.end() || it->is_null()) {
    if (required) field_error(at, field, "is required (a list of strings)");
    return out;
  }
  if (!it->is_array()) field_error(at, field, "must be a list of strings");
  out.reserve(it->size());
  for (std::size_t i = 0; i < it->size(); ++i) {
    const json& v = (*it)[i];
    if (!v.is_string()) field_error(at, std::string(field) + "[" + std::to_string(i) + "]", "must be a string");
    out.push_back(v.get<std::string>());
  }
  return out;
}

/// A string column; numbers are accepted and printed (gold labels such as 1 / 2).
std::optional<std::string> optional_text(const json& row, const row_ref& at, const char* field) {
  const auto it = row.find(field);
  if (it == row.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer()) return std::to_string(it->get<long long>());
  field_error(at, field, "must be a string");
}

std::string required_text(const json& row, const row_ref& at, const char* field) {
  auto v = optional_text(row, at, field);
  if (!v) field_error(at, field, "is required (a string)");
  return *v;
}

/// The gold label: the first non-null of solution, chosen, label (the MSRL plugin's order).
std::string gold_of(const json& row, const row_ref& at) {
  for (const char* f : {"solution", "chosen", "label"})
    if (auto v = optional_text(row, at, f)) return *v;
  return {};
}

const char* label_text(rw::label l) { return l == rw::label::a ? "A" : l == rw::label::b ? "B" : nullptr; }

json label_json(rw::label l) {
  const char* t = label_text(l);
  return t ? json(t) : json(nullptr);
}

template <class Fn>
auto with_option(std::string_view option, Fn fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const msrl::error& e) {
    throw tool_error("option " + std::string(option) + ": " + e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// msrl score

/// The optional per-completion list `field` (absent or null: nullopt): a list with one `noun`
/// per completion, each null (unknown) or accepted by `element`, which returns false to reject it
/// (reported as `field[i]`: `rule`).
template <class T, class Element>
std::optional<std::vector<std::optional<T>>> per_completion(const json& row, const row_ref& at, const char* field,
                                                            std::size_t n, const char* noun, const char* rule,
                                                            Element element) {
  const auto it = row.find(field);
  if (it == row.end() || it->is_null()) return std::nullopt;
  if (!it->is_array() || it->size() != n)
    field_error(at, field,
                "must be a list with one " + std::string(noun) + " (or null) per completion (" + std::to_string(n) +
                    ")");
  std::vector<std::optional<T>> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const json& v = (*it)[i];
    if (v.is_null()) continue;
    T x{};
    if (!element(v, x)) field_error(at, std::string(field) + "[" + std::to_string(i) + "]", rule);
    out[i] = x;
  }
  return out;
}

struct score_args {
  std::string preset = "paper", input, output;
};

void run_score(const score_args& a) {
  const rw::reward_set rs = with_option("--preset", [&] { return rw::preset(a.preset); });
  const auto names = rs.names();
  jsonl_reader in(a.input);
  msrl::atomic_file out(a.output);
  json row;
  std::vector<double> terms(rs.size());
  std::size_t rows = 0, completions = 0;
  while (in.next(row)) {
    const row_ref at = in.at();
    const auto comps = string_list(row, at, "completions");
    const std::string gold = gold_of(row, at);
    const std::string task = optional_text(row, at, "task_type").value_or("");
    const auto lengths =
        per_completion<std::size_t>(row, at, "completion_lengths", comps.size(), "non-negative integer",
                                    "must be a non-negative integer token count", [](const json& v, std::size_t& x) {
                                      if (!v.is_number_unsigned()) return false;
                                      x = v.get<std::size_t>();
                                      return true;
                                    });
    const auto truncated = per_completion<bool>(row, at, "truncated", comps.size(), "boolean", "must be true or false",
                                                [](const json& v, bool& x) {
                                                  if (!v.is_boolean()) return false;
                                                  x = v.get<bool>();
                                                  return true;
                                                });
    json totals = json::array();
    std::vector<json> cols(rs.size(), json::array());
    for (std::size_t i = 0; i < comps.size(); ++i) {
      const double t = rs.score_terms({.completion = comps[i],
                                       .solution = gold,
                                       .task_type = task,
                                       .completion_tokens = lengths ? (*lengths)[i] : std::nullopt,
                                       .truncated = truncated && (*truncated)[i].value_or(false)},
                                      terms);
      totals.push_back(t);
      for (std::size_t k = 0; k < terms.size(); ++k) cols[k].push_back(terms[k]);
    }
    row["rewards"] = std::move(totals);
    json named = json::object();
    for (std::size_t k = 0; k < names.size(); ++k) named[names[k]] = std::move(cols[k]);
    row["reward_terms"] = std::move(named);
    put_line(out, dump(row));
    ++rows;
    completions += comps.size();
  }
  out.commit();
  std::cerr << "msrl score: " << rows << " rows, " << completions << " completions, preset " << a.preset << "\n";
}

// ---------------------------------------------------------------------------------------------
// msrl cmkd

struct cmkd_args {
  std::string input, output, stats, confidence = "mean", labels = "msrl", format = "msrl", tie = "abstain";
  double min_agreement = 0.0;
};

rw::format_style format_from_name(const std::string& n) {
  if (n == "msrl") return rw::format_style::msrl;
  if (n == "swift") return rw::format_style::swift;
  if (n == "unifiedreward") return rw::format_style::unifiedreward;
  if (n == "r1reward") return rw::format_style::r1reward;
  throw tool_error("option --format: must be one of msrl, swift, unifiedreward, r1reward (got '" + n + "')");
}

void run_cmkd(const cmkd_args& a) {
  const vt::cmkd_options opt{.labels = with_option("--labels", [&] { return rw::label_format_from_name(a.labels); }),
                             .format = format_from_name(a.format),
                             .tie = with_option("--tie", [&] { return vt::tie_policy_from_name(a.tie); }),
                             .min_agreement = a.min_agreement};
  if (a.confidence != "mean" && a.confidence != "sequence" && a.confidence != "answer-prob" && a.confidence != "first")
    throw tool_error("option --confidence: must be one of mean, sequence, answer-prob, first (got '" + a.confidence + "')");
  jsonl_reader in(a.input);
  msrl::atomic_file out(a.output);
  vt::cmkd_counts counts;
  json row;
  while (in.next(row)) {
    const row_ref at = in.at();
    const std::string caption = required_text(row, at, "caption");
    if (rw::trim(caption).empty()) field_error(at, "caption", "must not be empty");
    if (rw::find(caption, "</caption>", 0, true) != std::string_view::npos)
      field_error(at, "caption", "must not contain '</caption>'");
    const auto comps = string_list(row, at, "completions");
    std::vector<std::vector<double>> logprobs(comps.size());
    std::vector<double> answer_probs(comps.size(), std::numeric_limits<double>::quiet_NaN());
    if (const auto it = row.find("logprobs"); it != row.end() && !it->is_null()) {
      if (!it->is_array() || it->size() != comps.size())
        field_error(at, "logprobs", "must be a list with one list of token log-probs per completion");
      for (std::size_t i = 0; i < comps.size(); ++i) {
        const json& l = (*it)[i];
        if (!l.is_array()) field_error(at, "logprobs[" + std::to_string(i) + "]", "must be a list of numbers");
        for (const json& x : l) {
          if (!x.is_number()) field_error(at, "logprobs[" + std::to_string(i) + "]", "must be a list of numbers");
          logprobs[i].push_back(x.get<double>());
        }
      }
    }
    if (const auto it = row.find("answer_probs"); it != row.end() && !it->is_null()) {
      if (!it->is_array() || it->size() != comps.size())
        field_error(at, "answer_probs", "must be a list with one number per completion");
      for (std::size_t i = 0; i < comps.size(); ++i) {
        if (!(*it)[i].is_number()) field_error(at, "answer_probs[" + std::to_string(i) + "]", "must be a number");
        answer_probs[i] = (*it)[i].get<double>();
      }
    }
    if (a.confidence == "answer-prob" && row.find("answer_probs") == row.end())
      field_error(at, "answer_probs", "is required by --confidence answer-prob");
    if ((a.confidence == "mean" || a.confidence == "sequence") && row.find("logprobs") == row.end())
      field_error(at, "logprobs", "is required by --confidence " + a.confidence + " (or use --confidence first)");
    if (const auto it = row.find("messages"); it != row.end() && !it->is_null() && !it->is_array())
      field_error(at, "messages", "must be a list of {role, content} objects");
    std::vector<vt::cmkd_candidate> cands(comps.size());
    for (std::size_t i = 0; i < comps.size(); ++i) cands[i] = {comps[i], logprobs[i], answer_probs[i]};
    vt::cmkd_selection s;
    if (a.confidence == "mean") s = vt::cmkd_select(cands, caption, opt, vt::mean_token_logprob{});
    else if (a.confidence == "sequence") s = vt::cmkd_select(cands, caption, opt, vt::sequence_logprob{});
    else if (a.confidence == "answer-prob") s = vt::cmkd_select(cands, caption, opt, vt::answer_token_probability{});
    else s = vt::cmkd_select(cands, caption, opt, vt::first_eligible{});
    counts.add(s);
    if (s.status != vt::sample_status::kept) continue;
    // The SFT row: the original multimodal sample with the distilled target as the assistant turn.
    json sft = row;
    for (const char* f : {"caption", "completions", "logprobs", "answer_probs"}) sft.erase(f);
    json& msgs = sft["messages"];
    if (msgs.is_null()) msgs = json::array();
    if (!msgs.empty() && msgs.back().is_object() && msgs.back().contains("role") && msgs.back()["role"] == "assistant")
      msgs.back()["content"] = s.target;
    else
      msgs.push_back(json{{"role", "assistant"}, {"content", s.target}});
    put_line(out, dump(sft));
  }
  json stats{{"samples", counts.samples}, {"kept", counts.kept}, {"dropped", json::object()}, {"candidates", json::object()}};
  for (const auto& [name, n] : counts.dropped_by_reason()) stats["dropped"][std::string(name)] = n;
  for (const auto& [name, n] : counts.candidates_by_outcome()) stats["candidates"][std::string(name)] = n;
  if (!a.stats.empty()) {
    msrl::atomic_file st(a.stats);
    put_line(st, stats.dump(2));
    out.commit();
    st.commit();
  } else {
    out.commit();
  }
  std::cerr << "msrl cmkd: " << stats.dump() << "\n";
}

// ---------------------------------------------------------------------------------------------
// msrl vote

struct vote_args {
  std::string input, output, labels = "msrl", tie = "abstain";
  std::size_t k = 0;
};

void run_vote(const vote_args& a) {
  const auto fmt = with_option("--labels", [&] { return rw::label_format_from_name(a.labels); });
  const auto tie = with_option("--tie", [&] { return vt::tie_policy_from_name(a.tie); });
  jsonl_reader in(a.input);
  msrl::atomic_file out(a.output);
  json row;
  std::size_t rows = 0, decided = 0;
  while (in.next(row)) {
    const row_ref at = in.at();
    const auto comps = string_list(row, at, "completions");
    const auto swapped = string_list(row, at, "completions_swapped", false);
    if (a.k > comps.size()) field_error(at, "completions", "has fewer than --k = " + std::to_string(a.k) + " entries");
    if (a.k > 0 && !swapped.empty() && a.k > swapped.size())
      field_error(at, "completions_swapped", "has fewer than --k = " + std::to_string(a.k) + " entries");
    const std::size_t n = a.k ? a.k : comps.size(), m = a.k ? (swapped.empty() ? 0 : a.k) : swapped.size();
    std::vector<rw::label> orig(n), swp(m);
    for (std::size_t i = 0; i < n; ++i) orig[i] = rw::parse_label(comps[i], fmt);
    for (std::size_t i = 0; i < m; ++i) swp[i] = rw::parse_label(swapped[i], fmt);
    const vt::vote_result v = vt::debiased_vote(orig, swp, tie);
    row["vote"] = label_json(v.winner);
    row["votes"] = json{{"A", v.a}, {"B", v.b}, {"invalid", v.invalid}};
    row["tie"] = v.tie;
    put_line(out, dump(row));
    ++rows;
    decided += v.winner != rw::label::none;
  }
  out.commit();
  std::cerr << "msrl vote: " << rows << " rows, " << decided << " decided\n";
}

// ---------------------------------------------------------------------------------------------
// msrl mix

struct mix_args {
  std::string fresh, replay, output, ratio = "4:1";
  std::size_t batch_size = 0;
  std::uint64_t seed = 0;
};

msrl::data::replay_ratio parse_ratio(const std::string& s) {
  return with_option("--ratio", [&] { return msrl::data::parse_replay_ratio(s, "msrl mix", "--ratio"); });
}

void run_mix(const mix_args& a) {
  const msrl::data::mix_options opt{.ratio = parse_ratio(a.ratio), .batch_size = a.batch_size, .seed = a.seed};
  // Index the replay pool: byte offsets only (8 bytes per row), each row validated as JSON.
  std::vector<std::uint64_t> offsets;
  {
    std::ifstream f(a.replay, std::ios::binary);
    if (!f) throw tool_error(a.replay + ": cannot open for reading: " + std::strerror(errno));
    std::string buf;
    std::size_t line = 0;
    for (std::uint64_t pos = 0; std::getline(f, buf); pos = static_cast<std::uint64_t>(f.tellg())) {
      ++line;
      if (buf.find_first_not_of(" \t\r") == std::string::npos) {
        if (f.eof()) break;
        continue;
      }
      if (!json::accept(buf)) throw tool_error(a.replay + ":" + std::to_string(line) + ": invalid JSON");
      offsets.push_back(pos);
      if (f.eof()) break;
    }
  }
  msrl::data::replay_mixer mixer = with_option("--ratio", [&] { return msrl::data::replay_mixer(offsets.size(), opt); });
  std::ifstream pool(a.replay, std::ios::binary);
  jsonl_reader in(a.fresh);
  msrl::atomic_file out(a.output);
  json row;
  std::string rep;
  auto emit_replays = [&] {
    while (mixer.next_is_replay()) {
      pool.clear();
      pool.seekg(static_cast<std::streamoff>(offsets[mixer.take_replay()]));
      std::getline(pool, rep);
      if (!rep.empty() && rep.back() == '\r') rep.pop_back();
      put_line(out, rep);
    }
  };
  while (true) {
    emit_replays();
    if (!in.next(row)) break;
    std::string raw = in.raw();
    if (!raw.empty() && raw.back() == '\r') raw.pop_back();
    put_line(out, raw);
    mixer.take_fresh();
  }
  out.commit();
  std::cerr << "msrl mix: " << mixer.fresh_taken() << " fresh + " << mixer.replay_taken() << " replayed rows\n";
}

// ---------------------------------------------------------------------------------------------
// msrl eval

struct eval_args {
  std::string input, output, benchmark = "generic", labels = "msrl", tie = "abstain", unparsable;
  std::size_t k = 0;
  std::uint64_t seed = 123;
};

void run_eval(const eval_args& a) {
  const std::string& b = a.benchmark;
  if (b != "vlrb" && b != "genai" && b != "mmrb" && b != "generic")
    throw tool_error("option --benchmark: must be one of vlrb, genai, mmrb, generic (got '" + b + "')");
  const auto fmt = with_option("--labels", [&] { return rw::label_format_from_name(a.labels); });
  const auto tie = with_option("--tie", [&] { return vt::tie_policy_from_name(a.tie); });
  // Each benchmark's convention for unparsable judgments (docs/cli.md).
  std::string up = a.unparsable;
  if (up.empty()) up = b == "vlrb" ? "exclude" : b == "mmrb" ? "random" : "wrong";
  vt::unparsable_policy policy;
  if (up == "exclude") policy = vt::unparsable_policy::exclude;
  else if (up == "wrong") policy = vt::unparsable_policy::wrong;
  else if (up == "random") policy = vt::unparsable_policy::random_guess;
  else throw tool_error("option --unparsable: must be one of exclude, wrong, random (got '" + up + "')");

  vt::accuracy_table table(policy, a.seed);
  jsonl_reader in(a.input);
  msrl::atomic_file out(a.output);
  json row;
  std::size_t items = 0;
  while (in.next(row)) {
    const row_ref at = in.at();
    // Predictions: one `completion`, or k `completions`.
    std::vector<std::string> preds;
    if (row.contains("completions")) preds = string_list(row, at, "completions");
    else preds.push_back(required_text(row, at, "completion"));
    if (preds.empty()) field_error(at, "completions", "must not be empty");
    if (a.k > preds.size()) field_error(at, "completions", "has fewer than --k = " + std::to_string(a.k) + " entries");
    if (a.k) preds.resize(a.k);
    std::vector<rw::label> labels(preds.size());
    for (std::size_t i = 0; i < preds.size(); ++i) labels[i] = rw::parse_label(preds[i], fmt);

    std::string category = optional_text(row, at, "category").value_or("all");
    rw::label gold = rw::label::none;
    if (b == "vlrb") {
      category = std::string(vt::vlrb_group(required_text(row, at, "id")));
      if (auto s = optional_text(row, at, "solution")) {
        gold = rw::parse_label(*s, rw::label_format::any);
        if (gold == rw::label::none) field_error(at, "solution", "must name A or B");
      } else if (const auto it = row.find("human_ranking"); it != row.end()) {
        // [0, 1]: the first response ranks first -> A; [1, 0] -> B
        if (*it == json::array({0, 1})) gold = rw::label::a;
        else if (*it == json::array({1, 0})) gold = rw::label::b;
        else field_error(at, "human_ranking", "must be [0, 1] or [1, 0]");
      } else {
        field_error(at, "solution", "is required (or human_ranking)");
      }
      table.add_votes(category, labels, gold);
    } else {
      if (b == "genai") {
        try {
          gold = vt::genai_gold(required_text(row, at, "vote_type"));
        } catch (const msrl::value_error&) {
          field_error(at, "vote_type", "must be leftvote, rightvote, tievote or bothbad_vote");
        }
      } else if (b == "mmrb") {
        if (auto c = optional_text(row, at, "Category"))
          category = vt::mmrb_category(optional_text(row, at, "ID").value_or(""), *c);
        if (auto bt = optional_text(row, at, "Better")) {
          if (*bt != "Output1" && *bt != "Output2") field_error(at, "Better", "must be Output1 or Output2");
          gold = vt::mmrb_gold(*bt);
        } else {
          gold = rw::parse_label(required_text(row, at, "solution"), rw::label_format::any);
          if (gold == rw::label::none) field_error(at, "solution", "must name A or B");
        }
      } else {
        gold = rw::parse_label(gold_of(row, at), rw::label_format::any);
        if (gold == rw::label::none) field_error(at, "solution", "is required and must name A or B");
      }
      table.add(category, vt::majority_vote(labels, tie).winner, gold);
    }
    ++items;
  }
  const vt::accuracy_report r = table.report();
  json cats = json::object();
  for (const auto& c : r.categories)
    cats[c.category] = json{{"accuracy", c.accuracy()}, {"correct", c.correct}, {"wrong", c.wrong},
                            {"unparsable", c.unparsable}, {"excluded", c.excluded}};
  const json report{{"benchmark", b},     {"items", items},           {"unparsable_policy", up},
                    {"micro", r.micro},   {"macro", r.macro},         {"correct", r.correct},
                    {"wrong", r.wrong},   {"unparsable", r.unparsable}, {"excluded", r.excluded},
                    {"categories", cats}};
  put_line(out, report.dump(2));
  out.commit();
  std::cerr << "msrl eval: " << items << " items, micro " << r.micro << ", macro " << r.macro << "\n";
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"msrl: MSRL verifiable rewards, CMKD selection, voting, replay mixing and benchmark scoring "
               "over JSONL (ms-swift format)"};
  app.require_subcommand(1);

  std::string preset_help = "reward preset:";
  for (auto n : rw::preset_names) preset_help.append(" ").append(n);

  score_args sa;
  auto* score = app.add_subcommand("score", "add `rewards` (totals) and `reward_terms` (per function) to each row's `completions`");
  score->add_option("--preset", sa.preset, preset_help)->capture_default_str();
  score
      ->add_option("input", sa.input,
                   "input JSONL: completions, solution|chosen|label, task_type; optional completion_lengths, truncated")
      ->required();
  score->add_option("-o,--output", sa.output, "output JSONL (written atomically)")->required();

  cmkd_args ca;
  auto* cmkd = app.add_subcommand("cmkd", "select one CMKD SFT target per caption-based sample");
  cmkd->add_option("input", ca.input, "input JSONL: messages, images|videos, caption, completions, logprobs|answer_probs")->required();
  cmkd->add_option("-o,--output", ca.output, "output JSONL of kept SFT rows (written atomically)")->required();
  cmkd->add_option("--confidence", ca.confidence, "mean | sequence | answer-prob | first")->capture_default_str();
  cmkd->add_option("--labels", ca.labels, "label format: msrl | bracket | phrase | numeric | any")->capture_default_str();
  cmkd->add_option("--format", ca.format, "format check: msrl | swift | unifiedreward | r1reward")->capture_default_str();
  cmkd->add_option("--tie", ca.tie, "tie policy of the pseudo-label vote: abstain | first | a | b")->capture_default_str();
  cmkd->add_option("--min-agreement", ca.min_agreement,
                   "smallest share of the parsable votes the pseudo-label must hold to keep the sample (0: any majority)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmkd->add_option("--stats", ca.stats, "also write the counts by reason to this JSON file");

  vote_args va;
  auto* vote = app.add_subcommand("vote", "voting@k over `completions` (and `completions_swapped`, judged on the swapped order)");
  vote->add_option("input", va.input, "input JSONL: completions, optional completions_swapped")->required();
  vote->add_option("-o,--output", va.output, "output JSONL with vote, votes, tie (written atomically)")->required();
  vote->add_option("-k,--k", va.k, "use the first k judgments of each list (0 = all)")->capture_default_str();
  vote->add_option("--labels", va.labels, "label format: msrl | bracket | phrase | numeric | any")->capture_default_str();
  vote->add_option("--tie", va.tie, "tie policy: abstain | first | a | b")->capture_default_str();

  mix_args ma;
  auto* mix = app.add_subcommand("mix", "interleave new rows with replayed rows at a fixed ratio per batch");
  mix->add_option("fresh", ma.fresh, "JSONL of new (caption) rows, streamed in order")->required();
  mix->add_option("replay", ma.replay, "JSONL of replay (text) rows, drawn by a seeded permutation")->required();
  mix->add_option("-o,--output", ma.output, "output JSONL (written atomically)")->required();
  mix->add_option("--ratio", ma.ratio, "FRESH:REPLAY, or table6 (4:1) or section51 (5:1)")->capture_default_str();
  mix->add_option("--batch-size", ma.batch_size, "rows per batch (0 = FRESH + REPLAY)")->capture_default_str();
  mix->add_option("--seed", ma.seed, "seed of the replay draw")->capture_default_str();

  eval_args ea;
  auto* eval = app.add_subcommand("eval", "benchmark accuracy per category, micro and macro");
  eval->add_option("input", ea.input, "input JSONL: completion|completions plus the benchmark's gold fields")->required();
  eval->add_option("-o,--output", ea.output, "output JSON report (written atomically)")->required();
  eval->add_option("--benchmark", ea.benchmark, "vlrb | genai | mmrb | generic")->capture_default_str();
  eval->add_option("--labels", ea.labels, "label format: msrl | bracket | phrase | numeric | any")->capture_default_str();
  eval->add_option("-k,--k", ea.k, "use the first k judgments (0 = all)")->capture_default_str();
  eval->add_option("--tie", ea.tie, "tie policy for k judgments (not vlrb): abstain | first | a | b")->capture_default_str();
  eval->add_option("--unparsable", ea.unparsable, "exclude | wrong | random (default: vlrb exclude, mmrb random, else wrong)");
  eval->add_option("--seed", ea.seed, "seed of the random guesses")->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*score) run_score(sa);
    else if (*cmkd) run_cmkd(ca);
    else if (*vote) run_vote(va);
    else if (*mix) run_mix(ma);
    else if (*eval) run_eval(ea);
  } catch (const std::exception& e) {
    std::cerr << "msrl: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
