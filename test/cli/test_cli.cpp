// Runs the msrl tool on fixtures written here and checks what it produces.
#define BOOST_TEST_MODULE cli
#include <boost/test/unit_test.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string tool() {
  auto& s = boost::unit_test::framework::master_test_suite();
  BOOST_REQUIRE_MESSAGE(s.argc >= 2, "usage: test_cli -- <path to msrl>");
  return s.argv[s.argc - 1];
}

struct sandbox {
  fs::path dir;
  sandbox() {
    dir = fs::temp_directory_path() / ("msrl-cli-" + std::to_string(::getpid()) + "-" +
                                       boost::unit_test::framework::current_test_case().p_name.get());
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~sandbox() { fs::remove_all(dir); }
  std::string path(const std::string& name) const { return (dir / name).string(); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path(name)) << text; }
  std::string read(const std::string& name) const {
    std::ifstream f(path(name));
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  std::vector<json> rows(const std::string& name) const {
    std::vector<json> r;
    std::ifstream f(path(name));
    for (std::string line; std::getline(f, line);)
      if (!line.empty()) r.push_back(json::parse(line));
    return r;
  }
  std::size_t entries() const { return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), {})); }

  struct result {
    int rc;
    std::string out, err;
  };
  result run(const std::string& args) const {
    const std::string cmd = "'" + tool() + "' " + args + " > '" + path("stdout.txt") + "' 2> '" + path("stderr.txt") + "'";
    const int st = std::system(cmd.c_str());
    result r{WIFEXITED(st) ? WEXITSTATUS(st) : -1, read("stdout.txt"), read("stderr.txt")};
    fs::remove(path("stdout.txt"));
    fs::remove(path("stderr.txt"));
    return r;
  }
};

bool near(double a, double b) { return std::abs(a - b) < 1e-12; }

} // namespace

BOOST_AUTO_TEST_CASE(help_for_every_subcommand) {
  sandbox s;
  for (std::string sub : {"score", "cmkd", "vote", "mix", "eval"}) {
    const auto r = s.run(sub + " --help");
    BOOST_TEST(r.rc == 0, sub);
    BOOST_TEST(r.out.find("Usage:") != std::string::npos, sub);
    BOOST_TEST(r.out.find("--output") != std::string::npos, sub);
  }
  BOOST_TEST(s.run("--help").out.find("score") != std::string::npos);
  BOOST_TEST(s.run("").rc != 0); // a subcommand is required
}

BOOST_AUTO_TEST_CASE(score_paper_and_release) {
  sandbox s;
  s.write("in.jsonl",
          R"({"messages":[{"role":"user","content":"<image>q"}],"images":["x.png"],"solution":"A","task_type":"image_understanding","completions":["<type>Image Understanding</type><think>t</think><answer>A</answer>","<think>t</think><answer>B</answer>","no tags"]})"
          "\n\n"
          R"({"chosen":"<answer>b</answer>","completions":["B"]})"
          "\n");
  auto r = s.run("score --preset paper " + s.path("in.jsonl") + " -o " + s.path("out.jsonl"));
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto rows = s.rows("out.jsonl");
  BOOST_REQUIRE(rows.size() == 2u);
  // paper: format + accuracy + task(0.2): 1+1+0.2, 1+0+0, 0
  const std::vector<double> totals{2.2, 1.0, 0.0};
  for (std::size_t i = 0; i < 3; ++i) BOOST_TEST(near(rows[0]["rewards"][i].get<double>(), totals[i]), i);
  BOOST_TEST(rows[0]["reward_terms"]["format"] == json::parse("[1.0,1.0,0.0]"));
  BOOST_TEST(rows[0]["reward_terms"]["accuracy"] == json::parse("[1.0,0.0,0.0]"));
  BOOST_TEST(rows[0]["reward_terms"]["task"] == json::parse("[0.2,0.0,0.0]"));
  BOOST_TEST(rows[0]["images"][0] == "x.png"); // the input columns are kept
  // gold from `chosen` when `solution` is absent; a bare "B" matches <answer>b</answer>; no task: 0
  BOOST_TEST(rows[1]["reward_terms"]["accuracy"][0] == 1.0);
  BOOST_TEST(rows[1]["rewards"][0] == 1.0);
  r = s.run("score --preset release " + s.path("in.jsonl") + " -o " + s.path("rel.jsonl"));
  BOOST_REQUIRE(r.rc == 0);
  BOOST_TEST(near(s.rows("rel.jsonl")[0]["rewards"][0].get<double>(), 1.24)); // 1 + 0.2 + 0.2*0.2
}

