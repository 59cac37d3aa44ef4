#pragma once
/// \file The SFT and GRPO steps for the InternVL model: `trainer` (component msrl::torch). It includes
/// the pieces it is built from: sampling_torch.hpp (sample), logprobs_torch.hpp (completion_logprobs),
/// communicator_torch.hpp (data-parallel hooks) and autocast_torch.hpp (mixed precision).
///
///   auto s = msrl::trainer::sample(model, prompt_ids, pixels, {.num_samples = 8, .max_new_tokens = 512,
///                                  .temperature = 1.0, .top_p = 1.0, .stop_ids = {im_end}, .seed = 7});
///   msrl::trainer::trainer t(model, {.lr = 1e-6, .freeze_vision = true});
///   t.grpo_step({{prompt_ids, pixels, s.tokens, s.mask, s.logprobs, rewards}}, msrl::grpo::presets::msrl_release);
///
/// The GRPO loss and its gradient come from msrl::torch_ops::grpo_loss on the logits' device where a
/// kernel set serves it, else from msrl::grpo::policy_loss on the host, entering autograd as
/// logp.backward(d loss / d logp) (train_options::fused_loss).
///
/// Data parallelism: give the trainer a `communicator` (train_options::comm; the c10d one is in
/// distributed_torch.hpp). Each step then sums the token/sequence counts and the gradients over
/// all ranks, so N processes holding 1/N of a batch make the update one process makes on all of it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "../core/atomic_file.hpp"
#include "../core/error.hpp"
#include "../grpo/advantages.hpp"
#include "../grpo/policy_loss.hpp"
#include "../grpo/presets.hpp"
#include "../grpo/token_shaping.hpp"
#include "../torch/logprob_ops.hpp"
#include "autocast_torch.hpp"
#include "communicator_torch.hpp"
#include "controllers.hpp"
#include "internvl_torch.hpp"
#include "logprobs_torch.hpp"
#include "micro_workers_torch.hpp"
#include "sampling_torch.hpp"

