#pragma once
/// \file Data-parallel training across processes over PyTorch's c10d process groups (component
/// msrl::torch): Gloo on CPU; NCCL on GPUs when libtorch was built with it (define MSRL_TORCH_NCCL).
///
///   // every process, launched like torchrun: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
///   auto comm = msrl::trainer::communicator_from_env();       // WORLD_SIZE unset: one process
///   msrl::trainer::trainer t(model, {.lr = 1e-6, .comm = comm}); // broadcasts rank 0's weights
///   t.sft_step(my_share_of_the_batch);                           // counts and gradients summed
///
/// The communicator interface and the single-process one live in communicator_torch.hpp, which needs no
/// Gloo; this header adds the process-group implementation and needs the Gloo headers that
/// libtorch was built against (Debian: libgloo-dev).
#if !__has_include(<gloo/config.h>) || !__has_include(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>)
#error "msrl/trainer/distributed_torch.hpp needs the Gloo headers (<gloo/config.h>; Debian: apt-get install libgloo-dev) and libtorch's c10d headers"
#endif

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1 // ProcessGroupGloo.hpp declares the class only under this macro
#endif
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if defined(MSRL_TORCH_NCCL)
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "../core/error.hpp"
#include "steps_torch.hpp"

namespace msrl::trainer {

/// Whether this build can create NCCL process groups (MSRL_TORCH_NCCL, a CUDA libtorch with NCCL).
#if defined(MSRL_TORCH_NCCL)
inline constexpr bool has_nccl = true;
#else
inline constexpr bool has_nccl = false;
#endif

enum class dist_backend { gloo, nccl };

struct process_group_options {
  int rank = -1;                      ///< 0 .. world_size-1
  int world_size = -1;                ///< >= 1
  std::string master_addr = "127.0.0.1"; ///< host of rank 0's TCPStore
  int master_port = 29500;            ///< port of rank 0's TCPStore (rank 0 listens on it)
  std::string store_path;             ///< non-empty: rendezvous through a FileStore at this path instead (shared file system)
  dist_backend backend = dist_backend::gloo;
  int device_index = 0;               ///< NCCL: the rank's CUDA device (LOCAL_RANK)
  std::string gloo_interface;         ///< network interface Gloo binds, e.g. "lo", "eth0" (GLOO_SOCKET_IFNAME)
  std::string gloo_hostname;          ///< else the address Gloo binds; empty: 127.0.0.1 when master_addr is
                                      ///< loopback, otherwise this machine's hostname
  std::chrono::milliseconds timeout{std::chrono::minutes(5)}; ///< rendezvous and every collective
};

namespace detail {

inline bool is_loopback(const std::string& host) { return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0; }

/// Runs a c10d call, turning its exceptions into msrl::error naming the operation.
template <class F>
auto c10d_call(const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const msrl::error&) {
    throw;
  } catch (const std::exception& e) {
    const std::string m = e.what();
    throw msrl::error(std::string("msrl::trainer::process_group: ") + what + " failed: " + m.substr(0, m.find('\n')));
  }
}

} // namespace detail

/// A communicator over a c10d process group (Gloo or NCCL). Construction is the rendezvous:
/// it returns once every rank has joined, or throws msrl::error after options.timeout.
class process_group final : public communicator {
public:
  explicit process_group(const process_group_options& o) : opt_(o) {
    constexpr const char* where = "msrl::trainer::process_group";
    require(o.world_size >= 1, where, "world_size", "must be a positive integer, got " + std::to_string(o.world_size));
    require(o.rank >= 0 && o.rank < o.world_size, where, "rank",
            "must lie in [0, world_size) = [0, " + std::to_string(o.world_size) + "), got " + std::to_string(o.rank));
    require(o.timeout.count() > 0, where, "timeout", "must be positive");
    if (o.store_path.empty()) {
      require(!o.master_addr.empty(), where, "master_addr", "must name rank 0's host");
      require(o.master_port >= 1 && o.master_port <= 65535, where, "master_port", "must lie in [1, 65535], got " + std::to_string(o.master_port));
    }
    require(o.backend == dist_backend::gloo || has_nccl, where, "backend",
            "is nccl, but this build has no NCCL (define MSRL_TORCH_NCCL with a CUDA libtorch built with NCCL)");
    if (o.backend == dist_backend::nccl) device_ = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(o.device_index));

