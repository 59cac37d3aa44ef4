#!/usr/bin/env bash
# Builds msrl's libFuzzer targets (test/fuzz/fuzz_*.cpp) with clang++ and runs each for a bounded
# time, starting from the seed corpus in test/fuzz/corpus (copied, so the repository is not touched).
#   scripts/fuzz.sh                    every target, MSRL_FUZZ_SECONDS (default 30) each
#   scripts/fuzz.sh fuzz_format        one target
# Environment: CXX_FUZZ (default clang++), MSRL_FUZZ_SECONDS, MSRL_FUZZ_DIR (default build-fuzz),
# MSRL_FUZZ_JOBS (targets run at once, default: the number of cores).
set -euo pipefail
cd "$(dirname "$0")/.."
cxx=${CXX_FUZZ:-clang++}
seconds=${MSRL_FUZZ_SECONDS:-30}
out=${MSRL_FUZZ_DIR:-build-fuzz}
if ! command -v "$cxx" >/dev/null; then
  echo "fuzz: $cxx not found (scripts/deps.sh installs clang and libclang-rt-14-dev)" >&2
  exit 1
fi
targets=("$@")
if ((${#targets[@]} == 0)); then
  for f in test/fuzz/fuzz_*.cpp; do targets+=("$(basename "$f" .cpp)"); done
fi
mkdir -p "$out"
flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -Iinclude -Iexamples/pipeline/include)
pids=()
for t in "${targets[@]}"; do
  "$cxx" "${flags[@]}" "test/fuzz/$t.cpp" -o "$out/$t" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
# each target runs for its full time on its own core: MSRL_FUZZ_JOBS targets at once (default: the
# number of cores), each reported when it ends
run_one() {
  local t=$1 work="$out/$1.corpus"
  rm -rf "$work" && mkdir -p "$work" && cp test/fuzz/corpus/* "$work/"
  if ! (cd "$out" && "./$t" -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
          -print_final_stats=1 "$t.corpus" > "$t.log" 2>&1); then
    echo "fuzz: $t FAILED (log: $out/$t.log; reproducer: $out/crash-*)" >&2
    tail -40 "$out/$t.log" >&2
    return 1
  fi
  grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "$out/$t.log" | tail -2 | sed "s/^/fuzz: $t: /"
}
jobs_at_once=${MSRL_FUZZ_JOBS:-$(nproc)}
status=0
running=0
for t in "${targets[@]}"; do
  if ((running >= jobs_at_once)); then
    wait -n || status=1
    running=$((running - 1))
  fi
  echo "fuzz: $t for ${seconds}s"
  run_one "$t" &
  running=$((running + 1))
done
while ((running > 0)); do
  wait -n || status=1
  running=$((running - 1))
done
exit $status