BOOST_AUTO_TEST_CASE(failures_leave_no_output) {
  sandbox s;
  s.write("badjson.jsonl", "{\"completions\":[\"a\"],\"solution\":\"A\"}\n{not json\n");
  auto r = s.run("score " + s.path("badjson.jsonl") + " -o " + s.path("out.jsonl"));
  BOOST_TEST(r.rc != 0);
  BOOST_TEST(r.err.find("badjson.jsonl:2: invalid JSON") != std::string::npos, r.err);
  BOOST_TEST(!fs::exists(s.path("out.jsonl")));
  BOOST_TEST(s.entries() == 1u); // no temporary file left behind either

  s.write("badfield.jsonl", "{\"completions\":[\"a\"]}\n\n{\"completions\":[\"a\", 3]}\n");
  r = s.run("score " + s.path("badfield.jsonl") + " -o " + s.path("out.jsonl"));
  BOOST_TEST(r.rc != 0);
  BOOST_TEST(r.err.find("badfield.jsonl:3: field 'completions[1]': must be a string") != std::string::npos, r.err);
  BOOST_TEST(!fs::exists(s.path("out.jsonl")));

  // an existing output survives a failed run unchanged
  s.write("out.jsonl", "old\n");
  r = s.run("score " + s.path("badfield.jsonl") + " -o " + s.path("out.jsonl"));
  BOOST_TEST(r.rc != 0);
  BOOST_TEST(s.read("out.jsonl") == "old\n");
  BOOST_TEST(s.entries() == 3u);

  r = s.run("score --preset nope " + s.path("badfield.jsonl") + " -o " + s.path("x.jsonl"));
  BOOST_TEST(r.rc != 0);
  BOOST_TEST(r.err.find("'name'") != std::string::npos, r.err);
  BOOST_TEST(!fs::exists(s.path("x.jsonl")));
  r = s.run("score " + s.path("missing.jsonl") + " -o " + s.path("x.jsonl"));
  BOOST_TEST(r.rc != 0);
  BOOST_TEST(r.err.find("missing.jsonl: cannot open") != std::string::npos, r.err);
}

