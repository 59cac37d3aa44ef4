// Data-parallel trainer tests: two processes on loopback, each with half of a fixed batch, make
// the update one process makes on the whole batch (SFT, GRPO with a reference model, GRPO with
// token_mean); the single-process communicator is the identity; bad launch variables are named;
// the trainer state round trip resumes training exactly.
//
// The test re-executes itself (fork + execve of /proc/self/exe, --run_test=distributed_worker)
// with RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT set; workers write their results to a scratch
// folder; the parent kills them if they outlive a deadline.
#define BOOST_TEST_MODULE trainer_distributed
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <msrl/trainer/checkpoint_torch.hpp>
#include <msrl/trainer/distributed_torch.hpp>
#include <msrl/trainer/safetensors_torch.hpp>
#include <msrl/trainer/steps_torch.hpp>

#include "scratch.hpp"

namespace fs = std::filesystem;
using msrl_test::scratch;
namespace mt = msrl::trainer;

extern char** environ;

namespace {

const fs::path fixtures = MSRL_TRAINER_FIXTURES;

/// Sets (or unsets, for nullptr) environment variables for a scope and restores them after.
struct env_guard {
  std::vector<std::pair<std::string, std::optional<std::string>>> saved;
  env_guard(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const auto& [k, v] : vars) {
      const char* old = std::getenv(k);
      saved.emplace_back(k, old ? std::optional<std::string>(old) : std::nullopt);
      if (v) ::setenv(k, v, 1);
      else ::unsetenv(k);
    }
  }
  ~env_guard() {
    for (const auto& [k, v] : saved) {
      if (v) ::setenv(k.c_str(), v->c_str(), 1);
      else ::unsetenv(k.c_str());
    }
  }
};

int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t n = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &n);
  ::close(s);
  return ntohs(a.sin_port);
}

// ---- the fixed batch: rank 0 holds the image half, rank 1 the text-only half

struct batch_half {
  std::vector<mt::sft_batch> sft;
  std::vector<mt::grpo_group> grpo;
};

at::Tensor text_ids(at::Generator& g, std::int64_t rows, std::int64_t len) { return at::randint(1, 200, {rows, len}, g, at::kLong); }

/// Both halves, built identically in every process from the fixture model and a seeded generator.
std::vector<batch_half> fixed_batch(mt::internvl& model) {
  mt::safetensors_file fx(fixtures / "parity.safetensors");
  const at::Tensor prompt = fx.load("input_ids").squeeze(0), pixels = fx.load("pixel_values");
  auto g = at::detail::createCPUGenerator(1234);
  std::vector<batch_half> h(2);
  // SFT: an image prompt + answer (rank 0), two text rows of a different length (rank 1).
  auto ids0 = at::cat({prompt, text_ids(g, 1, 7).squeeze(0)}).unsqueeze(0);
  auto t0 = at::zeros_like(ids0);
  t0.narrow(1, ids0.size(1) - 7, 7).fill_(1);
  auto ids1 = text_ids(g, 2, 12);
  auto t1 = at::zeros_like(ids1);
  t1.narrow(1, 4, 8).fill_(1);
  t1[1][11] = 0;
  h[0].sft = {{ids0, t0, pixels}};
  h[1].sft = {{ids1, t1, {}}, {text_ids(g, 1, 5), at::tensor({0, 0, 1, 1, 1}, at::kLong).unsqueeze(0), {}}};
  // GRPO: one group with the image (rank 0); two text groups (rank 1). Old log-probs = the
  // current ones plus noise, so ratios leave the clip range.
  auto group = [&](const at::Tensor& p, const at::Tensor& pix, std::int64_t G, std::int64_t L, std::vector<double> r) {
    auto comp = text_ids(g, G, L);
    auto mask = at::ones({G, L}, at::kByte);
    mask.narrow(1, L - 2, 2).select(0, 0).zero_(); // first row 2 tokens shorter
    at::NoGradGuard ng;
    auto old = mt::completion_logprobs(model, p, pix, comp) + 0.3 * at::randn({G, L}, g);
    return mt::grpo_group{p, pix, comp, mask, old * mask.to(at::kFloat), std::move(r)};
  };
  h[0].grpo = {group(prompt, pixels, 3, 6, {1.0, 0.0, 0.5})};
  const auto tp = text_ids(g, 1, 6).squeeze(0);
  h[1].grpo = {group(tp, {}, 2, 5, {0.2, 0.9}), group(tp.narrow(0, 0, 3), {}, 4, 4, {0.0, 1.0, 1.0, 0.3})};
  return h;
}

