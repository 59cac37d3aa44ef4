// msrl-train end to end: configuration errors, resume after a kill (bit-identical to an
// uninterrupted run, no step lost or repeated), corrupt data, and a short run of every stage.
// Usage: test_pipeline -- <msrl-train> <configs/tiny.json>
#define BOOST_TEST_MODULE pipeline
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <cstring>
#include <map>
#include <regex>

#include <nlohmann/json.hpp>

#include <msrl/reward/labels.hpp>
#include <msrl_pipeline/dataset.hpp>
#include <msrl_pipeline/item_groups.hpp>
#include <msrl/grpo/presets.hpp>

#include "scratch.hpp"

namespace fs = std::filesystem;
using msrl_test::slurp;
using msrl_test::spit;
using json = nlohmann::json;

namespace {

std::string arg(int from_end) {
  auto& s = boost::unit_test::framework::master_test_suite();
  BOOST_REQUIRE_MESSAGE(s.argc >= 3, "usage: test_pipeline -- <msrl-train> <tiny.json>");
  return s.argv[s.argc - from_end];
}
std::string binary() { return arg(2); }
std::string tiny_config() { return arg(1); }

/// A scratch folder shared by the whole module, with the bundled data written once.
struct world {
  fs::path root;
  world() {
    root = fs::temp_directory_path() / ("msrl-pipeline-" + std::to_string(::getpid()));
    fs::remove_all(root);
    fs::create_directories(root);
    std::string cmd = "'";
    cmd += binary();
    cmd += "' make-data --out '";
    cmd += (root / "data").string();
    cmd += "' > /dev/null 2>&1";
    BOOST_REQUIRE(std::system(cmd.c_str()) == 0);
    // A small, fast variant of the tiny configuration: one thread (bit-reproducible), few steps.
    json c = json::parse(slurp(tiny_config()));
    c["data_dir"] = (root / "data").string();
    c["threads"] = 1;
    c["blas_threads"] = 1; // and one BLAS thread
    c["sampling_workers"] = 2; // prompts sampled on two threads (each request's tokens depend on its seed only)
    c["progress"] = false;
    // Random weights and both pretraining stages (the bundled run starts from the shipped foundation)
    c["model"]["init"] = "tiny";
    c["stages"] = {"pretrain", "pretrain_media", "sft", "text_grpo", "caption_grpo", "cmkd", "mm_grpo", "eval"};
    c["model"]["tiny"]["text"] = {{"hidden_size", 32}, {"num_layers", 1}, {"num_heads", 2}, {"num_kv_heads", 1}, {"head_dim", 16}, {"intermediate_size", 64}};
    c["model"]["tiny"]["vision"] = {{"hidden_size", 16}, {"num_layers", 1}, {"num_heads", 2}, {"intermediate_size", 32}, {"image_size", 56}, {"patch_size", 14}};
    for (const char* s : {"pretrain", "pretrain_media", "sft"}) c[s]["max_steps"] = 3;
    c["sft"]["replay_file"] = "pretrain.jsonl"; // exercises replay into an SFT stage
    c["cmkd"]["sft"]["max_steps"] = 2;
    for (const char* s : {"text_grpo", "caption_grpo", "mm_grpo"}) {
      c[s]["max_steps"] = 4;
      c[s]["prompts_per_step"] = 2;
      c[s]["num_generations"] = 4;
      c[s]["max_completion"] = 24;
    }
    c["mm_grpo"]["entropy_coeff"] = 0.01; // exercises the entropy bonus end to end
    c["cmkd"]["k"] = 3;
    c["cmkd"]["max_completion"] = 24;
    c["eval"]["k"] = 3;
    c["eval"]["max_completion"] = 24;
    c["eval"]["max_items"] = 8;
    std::ofstream(root / "small.json") << c.dump(2);
  }
  ~world() {
    if (!std::getenv("MSRL_TEST_KEEP")) fs::remove_all(root);
  }
  std::string config() const { return (root / "small.json").string(); }
};

world& shared() {
  static world w;
  return w;
}

struct result {
  int rc;
  std::string out, err;
};

result run(const std::string& args, const fs::path& scratch) {
  fs::create_directories(scratch);
  const auto o = scratch / "stdout.txt", e = scratch / "stderr.txt";
  std::string cmd = "'"; // appended piece by piece (GCC 12 warns falsely on one long concatenation)
  cmd += binary();
  cmd += "' ";
  cmd += args;
  cmd += " > '";
  cmd += o.string();
  cmd += "' 2> '";
  cmd += e.string();
  cmd += "'";
  const int st = std::system(cmd.c_str());
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, slurp(o), slurp(e)};
}

std::vector<json> jsonl(const fs::path& p) {
  std::vector<json> r;
  std::ifstream f(p);
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) r.push_back(json::parse(line));
  return r;
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

// SIGKILLs `pid` once `metrics` holds `steps` rows (waiting at most 5 minutes) and reaps it;
// false when the process ended first.
bool kill_after_steps(pid_t pid, const fs::path& metrics, std::size_t steps) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  bool killed = false;
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(metrics) && jsonl(metrics).size() >= steps) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  return killed;
}

} // namespace

BOOST_AUTO_TEST_CASE(config_errors_name_the_key) {
  auto& w = shared();
  const auto dir = w.root / "errors";
  struct bad {
    std::string set, expect;
  };
  const std::vector<bad> cases{
      {"text_grpo.lr=-1", "text_grpo.lr"},
      {"text_grpo.lrr=1", "text_grpo.lrr"},
      {"sft.epochs=\\\"three\\\"", "sft.epochs"},
      {"stages='[\"eval\",\"sft\"]'", "recipe order"},
      {"stages='[\"warmup\"]'", "stages[0]"},
      {"caption_grpo.replay_ratio=5-1", "caption_grpo.replay_ratio"},
      {"sft.replay_file=pretrain.jsonl --set sft.replay_ratio=4", "sft.replay_ratio"},
      {"cmkd.sft.replay_file=pretrain.jsonl --set cmkd.sft.replay_ratio=4", "cmkd.sft.replay_ratio"},
      {"model.init_std=2", "model.init_std"},
      {"mm_grpo.num_generations=1", "mm_grpo.num_generations"},
      {"eval.layout=csv", "eval.layout"},
      {"eval.trajectory=every", "eval.trajectory"},
      {"text_grpo.both_orders=true --set text_grpo.prompts_per_step=3", "text_grpo.prompts_per_step"},
      {"cmkd.confidence=loudest", "cmkd.confidence"},
      {"pretrain_media.epochs=0", "pretrain_media.epochs"},
      {"model.autocast=fp8", "model.autocast"},
      {"model.fused_logprobs=2", "model.fused_logprobs"},
      {"mm_grpo.entropy_coeff=1e999", "mm_grpo.entropy_coeff"},
      {"blas_threads=-1", "blas_threads"},
      {"sampling_workers=-1", "sampling_workers"},
      {"prompts_per_pass=0", "prompts_per_pass"},
      {"prompts_per_pass=257", "prompts_per_pass"},
      {"groups_per_pass=0", "groups_per_pass"},
      {"groups_per_pass=257", "groups_per_pass"},
      {"train_workers=-1", "train_workers"},
      {"train_workers=257", "train_workers"},
      {"text_grpo.advantage_group=row", "text_grpo.advantage_group"},
      {"caption_grpo.advantage_group=item --set caption_grpo.both_orders=false", "caption_grpo.advantage_group"},
      {"mm_grpo.advantage_group=item --set mm_grpo.estimator=openrlhf_rloo", "mm_grpo.advantage_group"},
      {"text_grpo.num_iterations=0", "text_grpo.num_iterations"},
      {"mm_grpo.num_iterations=65", "mm_grpo.num_iterations"},
      {"sft.open_choice='[\"matches\"]'", "sft.open_choice"},
      {"cmkd.sft.open_choice='[\"A\",\"A\"]'", "cmkd.sft.open_choice"},
      {"sft.open_choice_weight=1", "sft.open_choice_weight"},
  };
  for (const auto& c : cases) {
    const auto r = run("run --config '" + w.config() + "' --out '" + (dir / "out").string() + "' --set " + c.set, dir);
    BOOST_TEST(r.rc == 1, c.set);
    BOOST_TEST(contains(r.err, c.expect), c.set << " -> " << r.err);
    BOOST_TEST(!fs::exists(dir / "out" / "checkpoints"), c.set);
  }
  std::ofstream(dir / "broken.json") << "{\"seed\": 1,";
  auto r = run("run --config '" + (dir / "broken.json").string() + "'", dir);
  BOOST_TEST(r.rc == 1);
  BOOST_TEST(contains(r.err, "not valid JSON"), r.err);
  r = run("run --config '" + (dir / "missing.json").string() + "'", dir);
  BOOST_TEST(r.rc == 1);
  BOOST_TEST(contains(r.err, "--config"), r.err);
}