BOOST_AUTO_TEST_CASE(cmkd_selects_and_counts) {
  sandbox s;
  // sample 1: votes A,A,B -> A; candidate 1 has the best mean log-prob (-0.1 vs -0.5)
  // sample 2: A,B -> tie -> dropped
  s.write("in.jsonl",
          R"({"messages":[{"role":"user","content":"<image>Which is better?"},{"role":"assistant","content":"old"}],"images":["img.png"],"caption":"a dog on grass","completions":["<think>r0</think><answer>A</answer>","<think>r1</think><answer>A</answer>","<think>r2</think><answer>B</answer>"],"logprobs":[[-0.5,-0.5],[-0.1],[-0.01]]})"
          "\n"
          R"({"messages":[{"role":"user","content":"q"}],"caption":"c","completions":["<think>x</think><answer>A</answer>","<think>y</think><answer>B</answer>"],"logprobs":[[-1],[-1]]})"
          "\n");
  auto r = s.run("cmkd " + s.path("in.jsonl") + " -o " + s.path("sft.jsonl") + " --stats " + s.path("stats.json"));
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto rows = s.rows("sft.jsonl");
  BOOST_REQUIRE(rows.size() == 1u);
  BOOST_TEST(rows[0]["messages"].size() == 2u);
  BOOST_TEST(rows[0]["messages"][1]["content"] == "<caption>a dog on grass</caption><think>r1</think><answer>A</answer>");
  BOOST_TEST(rows[0]["images"][0] == "img.png");
  BOOST_TEST(!rows[0].contains("caption"));
  BOOST_TEST(!rows[0].contains("completions"));
  BOOST_TEST(!rows[0].contains("logprobs"));
  const json st = json::parse(s.read("stats.json"));
  BOOST_TEST(st["samples"] == 2);
  BOOST_TEST(st["kept"] == 1);
  BOOST_TEST(st["dropped"]["tie"] == 1);
  BOOST_TEST(st["candidates"]["total"] == 5);
  BOOST_TEST(st["candidates"]["disagree"] == 1 + 2);
  BOOST_TEST(st["candidates"]["eligible"] == 2);
  BOOST_TEST(st["dropped"]["low_agreement"] == 0);
  // --min-agreement 0.7: sample 1's A holds 2 of 3 votes (0.67) and is dropped too; 0.6 keeps it
  r = s.run("cmkd --min-agreement 0.7 " + s.path("in.jsonl") + " -o " + s.path("sft7.jsonl") + " --stats " + s.path("stats7.json"));
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  BOOST_TEST(s.rows("sft7.jsonl").empty());
  BOOST_TEST(json::parse(s.read("stats7.json"))["dropped"]["low_agreement"] == 1);
  r = s.run("cmkd --min-agreement 0.6 " + s.path("in.jsonl") + " -o " + s.path("sft6.jsonl"));
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  BOOST_TEST(s.rows("sft6.jsonl").size() == 1u);
  r = s.run("cmkd --min-agreement 1.5 " + s.path("in.jsonl") + " -o " + s.path("bad.jsonl"));
  BOOST_TEST(r.rc != 0);
  BOOST_TEST(r.err.find("--min-agreement") != std::string::npos, r.err);
  BOOST_TEST(!fs::exists(s.path("bad.jsonl")));
  // --confidence first picks candidate 0; an assistant turn is appended when there is none
  s.write("one.jsonl", R"({"messages":[{"role":"user","content":"q"}],"caption":"c","completions":["<think>a</think><answer>B</answer>","<think>b</think><answer>B</answer>"]})" "\n");
  r = s.run("cmkd --confidence first " + s.path("one.jsonl") + " -o " + s.path("one_out.jsonl"));
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto one = s.rows("one_out.jsonl");
  BOOST_REQUIRE(one.size() == 1u);
  BOOST_TEST(one[0]["messages"][1]["role"] == "assistant");
  BOOST_TEST(one[0]["messages"][1]["content"] == "<caption>c</caption><think>a</think><answer>B</answer>");
  // without logprobs the default confidence cannot run: file:line:field
  r = s.run("cmkd " + s.path("one.jsonl") + " -o " + s.path("x.jsonl"));
  BOOST_TEST(r.rc != 0);
  BOOST_TEST(r.err.find("one.jsonl:1: field 'logprobs'") != std::string::npos, r.err);
  BOOST_TEST(!fs::exists(s.path("x.jsonl")));
}

BOOST_AUTO_TEST_CASE(vote_with_both_orders) {
  sandbox s;
  s.write("in.jsonl",
          R"({"id":1,"completions":["<answer>A</answer>","<answer>A</answer>","<answer>B</answer>"]})" "\n"
          R"({"id":2,"completions":["<answer>A</answer>"],"completions_swapped":["<answer>A</answer>"]})" "\n"
          R"({"id":3,"completions":["<answer>B</answer>","junk"],"completions_swapped":["<answer>A</answer>"]})" "\n");
  auto r = s.run("vote " + s.path("in.jsonl") + " -o " + s.path("out.jsonl"));
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto rows = s.rows("out.jsonl");
  BOOST_REQUIRE(rows.size() == 3u);
  BOOST_TEST(rows[0]["vote"] == "A");
  BOOST_TEST(rows[0]["votes"]["A"] == 2);
  BOOST_TEST(rows[1]["vote"].is_null()); // "A" in both orders is pure position bias: a tie
  BOOST_TEST(rows[1]["tie"] == true);
  BOOST_TEST(rows[2]["vote"] == "B"); // B, and swapped A = original B
  BOOST_TEST(rows[2]["votes"]["invalid"] == 1);
  r = s.run("vote -k 1 --tie a " + s.path("in.jsonl") + " -o " + s.path("k1.jsonl"));
  BOOST_REQUIRE(r.rc == 0);
  BOOST_TEST(s.rows("k1.jsonl")[1]["vote"] == "A"); // tie resolved to A
  r = s.run("vote -k 3 " + s.path("in.jsonl") + " -o " + s.path("k3.jsonl"));
  BOOST_TEST(r.rc != 0);
  BOOST_TEST(r.err.find("in.jsonl:2: field 'completions'") != std::string::npos, r.err);
  BOOST_TEST(!fs::exists(s.path("k3.jsonl")));
}