    store_ = detail::c10d_call(o.store_path.empty() ? "connecting to the TCP store at MASTER_ADDR:MASTER_PORT" : "opening the file store",
                               [&]() -> c10::intrusive_ptr<c10d::Store> {
      if (!o.store_path.empty()) {
        auto s = c10::make_intrusive<c10d::FileStore>(o.store_path, o.world_size);
        s->setTimeout(o.timeout);
        return s;
      }
      c10d::TCPStoreOptions so;
      so.port = static_cast<std::uint16_t>(o.master_port);
      so.isServer = o.rank == 0;
      so.numWorkers = static_cast<std::size_t>(o.world_size);
      so.waitWorkers = true;
      so.timeout = o.timeout;
      return c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
    });

    pg_ = detail::c10d_call("creating the process group", [&]() -> c10::intrusive_ptr<c10d::ProcessGroup> {
#if defined(MSRL_TORCH_NCCL)
      if (o.backend == dist_backend::nccl) {
        auto no = c10d::ProcessGroupNCCL::Options::create();
        no->timeout = o.timeout;
        return c10::make_intrusive<c10d::ProcessGroupNCCL>(store_, o.rank, o.world_size, no);
      }
#endif
      auto go = c10d::ProcessGroupGloo::Options::create(o.timeout);
      if (!o.gloo_interface.empty())
        go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(o.gloo_interface));
      else if (!o.gloo_hostname.empty())
        go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(o.gloo_hostname));
      else if (!o.store_path.empty() || detail::is_loopback(o.master_addr))
        go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else
        go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      return c10::make_intrusive<c10d::ProcessGroupGloo>(store_, o.rank, o.world_size, go);
    });
  }

  int rank() const override { return opt_.rank; }
  int world_size() const override { return opt_.world_size; }
  c10::Device device() const override { return device_; }
  const process_group_options& options() const { return opt_; }
  /// The underlying c10d group, for collectives msrl does not wrap.
  const c10::intrusive_ptr<c10d::ProcessGroup>& c10d_group() const { return pg_; }

  void all_reduce_sum(at::Tensor& t) override {
    check(t, "all_reduce_sum");
    std::vector<at::Tensor> v{t};
    detail::c10d_call("all_reduce_sum", [&] { pg_->allreduce(v)->wait(opt_.timeout); });
  }
  using communicator::all_reduce_sum;

  void broadcast(at::Tensor& t, int root = 0) override {
    require(root >= 0 && root < opt_.world_size, "msrl::trainer::process_group::broadcast", "root", "must be a rank of the group");
    check(t, "broadcast");
    std::vector<at::Tensor> v{t};
    c10d::BroadcastOptions bo;
    bo.rootRank = root;
    detail::c10d_call("broadcast", [&] { pg_->broadcast(v, bo)->wait(opt_.timeout); });
  }

  void barrier() override {
    detail::c10d_call("barrier", [&] { pg_->barrier()->wait(opt_.timeout); });
  }

private:
  void check(const at::Tensor& t, const char* op) const {
    const std::string where = std::string("msrl::trainer::process_group::") + op;
    require(t.defined() && t.is_contiguous(), where, "t", "must be a defined, contiguous tensor");
    require(t.device() == device_, where, "t", "must live on " + device_.str() + " (communicator::device())");
  }

  process_group_options opt_;
  c10::Device device_{c10::kCPU};
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroup> pg_;
};

