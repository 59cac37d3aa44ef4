#pragma once
/// \file The msrl-train configuration: one JSON file plus `--set key.path=value` overrides.
/// Defaults mirror the MSRL release scripts (G=8, GRPO lr 1e-6, SFT lr 1e-5, CMKD SFT lr 2e-6,
/// beta 0, epsilon 0.2/0.28, no std scaling, caption:text replay 5:1, top-k 50, top-p 0.9);
/// examples/pipeline/configs/tiny.json overrides what a from-scratch tiny model needs.
/// Every key is checked: an unknown key, a wrong type or an out-of-range value throws
/// msrl::invalid_argument naming the key path.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <msrl/core/error.hpp>
#include <msrl/grpo/estimate.hpp>
#include <msrl/data/replay.hpp>

namespace msrl_pipeline {

using json = nlohmann::json;

/// The stages in recipe order. "pretrain" and "pretrain_media" are not part of MSRL: they stand in
/// for the backbone's own pretraining (captioning single images, then image pairs, videos and video
/// pairs) when the model starts from random weights.
inline const std::vector<std::string>& all_stages() {
  static const std::vector<std::string> s{"pretrain", "pretrain_media", "sft", "text_grpo", "caption_grpo", "cmkd", "mm_grpo", "eval"};
  return s;
}

/// "pretrain, pretrain_media, sft, ..." for error messages.
inline std::string stage_list() {
  std::string t;
  for (const auto& s : all_stages()) t += (t.empty() ? "" : ", ") + s;
  return t;
}

/// The stages that stand in for the backbone's pretraining (shared by every ablation variant).
inline bool is_pretraining_stage(const std::string& s) { return s == "pretrain" || s == "pretrain_media"; }

struct sft_config {
  std::string file;
  std::string replay_file;          ///< rows of another file mixed in ("" = none), e.g. captioning rows
  std::string replay_ratio = "4:1"; ///< fresh:replay
  double lr = 1e-5;
  double warmup = 0.05;     ///< fraction of the steps with a linear warm-up
  int epochs = 3;
  int batch_size = 16;      ///< sequences per optimizer step (over all processes)
  int max_steps = 0;        ///< 0: the epochs decide
  int max_length = 4096;    ///< longer sequences are an error
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;
  bool freeze_vision = true;
  bool freeze_projector = true;
  /// Two words (none by default): the first of them in each target is trained towards a soft
  /// target, 1 - open_choice_weight on the row's word and open_choice_weight on the other
  /// (msrl::trainer::sft_batch::alternative_ids), e.g. {"matches", "differs"}: the cold start
  /// teaches the format and the rationale and leaves the verdict unsure, to RL.
  std::vector<std::string> open_choice;
  double open_choice_weight = 0.5; ///< the soft target's mass on the word not in the row, in (0, 1)
};

struct grpo_stage_config {
  std::string file;
  std::string replay_file;   ///< textual samples replayed into this stage ("" = none)
  std::string replay_ratio = "5:1"; ///< fresh:replay
  std::string preset = "msrl_release";
  std::string reward = "release";   ///< msrl::reward preset name
  std::string system;               ///< system prompt ("" = the data's own)
  double lr = 1e-6;
  double warmup = 0.0;
  int epochs = 1;
  int prompts_per_step = 16;        ///< over all processes; x num_generations completions
  int num_generations = 8;
  /// Optimizer updates per sampled batch (TRL's num_iterations, verl's ppo_epochs): the step's groups
  /// are trained on this many times, each update's ratio taken against the sampler's log-probs, so
  /// from the second update on the clip acts. 1: on-policy, one update per batch.
  int num_iterations = 1;
  int max_steps = 0;
  int max_completion = 1024;
  double temperature = 1.0, top_p = 0.9;
  int top_k = 50;
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;
  double entropy_coeff = 0.0; ///< verl's actor.entropy_coeff: loss -= c * entropy aggregated like the loss
  bool freeze_vision = true;
  bool freeze_projector = true;
  /// Each step's prompts come in A/B pairs: prompts_per_step / 2 rows and each one's mirrored twin
  /// (the candidates swapped, msrl_pipeline::mirrored), so that a bias towards one letter earns
  /// nothing and only judging the candidates does.
  bool both_orders = false;
  /// Which completions share an advantage baseline: "prompt" (GRPO's group: the G completions of one
  /// prompt) or "item" (with both_orders: the 2 G completions of a row and its mirrored twin, the
  /// same item judged in both orders, normalised together by the preset's rule). With "item" a
  /// judge that is right in one order and wrong in the other gets a signal where each order's own
  /// group is flat.
  std::string advantage_group = "prompt";
  /// Dynamic sampling (DAPO): a prompt whose group the rule drops (msrl::grpo::filter_groups: "verl"
  /// population std 0, "ms_swift" unbiased std 0, "openrlhf" mean outside (dynamic_sample_lo, _hi))
  /// is replaced by another row, drawn and sampled again, up to max_resample_times times (ms-swift's
  /// dynamic_sample / max_resample_times); "none" keeps every group. With both_orders the A/B twins
  /// are replaced together, when both are dropped.
  std::string dynamic_sample = "none";
  int max_resample_times = 3;
  double dynamic_sample_lo = 0.0, dynamic_sample_hi = 1.0;
  /// The advantage estimator (msrl::grpo::estimate_advantages; names in docs/grpo-math.md): "grpo"
  /// is the preset's group advantages; the others run over this process's whole step batch.
  std::string estimator = "grpo";
  double gamma = 1.0;           ///< discount of verl_reinforce_pp / openrlhf_reinforce
  /// KL penalty in the reward: its initial coefficient (0: off; needs a reference model, the policy
  /// the stage started from), the estimator of the KL (k1, abs, k2, k3) and the adaptive controller
  /// (verl / OpenRLHF AdaptiveKLController; kl_horizon 0 keeps the coefficient fixed).
  double kl_in_reward = 0.0;
  std::string kl_in_reward_estimator = "k1";
  double kl_target = 0.1, kl_horizon = 0.0;
  /// TRL's adaptive entropy coefficient (use_adaptive_entropy): entropy_coeff is the initial value.
  bool adaptive_entropy = false;
  double entropy_coef_min = 0.0, entropy_coef_max = 1.0, entropy_coef_delta = 0.005, entropy_target = 0.2;
};

struct cmkd_config {
  std::string file;
  int k = 8;                 ///< rationales sampled per sample from the caption model
  double temperature = 1.0;
  double top_p = 0.9;
  int top_k = 50;
  int max_completion = 1024;
  std::string confidence = "mean"; ///< mean | sequence | first
  std::string tie = "abstain";
  /// Smallest share of the K votes (parsable ones) the pseudo-label must hold; below it the sample
  /// is dropped (msrl::voting::cmkd_options::min_agreement; 0: any majority, the paper's rule).
  double min_agreement = 0.0;
  sft_config sft;            ///< the SFT on the selected targets (lr 2e-6, 1 epoch, vision unfrozen)
};

struct eval_config {
  std::string file;
  std::string caption_file;    ///< optional second evaluation with captions instead of media ("" = none)
  std::string text_file;       ///< held-out text judgments (stage 1's task family; "" = none)
  /// Held-out accuracy after each training stage (out/eval/<stage>.json): "own" evaluates the
  /// stage's own task family (text after sft/text_grpo, caption-based after caption_grpo, media
  /// after cmkd/mm_grpo) and the family of a GRPO stage that starts from it (caption-based after
  /// text_grpo), "all" every family with a file, "none" nothing.
  std::string trajectory = "own";
  std::string layout = "msrl"; ///< msrl (ms-swift rows, both orders) | vlrb | genai
  int k = 16;                  ///< voting@k
  double temperature = 1.0;
  double top_p = 0.9;
  int top_k = 50;
  int max_completion = 1024;
  int max_items = 0;           ///< 0: all
};

struct model_config {
  std::string init = "tiny";   ///< "tiny" (random weights of the `tiny` sizes) or a checkpoint folder
  std::string tokenizer;       ///< tokenizer.json ("" = data_dir/tokenizer.json, or the checkpoint's)
  json tiny = json::object();  ///< sizes for init = "tiny" (see tiny_model_config)
  double init_std = 0;         ///< init = "tiny": 0 keeps libtorch's default initialisation; > 0: weights ~ N(0, init_std)
                               ///< the transformers way (msrl::trainer::init_weights)
  std::string autocast = "none"; ///< mixed-precision training steps: none | bf16 | fp16 (fp16: CUDA only)
  bool fused_logprobs = true;    ///< per-token log-probs through msrl::torch_ops (false: libtorch's log_softmax + gather)
};

struct pipeline_config {
  std::string data_dir = "data/bundled";
  std::string output_dir = "runs/default";
  bool generate_data = true;   ///< write the bundled data into data_dir when it is missing
  std::uint64_t seed = 1;
  int threads = 0;             ///< torch intra-op threads (0 = leave libtorch's default)
  int blas_threads = 0;        ///< the BLAS library's own threads (0 = leave its default; blas_threads.hpp)
  int sampling_workers = 0;    ///< threads sampling prompts at once, one libtorch thread each (0 = threads, or one per core)
  int prompts_per_pass = 4;    ///< prompts each sampling worker decodes together (msrl::trainer::sample_many)
  int groups_per_pass = 1;     ///< GRPO groups whose logits come from one forward/backward pass (msrl::trainer::train_options::groups_per_pass)
  int train_workers = 0;       ///< threads running a training step's micro-batches at once, one libtorch thread each (0 = threads, or one per core; msrl::trainer::train_options::micro_batch_workers)
  int save_every = 1;          ///< optimizer steps between resumable checkpoints
  /// Media paths of data rows may resolve outside their JSONL file's folder (absolute paths,
  /// `..`, links out); false refuses such a row by name.
  bool allow_media_outside_data = false;
  bool progress = true;
  std::vector<std::string> stages{"sft", "text_grpo", "caption_grpo", "cmkd", "mm_grpo", "eval"};
  model_config model;
  sft_config pretrain, pretrain_media, sft;
  grpo_stage_config text_grpo, caption_grpo, mm_grpo;
  cmkd_config cmkd;
  eval_config eval;
  json source = json::object(); ///< the merged JSON this was read from (written next to the run)