BOOST_AUTO_TEST_CASE(make_data_takes_rows_per_file) {
  auto& w = shared();
  const auto dir = w.root / "make-data";
  auto r = run("make-data --out '" + (dir / "d").string() + "' --seed 3 --sft 6 --cmkd 5 --eval 3", dir);
  BOOST_TEST_REQUIRE(r.rc == 0, r.err);
  BOOST_TEST(jsonl(dir / "d" / "stage1_sft.jsonl").size() == 6u);
  BOOST_TEST(jsonl(dir / "d" / "stage2_cmkd.jsonl").size() == 5u);
  BOOST_TEST(jsonl(dir / "d" / "eval.jsonl").size() == 6u); // each item in both orders
  BOOST_TEST(jsonl(dir / "d" / "stage1_rl.jsonl").size() == jsonl(w.root / "data" / "stage1_rl.jsonl").size()); // the default
  const json manifest = json::parse(slurp(dir / "d" / "manifest.json"));
  BOOST_TEST(manifest["seed"] == 3);
  BOOST_TEST(manifest["options"]["cmkd"] == 5);
  r = run("make-data --out '" + (dir / "e").string() + "' --cmkd 0", dir);
  BOOST_TEST(r.rc != 0);
  BOOST_TEST(contains(r.err, "--cmkd"), r.err);
  BOOST_TEST(!fs::exists(dir / "e"));
}

BOOST_AUTO_TEST_CASE(missing_and_corrupt_data_are_named) {
  auto& w = shared();
  const auto dir = w.root / "corrupt";
  auto r = run("run --config '" + w.config() + "' --out '" + (dir / "a").string() + "' --set stages='[\"sft\"]' --set sft.file=nope.jsonl", dir);
  BOOST_TEST(r.rc == 1);
  BOOST_TEST(contains(r.err, "nope.jsonl"), r.err);
  // A copy of the SFT file with a broken third row and a row without messages.
  std::ifstream in(w.root / "data" / "stage1_sft.jsonl");
  std::ofstream bad(dir / "bad.jsonl");
  std::string line;
  for (int i = 0; i < 2 && std::getline(in, line); ++i) bad << line << "\n";
  bad << "{\"messages\": [{\"role\": \"user\"\n";
  bad.close();
  r = run("run --config '" + w.config() + "' --out '" + (dir / "b").string() + "' --set stages='[\"sft\"]' --set sft.file='" + (dir / "bad.jsonl").string() + "'", dir);
  BOOST_TEST(r.rc == 1);
  BOOST_TEST(contains(r.err, "bad.jsonl:3"), r.err);
  std::ofstream(dir / "bad2.jsonl") << "{\"messages\": [{\"role\": \"narrator\", \"content\": \"x\"}]}\n";
  r = run("run --config '" + w.config() + "' --out '" + (dir / "c").string() + "' --set stages='[\"sft\"]' --set sft.file='" + (dir / "bad2.jsonl").string() + "'", dir);
  BOOST_TEST(r.rc == 1);
  BOOST_TEST((contains(r.err, "bad2.jsonl:1") && contains(r.err, "messages")), r.err);
}