batch_half whole(const std::vector<batch_half>& h) {
  batch_half w = h[0];
  w.sft.insert(w.sft.end(), h[1].sft.begin(), h[1].sft.end());
  w.grpo.insert(w.grpo.end(), h[1].grpo.begin(), h[1].grpo.end());
  return w;
}

mt::internvl perturbed_reference() {
  auto ref = mt::load_internvl(fixtures / "tiny_internvl");
  at::NoGradGuard ng;
  auto g = at::detail::createCPUGenerator(99);
  for (auto& p : ref->parameters()) p.add_(at::randn(p.sizes(), g) * 0.01);
  return ref;
}

// eps 1e-6 rather than 1e-8: the attention key bias has an exactly zero true gradient (softmax
// ignores a shift shared by all keys), so its computed gradient is rounding noise (~1e-10) that
// differs with the summation order; AdamW with eps 1e-8 scales that noise to steps of ~lr, and
// those few elements then differ by ~1e-5 relative between one and two processes (4e-5 measured;
// every other tensor stays below 5e-7). With eps 1e-6 the noise stays noise.
const mt::train_options base_opts{.lr = 1e-3, .weight_decay = 0.01, .eps = 1e-6, .max_grad_norm = 0.5};

/// SFT, GRPO (msrl_paper: reference model, seq_mean_token_mean), GRPO (trl_default: token_mean).
/// Returns the trained parameters followed by [loss, grad_norm, tokens] of each step.
std::vector<at::Tensor> train_three_steps(const batch_half& b, mt::internvl model, std::shared_ptr<mt::communicator> comm) {
  auto o = base_opts;
  o.comm = std::move(comm);
  mt::trainer t(model, o, perturbed_reference());
  std::vector<at::Tensor> out;
  std::vector<double> stats;
  auto keep = [&](const mt::step_stats& s) { stats.insert(stats.end(), {s.loss, s.grad_norm, s.tokens}); };
  keep(t.sft_step(b.sft));
  keep(t.grpo_step(b.grpo, msrl::grpo::presets::msrl_paper));
  keep(t.grpo_step(b.grpo, msrl::grpo::presets::trl_default));
  for (const auto& p : model->parameters()) out.push_back(p.detach().clone());
  out.push_back(at::tensor(stats, at::kDouble));
  return out;
}

/// max over tensors of max|a - b| / max|a|.
double max_rel_diff(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, std::size_t n, const char* label = "") {
  double worst = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const auto d = (a[i].to(at::kDouble) - b[i].to(at::kDouble)).abs().max().item<double>();
    const auto s = a[i].to(at::kDouble).abs().max().item<double>();
    worst = std::max(worst, d / std::max(s, 1e-12));
    if (std::getenv("MSRL_TEST_DIST_DEBUG")) BOOST_TEST_MESSAGE(label << " tensor " << i << " " << a[i].sizes() << " diff " << d << " max " << s);
  }
  return worst;
}

/// Starts this executable as one worker with extra environment variables.
pid_t spawn_worker(const std::vector<std::string>& vars) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    bool overridden = false;
    for (const auto& v : vars) overridden = overridden || kv.rfind(v.substr(0, v.find('=') + 1), 0) == 0;
    if (!overridden) env.push_back(kv);
  }
  env.insert(env.end(), vars.begin(), vars.end());
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = fs::read_symlink("/proc/self/exe").string(), a1 = "--run_test=distributed_worker", a2 = "--log_level=error";
  std::vector<char*> argv{exe.data(), a1.data(), a2.data(), nullptr};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execve(exe.c_str(), argv.data(), envp.data());
    ::_exit(127);
  }
  return pid;
}