namespace detail {

/// The integer in environment variable `name`, within [lo, hi]; `fallback` when unset (if given).
inline long env_int(const char* name, long lo, long hi, const std::string& rule, std::optional<long> fallback = std::nullopt) {
  constexpr const char* where = "msrl::trainer::communicator_from_env";
  const char* v = std::getenv(name);
  if (!v || !*v) {
    require(fallback.has_value(), where, name, "must be set (" + rule + ")");
    return *fallback;
  }
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  require(errno == 0 && end != v && *end == '\0' && x >= lo && x <= hi, where, name, rule + ", got '" + v + "'");
  return x;
}

inline std::string env_str(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

} // namespace detail

/// The communicator the environment describes, the torchrun way: WORLD_SIZE (unset or 1: this
/// process alone, a no-op communicator), RANK, MASTER_ADDR, MASTER_PORT; optional LOCAL_RANK
/// (NCCL device), GLOO_SOCKET_IFNAME (Gloo interface), MSRL_DIST_BACKEND (gloo | nccl),
/// MSRL_DIST_STORE (a FileStore path, fresh for each run, instead of the TCP store),
/// MSRL_DIST_TIMEOUT (whole seconds in [1, 86400] for the rendezvous and every collective: how long
/// the other ranks wait for a lost one before they stop with an error naming the collective). Fields of
/// `defaults` fill what the environment leaves unset. Bad values throw msrl::invalid_argument
/// naming the variable; a failed rendezvous throws msrl::error after defaults.timeout.
inline std::shared_ptr<communicator> communicator_from_env(process_group_options defaults = {}) {
  constexpr const char* where = "msrl::trainer::communicator_from_env";
  const char* ws = std::getenv("WORLD_SIZE");
  if (!ws || !*ws) {
    const char* r = std::getenv("RANK");
    require(!r || !*r || std::string(r) == "0", where, "RANK", std::string("is '") + (r ? r : "") + "' but WORLD_SIZE is unset");
    return std::make_shared<single_process>();
  }
  auto o = std::move(defaults);
  o.world_size = static_cast<int>(detail::env_int("WORLD_SIZE", 1, 1 << 20, "must be a positive integer"));
  o.rank = static_cast<int>(detail::env_int("RANK", 0, o.world_size - 1, "must be an integer in [0, WORLD_SIZE) = [0, " + std::to_string(o.world_size) + ")"));
  if (o.world_size == 1) return std::make_shared<single_process>();
  o.device_index = static_cast<int>(detail::env_int("LOCAL_RANK", 0, 1 << 16, "must be a non-negative integer", o.device_index));
  if (const auto b = detail::env_str("MSRL_DIST_BACKEND"); !b.empty()) {
    require(b == "gloo" || b == "nccl", where, "MSRL_DIST_BACKEND", "must be gloo or nccl, got '" + b + "'");
    o.backend = b == "nccl" ? dist_backend::nccl : dist_backend::gloo;
  }
  if (const auto s = detail::env_str("MSRL_DIST_STORE"); !s.empty()) o.store_path = s;
  if (const auto t = detail::env_str("MSRL_DIST_TIMEOUT"); !t.empty())
    o.timeout = std::chrono::seconds(detail::env_int("MSRL_DIST_TIMEOUT", 1, 86400, "must be whole seconds in [1, 86400]"));
  if (const auto i = detail::env_str("GLOO_SOCKET_IFNAME"); !i.empty()) o.gloo_interface = i;
  if (o.store_path.empty()) {
    if (const auto a = detail::env_str("MASTER_ADDR"); !a.empty()) o.master_addr = a;
    else require(false, where, "MASTER_ADDR", "must be set to rank 0's host when WORLD_SIZE > 1 (or set MSRL_DIST_STORE)");
    o.master_port = static_cast<int>(detail::env_int("MASTER_PORT", 1, 65535, "must be a port number in [1, 65535]"));
  }
  return std::make_shared<process_group>(o);
}

} // namespace msrl::trainer
