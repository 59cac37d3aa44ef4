#pragma once
/// \file The collectives a data-parallel trainer needs (`communicator`), the single-process one, and
/// broadcast_module; the implementation over c10d process groups is distributed_torch.hpp
/// (component msrl::torch).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "../core/error.hpp"

namespace msrl::trainer {

// ---------------------------------------------------------------------------------------------
// Data-parallel hooks (the implementation over c10d process groups is in distributed_torch.hpp)

/// The collectives a data-parallel trainer needs. Every rank must make the same calls in the
/// same order. Tensors are reduced in place and must be contiguous.
class communicator {
public:
  virtual ~communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  /// Where tensors handed to the collectives must live (CPU for Gloo, the rank's GPU for NCCL).
  virtual c10::Device device() const { return c10::Device(c10::kCPU); }
  /// t <- sum of t over all ranks, in place.
  virtual void all_reduce_sum(at::Tensor& t) = 0;
  virtual double all_reduce_sum(double x) {
    at::Tensor t = at::full({1}, x, at::TensorOptions().dtype(at::kDouble).device(device()));
    all_reduce_sum(t);
    return t.item<double>();
  }
  /// t <- rank root's t, in place.
  virtual void broadcast(at::Tensor& t, int root = 0) = 0;
  virtual void barrier() = 0;
};

/// One process alone: every collective is the identity.
class single_process final : public communicator {
public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void all_reduce_sum(at::Tensor&) override {}
  double all_reduce_sum(double x) override { return x; }
  void broadcast(at::Tensor&, int root = 0) override {
    require(root == 0, "msrl::trainer::single_process::broadcast", "root", "must be 0 in a single process");
  }
  void barrier() override {}
};

/// Copies rank root's parameters and buffers into every rank's module, so all ranks start identical.
inline void broadcast_module(communicator& comm, torch::nn::Module& module, int root = 0) {
  require(root >= 0 && root < comm.world_size(), "msrl::trainer::broadcast_module", "root", "must be a rank of the group");
  if (comm.world_size() == 1) return;
  at::NoGradGuard ng;
  auto one = [&](const at::Tensor& p) {
    at::Tensor t = p.detach();
    if (t.is_contiguous() && t.device() == comm.device()) {
      comm.broadcast(t, root);
    } else {
      at::Tensor c = t.to(comm.device()).contiguous();
      comm.broadcast(c, root);
      t.copy_(c);
    }
  };
  for (const auto& p : module.parameters()) one(p);
  for (const auto& b : module.buffers()) one(b);
}

} // namespace msrl::trainer