  pipeline_config() {
    pretrain.file = "pretrain.jsonl";
    pretrain.freeze_vision = pretrain.freeze_projector = false;
    pretrain.epochs = 1;
    pretrain_media = pretrain;
    pretrain_media.file = "pretrain_media.jsonl";
    sft.file = "stage1_sft.jsonl";
    text_grpo.file = "stage1_rl.jsonl";
    text_grpo.reward = "release-stage1";
    caption_grpo.file = "stage2_caption_rl.jsonl";
    caption_grpo.replay_file = "stage1_rl.jsonl";
    mm_grpo.file = "stage3_multimodal_rl.jsonl";
    mm_grpo.freeze_vision = mm_grpo.freeze_projector = false;
    mm_grpo.prompts_per_step = 8; // per-device bs 2 x 4 GPUs x accumulation -> see docs/pipeline.md
    cmkd.file = "stage2_cmkd.jsonl";
    cmkd.sft.lr = 2e-6;
    cmkd.sft.epochs = 1;
    cmkd.sft.freeze_vision = cmkd.sft.freeze_projector = false;
    eval.file = "eval.jsonl";
    eval.caption_file = "eval_caption.jsonl";
    eval.text_file = "eval_text.jsonl";
  }
};

namespace detail {

/// Reads one JSON object's keys into fields, remembering which keys were used, then rejects the rest.
class object_reader {
public:
  object_reader(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    msrl::require(j.is_object(), "msrl-train config", path_.empty() ? "(root)" : path_, "must be a JSON object");
  }

