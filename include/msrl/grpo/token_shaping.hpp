#pragma once
/// \file The per-step token selection or weighting that some loss forms take from the current
/// forward's log-probs before the loss: verl's Clip-Cov keep mask and KL-Cov selection
/// (cov_selection.hpp) and ms-swift's FIPO influence weights (fipo.hpp). A preset names the one its
/// peer computes (preset::shaping); a trainer calls shape_tokens on each micro-batch with the detached
/// log-probs of its forward and passes the result to the loss:
///
///   grpo::token_shaping_buffers<float, std::uint8_t> buf;
///   grpo::shape_tokens(preset.shaping, preset.loss, layout, logp, old_logp, adv, mask, draw, buf);
///   in.policy_mask = buf.policy_mask;  // Clip-Cov, KL-Cov (empty otherwise)
///   in.is_weights = buf.is_weights;    // FIPO (empty otherwise)
///
/// Clip-Cov's clipped-branch test uses the loss's own clip_low / clip_high (`loss`), so the selection
/// and the surrogate cannot disagree; its random draw is seeded with clip_cov.seed mixed with `draw`
/// (a trainer passes e.g. its step and group index, so a resumed run draws what the uninterrupted
/// one drew). Without old log-probs (on-policy) every ratio is 1.
#include <cstdint>
#include <span>
#include <vector>

#include "../core/error.hpp"
#include "../core/token_layout.hpp"
#include "cov_selection.hpp"
#include "fipo.hpp"
#include "loss_types.hpp"

namespace msrl::grpo {

enum class shaping_kind {
  none,     ///< nothing before the loss
  clip_cov, ///< clip_cov_mask -> loss_inputs::policy_mask
  kl_cov,   ///< kl_cov_mask -> loss_inputs::policy_mask (read by loss_form::kl_cov)
  fipo      ///< fipo_weights -> loss_inputs::is_weights
};

struct token_shaping {
  shaping_kind kind = shaping_kind::none;
  clip_cov_options clip_cov{}; ///< ratio, bounds and seed (clip_low / clip_high come from the loss)
  kl_cov_options kl_cov{};
  fipo_options fipo{};
};

/// What shape_tokens wrote; the vectors are empty when the kind does not produce them.
template <class T, class M>
struct token_shaping_buffers {
  std::vector<M> policy_mask;
  std::vector<T> is_weights;
  cov_selection selection{}; ///< Clip-Cov / KL-Cov counts
  fipo_stats fipo{};         ///< FIPO statistics
};

/// Fills `out` for `s` (file comment). `old_logp` empty = on-policy (the ratio is 1 everywhere).
template <class T, class M>
void shape_tokens(const token_shaping& s, const loss_options& loss, const token_layout& layout, std::span<const T> logp,
                  std::span<const T> old_logp, std::span<const T> advantages, std::span<const M> mask,
                  std::uint64_t draw, token_shaping_buffers<T, M>& out) {
  constexpr const char* where = "msrl::grpo::shape_tokens";
  out.policy_mask.clear();
  out.is_weights.clear();
  out.selection = {};
  out.fipo = {};
  if (s.kind == shaping_kind::none) return;
  const std::size_t N = layout.total_tokens;
  require<shape_error>(logp.size() == N, where, "logp", "must have one element per token (" + std::to_string(N) + ")");
  require<shape_error>(old_logp.empty() || old_logp.size() == N, where, "old_logp", "must be empty or match logp");
  const std::span<const T> old = old_logp.empty() ? logp : old_logp;
  switch (s.kind) {
  case shaping_kind::clip_cov: {
    clip_cov_options o = s.clip_cov;
    o.clip_low = loss.clip_low;
    o.clip_high = loss.clip_high;
    o.seed = s.clip_cov.seed ^ (draw * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
    out.policy_mask.resize(N);
    out.selection = clip_cov_mask(layout, logp, old, advantages, mask, o, out.policy_mask);
    break;
  }
  case shaping_kind::kl_cov:
    out.policy_mask.resize(N);
    out.selection = kl_cov_mask(layout, logp, advantages, mask, s.kl_cov, out.policy_mask);
    break;
  case shaping_kind::fipo:
    out.is_weights.resize(N);
    out.fipo = fipo_weights(layout, logp, old, advantages, mask, s.fipo, out.is_weights);
    break;
  case shaping_kind::none:
    break;
  }
}

} // namespace msrl::grpo
