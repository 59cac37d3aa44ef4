#!/usr/bin/env bash
# Opt-in CPU benchmark run (not part of the tests or CI): each msrl benchmark beside Debian's
# libtorch (in the msrl runner's own process), PyTorch eager and torch.compile of the same formula
# (PyPI's current torch, benchmarks/torch_baselines.py), all in one run; merged into JSON lines with
# the ratios and the measured bandwidth (benchmarks/bench_report.py), and a markdown table.
#
#   scripts/bench.sh [--threads N] [--reps R] [--quick] [--docs]
#
#   --threads N  threads for every side (default 2). bench_kernels always times 1 and 2 threads, so
#                its rows are n/a for other N.
#   --reps R     timed repetitions (default: 51 for the GRPO core, 7 for the logits kernels; the
#                fused linear rows always take 3, as bench_kernels hard-codes).
#   --quick      few repetitions (GRPO core 5, kernels 2, linear 1 on the torch side): a smoke test.
#   --docs       also replaces the generated section of docs/benchmarks.md (between
#                <!-- bench.sh:begin --> and <!-- bench.sh:end -->), atomically; only when every part ran.
#
# Everything lives under build-bench/ (ignored by git): cmake/ (the build), venv/ (PyPI's torch),
# raw/ (each runner's JSON lines), logs/, inductor-cache/ (torch.compile's), meta.json, bench.jsonl
# (the merged rows), bench.md.
# Environment: MSRL_BENCH_JOBS (build jobs, default nproc), MSRL_BENCH_PYTHON (the python3 that
# creates the venv and runs the merge, default python3), MSRL_BENCH_TORCH (pip requirement, default
# "torch"; e.g. torch==2.15.0 to pin; read only when the venv is created: delete build-bench/venv to
# change it), MSRL_BENCH_PIP_ARGS (extra pip install arguments).
# Needs: cmake, ninja, g++, python3 with venv (Debian: scripts/deps.sh); Debian's libtorch-dev and
# libeigen3-dev for the libtorch column and the fused linear rows (else those cells read n/a).
# Peak memory about 5 GB. Run it on an idle machine: on 2 cores a single busy core makes the
# multi-threaded rows (above all those made of many small kernels) several times slower.
#
# PyTorch from PyPI: the Linux x86-64 wheel on PyPI is the CUDA build. It runs on a machine without a
# GPU or driver, but only with its NVIDIA library wheels installed (libtorch_cuda.so, which
# torch._C loads, links cuDNN, cuBLAS, cuFFT, NCCL, cuFile, ...): `pip install torch` pulls them,
# about 3 GB of downloads and 5 GB on disk, once. `pip install --no-deps torch` does NOT work
# (ImportError: libcufile.so.0 at `import torch`). PyTorch's CPU-only wheels are on PyTorch's own
# package index, not on PyPI; where that index is reachable, MSRL_BENCH_PIP_ARGS="--index-url <it>"
# installs those instead (about 200 MB). torch.compile on the CPU needs g++ and Python's headers
# (Debian: python3-dev).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "bench.sh: error: $*" >&2; exit 1; }
t0=$(date +%s)
log() { printf '=== [%4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }
pos_int() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive integer, got '$2'"; }

threads=2 reps='' quick=0 docs=0
args=("$@")
while (($#)); do
  case $1 in
    --threads) (($# >= 2)) || die "--threads needs a value"; pos_int --threads "$2"; threads=$2; shift 2 ;;
    --threads=*) pos_int --threads "${1#*=}"; threads=${1#*=}; shift ;;
    --reps) (($# >= 2)) || die "--reps needs a value"; pos_int --reps "$2"; reps=$2; shift 2 ;;
    --reps=*) pos_int --reps "${1#*=}"; reps=${1#*=}; shift ;;
    --quick) quick=1; shift ;;
    --docs) docs=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
if [[ -n $reps ]] && ((reps > 1000)); then
  die "--reps is at most 1000 (bench_kernels' limit)"
fi
if ((quick)) && [[ -n $reps ]]; then
  die "--quick and --reps together: pick one"
fi
if [[ -n $reps ]]; then
  grpo_reps=$reps kernel_reps=$reps linear_reps=3
elif ((quick)); then
  grpo_reps=5 kernel_reps=2 linear_reps=1
else
  grpo_reps=51 kernel_reps=7 linear_reps=3
fi

build='build-bench'
cmake_dir=$build/cmake
venv=$build/venv
raw=$build/raw
logs=$build/logs
jobs=${MSRL_BENCH_JOBS:-$(nproc)}
pos_int MSRL_BENCH_JOBS "$jobs"
py=${MSRL_BENCH_PYTHON:-python3}
torch_req=${MSRL_BENCH_TORCH:-torch}
read -r -a pip_extra <<< "${MSRL_BENCH_PIP_ARGS:-}"
for tool in cmake ninja "$py" "${CXX:-c++}"; do
  command -v "$tool" >/dev/null || die "'$tool' not found (Debian: scripts/deps.sh --minimal installs the build tools)"
done
if ((threads > $(nproc))); then
  echo "bench.sh: warning: --threads $threads is more than the $(nproc) CPUs online: the timings will oversubscribe" >&2
fi
mkdir -p "$raw" "$logs"
rm -f "$raw"/*.jsonl
declare -A status=([bench_grpo]="not run" [bench_kernels]="not run" [torch_baselines]="not run")

# --- (a) configure and build the benchmarks: Release with the project's default flags ------------
# (no -march=native: this times the build a user gets; the kernels pick their ISA at run time).
# MSRL_NATIVE=OFF is its default, passed so that an earlier configure of this folder cannot change it.
cmake_cmd=(cmake -S . -B "$cmake_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMSRL_NATIVE=OFF -DMSRL_ENABLE_TORCH=ON
  -DMSRL_BUILD_BENCHMARKS=ON -DMSRL_BUILD_TESTS=OFF -DMSRL_BUILD_EXAMPLES=OFF -DMSRL_INSTALL=OFF)
log "configure: ${cmake_cmd[*]}"
if ! "${cmake_cmd[@]}" > "$logs/cmake.log" 2>&1; then
  tail -30 "$logs/cmake.log" >&2
  die "CMake configure failed (full log: $logs/cmake.log)"
fi
grep -q 'msrl component torch: TRUE' "$logs/cmake.log" ||
  echo "bench.sh: warning: Debian's libtorch was not found: the libtorch column will be n/a (scripts/deps.sh installs libtorch-dev)" >&2
grep -q 'msrl component eigen: TRUE' "$logs/cmake.log" ||
  echo "bench.sh: warning: Eigen was not found: the fused linear rows will be n/a (scripts/deps.sh installs libeigen3-dev)" >&2
for target in bench_grpo bench_kernels; do
  log "build $target (-j $jobs)"
  if cmake --build "$cmake_dir" -j "$jobs" --target "$target" > "$logs/build_$target.log" 2>&1; then
    status[$target]=ok
  else
    tail -20 "$logs/build_$target.log" >&2
    echo "bench.sh: warning: $target did not build (log: $logs/build_$target.log); its rows will be n/a" >&2
    status[$target]="did not build (see $logs/build_$target.log)"
  fi
done

# --- (b) the venv with PyPI's torch, created once ------------------------------------------------
vpy=$venv/bin/python
if [[ -x $vpy ]] && ! "$vpy" -c 'import sys' 2>/dev/null; then
  log "venv: $venv does not run (its python moved?): recreating it"
  "$py" -m venv --clear "$venv"
fi
if [[ -x $vpy ]] && "$vpy" -c 'import torch' 2>/dev/null; then
  log "venv: torch $("$vpy" -c 'import torch; print(torch.__version__)' 2>/dev/null) already installed in $venv"
else
  "$py" -c 'import venv, ensurepip' 2>/dev/null || die "$py cannot create a venv (Debian: apt-get install python3-venv)"
  log "venv: installing PyPI's $torch_req into $venv: this downloads about 3 GB once (torch and the NVIDIA CUDA" \
    "library wheels it needs even without a GPU; about 5 GB on disk) and is reused by later runs"
  [[ -x $vpy ]] || "$py" -m venv "$venv"
  if ! "$vpy" -m pip install --progress-bar off "${pip_extra[@]}" "$torch_req" numpy > "$logs/pip.log" 2>&1; then
    tail -20 "$logs/pip.log" >&2
    die "pip install of $torch_req failed (log: $logs/pip.log); PyPI must be reachable"
  fi
  "$vpy" -c 'import torch' 2> "$logs/import_torch.log" || { tail -5 "$logs/import_torch.log" >&2; die "torch installed but does not import (see above)"; }
  log "venv: torch $("$vpy" -c 'import torch; print(torch.__version__)' 2>/dev/null) installed"
fi
"$vpy" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
  echo "bench.sh: warning: no Python.h for $vpy: torch.compile on the CPU compiles C++ against it and will fail (Debian: apt-get install python3-dev)" >&2

# --- (c) run: msrl runners (with libtorch in-process), then torch eager / torch.compile ----------
loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${loadavg%% *}" 'BEGIN { exit !(l >= 0.5) }'; then
  echo "bench.sh: warning: load average ${loadavg%% *} when timing starts: the machine is not idle and the timings will" \
    "be noisy; PyTorch's OpenMP threads spin-wait, so with one core busy its multi-threaded rows made of many small" \
    "kernels (the GRPO core) can be 10-100x slower (OMP_WAIT_POLICY=PASSIVE avoids that, but is not the default)" >&2
fi
log "timing starts, load average $loadavg (threads $threads; reps: GRPO core $grpo_reps, kernels $kernel_reps, linear $linear_reps)"
run_part() { # run_part NAME OUT-FILE COMMAND...: the command's stdout to OUT-FILE, stderr to the log
  local name=$1 out=$2
  shift 2
  local rc=0
  "$@" > "$out" 2> "$logs/$name.err" || rc=$?
  if ((rc == 0)); then
    status[$name]=ok
  else
    tail -10 "$logs/$name.err" >&2
    echo "bench.sh: warning: $name exited $rc (stderr: $logs/$name.err)" >&2
    status[$name]="failed with exit status $rc (see $logs/$name.err)"
  fi
}
if [[ ${status[bench_grpo]} == ok ]]; then
  log "bench_grpo (GRPO core, 128 x 1,024; libtorch eager in-process)"
  run_part bench_grpo "$raw/bench_grpo.jsonl" "$cmake_dir/benchmarks/bench_grpo" --threads "$threads" --reps "$grpo_reps"
fi
if [[ ${status[bench_kernels]} == ok ]]; then
  log "bench_kernels (512 x 151,936 logits, fused linear 128 x 512 x 151,936, read bandwidth; 1 and 2 threads)"
  run_part bench_kernels "$raw/bench_kernels.jsonl" "$cmake_dir/benchmarks/kernels/bench_kernels" 512 151936 "$kernel_reps"
fi
log "torch_baselines.py (torch eager and torch.compile; compilation is not timed)"
# torch.compile's generated C++ and its cache stay under build-bench/ too
OMP_NUM_THREADS=$threads TORCHINDUCTOR_CACHE_DIR=$PWD/$build/inductor-cache run_part torch_baselines "$raw/torch_baselines.jsonl" "$vpy" benchmarks/torch_baselines.py \
  --threads "$threads" --reps "$kernel_reps" --grpo-reps "$grpo_reps" --linear-reps "$linear_reps"

# --- (d) merge --------------------------------------------------------------------------------
status_json=$(for k in "${!status[@]}"; do printf '%s\t%s\n' "$k" "${status[$k]}"; done)
libtorch_version=$(dpkg-query -W -f='${Version}' libtorch-dev 2>/dev/null | sed 's/+.*//' || true)
if [[ -z $libtorch_version ]]; then
  torch_dir=$(sed -n 's/^Torch_DIR:PATH=//p' "$cmake_dir/CMakeCache.txt")
  libtorch_version=$(sed -n 's/^set(PACKAGE_VERSION "\(.*\)")/\1/p' "$torch_dir/TorchConfigVersion.cmake" 2>/dev/null || true)
fi
blas=$(dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null | sed 's/^/OpenBLAS /; s/+.*//' || true)
STATUS="$status_json" COMMAND="scripts/bench.sh${args[*]:+ ${args[*]}}" \
  COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown) DATE_UTC=$(date -u '+%Y-%m-%d %H:%M') \
  CPU_MODEL=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1) \
  CORES=$(lscpu -p=core 2>/dev/null | grep -v '^#' | sort -u | wc -l) ONLINE=$(nproc) \
  MEM_KB=$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/meminfo) LOADAVG="$loadavg" \
  LIBTORCH="$libtorch_version" BLAS="$blas" THREADS=$threads QUICK=$quick \
  REPS="GRPO core $grpo_reps, kernels $kernel_reps, linear $linear_reps" \
  TORCH_VERSION=$("$vpy" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo unknown) \
  PYVER=$("$vpy" -c 'import sys; print("Python " + sys.version.split()[0])' 2>/dev/null || echo "Python ?") \
  KERNELS="$raw/bench_kernels.jsonl" CMAKE_CMD="${cmake_cmd[*]}" \
  "$py" - > "$build/meta.json" <<'PY'
