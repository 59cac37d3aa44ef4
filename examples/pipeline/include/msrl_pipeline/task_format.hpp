#pragma once
/// \file The judging tasks of the msrl-train example as text: task types, the system prompt of each
/// stage, the reference rationale and the completion layout
/// (<type>…</type><caption>…</caption><think>…</think><answer>X</answer>). No third-party dependency.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include <msrl/core/error.hpp>

namespace msrl_pipeline {

// ---------------------------------------------------------------------------------------------
// Task types and the text templates the pipeline reuses
// ---------------------------------------------------------------------------------------------

enum class task_type : std::uint8_t { text, image_understanding, image_generation, video_understanding, video_generation };

/// The `task_type` column value: "text", "image_understanding", ...
inline std::string_view task_type_name(task_type t) noexcept {
  constexpr std::array<std::string_view, 5> n = {"text", "image_understanding", "image_generation", "video_understanding",
                                                 "video_generation"};
  return n[static_cast<std::size_t>(t)];
}

/// The words a completion puts in `<type>...</type>` ("image understanding"); msrl's task
/// reward normalises both to the same text.
inline std::string_view task_type_words(task_type t) noexcept {
  constexpr std::array<std::string_view, 5> n = {"text", "image understanding", "image generation", "video understanding",
                                                 "video generation"};
  return n[static_cast<std::size_t>(t)];
}

/// Which answer layout a system prompt asks for.
enum class prompt_style : std::uint8_t {
  text,      ///< stage 1: <think>...</think><answer>A</answer>
  caption,   ///< stage 2 (media given as captions): <type>...</type><think>...</think><answer>A</answer>
  multimodal ///< stage 3, CMKD pool, eval: <type>...</type><caption>...</caption><think>...</think><answer>A</answer>
};

/// The layout of the judging rows without media (stage 1 text, stage 2 captions, CMKD's caption
/// prompts, eval_text, eval_caption); the media rows always take the multimodal one.
///   plain       stage 1 its own (text) prompt, stage 2 the caption prompt: three prompts in all
///   typed       stage 1 in the stage 2 layout (caption prompt; <type>text</type> in the targets)
///   multimodal  every judging row in the multimodal layout: its prompt, and in the stage 1 targets
///               <type>text</type><caption>the text</caption> before the reasoning
enum class judge_layout : std::uint8_t { plain, typed, multimodal };

inline std::string_view judge_layout_name(judge_layout l) noexcept {
  constexpr std::array<std::string_view, 3> n = {"plain", "typed", "multimodal"};
  return n[static_cast<std::size_t>(l)];
}
/// The style of the stage 1 text rows and of the caption-based rows under a layout.
inline prompt_style text_style_of(judge_layout l) noexcept {
  return l == judge_layout::plain ? prompt_style::text : l == judge_layout::typed ? prompt_style::caption : prompt_style::multimodal;
}
inline prompt_style caption_style_of(judge_layout l) noexcept {
  return l == judge_layout::multimodal ? prompt_style::multimodal : prompt_style::caption;
}

/// The system prompt of each stage (short: a tiny model reads it in every prompt).
inline std::string system_prompt(prompt_style s) {
  switch (s) {
  case prompt_style::text: return "Compare the two responses. Think in <think> </think>, then give A or B in <answer> </answer>.";
  case prompt_style::caption:
    return "Name the task type in <type> </type>, think in <think> </think>, then give A or B in <answer> </answer>.";
  case prompt_style::multimodal:
    return "Name the task type in <type> </type>, describe the media in <caption> </caption>, think in <think> </think>, "
           "then give A or B in <answer> </answer>.";
  }
  return {};
}

/// The reasoning (the text inside <think>) for a choice between two candidates:
///   text:                 "The text says V. Response A says Va, which matches|differs. Response B says Vb, which
///                         matches|differs. Response L is correct."
///   text, `prompt_form`:  "The prompt says V. Response A says Va, ..." (which response matches a prompt: the
///                         text counterpart of the generation tasks)
///   image/video under.:   "The image|video shows V. Response A says Va. ..."
///   image/video gener.:   "The prompt says V. Image|Video A shows Va. Image|Video B shows Vb. Image|Video L is correct."
/// L is the candidate whose value equals `truth`; exactly one must (else msrl::invalid_argument).
/// Stage 2 (captions) and stage 3 (media) share the wording, so CMKD moves reasoning between them.
inline std::string write_rationale(task_type task, std::string_view truth, std::string_view value_a, std::string_view value_b,
                                   bool prompt_form = false) {
  constexpr const char* where = "msrl_pipeline::write_rationale";
  msrl::require(!truth.empty(), where, "truth", "must not be empty");
  msrl::require((value_a == truth) != (value_b == truth), where, "value_a/value_b",
                "must hold the truth in exactly one candidate (truth '" + std::string(truth) + "')");
  const char label = value_a == truth ? 'A' : 'B';
  std::string evidence, candidate, verb;
  switch (task) {
  case task_type::text: evidence = prompt_form ? "The prompt says" : "The text says"; candidate = "Response"; verb = "says"; break;
  case task_type::image_understanding: evidence = "The image shows"; candidate = "Response"; verb = "says"; break;
  case task_type::video_understanding: evidence = "The video shows"; candidate = "Response"; verb = "says"; break;
  case task_type::image_generation: evidence = "The prompt says"; candidate = "Image"; verb = "shows"; break;
  case task_type::video_generation: evidence = "The prompt says"; candidate = "Video"; verb = "shows"; break;
  }
  std::string t;
  t.reserve(128);
  t.append(evidence).append(" ").append(truth).append(". ");
  // One verdict per candidate right after its value: a local comparison a small model learns
  // far sooner than a single comparison at the end.
  t.append(candidate).append(" A ").append(verb).append(" ").append(value_a).append(value_a == truth ? ", which matches. " : ", which differs. ");
  t.append(candidate).append(" B ").append(verb).append(" ").append(value_b).append(value_b == truth ? ", which matches. " : ", which differs. ");
  t.append(candidate).append(" ").push_back(label);
  t.append(" is correct.");
  return t;
}

/// "<type>T</type><caption>C</caption><think>R</think><answer>L</answer>", empty parts left out.
/// With empty type this equals msrl::voting::cmkd_target(caption, think, label).
inline std::string make_completion(std::string_view think, char answer, std::string_view type_words = {}, std::string_view caption = {}) {
  msrl::require(answer == 'A' || answer == 'B', "msrl_pipeline::make_completion", "answer", "must be 'A' or 'B'");
  std::string c;
  if (!type_words.empty()) c.append("<type>").append(type_words).append("</type>");
  if (!caption.empty()) c.append("<caption>").append(caption).append("</caption>");
  c.append("<think>").append(think).append("</think><answer>");
  c.push_back(answer);
  c.append("</answer>");
  return c;
}

} // namespace msrl_pipeline
