#!/usr/bin/env bash
# Trains the foundation checkpoint the bundled run starts from (examples/pipeline/foundation, used by
# configs/tiny.json through model.init): the stand-in for InternVL3.5's own pretraining. It captions
# single images (pretrain, 3,000 rows, 2 epochs), then image pairs, videos and video pairs
# (pretrain_media, 4,000 rows, 3 epochs) with 3,000 text comparisons mixed in (pretrain_text.jsonl:
# two words or two phrases of the world, "Text A says X. Text B says Y, which differs."), the
# language-pretraining stand-in, of data drawn with its own seed (1000), so no row of the
# bundled data (seed 1) or of its evaluation files is trained on; the scenes come from the same
# finite world (shapes, colours, counts, sides, motions), as a pretrained model's images come from
# the same visual world as its benchmarks. Writes model.safetensors, config.json, tokenizer.json and
# provenance.json (command, commit, seed, wall time, machine) and replaces the folder only when
# everything is written. About 8 minutes on 2 cores.
#
#   scripts/make_foundation.sh              # into examples/pipeline/foundation
#   scripts/make_foundation.sh OUT_DIR      # elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-examples/pipeline/foundation}
build=${MSRL_BUILD_DIR:-build-pipeline}
scripts/deps.sh --pipeline
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMSRL_BUILD_TESTS=OFF -DMSRL_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" --target msrl-train -j "$(nproc)"
bin="$build/examples/pipeline/msrl-train"
work="$build/foundation"
seed=1000
start=$(date +%s)
rm -rf "$work"
"$bin" make-data --out "$work/data" --seed "$seed" --pretrain 3000 --pretrain-media 4000 --pretrain-text 3000
"$bin" run --config examples/pipeline/configs/foundation.json --set "data_dir=\"$work/data\"" --set "output_dir=\"$work/run\""
wall=$(( $(date +%s) - start ))
ckpt="$work/run/checkpoints/pretrain_media"
tmp="$dest.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
cp "$ckpt/model.safetensors" "$ckpt/config.json" "$ckpt/tokenizer.json" "$tmp/"
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//' || echo unknown)
cat > "$tmp/provenance.json" <<EOF
{
  "what": "msrl-train foundation checkpoint: captioning pretraining of the tiny InternVL (pretrain + pretrain_media, with text comparisons mixed into pretrain_media)",
  "command": "scripts/make_foundation.sh",
  "steps": [
    "msrl-train make-data --out $work/data --seed $seed --pretrain 3000 --pretrain-media 4000 --pretrain-text 3000",
    "msrl-train run --config examples/pipeline/configs/foundation.json"
  ],
  "commit": "$commit",
  "data_seed": $seed,
  "wall_time_s": $wall,
  "machine": "$(nproc) cores, $cpu",
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
EOF
rm -rf "$dest.old"
[[ -d "$dest" ]] && mv "$dest" "$dest.old"
mv "$tmp" "$dest"
rm -rf "$dest.old"
echo "make_foundation: wrote $dest in ${wall} s"