  template <class T>
  object_reader& get(const char* key, T& out) {
    used_.insert(key);
    auto it = j_.find(key);
    if (it == j_.end()) return *this;
    const std::string where = name(key);
    if constexpr (std::is_same_v<T, bool>) {
      msrl::require(it->is_boolean(), "msrl-train config", where, "must be true or false");
      out = it->template get<bool>();
    } else if constexpr (std::is_same_v<T, std::string>) {
      msrl::require(it->is_string(), "msrl-train config", where, "must be a string");
      out = it->template get<std::string>();
    } else if constexpr (std::is_integral_v<T>) {
      msrl::require(it->is_number_integer() || it->is_number_unsigned(), "msrl-train config", where, "must be an integer");
      if constexpr (std::is_unsigned_v<T>) {
        msrl::require(it->is_number_unsigned() || it->template get<long long>() >= 0, "msrl-train config", where,
                      "must not be negative");
        out = it->template get<T>();
      } else {
        const long long v = it->template get<long long>();
        msrl::require(v >= -(1LL << 31) && v < (1LL << 31), "msrl-train config", where, "is out of range");
        out = static_cast<T>(v);
      }
    } else if constexpr (std::is_floating_point_v<T>) {
      msrl::require(it->is_number(), "msrl-train config", where, "must be a number");
      out = it->template get<T>();
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      msrl::require(it->is_array(), "msrl-train config", where, "must be an array of strings");
      out.clear();
      for (const auto& e : *it) {
        msrl::require(e.is_string(), "msrl-train config", where, "must be an array of strings");
        out.push_back(e.template get<std::string>());
      }
    } else if constexpr (std::is_same_v<T, json>) {
      msrl::require(it->is_object(), "msrl-train config", where, "must be a JSON object");
      out = *it;
    } else {
      static_assert(sizeof(T) == 0, "unsupported config field type");
    }
    return *this;
  }