namespace msrl::trainer {

struct train_options {
  double lr = 1e-6;
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double max_grad_norm = 1.0; ///< <= 0 disables clipping
  bool freeze_vision = false;
  bool freeze_projector = false;
  /// Mixed precision: the forward passes of sft_step / grpo_step run under autocast_guard with this
  /// dtype (at::kBFloat16; at::kHalf on CUDA); unset trains in the weights' dtype.
  std::optional<at::ScalarType> autocast = std::nullopt;
  /// Per-token log-probs (and entropy) through msrl's fused ops (msrl::torch_ops) where their
  /// kernels serve the model's device; false: libtorch's log_softmax + gather (the [.., V] fp32
  /// log-softmax and its gradient are then materialised).
  bool fused_logprobs = true;
  /// GRPO steps without an entropy bonus: the loss and its gradient through msrl::torch_ops::grpo_loss
  /// (one fused pass from the logits, on the logits' device) where a kernel set serves the model's
  /// device and fused_logprobs is on; false (or no kernel set, or entropy_coeff != 0, or a preset
  /// with token shaping): log-probs, then msrl::grpo::policy_loss on host copies and d loss / d logp
  /// back through autograd. The two routes agree to ~1e-7 (tested).
  bool fused_loss = true;
  /// GRPO with beta = 0 and no entropy bonus: a group whose advantages are all exactly 0 (every
  /// completion rewarded alike) has loss 0 and gradient 0 under every built-in loss form, so its
  /// forward and backward are skipped (step_stats::skipped_groups). It still counts in the
  /// normalisers; the ratio / clip / KL metrics then cover the computed groups. Parameters come
  /// out the same as with the group computed (tested), except that on a run's first step a
  /// parameter reached only by skipped groups has no gradient yet, so AdamW leaves it as it is.
  bool skip_flat_groups = true;
  /// GRPO on the fused route: the logits of up to this many consecutive groups with the same
  /// number of completions come from one pass of the model (detail::completion_logits over
  /// several groups: the prompts as one right-padded batch, their completions as another), so each
  /// of the model's operations runs once for them all, forward and backward. The loss and
  /// gradients are those of one group per pass up to rounding (tested); a pass holds its groups'
  /// activations together. >= 1.
  std::size_t groups_per_pass = 1;
  /// CPU: the micro-batches of one step (sft_step's micro-batches, grpo_step's passes) run on up to
  /// this many threads at once, each with one intra-op thread (detail::micro_batch_backward in
  /// micro_workers_torch.hpp); their gradients are summed per worker, then in micro-batch order.
  /// 1 (or a CUDA model): one after the other on the caller's threads. A BLAS with its own thread
  /// pool (OpenBLAS) should be at one thread meanwhile; the trainer does not change it. >= 1.
  std::size_t micro_batch_workers = 1;
  /// Data-parallel group; null (or one rank) trains this process alone. With more ranks the
  /// constructor broadcasts rank 0's weights, and every step sums counts and gradients.
  std::shared_ptr<communicator> comm = nullptr;
};

/// One SFT micro-batch: right-padded sequences and a 0/1 mask of the tokens to learn (assistant
/// tokens); the loss at position t predicts input_ids[t] from the tokens before it.
///
/// Open choices: where alternative_ids[b, t] >= 0, the target at t is the pair {input_ids[b, t],
/// alternative_ids[b, t]} with probabilities 1 - w and w (w = alternative_weight), and its loss
/// the cross-entropy against that soft target, -((1 - w) log p(input) + w log p(alternative)): the
/// step teaches that one of the two comes there and leaves the model unsure which (w = 1/2:
/// either; smaller w: leaning to input_ids), for a later stage to decide (e.g. a verdict word a
/// cold start leaves to RL). The sequence goes on from input_ids[b, t] (teacher forcing).
struct sft_batch {
  at::Tensor input_ids;       ///< [B, T] int64
  at::Tensor target_mask;     ///< [B, T] 0/1 (position 0 is never a target)
  at::Tensor pixel_values;    ///< [tiles, 3, S, S] for every image-context token in the batch, or undefined
  at::Tensor alternative_ids; ///< [B, T] int64, -1 where the target is input_ids alone; or undefined (no open choice)
  double alternative_weight = 0.5; ///< w in (0, 1), the soft target's mass on the alternative
};

/// One GRPO group: a prompt, its image and G sampled completions with their rewards.
struct grpo_group {
  at::Tensor prompt_ids;   ///< [T] or [1, T]
  at::Tensor pixel_values; ///< or undefined
  at::Tensor completions;  ///< [G, L] int64
  at::Tensor mask;         ///< [G, L] 0/1
  at::Tensor old_logprobs; ///< [G, L] from sampling (undefined: on-policy)
  std::vector<double> rewards; ///< [G]
  /// Optional advantages [G] or per token [G, L] (e.g. msrl::grpo::estimate_advantages over the
  /// whole step's batch); undefined: the preset's group advantages of `rewards`. The rewards still
  /// give the step's reward and zero-std statistics.
  at::Tensor advantages;
};

struct step_stats {
  double loss = 0;       ///< summed over micro-batches and ranks (each already divided by the global normaliser)
  double grad_norm = 0;  ///< of the summed gradient, before clipping
  double tokens = 0;     ///< target (SFT) or completion (GRPO) tokens over all micro-batches and ranks
  /// GRPO: the step's policy-loss metrics over every group and rank: tokens and sequences summed,
  /// clip fractions, ratio_mean and kl_mean weighted by masked tokens, policy_loss and kl_loss summed
  /// (each group's already divided by the global normaliser, so the sums are the step's).
  grpo::loss_metrics metrics;
  /// GRPO: the advantage statistics over every group and rank: groups and zero-variance groups
  /// summed (zero_std_fraction = their ratio), reward_mean and reward_std (population) over every
  /// scored completion's reward, unscorable rows summed.
  grpo::advantage_stats advantages;
  double entropy = 0;    ///< GRPO with entropy_coeff != 0 or measure_entropy: the entropy aggregated like the loss, over every rank
  std::size_t skipped_groups = 0; ///< GRPO: flat groups not computed (train_options::skip_flat_groups), all ranks
  /// GRPO with a preset that shapes tokens (preset::shaping): the tokens Clip-Cov zeroed or KL-Cov
  /// penalised, summed over groups and ranks; FIPO: the mean influence weight over masked tokens.
  double selected_tokens = 0;
  double fipo_weight_mean = 0;

};

/// AdamW training steps with gradient accumulation over micro-batches and a global normaliser.
class trainer {
public:
  trainer(internvl model, train_options opt, std::optional<internvl> reference = std::nullopt)
      : model_(std::move(model)), ref_(std::move(reference)), opt_(opt) {
    for (auto& p : model_->vision->parameters()) p.requires_grad_(!opt.freeze_vision);
    for (auto& p : model_->mlp1->parameters()) p.requires_grad_(!opt.freeze_projector);
    std::vector<at::Tensor> params;
    for (auto& p : model_->parameters())
      if (p.requires_grad()) params.push_back(p);
    require(!params.empty(), "msrl::trainer::trainer", "train_options", "must leave some parameters trainable");
    require(opt.groups_per_pass >= 1, "msrl::trainer::trainer", "train_options.groups_per_pass", "must be >= 1");
    require(opt.micro_batch_workers >= 1, "msrl::trainer::trainer", "train_options.micro_batch_workers", "must be >= 1");
    { const autocast_guard check(device(), opt.autocast); } // rejects a dtype autocast cannot use here, now
    params_ = params;
    optim_ = std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(opt.lr).betas({opt.beta1, opt.beta2}).eps(opt.eps).weight_decay(opt.weight_decay));
    if (ref_) {
      (*ref_)->eval();
      for (auto& p : (*ref_)->parameters()) p.requires_grad_(false);
    }
    if (distributed()) {
      broadcast_module(*opt_.comm, *model_);
      if (ref_) broadcast_module(*opt_.comm, **ref_);
    }
  }

