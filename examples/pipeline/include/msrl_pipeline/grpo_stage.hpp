#pragma once
/// \file The GRPO stages (text_grpo, caption_grpo, mm_grpo): rows, sampling with dynamic
/// resampling, verifiable rewards, the trainer's step and the step's metrics.
#include <msrl/trainer/grpo_updates_torch.hpp>

#include "item_groups.hpp"
#include "replay_rows.hpp"
#include "run_context.hpp"
#include "stage_sampling.hpp"

namespace msrl_pipeline {

inline void run_grpo(run_context& ctx, const std::string& stage, internvl& m, const grpo_stage_config& c) {
  const auto rows = mixed_rows(ctx, stage, c.file, c.replay_file, c.replay_ratio);
  const auto& preset = msrl::grpo::find_preset(c.preset);
  const auto rewards = msrl::reward::preset(c.reward);
  const auto names = rewards.names();
  const auto col = [&](const char* name) {
    auto it = std::find(names.begin(), names.end(), name);
    return it == names.end() ? std::ptrdiff_t{-1} : it - names.begin();
  };
  const auto acc_col = col("accuracy"), fmt_col = col("format");
  const std::size_t n = rows.size(), P = static_cast<std::size_t>(c.prompts_per_step);
  const std::size_t fresh = c.both_orders ? P / 2 : P; // rows drawn per step (both_orders: each with its mirror)
  const auto per_epoch = static_cast<std::int64_t>((n + fresh - 1) / fresh);
  const std::int64_t total = c.max_steps > 0 ? c.max_steps : per_epoch * c.epochs;
  // a preset with a KL term (beta != 0) measures it against the policy this stage started from, as
  // TRL's and verl's reference model; a resumed stage reloads that start, not its resumed weights
  std::optional<internvl> reference;
  if (preset.loss.beta != 0.0 || c.kl_in_reward != 0.0) reference = initial_model(ctx, stage);
  const auto est = msrl::grpo::parse_estimator(c.estimator, "msrl-train config", stage + ".estimator");
  const bool kl_reward = c.kl_in_reward != 0.0;
  const auto kl_est = c.kl_in_reward_estimator == "k3"   ? msrl::grpo::kl_estimator::k3
                      : c.kl_in_reward_estimator == "k2" ? msrl::grpo::kl_estimator::k2
                      : c.kl_in_reward_estimator == "abs" ? msrl::grpo::kl_estimator::abs
                                                          : msrl::grpo::kl_estimator::k1;
  const bool openrlhf = c.estimator.starts_with("openrlhf");
  stage_session ss(ctx, stage, m, {.lr = c.lr, .weight_decay = c.weight_decay, .max_grad_norm = c.max_grad_norm,
                                    .freeze_vision = c.freeze_vision, .freeze_projector = c.freeze_projector,
                                    .groups_per_pass = static_cast<std::size_t>(ctx.cfg.groups_per_pass), .comm = ctx.comm},
                   total,
                   std::move(reference));
  auto& [blas_guard, t, rp, mw, bar] = ss;
  {
    // the controllers' settings come from the configuration; a resumed stage keeps their state
    auto& ctl = t.control();
    const auto saved = ctl;
    ctl.kl = {.value = c.kl_in_reward, .target = c.kl_target, .horizon = c.kl_horizon};
    ctl.entropy = {.coef = c.entropy_coeff, .adaptive = c.adaptive_entropy, .coef_min = c.entropy_coef_min, .coef_max = c.entropy_coef_max,
                   .delta = c.entropy_coef_delta, .target = c.entropy_target};
    if (rp.resumed) {
      ctl.kl.value = saved.kl.value;
      ctl.entropy.coef = saved.entropy.coef;
      ctl.entropy.last_entropy = saved.entropy.last_entropy;
    }
  }
  std::map<std::size_t, std::vector<std::size_t>> perms;
  const auto tpt = m->cfg.tokens_per_tile();
  const auto media = ctx.media(m);
  const bool dynamic = c.dynamic_sample != "none";
  // advantage_group "item": a row and its mirrored twin share one baseline, so they are sampled on
  // one rank and normalised together (the config requires both_orders and the grpo estimator)
  const bool item_groups = c.advantage_group == "item";
  const msrl::grpo::group_filter_options filter{
      .rule = c.dynamic_sample == "ms_swift"   ? msrl::grpo::group_filter_rule::ms_swift_zero_std
              : c.dynamic_sample == "openrlhf" ? msrl::grpo::group_filter_rule::openrlhf_range
                                               : msrl::grpo::group_filter_rule::verl_zero_std,
      .lo = c.dynamic_sample_lo,
      .hi = c.dynamic_sample_hi};
  for (std::int64_t step = rp.step; step < total; ++step) {
    std::vector<msrl::trainer::grpo_group> groups;
    std::vector<double> columns; // this rank's reward columns, row-major [completions, functions]
    const auto t_start = std::chrono::steady_clock::now();
    // one slot's group: the row (its mirrored twin for odd slots with both_orders), G completions
    // sampled with `seed`, their rewards; `stats` collects reward, accuracy, format, length and
    // -logp (entropy estimate) sums over the completions
    struct slot_group {
      msrl::trainer::grpo_group group;
      std::array<double, 5> stats{};
      std::vector<double> columns; ///< the reward functions' raw values, [G, functions] (verl_gdpo)
    };
    const auto score_slot = [&](const record& r, const encoded_prompt& p, const sampled_group& g) {
      slot_group out;
      std::vector<double> rw(g.texts.size()), terms(rewards.size());
      for (std::size_t k = 0; k < g.texts.size(); ++k) {
        // the generation facts the length rewards read: token count, and truncation (no stop token)
        const auto len = g.s.lengths[k];
        const bool truncated = len <= 0 || g.s.tokens[static_cast<std::int64_t>(k)][len - 1].item<std::int64_t>() != ctx.im_end;
        rw[k] = rewards.score_terms({.completion = g.texts[k], .solution = r.solution, .task_type = r.task_type,
                                     .completion_tokens = static_cast<std::size_t>(std::max<std::int64_t>(len, 0)), .truncated = truncated},
                                    terms);
        out.columns.insert(out.columns.end(), terms.begin(), terms.end());
        out.stats[0] += rw[k];
        if (acc_col >= 0) out.stats[1] += terms[static_cast<std::size_t>(acc_col)];
        if (fmt_col >= 0) out.stats[2] += terms[static_cast<std::size_t>(fmt_col)];
        out.stats[3] += static_cast<double>(g.s.lengths[k]);
        out.stats[4] -= g.s.logprobs[static_cast<std::int64_t>(k)].sum().item<double>();
      }
      out.group = {.prompt_ids = torch::tensor(p.ids, at::kLong), .pixel_values = p.pixel_values, .completions = g.s.tokens,
                   .mask = g.s.mask, .old_logprobs = g.s.logprobs, .rewards = std::move(rw)};
      return out;
    };
    // sums over this rank's trained completions (the stats above, then their count), replacement
    // draws, and groups the dynamic-sampling rule still drops after the last draw
    double sums[5] = {0, 0, 0, 0, 0}, count = 0, resampled = 0, still_dropped = 0, items = 0, flat_items = 0;
    const std::size_t unit = c.both_orders ? 2 : 1; // slots drawn (and replaced) together
    // this rank's units: its slots, the row drawn for them, their groups
    struct unit_draw {
      std::size_t u;
      std::vector<std::size_t> mine;
      const record* drawn;
      std::vector<slot_group> got;
      bool settled = false;
    };
    std::vector<unit_draw> units;
    for (std::size_t u = 0; u < P / unit; ++u) {
      // the rank of a unit: per slot as always without dynamic sampling; per unit with it, so that
      // A/B twins are replaced together
      std::vector<std::size_t> mine;
      for (std::size_t j = u * unit; j < (u + 1) * unit; ++j)
        if (static_cast<int>((dynamic || item_groups ? u : j) % static_cast<std::size_t>(ctx.world())) == ctx.rank())
          mine.push_back(j);
      if (mine.empty()) continue;
      const auto gi = static_cast<std::size_t>(step) * fresh + u;
      units.push_back({.u = u, .mine = std::move(mine), .drawn = &rows[row_at(ctx, stage, n, gi, perms)], .got = {}});
    }
    // rounds: the slots of every unsettled unit sampled together (sampling_workers at a time);
    // with dynamic sampling a unit the rule drops draws another row for the next round
    for (int attempt = 0;; ++attempt) {
      std::vector<record> slot_rows;
      std::vector<encoded_prompt> prompts;
      std::vector<std::uint64_t> seeds;
      std::vector<std::size_t> owner;
      for (std::size_t k = 0; k < units.size(); ++k) {
        if (units[k].settled) continue;
        units[k].got.clear();
        for (const auto j : units[k].mine) {
          slot_rows.push_back(c.both_orders && j % 2 == 1 ? mirrored(*units[k].drawn) : *units[k].drawn);
          prompts.push_back(encode_prompt(slot_rows.back(), slot_rows.back().messages, c.system, ctx.tok, tpt, media));
          seeds.push_back(attempt == 0 ? derive_seed(ctx.cfg.seed, stage, static_cast<std::uint64_t>(step), j)
                                       : derive_seed(ctx.cfg.seed, stage + "/resample", static_cast<std::uint64_t>(step),
                                                     j * 1024 + static_cast<std::uint64_t>(attempt)));
          owner.push_back(k);
        }
      }
      if (prompts.empty()) break;
      auto sampled = sample_texts(ctx, m, prompts, seeds, c.num_generations, c.temperature, c.top_p, c.top_k, c.max_completion);
      for (std::size_t i = 0; i < sampled.size(); ++i) units[owner[i]].got.push_back(score_slot(slot_rows[i], prompts[i], sampled[i]));
      for (auto& ud : units) {
        if (ud.settled) continue;
        ud.settled = true;
        if (!dynamic) continue;
        // keep the unit when any of its groups (with item groups: the item's one group) carries a
        // signal under the rule
        const auto signal = [&](std::span<const double> r) {
          std::uint8_t k = 0;
          msrl::grpo::filter_groups(r, r.size(), filter, std::span<std::uint8_t>(&k, 1));
          return k != 0;
        };
        bool keep = false;
        if (item_groups) {
          std::vector<double> r;
          for (const auto& sg : ud.got) r.insert(r.end(), sg.group.rewards.begin(), sg.group.rewards.end());
          keep = signal(r);
        } else {
          for (const auto& sg : ud.got) keep = keep || signal(sg.group.rewards);
        }
        if (keep) continue;
        if (attempt == c.max_resample_times) {
          still_dropped += static_cast<double>(ud.got.size());
          continue;
        }
        resampled += static_cast<double>(ud.got.size());
        ud.settled = false;
        ud.drawn = &rows[derive_seed(ctx.cfg.seed, stage + "/resample-row", static_cast<std::uint64_t>(step), ud.u * 1024 + static_cast<std::uint64_t>(attempt)) % n];
      }
    }
    // item groups: the advantages of a row's and its twin's completions, normalised over both
    // groups; each order's own group still gives the zero-std and reward statistics
    if (item_groups)
      for (auto& ud : units) {
        std::vector<std::vector<double>> r;
        for (const auto& sg : ud.got) r.push_back(sg.group.rewards);
        const auto ia = item_advantages(r, preset.advantages);
        items += 1;
        flat_items += static_cast<double>(ia.stats.zero_std_groups);
        for (std::size_t k = 0; k < ud.got.size(); ++k) ud.got[k].group.advantages = torch::tensor(ia.per_group[k], at::kFloat);
      }
    for (auto& ud : units)
      for (auto& sg : ud.got) {
        for (int k = 0; k < 5; ++k) sums[k] += sg.stats[static_cast<std::size_t>(k)];
        count += static_cast<double>(sg.group.rewards.size());
        columns.insert(columns.end(), sg.columns.begin(), sg.columns.end());
        groups.push_back(std::move(sg.group));
      }
    const double lr = scheduled_lr(c.lr, c.warmup, step, total);
    t.set_lr(lr);
    const auto t_sampled = std::chrono::steady_clock::now();
    // the estimator over this rank's whole step batch (and the KL in the reward), as per-token advantages
    msrl::grpo::estimate_stats es;
    double est_rows = 0;
    if (est != msrl::grpo::estimator::grpo || kl_reward) {
      std::vector<std::int64_t> offsets{0};
      std::vector<double> scores;
      for (const auto& g : groups) {
        const auto G = g.completions.size(0), L = g.completions.size(1);
        for (std::int64_t i = 0; i < G; ++i) offsets.push_back(offsets.back() + L);
        for (const double r : g.rewards) scores.push_back(std::isfinite(r) || est == msrl::grpo::estimator::grpo ? r : 0.0);
      }
      const auto N = static_cast<std::size_t>(offsets.back());
      std::vector<float> old(N), refl(N), adv(N);
      std::vector<std::uint8_t> mask(N);
      std::size_t o = 0;
      for (const auto& g : groups) {
        const auto cnt = static_cast<std::size_t>(g.completions.numel());
        const at::Tensor mk = g.mask.to(at::kCPU, at::kByte).contiguous();
        std::copy_n(mk.data_ptr<std::uint8_t>(), cnt, mask.begin() + static_cast<std::ptrdiff_t>(o));
        if (kl_reward) {
          const at::Tensor ol = g.old_logprobs.to(at::kCPU, at::kFloat).contiguous(), rl = t.reference_logprobs(g, c.temperature);
          std::copy_n(ol.data_ptr<float>(), cnt, old.begin() + static_cast<std::ptrdiff_t>(o));
          std::copy_n(rl.data_ptr<float>(), cnt, refl.begin() + static_cast<std::ptrdiff_t>(o));
        }
        o += cnt;
      }
      const auto G = static_cast<std::size_t>(c.num_generations);
      msrl::grpo::estimate_options eo{.group = preset.advantages, .gamma = c.gamma};
      eo.kl = openrlhf ? msrl::grpo::kl_reward_options::openrlhf(t.control().kl.value, kl_est)
                       : msrl::grpo::kl_reward_options::verl(t.control().kl.value, kl_est);
      if (!kl_reward) eo.kl.beta = 0.0;
      const auto weights = rewards.weights();
      for (auto& v : columns)
        if (!std::isfinite(v)) v = 0.0; // verl's GDPO reads every component; an unscored one counts 0
      const msrl::grpo::estimate_inputs<double, float, std::uint8_t> in{
          msrl::token_layout::packed(std::span<const std::int64_t>(offsets)), std::span<const double>(scores), G,
          std::span<const std::uint8_t>(mask), std::span<const float>(old), std::span<const float>(refl),
          std::span<const double>(columns), rewards.size(), std::span<const double>(weights)};
      es = msrl::grpo::estimate_advantages(msrl::backend::reference{}, est, in, std::span<float>(adv), eo);
      est_rows = static_cast<double>(scores.size());
      o = 0;
      for (auto& g : groups) {
        const auto cnt = static_cast<std::size_t>(g.completions.numel());
        g.advantages = torch::from_blob(adv.data() + o, g.completions.sizes(), at::kFloat).clone();
        o += cnt;
      }
    }
    auto& ctl = t.control();
    const double kl_coef = ctl.kl.value, entropy_coef = ctl.entropy.applied();
    const auto st = msrl::trainer::grpo_updates(t, groups, preset,
                                                 {.num_iterations = c.num_iterations, .temperature = c.temperature,
                                                  .entropy_coeff = entropy_coef, .measure_entropy = ctl.entropy.adaptive});
    if (kl_reward) {
      // the controller's input over every rank: the mean over rows of each row's masked-mean KL
      double kv[2] = {es.kl.row_mean * est_rows, est_rows};
      if (ctx.comm && ctx.world() > 1) {
        auto v = torch::tensor(std::vector<double>(kv, kv + 2), at::kDouble);
        ctx.comm->all_reduce_sum(v);
        kv[0] = v[0].item<double>();
        kv[1] = v[1].item<double>();
      }
      ctl.kl.update(kv[1] > 0 ? kv[0] / kv[1] : 0.0, kv[1]);
      es.kl.row_mean = kv[1] > 0 ? kv[0] / kv[1] : 0.0;
    }
    ctl.entropy.update(st.entropy);
    const double sample_s = std::chrono::duration<double>(t_sampled - t_start).count();
    const double train_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_sampled).count();
    double tot[10] = {sums[0], sums[1], sums[2], sums[3], sums[4], count, resampled, still_dropped, items, flat_items};
    if (ctx.comm && ctx.world() > 1) {
      auto v = torch::tensor(std::vector<double>(tot, tot + 10), at::kDouble);
      ctx.comm->all_reduce_sum(v);
      for (int k = 0; k < 10; ++k) tot[k] = v[k].item<double>();
    }
    const double N = std::max(1.0, tot[5]);
    const double reward = tot[0] / N, accuracy = tot[1] / N, fmt = tot[2] / N, length = tot[3] / N;
    const double entropy = tot[3] > 0 ? tot[4] / tot[3] : 0.0;
    if (mw) {
      std::vector<std::pair<std::string, double>> fields{{"reward", reward}, {"accuracy", accuracy}, {"format", fmt}, {"length", length}, {"entropy", entropy},
                              {"kl", st.metrics.kl_mean}, {"clip_fraction", st.metrics.clip_fraction},
                              {"clip_fraction_low", st.metrics.clip_fraction_low}, {"clip_fraction_high", st.metrics.clip_fraction_high},
                              {"ratio_mean", st.metrics.ratio_mean}, {"reward_std", st.advantages.reward_std},
                              {"zero_std_fraction", st.advantages.zero_std_fraction}, {"skipped_groups", st.skipped_groups}, {"loss", st.loss}, {"grad_norm", st.grad_norm}, {"lr", lr},
                              {"sample_seconds", sample_s}, {"train_seconds", train_s}};
      // presets with token shaping (Clip-Cov, KL-Cov, FIPO): what the shaping did
      if (preset.shaping.kind == msrl::grpo::shaping_kind::fipo) fields.emplace_back("fipo_weight_mean", st.fipo_weight_mean);
      else if (preset.shaping.kind != msrl::grpo::shaping_kind::none) fields.emplace_back("selected_tokens", st.selected_tokens);
      // dynamic sampling: groups replaced by a fresh draw, and groups still dropped after the last one
      if (dynamic) {
        fields.emplace_back("resampled_groups", tot[6]);
        fields.emplace_back("dropped_groups", tot[7]);
      }
      // item groups: the share of items (a row and its twin) whose 2 G rewards are all equal
      if (item_groups) fields.emplace_back("item_zero_std_fraction", tot[8] > 0 ? tot[9] / tot[8] : 0.0);
      // the KL in the reward (its coefficient in this step, the KL it measured) and the entropy controller
      if (kl_reward) {
        fields.emplace_back("kl_in_reward", es.kl.row_mean);
        fields.emplace_back("kl_in_reward_coef", kl_coef);
      }
      if (c.adaptive_entropy) {
        fields.emplace_back("entropy_coef", entropy_coef);
        fields.emplace_back("policy_entropy", st.entropy);
      }
      mw->write(step, stage, fields);
    }
    bar.set_metrics(metrics_text({{"reward", reward}, {"acc", accuracy}, {"len", length}}));
    bar.update(static_cast<std::uint64_t>(step + 1));
    if ((step + 1) % ctx.cfg.save_every == 0 && step + 1 < total) save_resume(ctx, stage, m, t, step + 1);
  }
  bar.finish();
}

} // namespace msrl_pipeline
