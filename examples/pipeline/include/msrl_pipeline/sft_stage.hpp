#pragma once
/// \file The SFT stages (pretrain, pretrain_media, sft, the CMKD SFT): tokenized examples,
/// collation, the media-grounding probe and the stage loop.
#include "run_context.hpp"

namespace msrl_pipeline {

/// One tokenized SFT example: the prompt, then the target and <|im_end|> (the learned tokens);
/// `alt` is empty or holds, per token, the open choice's other token (-1 elsewhere).
struct sft_example {
  std::vector<std::int64_t> ids;
  std::vector<std::int64_t> mask;
  std::vector<std::int64_t> alt;
  at::Tensor pixels;
};

/// The token ids of sft_config::open_choice's two words as they follow a space in a target;
/// empty when the option is off. Each word must be one token (msrl::invalid_argument naming `key`,
/// the configuration's name for `c`, otherwise).
inline std::vector<std::int64_t> open_choice_ids(const run_context& ctx, const std::string& key, const sft_config& c) {
  std::vector<std::int64_t> ids;
  for (const auto& w : c.open_choice) {
    const auto t = ctx.tok.encode(" " + w);
    msrl::require(t.size() == 1, "msrl-train config", key + ".open_choice",
                  "must hold words the tokenizer encodes as one token each ('" + w + "' is " + std::to_string(t.size()) + " tokens)");
    ids.push_back(t[0]);
  }
  return ids;
}

inline sft_example make_sft_example(const run_context& ctx, const internvl& m, const record& r, const std::string& target, int max_length,
                                    const std::vector<std::int64_t>& open = {}) {
  auto p = encode_prompt(r, r.messages, "", ctx.tok, m->cfg.tokens_per_tile(), ctx.media(m));
  msrl::require(!target.empty(), "msrl-train", "messages", r.source + ": an SFT row needs a final assistant turn");
  auto t = ctx.tok.encode(target);
  t.push_back(ctx.im_end);
  sft_example e;
  e.ids = p.ids;
  e.ids.insert(e.ids.end(), t.begin(), t.end());
  e.mask.assign(p.ids.size(), 0);
  e.mask.resize(e.ids.size(), 1);
  if (open.size() == 2)
    if (const auto it = std::find_if(t.begin(), t.end(), [&](std::int64_t id) { return id == open[0] || id == open[1]; }); it != t.end()) {
      e.alt.assign(e.ids.size(), -1);
      e.alt[p.ids.size() + static_cast<std::size_t>(it - t.begin())] = *it == open[0] ? open[1] : open[0];
    }
  msrl::require(static_cast<int>(e.ids.size()) <= max_length, "msrl-train", "max_length",
                r.source + ": the row has " + std::to_string(e.ids.size()) + " tokens, more than max_length " + std::to_string(max_length));
  e.pixels = p.pixel_values;
  return e;
}

inline msrl::trainer::sft_batch collate(const std::vector<const sft_example*>& ex, std::int64_t pad) {
  std::size_t T = 0;
  for (auto* e : ex) T = std::max(T, e->ids.size());
  auto ids = torch::full({static_cast<std::int64_t>(ex.size()), static_cast<std::int64_t>(T)}, pad, at::kLong);
  auto mask = torch::zeros({static_cast<std::int64_t>(ex.size()), static_cast<std::int64_t>(T)}, at::kLong);
  at::Tensor alt;
  std::vector<at::Tensor> px;
  for (std::size_t i = 0; i < ex.size(); ++i) {
    const auto n = static_cast<std::int64_t>(ex[i]->ids.size());
    ids[static_cast<std::int64_t>(i)].narrow(0, 0, n).copy_(torch::tensor(ex[i]->ids, at::kLong));
    mask[static_cast<std::int64_t>(i)].narrow(0, 0, n).copy_(torch::tensor(ex[i]->mask, at::kLong));
    if (!ex[i]->alt.empty()) {
      if (!alt.defined()) alt = torch::full_like(ids, -1);
      alt[static_cast<std::int64_t>(i)].narrow(0, 0, n).copy_(torch::tensor(ex[i]->alt, at::kLong));
    }
    if (ex[i]->pixels.defined()) px.push_back(ex[i]->pixels);
  }
  return {ids, mask, px.empty() ? at::Tensor() : torch::cat(px, 0), alt};
}

/// Per-token loss of the learned tokens with each example's own media and with the media of the
/// next example of the same media shape: how much the model reads the pixels. Uses up to 64 of
/// the examples that share the most common media shape; rows == 0 when fewer than two carry media.
struct grounding {
  double own = 0, swapped = 0;
  std::size_t rows = 0;
};

inline grounding media_grounding(const run_context& ctx, internvl& m, const std::vector<sft_example>& ex) {
  at::NoGradGuard ng;
  m->eval();
  std::map<std::vector<std::int64_t>, std::vector<const sft_example*>> by_shape;
  for (const auto& e : ex)
    if (e.pixels.defined()) by_shape[e.pixels.sizes().vec()].push_back(&e);
  const std::vector<const sft_example*>* group = nullptr;
  for (const auto& [shape, g] : by_shape)
    if (!group || g.size() > group->size()) group = &g;
  if (!group || group->size() < 2) return {};
  const std::size_t n = std::min<std::size_t>(group->size(), 64);
  double own = 0, swapped = 0, tokens = 0;
  for (std::size_t k = 0; k < n; k += 8) {
    const std::vector<const sft_example*> part(group->begin() + static_cast<std::ptrdiff_t>(k),
                                               group->begin() + static_cast<std::ptrdiff_t>(std::min(n, k + 8)));
    const auto b = collate(part, ctx.pad);
    std::vector<at::Tensor> other;
    for (std::size_t i = 0; i < part.size(); ++i) other.push_back((*group)[(k + i + 1) % n]->pixels);
    const auto T = b.input_ids.size(1);
    const auto tgt = b.input_ids.narrow(1, 1, T - 1).unsqueeze(2);
    const auto mask = b.target_mask.narrow(1, 1, T - 1).to(at::kFloat);
    const auto nll = [&](const at::Tensor& px) {
      const auto lp = m->forward(b.input_ids, px).narrow(1, 0, T - 1).to(at::kFloat).log_softmax(-1).gather(2, tgt).squeeze(2);
      return -(lp * mask).sum().item<double>();
    };
    own += nll(b.pixel_values);
    swapped += nll(torch::cat(other, 0));
    tokens += mask.sum().item<double>();
  }
  return {own / tokens, swapped / tokens, n};
}

/// SFT over `rows` (each row's final assistant turn, or `targets[i]` when given) with `c`; `key` is
/// the configuration's name for `c` in error messages (the stage's name when empty).
inline void run_sft(run_context& ctx, const std::string& stage, internvl& m, const std::vector<record>& rows, const sft_config& c,
                    const std::vector<std::string>& targets = {}, const std::string& key = {}) {
  std::vector<sft_example> ex;
  ex.reserve(rows.size());
  const auto open = open_choice_ids(ctx, key.empty() ? stage : key, c);
  for (std::size_t i = 0; i < rows.size(); ++i)
    ex.push_back(make_sft_example(ctx, m, rows[i], targets.empty() ? assistant_target(rows[i]) : targets[i], c.max_length, open));
  const std::size_t n = ex.size(), B = static_cast<std::size_t>(c.batch_size);
  const auto per_epoch = static_cast<std::int64_t>((n + B - 1) / B);
  const std::int64_t total = c.max_steps > 0 ? c.max_steps : per_epoch * c.epochs;
  stage_session ss(ctx, stage, m, {.lr = c.lr, .weight_decay = c.weight_decay, .max_grad_norm = c.max_grad_norm,
                                    .freeze_vision = c.freeze_vision, .freeze_projector = c.freeze_projector, .comm = ctx.comm}, total);
  auto& [blas_guard, t, rp, mw, bar] = ss;
  std::map<std::size_t, std::vector<std::size_t>> perms;
  constexpr std::size_t micro = 8;
  for (std::int64_t step = rp.step; step < total; ++step) {
    std::vector<const sft_example*> mine;
    for (std::size_t j = 0; j < B; ++j)
      if (static_cast<int>(j % static_cast<std::size_t>(ctx.world())) == ctx.rank())
        mine.push_back(&ex[row_at(ctx, stage, n, static_cast<std::size_t>(step) * B + j, perms)]);
    std::vector<msrl::trainer::sft_batch> mb;
    for (std::size_t k = 0; k < mine.size(); k += micro)
      mb.push_back(collate({mine.begin() + static_cast<std::ptrdiff_t>(k), mine.begin() + static_cast<std::ptrdiff_t>(std::min(mine.size(), k + micro))}, ctx.pad));
    for (auto& b : mb) b.alternative_weight = c.open_choice_weight;
    const double lr = scheduled_lr(c.lr, c.warmup, step, total);
    t.set_lr(lr);
    const auto st = t.sft_step(mb);
    if (mw) mw->write(step, stage, {{"loss", st.loss}, {"grad_norm", st.grad_norm}, {"tokens", st.tokens}, {"lr", lr}});
    bar.set_metrics(metrics_text({{"loss", st.loss}}));
    bar.update(static_cast<std::uint64_t>(step + 1));
    if ((step + 1) % ctx.cfg.save_every == 0 && step + 1 < total) save_resume(ctx, stage, m, t, step + 1);
  }
  bar.finish();
  if (const auto g = media_grounding(ctx, m, ex); g.rows > 0 && ctx.leader()) {
    char line[256];
    std::snprintf(line, sizeof line, "%s: loss per target token on %zu rows: %.3f with their own media, %.3f with another row's (gap %.3f)",
                  stage.c_str(), g.rows, g.own, g.swapped, g.swapped - g.own);
    ctx.say(line);
  }
}

} // namespace msrl_pipeline