BOOST_AUTO_TEST_CASE(mix_four_to_one) {
  sandbox s;
  std::string fresh, replay;
  for (int i = 0; i < 8; ++i) fresh += "{\"f\":" + std::to_string(i) + "}\n";
  for (int i = 0; i < 3; ++i) replay += "{\"r\":" + std::to_string(i) + "}\n";
  s.write("new.jsonl", fresh);
  s.write("old.jsonl", replay);
  auto r = s.run("mix --ratio 4:1 --seed 7 " + s.path("new.jsonl") + " " + s.path("old.jsonl") + " -o " + s.path("mix.jsonl"));
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto rows = s.rows("mix.jsonl");
  BOOST_REQUIRE(rows.size() == 10u); // F F F F R F F F F R
  int f = 0;
  std::vector<int> seen;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (i == 4 || i == 9) {
      BOOST_REQUIRE(rows[i].contains("r"));
      seen.push_back(rows[i]["r"].get<int>());
    } else {
      BOOST_TEST(rows[i]["f"] == f++);
    }
  }
  BOOST_TEST(seen[0] != seen[1]); // drawn without replacement
  r = s.run("mix --ratio section51 " + s.path("new.jsonl") + " " + s.path("old.jsonl") + " -o " + s.path("m51.jsonl"));
  BOOST_REQUIRE(r.rc == 0);
  BOOST_TEST(s.rows("m51.jsonl").size() == 9u); // F*5 R F*3 (stops at the next fresh slot)
  r = s.run("mix --ratio 4-1 " + s.path("new.jsonl") + " " + s.path("old.jsonl") + " -o " + s.path("bad.jsonl"));
  BOOST_TEST(r.rc != 0);
  BOOST_TEST(r.err.find("--ratio") != std::string::npos);
  s.write("broken.jsonl", "{\"r\":0}\n[oops\n");
  r = s.run("mix " + s.path("new.jsonl") + " " + s.path("broken.jsonl") + " -o " + s.path("bad.jsonl"));
  BOOST_TEST(r.rc != 0);
  BOOST_TEST(r.err.find("broken.jsonl:2: invalid JSON") != std::string::npos, r.err);
  BOOST_TEST(!fs::exists(s.path("bad.jsonl")));
}

BOOST_AUTO_TEST_CASE(eval_vlrb_and_genai) {
  sandbox s;
  // general: 1 correct, 1 wrong; hallucination (incl. hallucination_* -> povid): 2 correct, 1 unparsable (excluded);
  // reasoning: 1 wrong. micro 3/5, macro (0.5 + 1 + 0) / 3
  s.write("vlrb.jsonl",
          R"({"id":"wildvision_1","solution":"A","completion":"<answer>A</answer>"})" "\n"
          R"({"id":"vlfeedback_2","solution":"B","completion":"<answer>A</answer>"})" "\n"
          R"({"id":"hallucination_pair-3","human_ranking":[0,1],"completion":"<answer>A</answer>"})" "\n"
          R"({"id":"RLAIF-V_4","solution":"B","completion":"<answer>B</answer>"})" "\n"
          R"({"id":"RLHF-V_5","solution":"B","completion":"no verdict"})" "\n"
          R"({"id":"mathverse_6","solution":"A","completions":["<answer>B</answer>","<answer>B</answer>","<answer>A</answer>"]})" "\n");
  auto r = s.run("eval --benchmark vlrb " + s.path("vlrb.jsonl") + " -o " + s.path("report.json"));
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const json rep = json::parse(s.read("report.json"));
  BOOST_TEST(rep["items"] == 6);
  BOOST_TEST(near(rep["micro"].get<double>(), 3.0 / 5.0));
  BOOST_TEST(near(rep["macro"].get<double>(), (0.5 + 1.0 + 0.0) / 3.0));
  BOOST_TEST(rep["categories"]["hallucination"]["correct"] == 2);
  BOOST_TEST(rep["categories"]["hallucination"]["unparsable"] == 1);
  BOOST_TEST(rep["categories"]["general"]["wrong"] == 1);
  // GenAI-Bench: tie and both-bad excluded; the unparsable judgment counts as wrong -> 1 of 3
  s.write("genai.jsonl",
          R"({"vote_type":"leftvote","completion":"<answer>A</answer>"})" "\n"
          R"({"vote_type":"tievote","completion":"<answer>A</answer>"})" "\n"
          R"({"vote_type":"bothbad_vote","completion":"<answer>B</answer>"})" "\n"
          R"({"vote_type":"rightvote","completion":"<answer>A</answer>"})" "\n"
          R"({"vote_type":"rightvote","completion":"???"})" "\n");
  r = s.run("eval --benchmark genai " + s.path("genai.jsonl") + " -o " + s.path("g.json"));
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const json g = json::parse(s.read("g.json"));
  BOOST_TEST(g["excluded"] == 2);
  BOOST_TEST(near(g["micro"].get<double>(), 1.0 / 3.0));
  s.write("genai_bad.jsonl", R"({"vote_type":"leftvote","completion":"A"})" "\n" R"({"vote_type":"upvote","completion":"A"})" "\n");
  r = s.run("eval --benchmark genai " + s.path("genai_bad.jsonl") + " -o " + s.path("gb.json"));
  BOOST_TEST(r.rc != 0);
  BOOST_TEST(r.err.find("genai_bad.jsonl:2: field 'vote_type'") != std::string::npos, r.err);
  BOOST_TEST(!fs::exists(s.path("gb.json")));
}