  internvl& model() { return model_; }
  /// Optimizer steps taken (restored by load_state).
  std::int64_t steps() const { return step_; }
  /// Sets the learning rate of every parameter group (for a schedule; call before a step).
  void set_lr(double lr) {
    require<value_error>(std::isfinite(lr) && lr >= 0.0, "msrl::trainer::trainer::set_lr", "lr", "must be finite and >= 0");
    for (auto& g : optim_->param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
  }
  /// The learning rate of the next step; load_state restores the saved one.
  double lr() const { return static_cast<const torch::optim::AdamWOptions&>(optim_->param_groups().front().options()).lr(); }
  /// The run's KL and entropy coefficient controllers (controllers.hpp); the caller steps them,
  /// save_state / load_state keep their state with the optimizer's.
  controllers& control() { return ctl_; }
  const controllers& control() const { return ctl_; }
  /// The reference model's log-probs of a group's completions, [G, L] fp32 on the host (for the KL
  /// in the reward). Needs a reference model.
  at::Tensor reference_logprobs(const grpo_group& g, double temperature = 1.0) {
    require(ref_.has_value(), "msrl::trainer::trainer::reference_logprobs", "reference", "must be given to the trainer");
    at::NoGradGuard ng;
    const autocast_guard ac(device(), opt_.autocast);
    return completion_logprobs(*ref_, g.prompt_ids, g.pixel_values, g.completions, temperature, opt_.fused_logprobs)
        .to(at::kCPU, at::kFloat)
        .contiguous();
  }
  /// The data-parallel group, or null.
  const std::shared_ptr<communicator>& comm() const { return opt_.comm; }

  /// Writes the optimizer state (AdamW moments and step counts), the current learning rate and
  /// the step counter to `path` atomically (msrl::write_file_atomic_with: a unique temporary beside
  /// it, fsync, rename; `path` keeps its old content on failure). A path that cannot be written:
  /// msrl::invalid_argument. Model weights are saved separately (save_internvl). In data-parallel
  /// runs every rank holds the same state; let one rank write it.
  void save_state(const std::filesystem::path& path) const {
    constexpr const char* where = "msrl::trainer::trainer::save_state";
    torch::serialize::OutputArchive root;
    torch::serialize::OutputArchive optim(root.compilation_unit());
    optim_->save(optim);
    root.write("optimizer", optim);
    root.write("msrl_trainer_state", at::tensor(std::int64_t{1}));
    root.write("steps", at::tensor(step_));
    root.write("lr", at::tensor(lr(), at::kDouble));
    root.write("num_params", at::tensor(static_cast<std::int64_t>(params_.size())));
    root.write("numel", at::tensor(trainable_numel()));
    // the controllers' moving state (their settings come from the caller's configuration)
    root.write("kl_coef", at::tensor(ctl_.kl.value, at::kDouble));
    root.write("entropy_coef", at::tensor(ctl_.entropy.coef, at::kDouble));
    root.write("last_entropy", at::tensor(ctl_.entropy.last_entropy, at::kDouble));
    // msrl::atomic_file: a unique temporary beside `path`, fsync, rename, fsync of the directory.
    try {
      write_file_atomic_with(path, [&](std::ostream& out) { root.save_to(out); });
    } catch (const io_error& e) {
      throw invalid_argument(std::string(where) + ": argument 'path' must name a writable file: " + e.what());
    } catch (const msrl::error&) {
      throw;
    } catch (const std::exception& e) {
      throw msrl::error(std::string(where) + ": argument 'path' could not be written (" + path.string() + "): " + first_line(e.what()));
    }
  }

  /// Restores what save_state wrote (learning rate included; betas, eps and weight decay stay
  /// those of this trainer's train_options) into a trainer over the same trainable parameters. Missing file: msrl::invalid_argument; not a trainer state file or
  /// truncated: msrl::parse_error; different parameters: msrl::shape_error.
  void load_state(const std::filesystem::path& path) {
    constexpr const char* where = "msrl::trainer::trainer::load_state";
    std::error_code ec;
    require(std::filesystem::is_regular_file(path, ec), where, "path", "must name an existing trainer state file (" + path.string() + ")");
    torch::serialize::InputArchive root, optim;
    at::Tensor tag, steps, num_params, numel, lr_saved, kl_coef, entropy_coef, last_entropy;
    bool has_controllers = false;
    try {
      root.load_from(path.string(), device());
      root.read("msrl_trainer_state", tag);
      root.read("steps", steps);
      root.read("num_params", num_params);
      root.read("numel", numel);
      root.read("lr", lr_saved);
      root.read("optimizer", optim);
      has_controllers = root.try_read("kl_coef", kl_coef) && root.try_read("entropy_coef", entropy_coef) &&
                        root.try_read("last_entropy", last_entropy); // absent from states of older versions
    } catch (const std::exception& e) {
      throw msrl::parse_error(std::string(where) + ": argument 'path' is not a readable trainer state file (" + path.string() + "): " +
                              first_line(e.what()));
    }
    require<shape_error>(num_params.item<std::int64_t>() == static_cast<std::int64_t>(params_.size()) && numel.item<std::int64_t>() == trainable_numel(),
                         where, "path", "holds the state of " + std::to_string(num_params.item<std::int64_t>()) + " trainable tensors (" +
                                            std::to_string(numel.item<std::int64_t>()) + " values); this trainer has " +
                                            std::to_string(params_.size()) + " (" + std::to_string(trainable_numel()) + ")");
    try {
      optim_->load(optim);
    } catch (const std::exception& e) {
      throw msrl::parse_error(std::string(where) + ": argument 'path' holds a corrupt optimizer state (" + path.string() + "): " + first_line(e.what()));
    }
    step_ = steps.item<std::int64_t>();
    set_lr(lr_saved.item<double>()); // torch's optimizer load keeps the current options
    if (has_controllers) {
      ctl_.kl.value = kl_coef.item<double>();
      ctl_.entropy.coef = entropy_coef.item<double>();
      ctl_.entropy.last_entropy = last_entropy.item<double>();
    }
  }

  /// Masked cross-entropy (token mean over all micro-batches' targets; an open choice counts as one
  /// target, its pair's two log-probs weighted by the soft target, see sft_batch), backward, clip, AdamW.
  step_stats sft_step(const std::vector<sft_batch>& micro) {
    constexpr const char* where = "msrl::trainer::trainer::sft_step";
    double total = 0;
    std::exception_ptr bad;
    try {
      require(!micro.empty(), where, "micro", "must hold at least one micro-batch");
      for (const auto& b : micro) {
        require<shape_error>(b.input_ids.dim() == 2 && b.target_mask.sizes() == b.input_ids.sizes(), where, "target_mask", "must match input_ids [B, T]");
        if (b.alternative_ids.defined()) {
          require<shape_error>(b.alternative_ids.sizes() == b.input_ids.sizes(), where, "alternative_ids", "must match input_ids [B, T]");
          require(b.alternative_ids.scalar_type() == at::kLong, where, "alternative_ids", "must be int64");
          require(b.alternative_weight > 0 && b.alternative_weight < 1, where, "alternative_weight", "must be in (0, 1)");
          const auto open = b.alternative_ids >= 0;
          const auto vocab = model_->language_model->model->embed_tokens->weight.size(0);
          require<value_error>(((b.alternative_ids >= -1) & (b.alternative_ids < vocab)).all().item<bool>(), where, "alternative_ids",
                               "must hold -1 or a token id below the vocabulary size " + std::to_string(vocab));
          require<value_error>(!(open & (b.alternative_ids == b.input_ids.to(at::kLong))).any().item<bool>(), where, "alternative_ids",
                               "must differ from input_ids where it is set (the pair would count one token twice)");
          require<value_error>(!(open & (b.target_mask == 0)).any().item<bool>(), where, "alternative_ids",
                               "must be -1 where target_mask is 0");
        }
        total += b.target_mask.narrow(1, 1, b.input_ids.size(1) - 1).sum().item<double>();
      }
    } catch (...) {
      bad = std::current_exception();
    }
    total = global_counts(where, {total}, bad)[0]; // the loss normaliser counts every rank's targets
    require<value_error>(total > 0, where, "target_mask", "must mark at least one target token (position >= 1)");
    model_->train();
    optim_->zero_grad();
    step_stats st;
    st.tokens = total;
    std::vector<double> losses(micro.size(), 0.0);
    detail::micro_batch_backward(params_, micro.size(), workers(), [&](std::size_t i) {
      const auto& b = micro[i];
      const auto T = b.input_ids.size(1);
      at::Tensor loss;
      {
        const autocast_guard ac(device(), opt_.autocast);
        auto logits = model_->forward(b.input_ids.to(device()), b.pixel_values.defined() ? b.pixel_values.to(device()) : b.pixel_values);
        const auto z = logits.narrow(1, 0, T - 1);
        auto lp = detail::token_logprobs(z, b.input_ids.narrow(1, 1, T - 1).to(device()), 1.0, opt_.fused_logprobs);
        if (b.alternative_ids.defined()) {
          const auto alt = b.alternative_ids.narrow(1, 1, T - 1).to(device());
          const auto open = alt >= 0;
          if (open.any().item<bool>())
            lp = at::where(open, (1.0 - b.alternative_weight) * lp + b.alternative_weight * detail::token_logprobs(z, alt.clamp_min(0), 1.0, opt_.fused_logprobs), lp);
        }
        auto m = b.target_mask.narrow(1, 1, T - 1).to(device(), at::kFloat);
        loss = -(lp * m).sum() / total;
      }
      losses[i] = loss.item<double>();
      return loss;
    });
    for (const double l : losses) st.loss += l;
    finish(st);
    return st;
  }

  /// One GRPO optimizer step over groups (each a micro-batch): msrl advantages per group, the
  /// policy loss with global token/sequence normalisers over all groups, d loss / d logp into
  /// autograd, clip, AdamW. Temperature must be the sampling temperature. A preset with token shaping
  /// (preset::shaping: Clip-Cov, KL-Cov, FIPO) gets its mask or weights from each group's current
  /// log-probs (grpo::shape_tokens, the group as the micro-batch, as verl's selection), on the host
  /// route; Clip-Cov's draw is seeded by (step, group), so a resumed run draws the same tokens.
  /// entropy_coeff != 0 adds verl's entropy bonus: loss -= entropy_coeff * (the per-token entropy
  /// aggregated like the loss, grpo::aggregate_tokens); step_stats::entropy reports that aggregate.
  step_stats grpo_step(const std::vector<grpo_group>& groups, const grpo::preset& preset, double temperature = 1.0,
                       double entropy_coeff = 0.0, bool measure_entropy = false) {
    constexpr const char* where = "msrl::trainer::trainer::grpo_step";
    double tokens = 0, seqs = 0;
    std::exception_ptr bad;
    try {
      require(!groups.empty(), where, "groups", "must hold at least one group");
      require(preset.loss.beta == 0.0 || ref_.has_value(), where, "preset.loss.beta", "needs a reference model when non-zero");
      require(std::isfinite(entropy_coeff), where, "entropy_coeff", "must be finite");
      for (const auto& g : groups) {
        require<shape_error>(g.completions.dim() == 2 && g.mask.sizes() == g.completions.sizes(), where, "mask", "must match completions [G, L]");
        require<shape_error>(static_cast<std::int64_t>(g.rewards.size()) == g.completions.size(0), where, "rewards", "must hold one reward per completion");
        require<shape_error>(!g.old_logprobs.defined() || g.old_logprobs.sizes() == g.completions.sizes(), where, "old_logprobs", "must match completions");
        require<shape_error>(!g.advantages.defined() || g.advantages.sizes() == g.completions.sizes() ||
                                 (g.advantages.dim() == 1 && g.advantages.size(0) == g.completions.size(0)),
                             where, "advantages", "must be undefined, [G] or [G, L] like completions");
        tokens += g.mask.sum().item<double>();
        seqs += static_cast<double>(g.completions.size(0));
      }
    } catch (...) {
      bad = std::current_exception();
    }
    const auto global = global_counts(where, {tokens, seqs}, bad); // normalisers over every rank's groups
    tokens = global[0];
    seqs = global[1];
    model_->train();
    optim_->zero_grad();
    step_stats st;
    st.tokens = tokens;
    grpo::loss_normalizer norm{.global_tokens = tokens, .global_sequences = seqs};
    // this rank's sums for the step-level metrics (all-reduced below)
    enum : std::size_t { m_tokens, m_seqs, m_low, m_high, m_dual, m_ratio, m_kl, m_pg, m_klloss, m_groups, m_zero, m_rn, m_rsum, m_rsq, m_unscorable, m_skipped, m_selected, m_fipo, m_entropy, m_n };
    const bool entropy = entropy_coeff != 0.0 || measure_entropy;
    const bool shaped = preset.shaping.kind != grpo::shaping_kind::none;
    // KL-Cov still selects (and penalises) tokens of a flat group
    const bool may_skip = opt_.skip_flat_groups && preset.loss.beta == 0.0 && !entropy && preset.shaping.kind != grpo::shaping_kind::kl_cov;
    std::vector<double> sums(m_n, 0.0);
    double normalizer = 0;
    const auto add = [&](const grpo::loss_result& res) {
      st.loss += res.loss;
      const auto& mt = res.metrics;
      sums[m_tokens] += mt.tokens;
      sums[m_seqs] += mt.sequences;
      sums[m_low] += mt.clip_fraction_low * mt.tokens;
      sums[m_high] += mt.clip_fraction_high * mt.tokens;
      sums[m_dual] += mt.dual_clip_fraction * mt.tokens;
      sums[m_ratio] += mt.ratio_mean * mt.tokens;
      sums[m_kl] += mt.kl_mean * mt.tokens;
      sums[m_pg] += mt.policy_loss;
      sums[m_klloss] += mt.kl_loss;
      normalizer = mt.normalizer; // global normalisers: the same for every group
    };
    const bool fused = !shaped && opt_.fused_logprobs && opt_.fused_loss && !entropy && torch_ops::kernels_for(model_->language_model->model->embed_tokens->weight);
    struct fused_group {
      std::size_t gi;
      at::Tensor a, m, ref;
    };
    std::vector<fused_group> pending; // the groups of the fused route, computed after the loop
    for (std::size_t gi = 0; gi < groups.size(); ++gi) {
      const auto& g = groups[gi];
      const auto G = g.completions.size(0);
      std::vector<double> adv(static_cast<std::size_t>(G));
      const auto as = grpo::advantages(std::span<const double>(g.rewards), static_cast<std::size_t>(G), std::span<double>(adv), preset.advantages);
      sums[m_groups] += static_cast<double>(as.num_groups);
      sums[m_zero] += static_cast<double>(as.zero_std_groups);
      sums[m_unscorable] += static_cast<double>(as.unscorable_rows);
      for (const double r : g.rewards)
        if (std::isfinite(r)) {
          sums[m_rn] += 1;
          sums[m_rsum] += r;
          sums[m_rsq] += r * r;
        }
      const at::Tensor a = g.advantages.defined() ? g.advantages.to(at::kCPU, at::kFloat).contiguous() : at::tensor(adv, at::kFloat);
      const bool flat = g.advantages.defined() ? !a.ne(0).any().item<bool>()
                                               : std::all_of(adv.begin(), adv.end(), [](double x) { return x == 0.0; });
      if (may_skip && flat) {
        sums[m_skipped] += 1; // loss 0, gradient 0: nothing to compute
        continue;
      }
      const at::Tensor m = g.mask.to(at::kCPU, at::kByte).contiguous();
      at::Tensor ref;
      if (preset.loss.beta != 0.0) {
        at::NoGradGuard ng;
        const autocast_guard ac(device(), opt_.autocast);
        ref = completion_logprobs(*ref_, g.prompt_ids, g.pixel_values, g.completions, temperature, opt_.fused_logprobs)
                  .to(at::kCPU, at::kFloat)
                  .contiguous();
      }
      if (fused) {
        pending.push_back({gi, a, m, ref});
        continue;
      }
      const std::uint64_t draw = static_cast<std::uint64_t>(step_) * 1000003u + gi + 1;
      grpo::token_shaping_buffers<float, std::uint8_t> sh;
      const auto res = host_route_loss(g, m, a, ref, preset, norm, temperature, entropy_coeff, entropy, draw, sh, st);
      add(res);
      sums[m_selected] += static_cast<double>(sh.selection.selected);
      sums[m_fipo] += sh.fipo.weight_mean * res.metrics.tokens;
    }
    // the fused route: loss and d loss / d logits in one kernel call per group on the logits'
    // device, the logits of up to groups_per_pass groups (of equal G) from one pass of the model
    std::vector<std::pair<std::size_t, std::size_t>> passes; // [first, last) of pending
    for (std::size_t first = 0; first < pending.size();) {
      std::size_t last = first + 1;
      const auto G = groups[pending[first].gi].completions.size(0);
      while (last < pending.size() && last - first < opt_.groups_per_pass && groups[pending[last].gi].completions.size(0) == G) ++last;
      passes.emplace_back(first, last);
      first = last;
    }
    std::vector<grpo::loss_result> fused_results(pending.size());
    detail::micro_batch_backward(params_, passes.size(), workers(), [&](std::size_t k) {
      const auto [first, last] = passes[k];
      std::vector<completion_group> pass;
      for (std::size_t i = first; i < last; ++i) {
        const auto& g = groups[pending[i].gi];
        pass.push_back({g.prompt_ids, g.pixel_values, g.completions});
      }
      std::vector<at::Tensor> z;
      {
        const autocast_guard ac(device(), opt_.autocast);
        z = detail::completion_logits(model_, pass, temperature, where);
      }
      at::Tensor loss;
      for (std::size_t i = first; i < last; ++i) {
        const auto& p = pending[i];
        const auto& g = groups[p.gi];
        const auto& zi = z[i - first];
        const auto dev = zi.device();
        const auto on = [&](const at::Tensor& t) { return t.defined() ? t.to(dev) : t; };
        auto& res = fused_results[i];
        const at::Tensor li = torch_ops::grpo_loss(zi, g.completions.to(dev), on(g.old_logprobs.defined() ? g.old_logprobs.to(at::kFloat) : at::Tensor()),
                                                   on(p.ref), on(p.a), on(p.m), preset.loss, norm, temperature, &res.metrics);
        res.loss = li.item<double>();
        loss = loss.defined() ? loss + li : li;
      }
      return loss;
    });
    for (const auto& res : fused_results) add(res);
    sums[m_entropy] = st.entropy;
    sums = global_counts(where, std::move(sums), nullptr); // summed over the ranks
    st.entropy = sums[m_entropy];
    const double n_tok = sums[m_tokens], per_tok = n_tok > 0 ? 1.0 / n_tok : 0.0;
    st.metrics = {.tokens = n_tok, .sequences = sums[m_seqs], .clip_fraction_low = sums[m_low] * per_tok,
                  .clip_fraction_high = sums[m_high] * per_tok, .clip_fraction = (sums[m_low] + sums[m_high]) * per_tok,
                  .dual_clip_fraction = sums[m_dual] * per_tok, .ratio_mean = sums[m_ratio] * per_tok, .kl_mean = sums[m_kl] * per_tok,
                  .policy_loss = sums[m_pg], .kl_loss = sums[m_klloss], .normalizer = normalizer};
    const double rn = sums[m_rn], mean = rn > 0 ? sums[m_rsum] / rn : 0.0;
    st.advantages = {.num_groups = static_cast<std::size_t>(sums[m_groups]), .zero_std_groups = static_cast<std::size_t>(sums[m_zero]),
                     .zero_std_fraction = sums[m_groups] > 0 ? sums[m_zero] / sums[m_groups] : 0.0, .reward_mean = mean,
                     .reward_std = rn > 0 ? std::sqrt(std::max(0.0, sums[m_rsq] / rn - mean * mean)) : 0.0,
                     .unscorable_rows = static_cast<std::size_t>(sums[m_unscorable])};
    st.skipped_groups = static_cast<std::size_t>(sums[m_skipped]);
    st.selected_tokens = sums[m_selected];
    st.fipo_weight_mean = preset.shaping.kind == grpo::shaping_kind::fipo ? sums[m_fipo] * per_tok : 0.0;
    finish(st);
    return st;
  }

private:
  /// The host route of one group's GRPO loss: log-probs (and entropy) from the model, the preset's
  /// token shaping from them (`draw` seeds a random selection), the loss and d loss / d logp by
  /// msrl::grpo::policy_loss on host copies, then backward through autograd.
  grpo::loss_result host_route_loss(const grpo_group& g, const at::Tensor& m, const at::Tensor& a,
                                    const at::Tensor& ref, const grpo::preset& preset, const grpo::loss_normalizer& norm,
                                    double temperature, double entropy_coeff, bool entropy, std::uint64_t draw,
                                    grpo::token_shaping_buffers<float, std::uint8_t>& sh, step_stats& st) {
    const auto G = g.completions.size(0), L = g.completions.size(1);
    at::Tensor logp, ent;
    {
      const autocast_guard ac(device(), opt_.autocast);
      if (entropy)
        std::tie(logp, ent) = completion_logprobs_entropy(model_, g.prompt_ids, g.pixel_values, g.completions, temperature, opt_.fused_logprobs);
      else
        logp = completion_logprobs(model_, g.prompt_ids, g.pixel_values, g.completions, temperature, opt_.fused_logprobs);
    }
    const at::Tensor lp = logp.detach().to(at::kCPU, at::kFloat).contiguous();
    const at::Tensor old = g.old_logprobs.defined() ? g.old_logprobs.to(at::kCPU, at::kFloat).contiguous() : at::Tensor();
    at::Tensor grad = at::zeros_like(lp);
    const auto n = static_cast<std::size_t>(G * L);
    grpo::loss_inputs<float> in{
        .layout = token_layout::padded(static_cast<std::size_t>(G), static_cast<std::size_t>(L)),
        .logp = {lp.data_ptr<float>(), n},
        .old_logp = old.defined() ? std::span<const float>(old.data_ptr<float>(), n) : std::span<const float>(),
        .ref_logp = ref.defined() ? std::span<const float>(ref.data_ptr<float>(), n) : std::span<const float>(),
        .advantages = {a.data_ptr<float>(), static_cast<std::size_t>(a.numel())},
        .mask = {m.data_ptr<std::uint8_t>(), n}};
    grpo::shape_tokens(preset.shaping, preset.loss, in.layout, in.logp, in.old_logp, in.advantages, in.mask, draw, sh);
    in.policy_mask = sh.policy_mask;
    in.is_weights = sh.is_weights;
    auto res = grpo::policy_loss(in, preset.loss, norm, std::span<float>(grad.data_ptr<float>(), n));
    if (ent.defined()) {
      const at::Tensor e = ent.detach().to(at::kCPU, at::kFloat).contiguous();
      at::Tensor grad_e = at::zeros_like(e);
      const double h = grpo::aggregate_tokens<float>(in.layout, {e.data_ptr<float>(), n}, in.mask, preset.loss, norm,
                                                     std::span<float>(grad_e.data_ptr<float>(), n));
      st.entropy += h;
      st.loss -= entropy_coeff * h;
      torch::autograd::backward({logp, ent}, {grad.to(logp.device()), (grad_e * -entropy_coeff).to(ent.device())});
    } else {
      logp.backward(grad.to(logp.device()));
    }
    return res;
  }

  c10::Device device() const { return model_->language_model->model->embed_tokens->weight.device(); }
  bool distributed() const { return opt_.comm && opt_.comm->world_size() > 1; }
  std::int64_t trainable_numel() const {
    std::int64_t n = 0;
    for (const auto& p : params_) n += p.numel();
    return n;
  }
  static std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

  /// Sums per-rank counts over the group, together with a "my batch was rejected" flag so that a
  /// rank's validation error stops every rank instead of leaving the others in a collective.
  std::vector<double> global_counts(const char* where, std::vector<double> local, const std::exception_ptr& bad) {
    if (!distributed()) {
      if (bad) std::rethrow_exception(bad);
      return local;
    }
    const auto n = static_cast<std::int64_t>(local.size());
    local.push_back(bad ? 1.0 : 0.0);
    at::Tensor t = at::tensor(local, at::kDouble).to(opt_.comm->device());
    opt_.comm->all_reduce_sum(t);
    if (bad) std::rethrow_exception(bad);
    const at::Tensor h = t.to(at::kCPU);
    if (h[n].item<double>() > 0)
      throw msrl::value_error(std::string(where) + ": another rank rejected its batch (its error names the argument)");
    return std::vector<double>(h.data_ptr<double>(), h.data_ptr<double>() + n);
  }

  /// Sums the gradients (and the step's loss) over the ranks in one flat buffer. A gradient that
  /// no rank produced stays undefined, as it would in one process over the whole batch.
  void all_reduce_gradients(step_stats& st) {
    const auto n = params_.size();
    std::int64_t total = 0;
    bool dbl = false;
    for (const auto& p : params_) {
      total += p.numel();
      dbl = dbl || p.scalar_type() == at::kDouble;
    }
    // fp32 (or fp64) accumulation also for bf16/fp16 weights; N flags and the loss at the end.
    at::Tensor buf = at::zeros({total + static_cast<std::int64_t>(n) + 1}, at::TensorOptions().dtype(dbl ? at::kDouble : at::kFloat).device(opt_.comm->device()));
    std::vector<double> tail(n + 1, 0.0);
    std::int64_t off = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const auto& p = params_[i];
      if (p.grad().defined()) {
        buf.narrow(0, off, p.numel()).copy_(p.grad().reshape(-1));
        tail[i] = 1.0;
      }
      off += p.numel();
    }
    tail[n] = st.loss;
    buf.narrow(0, total, static_cast<std::int64_t>(n) + 1).copy_(at::tensor(tail, at::kDouble));
    opt_.comm->all_reduce_sum(buf);
    const at::Tensor flags = buf.narrow(0, total, static_cast<std::int64_t>(n) + 1).to(at::kCPU, at::kDouble);
    off = 0;
    for (std::size_t i = 0; i < n; ++i) {
      auto& p = params_[i];
      if (flags[static_cast<std::int64_t>(i)].item<double>() > 0) {
        const at::Tensor g = buf.narrow(0, off, p.numel()).view(p.sizes());
        if (p.grad().defined()) p.mutable_grad().copy_(g);
        else p.mutable_grad() = g.to(p.device(), p.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
      }
      off += p.numel();
    }
    st.loss = flags[static_cast<std::int64_t>(n)].item<double>();
  }

  /// Threads for a step's micro-batches (train_options::micro_batch_workers; 1 off the CPU).
  std::size_t workers() const { return device().is_cpu() ? opt_.micro_batch_workers : 1; }

  void finish(step_stats& st) {
    if (distributed()) all_reduce_gradients(st);
    std::vector<at::Tensor> ps;
    for (auto& p : model_->parameters())
      if (p.requires_grad() && p.grad().defined()) ps.push_back(p);
    double sq = 0;
    for (auto& p : ps) sq += p.grad().to(at::kDouble).pow(2).sum().item<double>();
    st.grad_norm = std::sqrt(sq);
    if (opt_.max_grad_norm > 0 && st.grad_norm > opt_.max_grad_norm)
      for (auto& p : ps) p.mutable_grad().mul_(opt_.max_grad_norm / (st.grad_norm + 1e-6));
    optim_->step();
    ++step_;
  }

  internvl model_;
  std::optional<internvl> ref_;
  train_options opt_;
  std::vector<at::Tensor> params_; ///< the trainable parameters, in the optimizer's order
  std::unique_ptr<torch::optim::AdamW> optim_;
  std::int64_t step_ = 0;
  controllers ctl_;
};

} // namespace msrl::trainer