/// Waits for every worker; kills the rest when one fails or the deadline passes. True if all exit 0.
bool wait_workers(std::vector<pid_t> pids, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  bool ok = true;
  while (!pids.empty()) {
    for (auto it = pids.begin(); it != pids.end();) {
      int status = 0;
      const pid_t r = ::waitpid(*it, &status, WNOHANG);
      if (r == *it) {
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
          BOOST_TEST_MESSAGE("worker " << *it << " failed (status " << status << ")");
          ok = false;
        }
        it = pids.erase(it);
      } else {
        ++it;
      }
    }
    if (pids.empty()) break;
    if (!ok || std::chrono::steady_clock::now() > deadline) {
      if (ok) BOOST_TEST_MESSAGE("workers outlived the deadline; killing them");
      for (const pid_t p : pids) {
        ::kill(p, SIGKILL);
        ::waitpid(p, nullptr, 0);
      }
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return ok;
}

} // namespace

// The worker entry: does nothing unless started by a test below (MSRL_TEST_DIST_OUT set).
BOOST_AUTO_TEST_CASE(distributed_worker) {
  const char* out = std::getenv("MSRL_TEST_DIST_OUT");
  if (!out) return;
  at::set_num_threads(1);
  const char* m = std::getenv("MSRL_TEST_DIST_MODE");
  const std::string mode = m ? m : "train";
  auto comm = mt::communicator_from_env({.timeout = std::chrono::seconds(60)});
  const int r = comm->rank();
  BOOST_TEST_REQUIRE(comm->world_size() == 2);
  if (mode == "collectives") {
    at::Tensor t = at::tensor({1.0f + static_cast<float>(r), 10.0f});
    comm->all_reduce_sum(t);
    BOOST_TEST(at::equal(t, at::tensor({3.0f, 20.0f})));
    BOOST_TEST(comm->all_reduce_sum(0.25 * (r + 1)) == 0.75);
    at::Tensor b = at::full({3}, static_cast<double>(r + 5), at::kDouble);
    comm->broadcast(b, 1);
    BOOST_TEST(at::equal(b, at::full({3}, 6.0, at::kDouble)));
    comm->barrier();
    BOOST_CHECK_THROW(comm->broadcast(b, 2), msrl::invalid_argument);
    at::Tensor nc = at::zeros({4, 4}).t();
    BOOST_CHECK_THROW(comm->all_reduce_sum(nc), msrl::invalid_argument);
    // A batch one rank rejects stops both ranks with an error instead of a hang.
    auto model = mt::load_internvl(fixtures / "tiny_internvl");
    mt::trainer tr(model, {.lr = 1e-3, .comm = comm});
    const auto ids = at::ones({1, 4}, at::kLong), target = at::tensor({0, 1, 1, 0}, at::kLong).unsqueeze(0);
    try {
      tr.sft_step(r == 0 ? std::vector<mt::sft_batch>{{ids, target, {}}} : std::vector<mt::sft_batch>{});
      BOOST_ERROR("sft_step accepted a step rank 1 rejected");
    } catch (const msrl::invalid_argument& e) {
      const std::string msg = e.what();
      BOOST_TEST_MESSAGE("rank " << r << ": " << msg);
      BOOST_TEST(msg.find(r == 0 ? "another rank rejected" : "'micro'") != std::string::npos);
    }
    BOOST_TEST(tr.steps() == 0);
    tr.sft_step({{ids, target, {}}}); // and the group still works
    BOOST_TEST(tr.steps() == 1);
    std::ofstream(fs::path(out) / ("ok" + std::to_string(r))) << "ok";
    return;
  }
  auto model = mt::load_internvl(fixtures / "tiny_internvl");
  const auto halves = fixed_batch(model);
  if (r == 1) { // the trainer must overwrite this with rank 0's weights
    at::NoGradGuard ng;
    for (auto& p : model->parameters()) p.mul_(1.5);
  }
  torch::save(train_three_steps(halves[static_cast<std::size_t>(r)], model, comm), (fs::path(out) / ("rank" + std::to_string(r) + ".pt")).string());
}