BOOST_AUTO_TEST_CASE(eval_mmrb_random_guess) {
  sandbox s;
  // reasoning/math: [[A]] vs Output1 -> correct; safety/bias: [[A]] vs Output2 -> wrong;
  // the unparsable judgment is guessed (seeded), so it lands in correct or wrong but never vanishes
  s.write("mmrb.jsonl",
          R"({"ID":"math_1","Category":"reasoning","Better":"Output1","completion":"... [[A]]"})" "\n"
          R"({"ID":"pairs_2","Category":"safety","Better":"Output2","completion":"... [[A]]"})" "\n"
          R"({"ID":"v_3","Category":"vqa","Better":"Output2","completion":"no verdict"})" "\n");
  auto r = s.run("eval --benchmark mmrb --labels bracket " + s.path("mmrb.jsonl") + " -o " + s.path("m.json"));
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const json m = json::parse(s.read("m.json"));
  BOOST_TEST(m["unparsable_policy"] == "random");
  BOOST_TEST(m["categories"]["reasoning/math"]["correct"] == 1);
  BOOST_TEST(m["categories"]["safety/bias"]["wrong"] == 1);
  BOOST_TEST(m["categories"]["vqa"]["unparsable"] == 1);
  BOOST_TEST(m["correct"].get<int>() + m["wrong"].get<int>() == 3);
  const auto again = s.run("eval --benchmark mmrb --labels bracket " + s.path("mmrb.jsonl") + " -o " + s.path("m2.json"));
  BOOST_REQUIRE(again.rc == 0);
  BOOST_TEST(json::parse(s.read("m2.json")) == m); // same seed, same guesses
}