  /// A nested object (absent: nothing happens).
  template <class F>
  object_reader& nested(const char* key, F&& f) {
    used_.insert(key);
    auto it = j_.find(key);
    if (it != j_.end()) {
      object_reader r(*it, name(key));
      f(r);
      r.finish();
    }
    return *this;
  }

  void finish() const {
    for (auto it = j_.begin(); it != j_.end(); ++it)
      msrl::require(used_.count(it.key()) > 0, "msrl-train config", name(it.key().c_str()), "is not a known key");
  }

  std::string name(const char* key) const { return path_.empty() ? std::string(key) : path_ + "." + key; }

private:
  const json& j_;
  std::string path_;
  std::set<std::string> used_;
};

inline void read_sft(object_reader& r, sft_config& c) {
  r.get("file", c.file).get("replay_file", c.replay_file).get("replay_ratio", c.replay_ratio).get("lr", c.lr).get("warmup", c.warmup)
      .get("epochs", c.epochs).get("batch_size", c.batch_size).get("max_steps", c.max_steps).get("max_length", c.max_length).get("weight_decay", c.weight_decay)
      .get("max_grad_norm", c.max_grad_norm).get("freeze_vision", c.freeze_vision).get("freeze_projector", c.freeze_projector).get("open_choice", c.open_choice)
      .get("open_choice_weight", c.open_choice_weight);
}

inline void read_grpo(object_reader& r, grpo_stage_config& c) {
  r.get("file", c.file).get("replay_file", c.replay_file).get("replay_ratio", c.replay_ratio).get("preset", c.preset)
      .get("reward", c.reward).get("system", c.system).get("lr", c.lr).get("warmup", c.warmup).get("epochs", c.epochs)
      .get("prompts_per_step", c.prompts_per_step).get("num_generations", c.num_generations).get("max_steps", c.max_steps)
      .get("num_iterations", c.num_iterations).get("max_completion", c.max_completion).get("temperature", c.temperature).get("top_p", c.top_p).get("top_k", c.top_k)
      .get("weight_decay", c.weight_decay).get("max_grad_norm", c.max_grad_norm).get("entropy_coeff", c.entropy_coeff)
      .get("freeze_vision", c.freeze_vision).get("freeze_projector", c.freeze_projector).get("both_orders", c.both_orders)
      .get("advantage_group", c.advantage_group).get("dynamic_sample", c.dynamic_sample).get("max_resample_times", c.max_resample_times)
      .get("dynamic_sample_lo", c.dynamic_sample_lo).get("dynamic_sample_hi", c.dynamic_sample_hi)
      .get("estimator", c.estimator).get("gamma", c.gamma).get("kl_in_reward", c.kl_in_reward)
      .get("kl_in_reward_estimator", c.kl_in_reward_estimator).get("kl_target", c.kl_target).get("kl_horizon", c.kl_horizon)
      .get("adaptive_entropy", c.adaptive_entropy).get("entropy_coef_min", c.entropy_coef_min)
      .get("entropy_coef_max", c.entropy_coef_max).get("entropy_coef_delta", c.entropy_coef_delta)
      .get("entropy_target", c.entropy_target);
}

inline void check(bool ok, const std::string& key, const std::string& rule) { msrl::require(ok, "msrl-train config", key, rule); }

inline void validate_sft(const sft_config& c, const std::string& p, bool needs_file = true) {
  check(!needs_file || !c.file.empty(), p + ".file", "must name a JSONL file");
  check(c.lr > 0 && std::isfinite(c.lr), p + ".lr", "must be a positive number");
  check(c.warmup >= 0 && c.warmup < 1, p + ".warmup", "must be in [0, 1)");
  check(c.epochs >= 1, p + ".epochs", "must be at least 1");
  check(c.batch_size >= 1, p + ".batch_size", "must be at least 1");
  check(c.max_steps >= 0, p + ".max_steps", "must not be negative");
  check(c.max_length >= 2, p + ".max_length", "must be at least 2");
  check(c.weight_decay >= 0, p + ".weight_decay", "must not be negative");
  check(c.open_choice.empty() || (c.open_choice.size() == 2 && c.open_choice[0] != c.open_choice[1]), p + ".open_choice",
        "must be empty or hold two different words");
  check(c.open_choice_weight > 0 && c.open_choice_weight < 1, p + ".open_choice_weight", "must be in (0, 1)");
}

inline void validate_sampling(double temperature, double top_p, int top_k, int max_completion, const std::string& p) {
  check(temperature > 0 && std::isfinite(temperature), p + ".temperature", "must be positive (sampling is required)");
  check(top_p > 0 && top_p <= 1, p + ".top_p", "must be in (0, 1]");
  check(top_k >= 0, p + ".top_k", "must not be negative");
  check(max_completion >= 1, p + ".max_completion", "must be at least 1");
}

} // namespace detail

/// Parses "5:1" (or table6 / section51) into (5, 1) with msrl::data::parse_replay_ratio, the
/// parser the msrl tool uses too; throws naming `key`.
inline std::pair<std::size_t, std::size_t> parse_ratio(const std::string& s, const std::string& key) {
  const auto r = msrl::data::parse_replay_ratio(s, "msrl-train config", key);
  return {r.fresh, r.replay};
}

/// Applies `key.path=value` to a JSON document. The value is parsed as JSON when it is valid
/// JSON (numbers, true/false, arrays, quoted strings) and taken as a plain string otherwise.
inline void apply_override(json& doc, const std::string& assignment) {
  const auto eq = assignment.find('=');
  msrl::require(eq != std::string::npos && eq > 0, "msrl-train --set", assignment, "must look like key.path=value");
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  json value = json::parse(text, nullptr, false);
  if (value.is_discarded()) value = text;
  json* node = &doc;
  std::size_t start = 0;
  while (true) {
    const auto dot = key.find('.', start);
    const std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    msrl::require(!part.empty(), "msrl-train --set", key, "has an empty path component");
    msrl::require(node->is_object(), "msrl-train --set", key, "descends into a value that is not an object");
    if (dot == std::string::npos) {
      (*node)[part] = value;
      return;
    }
    node = &(*node)[part];
    if (node->is_null()) *node = json::object();
    start = dot + 1;
  }
}

/// Builds the configuration from a JSON document (defaults for absent keys) and validates it.
inline pipeline_config parse_config(const json& doc) {
  pipeline_config c;
  detail::object_reader r(doc, "");
  r.get("data_dir", c.data_dir).get("output_dir", c.output_dir).get("generate_data", c.generate_data).get("seed", c.seed)
      .get("threads", c.threads).get("blas_threads", c.blas_threads).get("sampling_workers", c.sampling_workers).get("prompts_per_pass", c.prompts_per_pass).get("groups_per_pass", c.groups_per_pass).get("train_workers", c.train_workers).get("save_every", c.save_every).get("allow_media_outside_data", c.allow_media_outside_data).get("progress", c.progress).get("stages", c.stages);
  r.nested("model", [&](detail::object_reader& m) { m.get("init", c.model.init).get("tokenizer", c.model.tokenizer).get("tiny", c.model.tiny).get("init_std", c.model.init_std).get("autocast", c.model.autocast).get("fused_logprobs", c.model.fused_logprobs); });
  r.nested("pretrain", [&](detail::object_reader& m) { detail::read_sft(m, c.pretrain); });
  r.nested("pretrain_media", [&](detail::object_reader& m) { detail::read_sft(m, c.pretrain_media); });
  r.nested("sft", [&](detail::object_reader& m) { detail::read_sft(m, c.sft); });
  r.nested("text_grpo", [&](detail::object_reader& m) { detail::read_grpo(m, c.text_grpo); });
  r.nested("caption_grpo", [&](detail::object_reader& m) { detail::read_grpo(m, c.caption_grpo); });
  r.nested("mm_grpo", [&](detail::object_reader& m) { detail::read_grpo(m, c.mm_grpo); });
  r.nested("cmkd", [&](detail::object_reader& m) {
    m.get("file", c.cmkd.file).get("k", c.cmkd.k).get("temperature", c.cmkd.temperature).get("top_p", c.cmkd.top_p)
        .get("top_k", c.cmkd.top_k).get("max_completion", c.cmkd.max_completion).get("confidence", c.cmkd.confidence)
        .get("tie", c.cmkd.tie).get("min_agreement", c.cmkd.min_agreement);
    m.nested("sft", [&](detail::object_reader& s) { detail::read_sft(s, c.cmkd.sft); });
  });
  r.nested("eval", [&](detail::object_reader& m) {
    m.get("file", c.eval.file).get("caption_file", c.eval.caption_file).get("text_file", c.eval.text_file)
        .get("trajectory", c.eval.trajectory).get("layout", c.eval.layout).get("k", c.eval.k).get("temperature", c.eval.temperature)
        .get("top_p", c.eval.top_p).get("top_k", c.eval.top_k).get("max_completion", c.eval.max_completion)
        .get("max_items", c.eval.max_items);
  });
  r.finish();

  using detail::check;
  check(!c.data_dir.empty(), "data_dir", "must not be empty");
  check(!c.output_dir.empty(), "output_dir", "must not be empty");
  check(c.threads >= 0, "threads", "must not be negative");
  check(c.blas_threads >= 0, "blas_threads", "must not be negative");
  check(c.sampling_workers >= 0 && c.sampling_workers <= 256, "sampling_workers", "must lie in [0, 256]");
  check(c.prompts_per_pass >= 1 && c.prompts_per_pass <= 256, "prompts_per_pass", "must lie in [1, 256]");
  check(c.groups_per_pass >= 1 && c.groups_per_pass <= 256, "groups_per_pass", "must lie in [1, 256]");
  check(c.train_workers >= 0 && c.train_workers <= 256, "train_workers", "must lie in [0, 256]");
  check(c.save_every >= 1, "save_every", "must be at least 1");
  check(!c.stages.empty(), "stages", "must name at least one stage");
  std::size_t last = 0;
  for (std::size_t i = 0; i < c.stages.size(); ++i) {
    const auto& s = c.stages[i];
    const auto& all = all_stages();
    const auto it = std::find(all.begin(), all.end(), s);
    check(it != all.end(), "stages[" + std::to_string(i) + "]",
          "must be one of " + stage_list() + " (got '" + s + "')");
    const auto pos = static_cast<std::size_t>(it - all.begin());
    check(i == 0 || pos > last, "stages", "must list each stage once, in recipe order (" + stage_list() + ")");
    last = pos;
  }
  check(!c.model.init.empty(), "model.init", "must be \"tiny\" or a checkpoint folder");
  check(c.model.init_std >= 0 && c.model.init_std <= 1, "model.init_std", "must be in [0, 1] (0: libtorch's default initialisation)");
  check(c.model.autocast == "none" || c.model.autocast == "bf16" || c.model.autocast == "fp16", "model.autocast",
        "must be none, bf16 or fp16 (got '" + c.model.autocast + "')");
  detail::validate_sft(c.pretrain, "pretrain");
  detail::validate_sft(c.pretrain_media, "pretrain_media");
  detail::validate_sft(c.sft, "sft");
  detail::validate_sft(c.cmkd.sft, "cmkd.sft", false); // its rows come from the CMKD selection
  for (const auto& [x, name] : {std::pair{&c.pretrain, "pretrain"}, std::pair{&c.pretrain_media, "pretrain_media"},
                                std::pair{&c.sft, "sft"}, std::pair{&c.cmkd.sft, "cmkd.sft"}})
    if (!x->replay_file.empty()) (void)parse_ratio(x->replay_ratio, std::string(name) + ".replay_ratio");
  for (auto [g, p] : {std::pair{&c.text_grpo, "text_grpo"}, std::pair{&c.caption_grpo, "caption_grpo"}, std::pair{&c.mm_grpo, "mm_grpo"}}) {
    const std::string P = p;
    check(!g->file.empty(), P + ".file", "must name a JSONL file");
    check(g->lr > 0 && std::isfinite(g->lr), P + ".lr", "must be a positive number");
    check(std::isfinite(g->entropy_coeff), P + ".entropy_coeff", "must be a finite number");
    check(g->warmup >= 0 && g->warmup < 1, P + ".warmup", "must be in [0, 1)");
    check(g->epochs >= 1, P + ".epochs", "must be at least 1");
    check(g->prompts_per_step >= 1, P + ".prompts_per_step", "must be at least 1");
    check(!g->both_orders || g->prompts_per_step % 2 == 0, P + ".prompts_per_step", "must be even with both_orders (A/B pairs)");
    check(g->advantage_group == "prompt" || g->advantage_group == "item", P + ".advantage_group",
          "must be prompt or item (got '" + g->advantage_group + "')");
    check(g->advantage_group != "item" || g->both_orders, P + ".advantage_group", "item needs both_orders (an item's two orders)");
    check(g->advantage_group != "item" || (g->estimator == "grpo" && g->kl_in_reward == 0), P + ".advantage_group",
          "item needs estimator grpo and kl_in_reward 0 (the other estimators run over the whole step batch)");
    check(g->num_generations >= 2, P + ".num_generations", "must be at least 2 (advantages are group-relative)");
    check(g->num_iterations >= 1 && g->num_iterations <= 64, P + ".num_iterations", "must be in [1, 64]");
    check(g->max_steps >= 0, P + ".max_steps", "must not be negative");
    check(g->dynamic_sample == "none" || g->dynamic_sample == "verl" || g->dynamic_sample == "ms_swift" || g->dynamic_sample == "openrlhf",
          P + ".dynamic_sample", "must be none, verl, ms_swift or openrlhf (got '" + g->dynamic_sample + "')");
    check(g->max_resample_times >= 0 && g->max_resample_times <= 100, P + ".max_resample_times", "must be in [0, 100]");
    check(std::isfinite(g->dynamic_sample_lo) && std::isfinite(g->dynamic_sample_hi) && g->dynamic_sample_lo < g->dynamic_sample_hi,
          P + ".dynamic_sample_lo", "must be finite and below dynamic_sample_hi");
    (void)msrl::grpo::parse_estimator(g->estimator, "msrl-train config", P + ".estimator");
    check(std::isfinite(g->gamma) && g->gamma >= 0 && g->gamma <= 1, P + ".gamma", "must be in [0, 1]");
    check(std::isfinite(g->kl_in_reward) && g->kl_in_reward >= 0, P + ".kl_in_reward", "must be a finite number >= 0 (0: off)");
    check(g->kl_in_reward == 0 || g->estimator != "verl_gdpo", P + ".kl_in_reward",
          "must be 0 with estimator verl_gdpo (verl's GDPO reads the reward columns without a KL)");
    check(g->kl_in_reward_estimator == "k1" || g->kl_in_reward_estimator == "abs" || g->kl_in_reward_estimator == "k2" ||
              g->kl_in_reward_estimator == "k3",
          P + ".kl_in_reward_estimator", "must be k1, abs, k2 or k3 (got '" + g->kl_in_reward_estimator + "')");
    check(std::isfinite(g->kl_horizon) && g->kl_horizon >= 0, P + ".kl_horizon", "must be a finite number >= 0 (0: fixed coefficient)");
    check(g->kl_horizon == 0 || (std::isfinite(g->kl_target) && g->kl_target > 0), P + ".kl_target", "must be positive with kl_horizon");
    check(!g->adaptive_entropy || (std::isfinite(g->entropy_coef_min) && std::isfinite(g->entropy_coef_max) && g->entropy_coef_min <= g->entropy_coef_max),
          P + ".entropy_coef_min", "must be finite and at most entropy_coef_max");
    check(!g->adaptive_entropy || (std::isfinite(g->entropy_coef_delta) && g->entropy_coef_delta >= 0), P + ".entropy_coef_delta",
          "must be a finite number >= 0");
    check(!g->adaptive_entropy || std::isfinite(g->entropy_target), P + ".entropy_target", "must be a finite number");
    detail::validate_sampling(g->temperature, g->top_p, g->top_k, g->max_completion, P);
    if (!g->replay_file.empty()) (void)parse_ratio(g->replay_ratio, P + ".replay_ratio");
  }
  check(c.cmkd.k >= 1, "cmkd.k", "must be at least 1");
  check(c.cmkd.min_agreement >= 0.0 && c.cmkd.min_agreement <= 1.0, "cmkd.min_agreement", "must be in [0, 1]");
  detail::validate_sampling(c.cmkd.temperature, c.cmkd.top_p, c.cmkd.top_k, c.cmkd.max_completion, "cmkd");
  check(c.cmkd.confidence == "mean" || c.cmkd.confidence == "sequence" || c.cmkd.confidence == "first",
        "cmkd.confidence", "must be mean, sequence or first");
  check(c.cmkd.tie == "abstain" || c.cmkd.tie == "first" || c.cmkd.tie == "a" || c.cmkd.tie == "b", "cmkd.tie",
        "must be abstain, first, a or b");
  check(!c.eval.file.empty(), "eval.file", "must name a JSONL file");
  check(c.eval.layout == "msrl" || c.eval.layout == "vlrb" || c.eval.layout == "genai", "eval.layout",
        "must be msrl, vlrb or genai");
  check(c.eval.k >= 1, "eval.k", "must be at least 1");
  check(c.eval.trajectory == "own" || c.eval.trajectory == "all" || c.eval.trajectory == "none", "eval.trajectory",
        "must be own, all or none (got '" + c.eval.trajectory + "')");
  check(c.eval.max_items >= 0, "eval.max_items", "must not be negative");
  detail::validate_sampling(c.eval.temperature, c.eval.top_p, c.eval.top_k, c.eval.max_completion, "eval");
  c.source = doc;
  return c;
}

/// Reads a config file (or none: path empty) and applies the overrides in order.
inline pipeline_config load_config(const std::filesystem::path& file, const std::vector<std::string>& overrides = {}) {
  json doc = json::object();
  if (!file.empty()) {
    std::ifstream in(file);
    msrl::require(static_cast<bool>(in), "msrl-train", "--config", "must be a readable file ('" + file.string() + "')");
    std::stringstream ss;
    ss << in.rdbuf();
    doc = json::parse(ss.str(), nullptr, false, true);
    if (doc.is_discarded())
      throw msrl::parse_error(msrl::detail::format_error("msrl-train", "--config", "'" + file.string() + "' is not valid JSON"));
  }
  for (const auto& o : overrides) apply_override(doc, o);
  return parse_config(doc);
}

} // namespace msrl_pipeline