BOOST_AUTO_TEST_CASE(two_processes_equal_one_process_on_the_whole_batch) {
  scratch s("train");
  const auto port = std::to_string(free_port());
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r)
    pids.push_back(spawn_worker({"MSRL_TEST_DIST_OUT=" + s.dir.string(), "MSRL_TEST_DIST_MODE=train", "RANK=" + std::to_string(r), "WORLD_SIZE=2",
                                 "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + port}));
  at::set_num_threads(1);
  std::vector<at::Tensor> one;
  try {
    auto model = mt::load_internvl(fixtures / "tiny_internvl");
    const auto halves = fixed_batch(model);
    one = train_three_steps(whole(halves), model, nullptr);
  } catch (...) {
    wait_workers(pids, std::chrono::seconds(0));
    throw;
  }
  BOOST_REQUIRE(wait_workers(pids, std::chrono::seconds(120)));
  BOOST_TEST_MESSAGE("two workers + one process: " << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s");
  std::vector<at::Tensor> w0, w1;
  torch::load(w0, (s.dir / "rank0.pt").string());
  torch::load(w1, (s.dir / "rank1.pt").string());
  BOOST_REQUIRE(w0.size() == one.size());
  BOOST_REQUIRE(w1.size() == one.size());
  const auto n = one.size() - 1;
  // Both ranks hold identical weights, equal to one process over the whole batch.
  BOOST_TEST(max_rel_diff(w0, w1, n) == 0.0);
  const double d = max_rel_diff(one, w0, n, "one-vs-rank0");
  auto fresh = mt::load_internvl(fixtures / "tiny_internvl");
  std::vector<at::Tensor> init;
  for (const auto& p : fresh->parameters()) init.push_back(p.detach());
  const double moved = max_rel_diff(init, one, n);
  BOOST_TEST_MESSAGE("two processes vs one: max rel diff " << d << " (training moved the weights by " << moved << ")");
  BOOST_TEST(moved > 1e-3);
  BOOST_TEST(d <= 1e-6);
  // Loss, grad norm (clipping active at 0.5) and token counts of each step are the global ones.
  const auto a = one.back(), b = w0.back();
  BOOST_TEST_MESSAGE("one process stats " << a << "\nrank 0 stats " << b);
  BOOST_TEST(at::equal(w0.back(), w1.back()));
  for (std::int64_t i = 0; i < a.numel(); ++i) BOOST_TEST(std::abs(a[i].item<double>() - b[i].item<double>()) <= 1e-5 * std::max(1.0, std::abs(a[i].item<double>())));
  BOOST_TEST(a[1].item<double>() > 0.5); // the first step was clipped
}

BOOST_AUTO_TEST_CASE(file_store_rendezvous_and_collectives) {
  scratch s("files");
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r)
    pids.push_back(spawn_worker({"MSRL_TEST_DIST_OUT=" + s.dir.string(), "MSRL_TEST_DIST_MODE=collectives", "RANK=" + std::to_string(r), "WORLD_SIZE=2",
                                 "MSRL_DIST_STORE=" + (s.dir / "store").string(), "MASTER_ADDR=", "MASTER_PORT="}));
  BOOST_REQUIRE(wait_workers(pids, std::chrono::seconds(60)));
  BOOST_TEST(fs::exists(s.dir / "ok0"));
  BOOST_TEST(fs::exists(s.dir / "ok1"));
}

BOOST_AUTO_TEST_CASE(single_process_communicator_is_the_identity) {
  env_guard env{{"WORLD_SIZE", nullptr}, {"RANK", nullptr}};
  auto c = mt::communicator_from_env();
  BOOST_TEST(c->rank() == 0);
  BOOST_TEST(c->world_size() == 1);
  BOOST_TEST(dynamic_cast<mt::single_process*>(c.get()) != nullptr);
  at::Tensor t = at::tensor({1.5f, -2.0f});
  c->all_reduce_sum(t);
  BOOST_TEST(at::equal(t, at::tensor({1.5f, -2.0f})));
  BOOST_TEST(c->all_reduce_sum(3.25) == 3.25);
  c->broadcast(t, 0);
  c->barrier();
  BOOST_CHECK_THROW(c->broadcast(t, 1), msrl::invalid_argument);
  {
    env_guard one{{"WORLD_SIZE", "1"}, {"RANK", "0"}};
    BOOST_TEST(dynamic_cast<mt::single_process*>(mt::communicator_from_env().get()) != nullptr);
  }
  // A trainer with the single-process communicator steps bit-identically to one without.
  auto m1 = mt::load_internvl(fixtures / "tiny_internvl");
  auto m2 = mt::load_internvl(fixtures / "tiny_internvl");
  const auto b = fixed_batch(m1);
  auto o2 = base_opts;
  o2.comm = c;
  mt::trainer t1(m1, base_opts), t2(m2, o2);
  const auto s1 = t1.sft_step(b[1].sft), s2 = t2.sft_step(b[1].sft);
  BOOST_TEST(s1.loss == s2.loss);
  BOOST_TEST(s1.grad_norm == s2.grad_norm);
  auto p1 = m1->parameters(), p2 = m2->parameters();
  for (std::size_t i = 0; i < p1.size(); ++i) BOOST_TEST(at::equal(p1[i], p2[i]));
}

BOOST_AUTO_TEST_CASE(bad_launch_variables_are_named) {
  auto fails = [](std::initializer_list<std::pair<const char*, const char*>> vars, const std::string& name) {
    env_guard env(vars);
    try {
      mt::communicator_from_env({.timeout = std::chrono::seconds(1)});
    } catch (const msrl::invalid_argument& e) {
      const std::string m = e.what();
      BOOST_TEST_MESSAGE(m);
      return m.find("'" + name + "'") != std::string::npos;
    }
    return false;
  };
  const char* none = nullptr;
  BOOST_TEST(fails({{"WORLD_SIZE", "abc"}, {"RANK", "0"}}, "WORLD_SIZE"));
  BOOST_TEST(fails({{"WORLD_SIZE", "0"}, {"RANK", "0"}}, "WORLD_SIZE"));
  BOOST_TEST(fails({{"WORLD_SIZE", "2x"}, {"RANK", "0"}}, "WORLD_SIZE"));
  BOOST_TEST(fails({{"WORLD_SIZE", "2"}, {"RANK", none}}, "RANK"));
  BOOST_TEST(fails({{"WORLD_SIZE", "2"}, {"RANK", "2"}}, "RANK"));
  BOOST_TEST(fails({{"WORLD_SIZE", "2"}, {"RANK", "-1"}}, "RANK"));
  BOOST_TEST(fails({{"WORLD_SIZE", none}, {"RANK", "1"}}, "RANK"));
  BOOST_TEST(fails({{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MSRL_DIST_STORE", none}, {"MASTER_ADDR", none}, {"MASTER_PORT", "1234"}}, "MASTER_ADDR"));
  BOOST_TEST(fails({{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MSRL_DIST_STORE", none}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "70000"}}, "MASTER_PORT"));
  BOOST_TEST(fails({{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MSRL_DIST_STORE", none}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", none}}, "MASTER_PORT"));
  BOOST_TEST(fails({{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MSRL_DIST_BACKEND", "mpi"}}, "MSRL_DIST_BACKEND"));
  BOOST_TEST(fails({{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"LOCAL_RANK", "x"}}, "LOCAL_RANK"));
  BOOST_TEST(fails({{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MSRL_DIST_TIMEOUT", "0"}}, "MSRL_DIST_TIMEOUT"));
  BOOST_TEST(fails({{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MSRL_DIST_TIMEOUT", "1.5"}}, "MSRL_DIST_TIMEOUT"));
  if (!mt::has_nccl) {
    env_guard env{{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MSRL_DIST_BACKEND", "nccl"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "1234"}};
    BOOST_CHECK_THROW(mt::communicator_from_env(), msrl::invalid_argument);
  }
  BOOST_CHECK_THROW(mt::process_group({.rank = 0, .world_size = 0}), msrl::invalid_argument);
  BOOST_CHECK_THROW(mt::process_group({.rank = 3, .world_size = 2}), msrl::invalid_argument);
}

BOOST_AUTO_TEST_CASE(rendezvous_without_peers_times_out) {
  // Rank 1 of 2 with nobody serving the store: an msrl::error after the timeout, not a hang.
  const auto t0 = std::chrono::steady_clock::now();
  try {
    mt::process_group({.rank = 1, .world_size = 2, .master_port = free_port(), .timeout = std::chrono::seconds(1)});
    BOOST_ERROR("a rendezvous without peers succeeded");
  } catch (const msrl::error& e) {
    BOOST_TEST_MESSAGE(e.what());
    BOOST_TEST(std::string(e.what()).find("MASTER_ADDR:MASTER_PORT") != std::string::npos);
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  BOOST_TEST_MESSAGE("rendezvous gave up after " << took << " s");
  BOOST_TEST(took < 30.0);
}

BOOST_AUTO_TEST_CASE(the_timeout_comes_from_the_environment) {
  // MSRL_DIST_TIMEOUT=1 overrides the caller's 120 s: rank 1 without peers gives up in seconds, and
  // the store's error reports the 1 s it was given (c10d's wording: "timed out after 1s").
  const std::string port = std::to_string(free_port());
  env_guard env{{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MSRL_DIST_STORE", nullptr}, {"MASTER_ADDR", "127.0.0.1"},
                {"MASTER_PORT", port.c_str()}, {"MSRL_DIST_TIMEOUT", "1"}};
  const auto t0 = std::chrono::steady_clock::now();
  try {
    mt::communicator_from_env({.timeout = std::chrono::seconds(120)});
    BOOST_ERROR("a rendezvous without peers succeeded");
  } catch (const msrl::error& e) {
    BOOST_TEST_MESSAGE(e.what());
    BOOST_TEST(std::string(e.what()).find("MASTER_ADDR:MASTER_PORT") != std::string::npos, e.what());
    BOOST_TEST(std::string(e.what()).find("after 1s") != std::string::npos, e.what());
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  BOOST_TEST_MESSAGE("rendezvous gave up after " << took << " s");
  BOOST_TEST(took < 30.0);
}

BOOST_AUTO_TEST_CASE(a_rank_may_start_before_rank_0) {
  // Rank 1 connects first and waits for rank 0's store (two ranks as two threads of this process).
  const int port = free_port();
  std::unique_ptr<mt::process_group> g0;
  std::exception_ptr err0;
  double got0 = 0, got1 = 0;
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    try {
      g0 = std::make_unique<mt::process_group>(mt::process_group_options{.rank = 0, .world_size = 2, .master_port = port, .timeout = std::chrono::seconds(20)});
      got0 = g0->all_reduce_sum(1.0);
    } catch (...) {
      err0 = std::current_exception();
    }
  });
  try {
    mt::process_group g1({.rank = 1, .world_size = 2, .master_port = port, .timeout = std::chrono::seconds(20)});
    got1 = g1.all_reduce_sum(4.0);
  } catch (...) {
    late.join();
    throw;
  }
  late.join();
  if (err0) std::rethrow_exception(err0);
  BOOST_TEST(got0 == 5.0);
  BOOST_TEST(got1 == 5.0);
}

BOOST_AUTO_TEST_CASE(state_round_trip_resumes_training_exactly) {
  at::set_num_threads(1);
  scratch s("state");
  auto straight = mt::load_internvl(fixtures / "tiny_internvl");
  const auto b = whole(fixed_batch(straight));
  mt::trainer t(straight, base_opts);
  t.sft_step(b.sft);
  t.grpo_step(b.grpo, msrl::grpo::presets::trl_default);
  BOOST_TEST(t.steps() == 2);

  auto first = mt::load_internvl(fixtures / "tiny_internvl");
  mt::trainer t1(first, base_opts);
  t1.sft_step(b.sft);
  const auto path = s.dir / "trainer_state.pt";
  t1.save_state(path);
  BOOST_TEST(fs::exists(path));
  for (const auto& e : fs::directory_iterator(s.dir)) BOOST_TEST(e.path().filename() == "trainer_state.pt"); // no temp file left
  auto resumed = mt::load_internvl(fixtures / "tiny_internvl");
  {
    at::NoGradGuard ng;
    auto src = first->parameters(), dst = resumed->parameters();
    for (std::size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  mt::trainer t2(resumed, base_opts);
  t2.set_lr(0.5);
  t2.load_state(path); // restores the saved learning rate too
  BOOST_TEST(t2.steps() == 1);
  BOOST_TEST(t2.lr() == base_opts.lr);
  BOOST_CHECK_THROW(t2.set_lr(-1.0), msrl::invalid_argument);
  t2.grpo_step(b.grpo, msrl::grpo::presets::trl_default);
  BOOST_TEST(t2.steps() == 2);
  auto pa = straight->parameters(), pb = resumed->parameters();
  bool same = true;
  for (std::size_t i = 0; i < pa.size(); ++i) same = same && at::equal(pa[i], pb[i]);
  BOOST_TEST(same);
  // Without the state the second step differs (AdamW moments and bias correction restart).
  auto cold = mt::load_internvl(fixtures / "tiny_internvl");
  {
    at::NoGradGuard ng;
    auto src = first->parameters(), dst = cold->parameters();
    for (std::size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  mt::trainer t3(cold, base_opts);
  t3.grpo_step(b.grpo, msrl::grpo::presets::trl_default);
  BOOST_TEST(!at::equal(cold->language_model->lm_head->weight, straight->language_model->lm_head->weight));

  // Errors: missing, not a state file, truncated, another set of trainable parameters.
  BOOST_CHECK_THROW(t2.load_state(s.dir / "missing.pt"), msrl::invalid_argument);
  std::ofstream(s.dir / "junk.pt") << "not a zip archive";
  BOOST_CHECK_THROW(t2.load_state(s.dir / "junk.pt"), msrl::parse_error);
  {
    std::ifstream in(path, std::ios::binary);
    std::string bytes{std::istreambuf_iterator<char>(in), {}};
    std::ofstream(s.dir / "cut.pt", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  BOOST_CHECK_THROW(t2.load_state(s.dir / "cut.pt"), msrl::parse_error);
  torch::serialize::OutputArchive other;
  other.write("x", at::ones({2}));
  other.save_to((s.dir / "other.pt").string());
  BOOST_CHECK_THROW(t2.load_state(s.dir / "other.pt"), msrl::parse_error);
  auto frozen_model = mt::load_internvl(fixtures / "tiny_internvl");
  auto fo = base_opts;
  fo.freeze_vision = true;
  mt::trainer frozen(frozen_model, fo);
  BOOST_CHECK_THROW(frozen.load_state(path), msrl::shape_error);
  const fs::path unwritable = s.dir / "no_such_dir" / "state.pt";
  try {
    t2.save_state(unwritable);
    BOOST_FAIL("expected msrl::invalid_argument");
  } catch (const msrl::invalid_argument& e) {
    const std::string m = e.what();
    BOOST_TEST(m.rfind("msrl::trainer::trainer::save_state: argument 'path'", 0) == 0u, m);
    BOOST_TEST(m.find(unwritable.string()) != std::string::npos, m);
  }
  // Saving over an existing state replaces it whole and leaves no temporary beside it.
  t2.save_state(path);
  t1.load_state(path);
  BOOST_TEST(t1.steps() == t2.steps());
  for (const auto& e : fs::directory_iterator(s.dir)) BOOST_TEST(e.path().filename().string().find(".tmp") == std::string::npos, e.path());
}