import json, os
e = os.environ
status = dict(l.split("\t", 1) for l in e["STATUS"].splitlines() if "\t" in l)
isa = gemm = None
if os.path.exists(e["KERNELS"]):
    for l in open(e["KERNELS"]):
        if '"isa"' in l and isa is None and "cache_resident" not in l:
            isa = json.loads(l).get("isa")
        if '"gemm"' in l and gemm is None:
            gemm = json.loads(l).get("gemm")
print(json.dumps({
    "command": e["COMMAND"], "commit": e["COMMIT"], "date_utc": e["DATE_UTC"], "cpu_model": e["CPU_MODEL"] or "unknown CPU",
    "cores": e["CORES"], "online_cpus": e["ONLINE"], "mem_gib": round(int(e["MEM_KB"] or 0) / 2**20, 1),
    "loadavg_start": e["LOADAVG"], "libtorch_version": e["LIBTORCH"] or None, "torch_version": e["TORCH_VERSION"],
    "python": e["PYVER"], "threads": int(e["THREADS"]), "quick": e["QUICK"] == "1", "reps": e["REPS"],
    "isa": isa or "?", "blas": "%s (fused linear GEMM: %s)" % (e["BLAS"] or "?", gemm or "n/a"),
    "cmake_command": e["CMAKE_CMD"], "status": status}, indent=1))
PY
report_args=(--threads "$threads" --meta "$build/meta.json" --grpo "$raw/bench_grpo.jsonl" --kernels "$raw/bench_kernels.jsonl"
  --torch "$raw/torch_baselines.jsonl" --out "$build/bench.jsonl" --markdown "$build/bench.md")
all_ok=1
for k in "${!status[@]}"; do [[ ${status[$k]} == ok ]] || all_ok=0; done
if ((docs && all_ok)); then
  report_args+=(--docs docs/benchmarks.md)
fi
log "merge (benchmarks/bench_report.py): $build/bench.jsonl, $build/bench.md"
echo
"$py" benchmarks/bench_report.py "${report_args[@]}"
echo
log "done: $build/bench.jsonl (one JSON line per row), raw runner output in $raw/"
if ((!all_ok)); then
  for k in "${!status[@]}"; do [[ ${status[$k]} == ok ]] || echo "bench.sh: $k: ${status[$k]}" >&2; done
  ((docs)) && echo "bench.sh: docs/benchmarks.md NOT updated: a part of the run is missing (see above)" >&2
  exit 1
fi