BOOST_AUTO_TEST_CASE(resume_after_kill_matches_an_uninterrupted_run) {
  auto& w = shared();
  const auto dir = w.root / "resume";
  const std::string common = "run --config '" + w.config() + "' --set stages='[\"sft\",\"text_grpo\"]' --set sft.max_steps=2 --set text_grpo.max_steps=6";
  // Uninterrupted.
  auto r = run(common + " --out '" + (dir / "straight").string() + "'", dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  // Killed with SIGKILL once the GRPO stage has written three steps, then rerun.
  const auto out = dir / "killed";
  const auto metrics = out / "metrics" / "text_grpo.jsonl";
  const pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    const std::string cmd = "exec '" + binary() + "' " + common + " --out '" + out.string() + "' > /dev/null 2>&1";
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  BOOST_REQUIRE_MESSAGE(kill_after_steps(pid, metrics, 3), "the run ended before it could be killed");
  r = run(common + " --out '" + out.string() + "'", dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  BOOST_TEST(contains(r.err, "sft: done before, skipped"), r.err);
  BOOST_TEST(contains(r.err, "text_grpo: resuming at step"), r.err);
  // Same weights, bit for bit, and every step logged exactly once.
  const auto a = slurp(dir / "straight" / "checkpoints" / "text_grpo" / "model.safetensors");
  const auto b = slurp(out / "checkpoints" / "text_grpo" / "model.safetensors");
  BOOST_TEST(!a.empty());
  BOOST_TEST((a == b), "resumed weights differ from the uninterrupted run");
  const auto rows = jsonl(metrics);
  BOOST_REQUIRE(rows.size() == 6u);
  const auto straight = jsonl(dir / "straight" / "metrics" / "text_grpo.jsonl");
  for (std::size_t i = 0; i < rows.size(); ++i) {
    BOOST_TEST(rows[i]["step"].get<int>() == static_cast<int>(i));
    BOOST_TEST(rows[i]["reward"].get<double>() == straight[i]["reward"].get<double>());
    BOOST_TEST(rows[i]["loss"].get<double>() == straight[i]["loss"].get<double>());
  }
  BOOST_TEST(!fs::exists(out / "checkpoints" / "text_grpo.resume"));
  const auto state = json::parse(slurp(out / "state.json"));
  BOOST_TEST(state["completed"].size() == 2u);
}

BOOST_AUTO_TEST_CASE(every_stage_runs_and_the_evaluation_is_reported) {
  auto& w = shared();
  const auto dir = w.root / "full";
  const auto r = run("run --config '" + w.config() + "' --out '" + (dir / "out").string() + "'", dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  BOOST_TEST(contains(r.out, "| task type |"), r.out);
  BOOST_TEST(contains(r.out, "voting@3"), r.out);
  const auto rep = json::parse(slurp(dir / "out" / "eval" / "report.json"));
  BOOST_TEST(rep["k"].get<int>() == 3);
  BOOST_TEST(rep["rows"].get<int>() == 8);
  const double micro = rep["voting_at_k"]["micro"].get<double>();
  BOOST_TEST((micro >= 0.0 && micro <= 1.0));
  // Rows whose k samples are all right / none right, recounted from the written judgments.
  {
    std::size_t n = 0, all = 0, none = 0;
    for (const auto& row : jsonl(dir / "out" / "eval" / "report_completions.jsonl")) {
      const auto gold = msrl::reward::parse_label(row["solution"].get<std::string>(), msrl::reward::label_format::any);
      std::size_t right = 0;
      for (const auto& t : row["completions"]) right += msrl::reward::parse_label(t.get<std::string>()) == gold ? 1 : 0;
      ++n;
      all += right == row["completions"].size() ? 1 : 0;
      none += right == 0 ? 1 : 0;
    }
    BOOST_REQUIRE(n == 8u);
    BOOST_TEST(rep["all_right_at_k"]["micro"].get<double>() == static_cast<double>(all) / 8.0);
    BOOST_TEST(rep["none_right_at_k"]["micro"].get<double>() == static_cast<double>(none) / 8.0);
    BOOST_TEST(contains(r.err, "mm_grpo: held-out media acc@1 "), r.err);
    BOOST_TEST(contains(r.err, "; all 3 samples right "), r.err);
  }
  // The final media report is mm_grpo's trajectory evaluation (same model, rows and seeds), copied,
  // and equals a fresh evaluation of the mm_grpo checkpoint by the eval subcommand.
  BOOST_TEST(contains(r.err, "eval: report = the media evaluation after mm_grpo"), r.err);
  const auto traj = json::parse(slurp(dir / "out" / "eval" / "mm_grpo.json"))["families"]["media"];
  BOOST_TEST(rep == traj);
  BOOST_TEST(slurp(dir / "out" / "eval" / "report_completions.jsonl") == slurp(dir / "out" / "eval" / "mm_grpo_media_completions.jsonl"));
  const auto fresh = run("eval --config '" + w.config() + "' --model '" + (dir / "out" / "checkpoints" / "mm_grpo").string() +
                             "' --data '" + (w.root / "data" / "eval.jsonl").string() + "' --k 3 --max-items 8 --out '" +
                             (dir / "fresh").string() + "'",
                         dir);
  BOOST_REQUIRE_MESSAGE(fresh.rc == 0, fresh.err);
  BOOST_TEST(contains(fresh.out, slurp(dir / "out" / "eval" / "report.md")), fresh.out);
  // ... and the eval subcommand leaves its report and judgments in --out
  BOOST_TEST(slurp(dir / "fresh" / "eval" / "eval.md") == slurp(dir / "out" / "eval" / "report.md"));
  BOOST_TEST(slurp(dir / "fresh" / "eval" / "eval_completions.jsonl") == slurp(dir / "out" / "eval" / "report_completions.jsonl"));
  for (const char* s : {"pretrain", "pretrain_media", "sft", "text_grpo", "caption_grpo", "cmkd", "mm_grpo"})
    BOOST_TEST(fs::exists(dir / "out" / "checkpoints" / s / "model.safetensors"), s);
  BOOST_TEST(fs::exists(dir / "out" / "cmkd" / "stats.json"));
  const auto stats = json::parse(slurp(dir / "out" / "cmkd" / "stats.json"));
  BOOST_TEST(stats["samples"].get<int>() > 0);
  bool any_png = false;
  for (const auto& e : fs::directory_iterator(dir / "out" / "plots")) any_png = any_png || e.path().extension() == ".png";
  BOOST_TEST(any_png);
  // GRPO metrics carry what a trainer reports per step.
  const auto rows = jsonl(dir / "out" / "metrics" / "mm_grpo.jsonl");
  BOOST_REQUIRE(rows.size() == 4u);
  for (const char* k : {"reward", "accuracy", "kl", "clip_fraction", "entropy", "length", "loss", "grad_norm", "lr"})
    BOOST_TEST(rows[0].contains(k), k);
  // ... and step-level advantage statistics.
  for (const char* k : {"zero_std_fraction", "reward_std", "ratio_mean", "clip_fraction_low", "clip_fraction_high"})
    BOOST_TEST(rows[0].contains(k), k);
  // The trajectory: each training stage evaluated on its own task family (and the next GRPO stage's),
  // one line each, and the table.
  const std::map<std::string, std::string> own = {{"sft", "text"}, {"text_grpo", "text"}, {"caption_grpo", "caption"}, {"cmkd", "media"}, {"mm_grpo", "media"}};
  std::map<std::string, fs::file_time_type> written;
  for (const auto& [stage, family] : own) {
    BOOST_TEST_CONTEXT(stage) {
      const auto f = dir / "out" / "eval" / (stage + ".json");
      BOOST_REQUIRE(fs::exists(f));
      written[stage] = fs::last_write_time(f);
      const auto j = json::parse(slurp(f));
      BOOST_TEST(j["stage"] == stage);
      // text_grpo also measures the caption-based family caption_grpo starts from
      BOOST_REQUIRE(j["families"].size() == (stage == "text_grpo" ? 2u : 1u));
      if (stage == "text_grpo") BOOST_TEST(j["families"].contains("caption"));
      const auto& e = j["families"][family];
      BOOST_TEST(e["k"].get<int>() == 3);
      BOOST_TEST(e["rows"].get<int>() == 8);
      // the report counts what the completions file holds: 8 rows of 3 judgments each
      const auto comp = jsonl(dir / "out" / "eval" / (stage + "_" + family + "_completions.jsonl"));
      BOOST_TEST(comp.size() == 8u);
      for (const auto& c : comp) BOOST_TEST(c["completions"].size() == 3u);
      const auto& cats = e["acc_at_1"]["categories"];
      std::size_t counted = 0;
      for (const auto& [name, c] : cats.items()) counted += c["correct"].get<std::size_t>() + c["wrong"].get<std::size_t>();
      BOOST_TEST(counted == 8u);
      BOOST_TEST(contains(r.err, stage + ": held-out " + family + " acc@1 "), r.err);
    }
  }
  BOOST_TEST(!fs::exists(dir / "out" / "eval" / "pretrain.json")); // captioning stages are not judged
  BOOST_TEST(contains(r.out, "Held-out accuracy after each stage"), r.out);
  BOOST_TEST(contains(r.out, "| text_grpo | "), r.out);
  BOOST_TEST(slurp(dir / "out" / "eval" / "trajectory.md").find("| mm_grpo | - | - | - | - | - | - | ") != std::string::npos);
  // A second run over the finished folder does nothing but the evaluation again; the trajectory is
  // read back (the files untouched) and printed again.
  const auto again = run("run --config '" + w.config() + "' --out '" + (dir / "out").string() + "'", dir);
  BOOST_TEST(again.rc == 0);
  BOOST_TEST(contains(again.err, "mm_grpo: done before, skipped"), again.err);
  for (const auto& [stage, family] : own) {
    BOOST_TEST((fs::last_write_time(dir / "out" / "eval" / (stage + ".json")) == written[stage]), stage);
    BOOST_TEST(contains(again.err, stage + ": held-out " + family + " acc@1 "), again.err);
  }
  BOOST_TEST(contains(again.out, slurp(dir / "out" / "eval" / "trajectory.md")), again.out);
  // eval.trajectory=all evaluates the other families too, from the saved checkpoint, without retraining
  const auto all = run("run --config '" + w.config() + "' --out '" + (dir / "out").string() + "' --set eval.trajectory=all", dir);
  BOOST_REQUIRE_MESSAGE(all.rc == 0, all.err);
  const auto j = json::parse(slurp(dir / "out" / "eval" / "sft.json"));
  BOOST_TEST(j["families"].size() == 3u);
  BOOST_TEST(contains(all.err, "sft: held-out media acc@1 "), all.err);
}

BOOST_AUTO_TEST_CASE(eval_subcommand_reads_a_checkpoint) {
  auto& w = shared();
  const auto dir = w.root / "evalcmd";
  auto r = run("run --config '" + w.config() + "' --out '" + (dir / "out").string() + "' --set stages='[\"sft\"]' --set sft.max_steps=1", dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  r = run("eval --config '" + w.config() + "' --model '" + (dir / "out" / "checkpoints" / "sft").string() + "' --data '" +
              (w.root / "data" / "eval.jsonl").string() + "' --k 2 --max-items 4",
          dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  BOOST_TEST(contains(r.out, "voting@2"), r.out);
  r = run("eval --model '" + (dir / "nowhere").string() + "' --data '" + (w.root / "data" / "eval.jsonl").string() + "'", dir);
  BOOST_TEST(r.rc == 1);
  BOOST_TEST(contains(r.err, "model.init"), r.err);
}

// A GRPO stage takes any named preset: one with a KL term (beta != 0) gets the stage's starting
// policy as its reference model, and the presets with token shaping report what the shaping did
// (FIPO's mean weight, the tokens KL-Cov selected) in the stage's metrics.
BOOST_AUTO_TEST_CASE(grpo_stages_take_presets_with_a_reference_and_token_shaping) {
  auto& w = shared();
  const auto dir = w.root / "presets";
  const auto r = run("run --config '" + w.config() + "' --out '" + (dir / "out").string() +
                         "' --set stages='[\"text_grpo\", \"caption_grpo\"]' --set text_grpo.preset=ms_swift_fipo"
                         " --set caption_grpo.preset=verl_kl_cov --set text_grpo.max_steps=2 --set caption_grpo.max_steps=2",
                     dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto fipo = jsonl(dir / "out" / "metrics" / "text_grpo.jsonl");
  BOOST_REQUIRE(fipo.size() == 2u);
  for (const auto& row : fipo) {
    BOOST_TEST(row.contains("kl"));
    // one optimizer step per sampled batch: every ratio is 1 up to the sampler's and the training
    // forward's float rounding, so every influence weight is exp(~0) = 1 (clamped to >= 1)
    const double weight = row["fipo_weight_mean"].get<double>();
    BOOST_TEST((weight >= 1.0 && weight < 1.0 + 1e-4), weight);
  }
  const auto klcov = jsonl(dir / "out" / "metrics" / "caption_grpo.jsonl");
  BOOST_REQUIRE(klcov.size() == 2u);
  for (const auto& row : klcov) BOOST_TEST(row["selected_tokens"].get<double>() >= 2.0); // at least one per group, 2 groups
  BOOST_TEST(!klcov[0].contains("fipo_weight_mean"));
}

// Dynamic sampling: a prompt whose group the rule drops is replaced by a fresh draw, up to
// max_resample_times; the metrics count the replacements and the groups still dropped. A group kept
// is never replaced, so over a step: dropped = units whose every draw was flat, and the replacements
// are max_resample_times per such unit plus fewer for the units a later draw rescued.
BOOST_AUTO_TEST_CASE(dynamic_sampling_replaces_flat_groups) {
  auto& w = shared();
  const auto dir = w.root / "dynamic";
  const auto r = run("run --config '" + w.config() + "' --out '" + (dir / "out").string() +
                         "' --set stages='[\"text_grpo\"]' --set text_grpo.dynamic_sample=verl --set text_grpo.max_resample_times=2"
                         " --set text_grpo.max_steps=2",
                     dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto rows = jsonl(dir / "out" / "metrics" / "text_grpo.jsonl");
  BOOST_REQUIRE(rows.size() == 2u);
  for (const auto& row : rows) {
    const double resampled = row["resampled_groups"].get<double>(), dropped = row["dropped_groups"].get<double>();
    const double groups = 2; // prompts_per_step of the small configuration, in one A/B pair
    BOOST_TEST(dropped <= groups);
    BOOST_TEST(resampled >= 2 * dropped);         // each dropped unit was replaced twice first
    BOOST_TEST(resampled <= 2 * groups);
    // the groups trained are the last draws: flat exactly when they were dropped
    BOOST_TEST((row["zero_std_fraction"].get<double>() == 1.0) == (dropped == groups));
  }
  const auto bad = run("run --config '" + w.config() + "' --out '" + (dir / "bad").string() + "' --set text_grpo.dynamic_sample=always", dir);
  BOOST_TEST(bad.rc != 0);
  BOOST_TEST(contains(bad.err, "text_grpo.dynamic_sample"), bad.err);
}

// Item advantages, hand-worked with TRL's rule (r - mean) / (unbiased std + 1e-4) over an item's
// completions in both orders: groups {0, 0} and {1, 1}, each flat on its own, give -+0.5 / (sqrt(1/3)
// + 1e-4); {1, 0} and {1, 1} have mean 0.75 and unbiased std 0.5.
BOOST_AUTO_TEST_CASE(item_advantages_normalise_both_orders_together) {
  const auto& opt = msrl::grpo::presets::trl_default.advantages;
  const auto a = msrl_pipeline::item_advantages({{0.0, 0.0}, {1.0, 1.0}}, opt);
  const double s = 0.5 / (std::sqrt(1.0 / 3.0) + 1e-4);
  BOOST_REQUIRE(a.per_group.size() == 2u);
  for (int k = 0; k < 2; ++k) {
    BOOST_TEST(a.per_group[0][k] == -s, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(a.per_group[1][k] == s, boost::test_tools::tolerance(1e-12));
  }
  BOOST_TEST(a.stats.zero_std_groups == 0u);
  const auto b = msrl_pipeline::item_advantages({{1.0, 0.0}, {1.0, 1.0}}, opt);
  BOOST_TEST(b.per_group[0][0] == 0.25 / 0.5001, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(b.per_group[0][1] == -0.75 / 0.5001, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(b.per_group[1][1] == 0.25 / 0.5001, boost::test_tools::tolerance(1e-12));
  const auto c = msrl_pipeline::item_advantages({{1.0, 1.0}, {1.0, 1.0}}, opt);
  BOOST_TEST(c.stats.zero_std_groups == 1u);
  BOOST_TEST(c.per_group[1][0] == 0.0);
  // without the std division (msrl_release), 16 equal rewards of 1.04 average to 1.04 - 4e-16; the
  // flat item's advantages are still exactly 0
  const auto d = msrl_pipeline::item_advantages({std::vector<double>(8, 1.04), std::vector<double>(8, 1.04)},
                                                msrl::grpo::presets::msrl_release.advantages);
  for (const auto& g : d.per_group)
    for (const double x : g) BOOST_TEST(x == 0.0);
  BOOST_CHECK_THROW(msrl_pipeline::item_advantages({{}, {}}, opt), msrl::invalid_argument);
}

// Item groups (advantage_group "item"): a row and its mirrored twin share one baseline. An item is
// flat only when both of its groups are, and a group the trainer skips as flat (advantages all 0)
// is one of a flat item's two groups unless its rewards all equal its item's mean.
BOOST_AUTO_TEST_CASE(item_groups_share_a_baseline_across_both_orders) {
  auto& w = shared();
  const auto dir = w.root / "items";
  const auto r = run("run --config '" + w.config() + "' --out '" + (dir / "out").string() +
                         "' --set stages='[\"text_grpo\"]' --set text_grpo.advantage_group=item --set text_grpo.max_steps=3",
                     dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto rows = jsonl(dir / "out" / "metrics" / "text_grpo.jsonl");
  BOOST_REQUIRE(rows.size() == 3u);
  const double groups = 2, items = 1; // prompts_per_step of the small configuration: one A/B pair
  for (const auto& row : rows) {
    const double flat_items = row["item_zero_std_fraction"].get<double>() * items;
    const double zero_std = row["zero_std_fraction"].get<double>() * groups, skipped = row["skipped_groups"].get<double>();
    BOOST_TEST((flat_items == 0.0 || flat_items == 1.0), flat_items);
    BOOST_TEST(2 * flat_items <= zero_std);  // a flat item's two groups are flat
    BOOST_TEST(skipped >= 2 * flat_items);   // and skipped
    BOOST_TEST(skipped <= zero_std);         // a skipped group is flat in its own rewards
  }
}

// A GRPO stage with an estimator from the config, the KL in the reward under the adaptive
// controller and TRL's adaptive entropy coefficient: the metrics follow each controller's rule.
BOOST_AUTO_TEST_CASE(grpo_stage_takes_an_estimator_the_kl_in_the_reward_and_controllers) {
  auto& w = shared();
  const auto dir = w.root / "estimator";
  const double beta0 = 0.05, target = 0.01, horizon = 10, delta = 0.01, h_target = 100.0;
  const auto r = run("run --config '" + w.config() + "' --out '" + (dir / "out").string() +
                         "' --set stages='[\"text_grpo\"]' --set text_grpo.max_steps=3 --set text_grpo.estimator=openrlhf_reinforce_baseline"
                         " --set text_grpo.kl_in_reward=0.05 --set text_grpo.kl_in_reward_estimator=k3 --set text_grpo.kl_target=0.01"
                         " --set text_grpo.kl_horizon=10 --set text_grpo.adaptive_entropy=true --set text_grpo.entropy_coeff=0.02"
                         " --set text_grpo.entropy_coef_delta=0.01 --set text_grpo.entropy_target=100",
                     dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto rows = jsonl(dir / "out" / "metrics" / "text_grpo.jsonl");
  BOOST_REQUIRE(rows.size() == 3u);
  const double n = 2 * 4; // prompts_per_step x num_generations of the small configuration
  double beta = beta0, coef = 0.02;
  for (std::size_t s = 0; s < rows.size(); ++s) {
    const auto& row = rows[s];
    BOOST_TEST(row["kl_in_reward_coef"].get<double>() == beta, boost::test_tools::tolerance(1e-12));
    // no entropy bonus before the first measurement, then the coefficient (entropy <= target 100)
    BOOST_TEST(row["entropy_coef"].get<double>() == (s == 0 ? 0.0 : coef), boost::test_tools::tolerance(1e-12));
    const double kl = row["kl_in_reward"].get<double>(), h = row["policy_entropy"].get<double>();
    BOOST_TEST(kl >= 0.0); // k3 is non-negative
    BOOST_TEST(h > 0.0);
    beta *= 1 + std::clamp(kl / target - 1, -0.2, 0.2) * n / horizon;
    coef = h <= h_target ? coef + delta : coef - delta;
  }
  BOOST_TEST(rows[1]["kl_in_reward_coef"].get<double>() != beta0); // the controller moved it
  for (const auto& [key, value] : {std::pair{"estimator", "reinforce++"}, std::pair{"kl_in_reward_estimator", "k9"},
                                   std::pair{"kl_horizon", "-1"}, std::pair{"gamma", "2"}}) {
    const auto bad = run("run --config '" + w.config() + "' --out '" + (dir / "bad").string() + "' --set text_grpo." + key + "=" + value, dir);
    BOOST_TEST(bad.rc != 0);
    BOOST_TEST(contains(bad.err, std::string("text_grpo.") + key), bad.err);
  }
}

// The bundled run starts from the shipped foundation checkpoint (model.init of tiny.json): it loads,
// its provenance says how to make it again, and it judges (in the caption-first format it never saw).
BOOST_AUTO_TEST_CASE(shipped_foundation_loads_and_says_where_it_came_from) {
  auto& w = shared();
  const fs::path foundation = fs::path(tiny_config()).parent_path().parent_path() / "foundation";
  for (const char* f : {"model.safetensors", "config.json", "tokenizer.json", "provenance.json"})
    BOOST_TEST(fs::exists(foundation / f), f);
  BOOST_TEST(fs::file_size(foundation / "model.safetensors") <= 10u * 1000 * 1000);
  const auto prov = json::parse(slurp(foundation / "provenance.json"));
  for (const char* k : {"command", "commit", "data_seed", "wall_time_s", "machine"}) BOOST_TEST(prov.contains(k), k);
  const auto dir = w.root / "foundation";
  const auto r = run("eval --config '" + w.config() + "' --model '" + fs::absolute(foundation).string() + "' --data '" +
                         (w.root / "data" / "eval.jsonl").string() + "' --k 1 --max-items 2 --out '" + (dir / "out").string() + "'",
                     dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  BOOST_TEST(fs::exists(dir / "out" / "eval" / "eval_completions.jsonl"));
}

BOOST_AUTO_TEST_CASE(ablation_resume_reads_completed_evaluations_back) {
  auto& w = shared();
  const auto dir = w.root / "ablate";
  auto r = run("make-data --out '" + (dir / "data").string() + "' --pretrain 4 --pretrain-media 4 --sft 8 --text-rl 8 --caption-rl 8 --cmkd 4 --mm-rl 8 --eval 4", dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto out = dir / "out";
  const std::string cmd = "ablate --config '" + w.config() + "' --out '" + out.string() + "' --set data_dir='" + (dir / "data").string() +
                          "' --set stages='[\"sft\",\"eval\"]' --set sft.max_steps=1 --set text_grpo.max_steps=1 --set caption_grpo.max_steps=1"
                          " --set mm_grpo.max_steps=1 --set cmkd.sft.max_steps=1";
  r = run(cmd, dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const std::string table = r.out;
  BOOST_TEST(contains(table, "| MSRL (full) |"), table);
  BOOST_TEST(slurp(out / "ablation.md") == table);
  struct snapshot {
    std::string text;
    fs::file_time_type time;
  };
  std::map<fs::path, snapshot> reports; // every variant's report.json and caption_report.json
  for (const auto& v : fs::directory_iterator(out / "seed-1"))
    for (const char* f : {"report.json", "caption_report.json"}) {
      const auto p = v.path() / "eval" / f;
      reports[p] = {slurp(p), fs::last_write_time(p)};
    }
  BOOST_REQUIRE(reports.size() == 10u);
  // Resumed with one variant missing: it is trained and evaluated, the others are read back untouched.
  const auto baseline = out / "seed-1" / "Generative_baseline__multimodal_only_";
  fs::remove_all(baseline);
  r = run(cmd, dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  BOOST_TEST(r.out == table);
  BOOST_TEST(slurp(out / "ablation.md") == table);
  for (const auto& [p, s] : reports) {
    BOOST_TEST(slurp(p) == s.text, p);
    if (p.parent_path().parent_path() == baseline) continue;
    BOOST_TEST((fs::last_write_time(p) == s.time), p << " was written again");
    BOOST_TEST(contains(r.err, "eval: done before, reusing " + (p.parent_path() / "report.json").string()), r.err);
  }
  // The table is built from the reports read back: a valid report with other numbers shows in it.
  const auto full = out / "seed-1" / "MSRL__full_" / "eval" / "report.json";
  json rep = json::parse(reports[full].text);
  const std::string task = rep["voting_at_k"]["categories"].begin().key();
  rep["voting_at_k"]["micro"] = 0.375;
  rep["voting_at_k"]["categories"][task]["correct"] = 1;
  rep["voting_at_k"]["categories"][task]["wrong"] = 1;
  rep["acc_at_1"]["micro"] = 0.125;
  std::ofstream(full) << rep.dump(2) << "\n";
  r = run(cmd, dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  auto full_row = [](const std::string& t) { // the cells of the MSRL (full) row
    std::vector<std::string> c;
    std::istringstream row(t.substr(t.find("| MSRL (full) |"), t.find('\n', t.find("| MSRL (full) |")) - t.find("| MSRL (full) |")));
    for (std::string cell; std::getline(row, cell, '|');) c.push_back(cell);
    return c;
  };
  auto expect = full_row(table); // "", variant, stages, tasks..., voting@k, acc@1, both orders, caption-based
  const std::size_t tasks = rep["voting_at_k"]["categories"].size();
  BOOST_REQUIRE(expect.size() == tasks + 7);
  expect[3] = " 50.0 ";
  expect[3 + tasks] = " 37.5 ";
  expect[4 + tasks] = " 12.5 ";
  BOOST_TEST(full_row(r.out) == expect, r.out);
  // A corrupt (truncated) report is not trusted: that variant is evaluated again, the rest is reused.
  const auto wo2 = out / "seed-1" / "w_o_Stage_2" / "eval" / "report.json";
  std::ofstream(full) << reports[full].text.substr(0, reports[full].text.size() / 2);
  std::ofstream(wo2) << "";
  r = run(cmd, dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  for (const auto& p : {full, wo2}) {
    BOOST_TEST(contains(r.err, "eval: " + p.string() + " is missing or not a valid report"), r.err);
    BOOST_TEST(slurp(p) == reports[p].text, p);
  }
  BOOST_TEST(contains(r.err, "eval: done before, reusing " + (out / "seed-1" / "w_o_Stage_1" / "eval" / "report.json").string()), r.err);
  BOOST_TEST(r.out == table);
  BOOST_TEST(slurp(out / "ablation.md") == table);
}

namespace {

/// name -> fp32 values of a safetensors file (the test's own minimal reader).
std::map<std::string, std::vector<float>> read_f32_safetensors(const fs::path& p) {
  const std::string bytes = slurp(p);
  BOOST_REQUIRE(bytes.size() >= 8);
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  const auto header = json::parse(bytes.substr(8, n));
  std::map<std::string, std::vector<float>> out;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    BOOST_REQUIRE(info["dtype"] == "F32");
    const auto b = info["data_offsets"][0].get<std::size_t>(), e = info["data_offsets"][1].get<std::size_t>();
    std::vector<float> v((e - b) / 4);
    std::memcpy(v.data(), bytes.data() + 8 + n + b, e - b);
    out[name] = std::move(v);
  }
  return out;
}

// The largest |a - b| / (|a| + 1e-3) over every weight of two fp32 safetensors files holding the
// same tensors (a tensor missing or of another size fails the test).
double largest_relative_difference(const fs::path& a, const fs::path& b) {
  const auto wa = read_f32_safetensors(a), wb = read_f32_safetensors(b);
  BOOST_REQUIRE(wa.size() == wb.size());
  double worst = 0;
  for (const auto& [name, va] : wa) {
    const auto& vb = wb.at(name);
    BOOST_REQUIRE(va.size() == vb.size());
    for (std::size_t i = 0; i < va.size(); ++i) worst = std::max(worst, static_cast<double>(std::abs(va[i] - vb[i])) / (std::abs(va[i]) + 1e-3));
  }
  return worst;
}

} // namespace

BOOST_AUTO_TEST_CASE(two_processes_train_like_one) {
  auto& w = shared();
  const auto dir = w.root / "ddp";
  const std::string common = "run --config '" + w.config() +
                             "' --set stages='[\"sft\",\"text_grpo\"]' --set sft.max_steps=2 --set sft.batch_size=4 --set text_grpo.max_steps=2"
                             " --set text_grpo.prompts_per_step=2";
  auto r = run(common + " --out '" + (dir / "one").string() + "'", dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  // Two ranks on loopback: each takes every other sequence / prompt of a step.
  const int port = 20000 + static_cast<int>(::getpid() % 20000);
  std::string launch;
  for (int rank = 0; rank < 2; ++rank)
    launch += "RANK=" + std::to_string(rank) + " WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " '" + binary() +
              "' " + common + " --out '" + (dir / "two").string() + "' > '" + (dir / ("rank" + std::to_string(rank) + ".txt")).string() +
              "' 2>&1 & ";
  launch += "wait";
  BOOST_REQUIRE(std::system(("timeout 300 sh -c \"" + std::regex_replace(launch, std::regex("\""), "\\\"") + "\"").c_str()) == 0);
  BOOST_REQUIRE_MESSAGE(fs::exists(dir / "two" / "checkpoints" / "text_grpo" / "model.safetensors"), slurp(dir / "rank0.txt") + slurp(dir / "rank1.txt"));
  // Same samples and rewards (seeds depend on the prompt's slot, not the rank), same update.
  const auto a = jsonl(dir / "one" / "metrics" / "text_grpo.jsonl"), b = jsonl(dir / "two" / "metrics" / "text_grpo.jsonl");
  BOOST_REQUIRE(a.size() == 2u && b.size() == 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    BOOST_TEST(a[i]["reward"].get<double>() == b[i]["reward"].get<double>());
    BOOST_TEST(a[i]["loss"].get<double>() == b[i]["loss"].get<double>(), boost::test_tools::tolerance(1e-5));
  }
  const double worst = largest_relative_difference(dir / "one" / "checkpoints" / "text_grpo" / "model.safetensors",
                                                   dir / "two" / "checkpoints" / "text_grpo" / "model.safetensors");
  BOOST_TEST_MESSAGE("largest relative weight difference " << worst);
  BOOST_TEST(worst < 1e-4, "largest relative weight difference " << worst);
}

// A data-parallel run that loses a rank: the survivor stops within a bounded time with an error
// (no hang), and rerunning both ranks resumes from the last saved step and ends where one process
// running the whole stage ends (every step logged once, same rewards, same weights to 1e-4).
BOOST_AUTO_TEST_CASE(a_lost_rank_stops_the_run_and_both_ranks_resume_it) {
  auto& w = shared();
  const auto dir = w.root / "lost_rank";
  const std::string common = "run --config '" + w.config() +
                             "' --set stages='[\"sft\",\"text_grpo\"]' --set sft.max_steps=2 --set sft.batch_size=4 --set text_grpo.max_steps=6"
                             " --set text_grpo.prompts_per_step=2";
  auto r = run(common + " --out '" + (dir / "one").string() + "'", dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto out = dir / "two";
  const auto metrics = out / "metrics" / "text_grpo.jsonl";
  const int port = 21000 + static_cast<int>(::getpid() % 20000);
  auto launch = [&](int rank) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      const std::string cmd = "RANK=" + std::to_string(rank) + " WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) +
                              " exec '" + binary() + "' " + common + " --out '" + out.string() + "' > '" +
                              (dir / ("rank" + std::to_string(rank) + ".txt")).string() + "' 2>&1";
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    return pid;
  };
  fs::create_directories(dir);
  const pid_t r0 = launch(0), r1 = launch(1);
  BOOST_REQUIRE(r0 > 0 && r1 > 0);
  // kill rank 1 once three GRPO steps are logged
  BOOST_REQUIRE_MESSAGE(kill_after_steps(r1, metrics, 3), "the run ended before a rank could be killed");
  // the survivor ends on its own, with an error, well before the collective timeout of a hang
  const auto lost_at = std::chrono::steady_clock::now();
  int st0 = 0;
  bool ended = false;
  while (std::chrono::steady_clock::now() - lost_at < std::chrono::seconds(120)) {
    if (::waitpid(r0, &st0, WNOHANG) == r0) {
      ended = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!ended) {
    ::kill(r0, SIGKILL);
    ::waitpid(r0, &st0, 0);
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - lost_at).count();
  BOOST_TEST_MESSAGE("rank 0 ended " << waited << " s after rank 1 was killed");
  BOOST_REQUIRE_MESSAGE(ended, "rank 0 still ran 120 s after rank 1 was killed");
  BOOST_TEST((WIFEXITED(st0) && WEXITSTATUS(st0) != 0), "rank 0 must exit with an error: " << slurp(dir / "rank0.txt"));
  {
    // one line naming the failure, no libtorch stack frames
    const auto log0 = slurp(dir / "rank0.txt");
    const auto at = log0.find("msrl-train: error: ");
    BOOST_TEST_REQUIRE(at != std::string::npos, log0);
    BOOST_TEST(!contains(log0, "frame #"), log0);
    BOOST_TEST(!contains(log0, "Exception raised from"), log0);
  }
  BOOST_TEST(fs::exists(out / "checkpoints" / "text_grpo.resume"));
  // both ranks again: the stage resumes and finishes
  const pid_t q0 = launch(0), q1 = launch(1);
  int s0 = 0, s1 = 0;
  ::waitpid(q0, &s0, 0);
  ::waitpid(q1, &s1, 0);
  BOOST_REQUIRE_MESSAGE(WIFEXITED(s0) && WEXITSTATUS(s0) == 0 && WIFEXITED(s1) && WEXITSTATUS(s1) == 0,
                        slurp(dir / "rank0.txt") + slurp(dir / "rank1.txt"));
  BOOST_TEST(contains(slurp(dir / "rank0.txt"), "text_grpo: resuming at step"), slurp(dir / "rank0.txt"));
  const auto a = jsonl(dir / "one" / "metrics" / "text_grpo.jsonl"), b = jsonl(metrics);
  BOOST_REQUIRE(a.size() == 6u);
  BOOST_REQUIRE(b.size() == 6u);
  for (std::size_t i = 0; i < a.size(); ++i) {
    BOOST_TEST(b[i]["step"].get<int>() == static_cast<int>(i));
    BOOST_TEST(a[i]["reward"].get<double>() == b[i]["reward"].get<double>());
  }
  const double worst = largest_relative_difference(dir / "one" / "checkpoints" / "text_grpo" / "model.safetensors",
                                                   out / "checkpoints" / "text_grpo" / "model.safetensors");
  BOOST_TEST(worst < 1e-4, "largest relative weight difference " << worst);
}

BOOST_AUTO_TEST_CASE(eval_reads_vl_rewardbench_and_genai_bench_layouts) {
  auto& w = shared();
  const auto dir = w.root / "bench";
  auto r = run("run --config '" + w.config() + "' --out '" + (dir / "out").string() + "' --set stages='[\"sft\"]' --set sft.max_steps=1", dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto img = (w.root / "data" / "images" / "i0000.png").string(), img2 = (w.root / "data" / "images" / "i0001.png").string();
  std::ofstream(dir / "vlrb.jsonl") << json{{"id", "RLAIF-V_1"}, {"query", "What is shown?"}, {"image", img}, {"response", {"a square", "a circle"}}, {"human_ranking", {0, 1}}}.dump() << "\n"
                                    << json{{"id", "mathverse_2"}, {"query", "Count."}, {"image", img}, {"response", {"one", "two"}}, {"human_ranking", {1, 0}}}.dump() << "\n";
  std::ofstream(dir / "genai.jsonl") << json{{"prompt", "a red circle"}, {"left_image", img}, {"right_image", img2}, {"vote_type", "leftvote"}}.dump() << "\n"
                                     << json{{"prompt", "a blue square"}, {"left_image", img}, {"right_image", img2}, {"vote_type", "tievote"}}.dump() << "\n";
  const std::string model = (dir / "out" / "checkpoints" / "sft").string();
  // the images live in another folder than the benchmark file: refused unless the configuration allows it
  r = run("eval --config '" + w.config() + "' --model '" + model + "' --data '" + (dir / "vlrb.jsonl").string() + "' --layout vlrb --k 1", dir);
  BOOST_TEST(r.rc != 0);
  BOOST_TEST((contains(r.err, "vlrb.jsonl:1") && contains(r.err, "outside the data folder")), r.err);
  const std::string outside = " --set allow_media_outside_data=true";
  r = run("eval --config '" + w.config() + "' --model '" + model + "' --data '" + (dir / "vlrb.jsonl").string() + "' --layout vlrb --k 1" + outside, dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  // Categories are the VL-RewardBench groups; each item is judged in both orders (2 rows).
  BOOST_TEST(contains(r.out, "| hallucination | 2 |"), r.out);
  BOOST_TEST(contains(r.out, "| reasoning | 2 |"), r.out);
  r = run("eval --config '" + w.config() + "' --model '" + model + "' --data '" + (dir / "genai.jsonl").string() + "' --layout genai --k 1" + outside, dir);
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  BOOST_TEST(contains(r.out, "| image_generation | 2 |"), r.out); // the tie is skipped
  std::ofstream(dir / "bad.jsonl") << json{{"id", "x"}, {"query", "q"}, {"image", img}, {"response", {"only one"}}, {"human_ranking", {0, 1}}}.dump() << "\n";
  r = run("eval --config '" + w.config() + "' --model '" + model + "' --data '" + (dir / "bad.jsonl").string() + "' --layout vlrb" + outside, dir);
  BOOST_TEST(r.rc == 1);
  BOOST_TEST((contains(r.err, "bad.jsonl:1") && contains(r.err, "response")), r.err);
}

BOOST_AUTO_TEST_CASE(media_paths_stay_inside_the_data_folder) {
  // A row's media resolve inside its JSONL file's folder; `..`, an absolute path or a link that
  // leads out is refused naming file:line and the field, unless allow_media_outside_data is set.
  auto& w = shared();
  namespace mp = msrl_pipeline;
  const auto dir = w.root / "media_paths";
  fs::create_directories(dir / "data" / "images");
  fs::create_directories(dir / "elsewhere");
  spit(dir / "elsewhere" / "x.png", "x");
  fs::create_symlink(dir / "elsewhere", dir / "data" / "images" / "out");
  const std::string msg = R"("messages":[{"role":"user","content":"q"}],"solution":"A")";
  for (const auto& [path, field] : {std::pair{std::string("../elsewhere/x.png"), "images"}, std::pair{(dir / "elsewhere" / "x.png").string(), "images"},
                                    std::pair{std::string("images/out/x.png"), "images"}, std::pair{std::string("images/../../elsewhere"), "videos"}}) {
    BOOST_TEST_CONTEXT(path) {
      spit(dir / "data" / "rows.jsonl", "{\"id\":\"r\"," + msg + ",\"" + field + "\":[\"" + path + "\"]}\n");
      try {
        (void)mp::read_jsonl(dir / "data" / "rows.jsonl");
        BOOST_ERROR("no exception");
      } catch (const msrl::parse_error& e) {
        BOOST_TEST(contains(e.what(), "rows.jsonl:1"), e.what());
        BOOST_TEST(contains(e.what(), std::string("field '") + field + "'"), e.what());
        BOOST_TEST(contains(e.what(), "outside the data folder"), e.what());
      }
      const auto rows = mp::read_jsonl(dir / "data" / "rows.jsonl", {.allow_media_outside = true});
      BOOST_TEST(rows.size() == 1u);
    }
  }
  spit(dir / "data" / "rows.jsonl", "{\"id\":\"r\"," + msg + ",\"images\":[\"images/a.png\", \"./images/../images/b.png\"]}\n");
  const auto ok = mp::read_jsonl(dir / "data" / "rows.jsonl");
  BOOST_REQUIRE(ok.size() == 1u);
  BOOST_TEST(ok[0].images.size() == 2u);
}

BOOST_AUTO_TEST_CASE(mirrored_rows_are_the_other_order_of_the_same_item) {
  // Independent route: the generator writes each evaluation item in both orders from the item
  // itself (datagen.hpp); swapping the candidates of the AB row must give its BA row exactly.
  auto& w = shared();
  namespace mp = msrl_pipeline;
  for (const char* file : {"eval_text.jsonl", "eval_caption.jsonl", "eval.jsonl"}) {
    const auto rows = mp::read_jsonl(w.root / "data" / file);
    std::map<std::string, std::map<std::string, const mp::record*>> by_id;
    for (const auto& r : rows) by_id[r.id][r.order] = &r;
    std::size_t pairs = 0;
    for (const auto& [id, orders] : by_id) {
      BOOST_TEST_CONTEXT(file << " " << id) {
        BOOST_REQUIRE(orders.size() == 2u);
        const auto& ab = *orders.at("AB");
        const auto& ba = *orders.at("BA");
        for (const auto& [from, to] : {std::pair{&ab, &ba}, std::pair{&ba, &ab}}) {
          const auto m = mp::mirrored(*from);
          BOOST_TEST(m.solution == to->solution);
          BOOST_TEST(m.order == to->order);
          BOOST_TEST((m.images == to->images));
          BOOST_TEST((m.videos == to->videos));
          BOOST_REQUIRE(m.messages.size() == to->messages.size());
          for (std::size_t i = 0; i < m.messages.size(); ++i) BOOST_TEST(m.messages[i].content == to->messages[i].content);
        }
        ++pairs;
      }
    }
    BOOST_TEST(pairs == 100u, file);
  }
  // a media marker on one candidate line only: the lines stay, the media swap, and the mirror of
  // the mirror is the row (found by fuzz_dataset_row)
  mp::record v;
  v.solution = "B";
  v.messages = {{"user", "Prompt: a blue triangle.\nVideo A: <vcaideo>\nVideo B: <video>\nWhich video matches the prompt?"}};
  v.videos = {"a", "b"};
  const auto mv = mp::mirrored(v), back = mp::mirrored(mv);
  BOOST_TEST(mv.messages[0].content == v.messages[0].content);
  BOOST_TEST((mv.videos == std::vector<std::filesystem::path>{"b", "a"}));
  BOOST_TEST(back.messages[0].content == v.messages[0].content);
  BOOST_TEST((back.videos == v.videos));
  // a row without two candidates is refused by name
  mp::record r;
  r.solution = "A";
  r.messages = {{"user", "Text: one red circle.\nQuestion: What colour is it?"}};
  r.source = "x.jsonl:3";
  try {
    (void)mp::mirrored(r);
    BOOST_ERROR("no exception");
  } catch (const msrl::invalid_argument& e) {
    BOOST_TEST(contains(e.what(), "'row'"), e.what());
    BOOST_TEST(contains(e.what(), "x.jsonl:3"), e.what());
  }
  r.solution = "C";
  BOOST_CHECK_THROW((void)mp::mirrored(r), msrl::invalid_argument);
}
