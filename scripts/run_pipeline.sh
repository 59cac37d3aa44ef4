#!/usr/bin/env bash
# The main job: builds msrl-train and runs the MSRL recipe end to end on the bundled default data
# with the tiny InternVL-architecture model (pretrain stand-in, SFT, textual GRPO, caption GRPO
# with replay, CMKD, multimodal GRPO, voting@16 evaluation), then prints the evaluation table.
# Outputs (checkpoints, metrics JSONL, plots, eval report) go to runs/tiny; rerunning resumes.
#   scripts/run_pipeline.sh [msrl-train run options, e.g. --set seed=2 --out runs/seed2]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --pipeline
build=${MSRL_BUILD_DIR:-build-pipeline}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMSRL_BUILD_TESTS=OFF -DMSRL_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" --target msrl-train -j "$(nproc)"
"$build/examples/pipeline/msrl-train" run --config examples/pipeline/configs/tiny.json "$@"
