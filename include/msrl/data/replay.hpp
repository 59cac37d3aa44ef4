#pragma once
/// \file Experience replay: a deterministic, seeded interleave of new (caption) samples with
/// replayed (text) samples at a fixed ratio per batch.
///
/// Rule. With ratio fresh:replay = f:r (T = f + r) and batch size B, batch b holds
///   k_b = floor((b+1)·B·r / T) - floor(b·B·r / T)
/// replay slots (so the running total is exact and every batch is within one of B·r/T), spread
/// evenly: slot s of the batch is a replay slot iff floor((s+1)·k_b / B) > floor(s·k_b / B).
/// Fresh samples are taken in input order, each exactly once; the mix ends when a fresh slot comes
/// up and no fresh sample is left (replay slots just before it are still filled). Replay samples
/// are drawn without replacement from a seeded permutation of the pool; when the pool runs out a
/// new permutation (seed + pass) starts, so a small pool is cycled.
///
/// Presets: 4:1 (best in the MSRL paper's Table 6) and 5:1 (the ratio stated in its §5.1).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "random.hpp"

namespace msrl::data {

struct replay_ratio {
  std::size_t fresh = 4;
  std::size_t replay = 1;
};

inline constexpr replay_ratio ratio_table6{4, 1};   ///< MSRL Table 6 (75.5 on caption VL-RewardBench)
inline constexpr replay_ratio ratio_section51{5, 1}; ///< MSRL §5.1 "new:old = 5:1"

/// A ratio as users write it: "FRESH:REPLAY" in decimal digits (fresh >= 1, each term at most
/// 1,000,000), or the presets "table6" (4:1) and "section51" (5:1). Anything else throws
/// msrl::invalid_argument naming `where` and `arg` (e.g. "msrl-train config", "sft.replay_ratio").
inline replay_ratio parse_replay_ratio(std::string_view s, std::string_view where, std::string_view arg) {
  if (s == "table6") return ratio_table6;
  if (s == "section51") return ratio_section51;
  const std::string rule = "must be FRESH:REPLAY (e.g. 4:1), table6 or section51 (got '" + std::string(s) + "')";
  const auto colon = s.find(':');
  require(colon != std::string_view::npos && colon > 0 && colon + 1 < s.size(), where, arg, rule);
  const auto num = [&](std::string_view t) {
    std::size_t v = 0;
    for (const char ch : t) {
      require(ch >= '0' && ch <= '9', where, arg, rule);
      v = v * 10 + static_cast<std::size_t>(ch - '0');
      require(v <= 1000000, where, arg, "must have terms of at most 1000000 (got '" + std::string(s) + "')");
    }
    return v;
  };
  const replay_ratio r{num(s.substr(0, colon)), num(s.substr(colon + 1))};
  require(r.fresh >= 1, where, arg, "needs at least 1 fresh sample per cycle (got '" + std::string(s) + "')");
  return r;
}

struct mix_options {
  replay_ratio ratio = ratio_table6;
  std::size_t batch_size = 0; ///< 0: one batch = fresh + replay of the ratio (pattern FFFFR for 4:1)
  std::uint64_t seed = 0;
};

/// Streaming mixer: ask next_is_replay(), then take_fresh() or take_replay().
class replay_mixer {
public:
  replay_mixer(std::size_t replay_pool_size, mix_options opt) : opt_(opt), pool_(replay_pool_size) {
    constexpr const char* where = "msrl::data::replay_mixer";
    require(opt.ratio.fresh >= 1, where, "ratio.fresh", "must be at least 1");
    require(opt.ratio.replay == 0 || replay_pool_size > 0, where, "replay_pool_size",
            "must be > 0 when ratio.replay > 0");
    const std::size_t T = opt.ratio.fresh + opt.ratio.replay;
    if (opt_.batch_size == 0) opt_.batch_size = T;
    // B * r must not overflow in the slot arithmetic.
    require(opt_.batch_size <= (std::size_t{1} << 31) && T <= (std::size_t{1} << 31), where, "options",
            "batch_size and the ratio terms must be below 2^31");
    start_batch();
  }

  /// Whether the next output slot is a replay slot.
  bool next_is_replay() const noexcept { return slot_is_replay(slot_); }

  /// Consumes a fresh slot.
  void take_fresh() {
    require(!next_is_replay(), "msrl::data::replay_mixer::take_fresh", "slot", "is a replay slot");
    ++fresh_taken_;
    advance();
  }

  /// Consumes a replay slot and returns the pool index to emit.
  std::size_t take_replay() {
    require(next_is_replay(), "msrl::data::replay_mixer::take_replay", "slot", "is a fresh slot");
    if (cursor_ == perm_.size()) {
      perm_ = seeded_permutation(pool_, opt_.seed + pass_++);
      cursor_ = 0;
    }
    ++replay_taken_;
    const std::size_t idx = perm_[cursor_++];
    advance();
    return idx;
  }

  std::size_t fresh_taken() const noexcept { return fresh_taken_; }
  std::size_t replay_taken() const noexcept { return replay_taken_; }
  const mix_options& options() const noexcept { return opt_; }

private:
  bool slot_is_replay(std::size_t s) const noexcept {
    const std::size_t B = opt_.batch_size;
    return (s + 1) * k_ / B > s * k_ / B;
  }
  void start_batch() {
    const std::size_t B = opt_.batch_size, r = opt_.ratio.replay, T = opt_.ratio.fresh + r;
    // floor((b+1)·B·r/T) - floor(b·B·r/T), computed from the running remainder to avoid overflow.
    const std::size_t num = B * r + rem_;
    k_ = num / T;
    rem_ = num % T;
    slot_ = 0;
  }
  void advance() {
    if (++slot_ == opt_.batch_size) start_batch();
  }

  mix_options opt_;
  std::size_t pool_;
  std::size_t k_ = 0, rem_ = 0, slot_ = 0;
  std::vector<std::size_t> perm_;
  std::size_t cursor_ = 0;
  std::uint64_t pass_ = 0;
  std::size_t fresh_taken_ = 0, replay_taken_ = 0;
};

/// One output position of a mix.
struct mix_slot {
  bool replay = false;
  std::size_t index = 0; ///< into the fresh list or the replay pool
};

/// The whole plan for n_fresh new samples and a pool of n_replay (see the file comment).
inline std::vector<mix_slot> mix_plan(std::size_t n_fresh, std::size_t n_replay, const mix_options& opt) {
  replay_mixer m(n_replay, opt);
  std::vector<mix_slot> out;
  while (true) {
    if (m.next_is_replay()) {
      out.push_back({true, m.take_replay()});
    } else {
      if (m.fresh_taken() == n_fresh) break;
      out.push_back({false, m.fresh_taken()});
      m.take_fresh();
    }
  }
  return out;
}

} // namespace msrl::data