BOOST_AUTO_TEST_CASE(score_reads_lengths_and_truncation) {
  sandbox s;
  const std::string good = "<think>t</think><answer>A</answer>";
  // dapo: 1 x accuracy + 0.2 x format + 1 x overlong(verl, L_max 1024, buffer 256): E = 768
  const json row0{{"solution", "A"},
                  {"completions", json::array({good, good, good, good})},
                  {"completion_lengths", json::array({768, 896, 1280, nullptr})},
                  {"truncated", json::array({false, false, true, nullptr})}};
  const json row1{{"solution", "A"}, {"completions", json::array({good})}};
  s.write("in.jsonl", row0.dump() + "\n" + row1.dump() + "\n");
  auto r = s.run("score --preset dapo " + s.path("in.jsonl") + " -o " + s.path("out.jsonl"));
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  const auto rows = s.rows("out.jsonl");
  BOOST_REQUIRE(rows.size() == 2u);
  const json& ov = rows[0]["reward_terms"]["overlong"];
  BOOST_TEST(near(ov[0].get<double>(), 0.0));            // L = E
  BOOST_TEST(near(ov[1].get<double>(), -0.5));           // (896 - 768)/256
  BOOST_TEST(near(ov[2].get<double>(), -2.0));           // (1280 - 768)/256, uncapped
  BOOST_TEST(ov[3].is_null());                           // unknown length: NaN, written as null
  const std::vector<double> totals{1.2, 0.7, -0.8, 1.2}; // 1 + 0.2 + overlong (skipped when unknown)
  for (std::size_t i = 0; i < 4; ++i) BOOST_TEST(near(rows[0]["rewards"][i].get<double>(), totals[i]), i);
  BOOST_TEST(rows[1]["reward_terms"]["overlong"][0].is_null()); // no lengths in the row
  BOOST_TEST(near(rows[1]["rewards"][0].get<double>(), 1.2));
  // the input columns are kept
  BOOST_TEST(rows[0]["completion_lengths"] == json::parse("[768,896,1280,null]"));
  BOOST_TEST(rows[0]["truncated"] == json::parse("[false,false,true,null]"));

  // cosine: ms-swift cosine (T = 1024) + 0.2 x format + repetition; right at L = 768:
  // 1 - (1 - 0.5)(1 - cos(0.75 pi))/2
  r = s.run("score --preset cosine " + s.path("in.jsonl") + " -o " + s.path("cos.jsonl"));
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  BOOST_TEST(near(s.rows("cos.jsonl")[0]["reward_terms"]["cosine"][0].get<double>(),
                  1.0 - 0.25 * (1.0 - std::cos(0.75 * 3.141592653589793))));

  struct bad {
    std::string extra, field, rule;
  };
  const std::vector<bad> bads{
      {R"("completion_lengths":[1])", "completion_lengths",
       "must be a list with one non-negative integer (or null) per completion (2)"},
      {R"("completion_lengths":3)", "completion_lengths", "must be a list"},
      {R"("completion_lengths":[1,-2])", "completion_lengths[1]", "must be a non-negative integer token count"},
      {R"("completion_lengths":[1,2.5])", "completion_lengths[1]", "must be a non-negative integer token count"},
      {R"("completion_lengths":[1,"2"])", "completion_lengths[1]", "must be a non-negative integer token count"},
      {R"("truncated":[true])", "truncated", "must be a list with one boolean (or null) per completion (2)"},
      {R"("truncated":[true,1])", "truncated[1]", "must be true or false"},
      {R"("truncated":"yes")", "truncated", "must be a list"},
  };
  for (const bad& b : bads) {
    s.write("bad.jsonl", std::string("\n") + R"({"solution":"A","completions":["a","b"],)" + b.extra + "}\n");
    r = s.run("score --preset dapo " + s.path("bad.jsonl") + " -o " + s.path("bad_out.jsonl"));
    BOOST_TEST(r.rc != 0, b.extra);
    BOOST_TEST(r.err.find("bad.jsonl:2: field '" + b.field + "': ") != std::string::npos, r.err);
    BOOST_TEST(r.err.find(b.rule) != std::string::npos, r.err);
    BOOST_TEST(!fs::exists(s.path("bad_out.jsonl")));
  }
}

BOOST_AUTO_TEST_CASE(score_streams_large_files) {
  // 64 MB of rows with 16 KB completions: peak memory must stay far below the file size.
  sandbox s;
  {
    std::ofstream f(s.path("big.jsonl"));
    const std::string think(16000, 'x');
    const std::string row = R"({"solution":"A","task_type":"text","completions":["<type>text</type><think>)" + think +
                            R"(</think><answer>A</answer>"]})";
    for (std::size_t bytes = 0; bytes < (64u << 20); bytes += row.size() + 1) f << row << '\n';
  }
  auto r = s.run("score " + s.path("big.jsonl") + " -o " + s.path("big_out.jsonl"));
  BOOST_REQUIRE_MESSAGE(r.rc == 0, r.err);
  rusage ru{};
  ::getrusage(RUSAGE_CHILDREN, &ru);
  BOOST_TEST_MESSAGE("peak child RSS " << ru.ru_maxrss << " KB");
  BOOST_TEST(ru.ru_maxrss < 48 * 1024); // KB: well below the 64 MB input
  std::ifstream out(s.path("big_out.jsonl"));
  std::string first;
  std::getline(out, first);
  BOOST_TEST(json::parse(first)["rewards"][0] == 2.2); // paper: format 1 + accuracy 1 + task 0.2
}
