#!/usr/bin/env bash
# One command for a GPU machine: builds the CUDA checks + benchmarks (kernels/gpu_check.cu, plain
# main, no Boost needed) and, where Boost.Test is installed, the CUDA tests; runs them; times the
# torch eager / torch.compile baselines in the same run; the libtorch ops' CUDA kernel set against
# the host set, and the ops on CUDA tensors against torch autograd (built against the machine's
# PyTorch); one GRPO step of the example trainer on CUDA (fp32 and bf16 autocast, against the
# CPU); writes a JSON report.
#   scripts/gpu_check.sh [report-dir]      (default: $OUT, else ./gpu-report)
# Environment: NVCC, MSRL_GPU_ARCH (default 90), MSRL_GPU_QUICK=1 (checks only, no timing),
# MSRL_GPU_NO_COMPILE=1 (skip torch.compile baselines). Finishes in a few minutes on an H100/H200.
set -uo pipefail
cd "$(dirname "$0")/.."
report=${1:-${OUT:-gpu-report}}
mkdir -p "$report"
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
arch=${MSRL_GPU_ARCH:-90}
build=${MSRL_GPU_BUILD_DIR:-build-gpu}
mkdir -p "$build"
t0=$(date +%s)
log() { echo "=== [$(( $(date +%s) - t0 ))s] $*"; }

log "nvidia-smi"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$report/nvidia_smi.txt"

# The test programs build in the background (nvcc / g++ are single-threaded) while gpu_check builds
# and runs; run_built waits for one and runs it: run_built NAME PID REPORT-FILE [ARGS...] returns the
# program's exit status, 125 when it did not build.
nvcc_flags=(-std=c++20 -O2 -arch=sm_$arch --extended-lambda --expt-relaxed-constexpr -Iinclude)
build_boost_test() { # header-only Boost: GPU machines may have the headers without the library
  "$NVCC" "${nvcc_flags[@]}" -DMSRL_BOOST_TEST_HEADER_ONLY "test/cuda/$1.cu" -o "$build/$1" 2> "$build/$1_build.txt"
}
torch_dir=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null || true)
abi=$( [[ -n $torch_dir ]] && python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))' || echo 1)
build_torch_ops() { # the ops (g++, against the machine's PyTorch) + the CUDA kernel set (nvcc)
  "$NVCC" "${nvcc_flags[@]}" -D_GLIBCXX_USE_CXX11_ABI=$abi -c test/torch/cuda_kernels_install.cu -o "$build/cuda_kernels_install.o" \
    2> "$build/gpu_torch_ops_build.txt" &&
    g++ -std=c++20 -O2 -D_GLIBCXX_USE_CXX11_ABI=$abi -DMSRL_TORCH_CUDA=1 -Iinclude -isystem "$torch_dir/include" \
      -isystem "$torch_dir/include/torch/csrc/api/include" test/torch/gpu_torch_ops.cpp "$build/cuda_kernels_install.o" \
      -o "$build/gpu_torch_ops" -L"$torch_dir/lib" -Wl,-rpath,"$torch_dir/lib" -Wl,--no-as-needed -ltorch_cuda -ltorch -ltorch_cpu \
      -lc10_cuda -lc10 -L"$(dirname "$NVCC")/../lib64" -lcudart 2>> "$build/gpu_torch_ops_build.txt"
}
run_built() {
  local name=$1 pid=$2 out=$3
  shift 3
  if wait "$pid"; then
    "$build/$name" "$@" 2>&1 | tee "$report/$out"
    return "${PIPESTATUS[0]}"
  fi
  tail -20 "$build/${name}_build.txt" | tee "$report/$out"
  return 125
}
build_boost_test test_thrust_cuda & pid_core=$!
build_boost_test test_cuda_kernel_set & pid_set=$!
pid_ops=
if [[ -n $torch_dir ]]; then
  build_torch_ops & pid_ops=$!
fi

log "build kernels/gpu_check (sm_$arch)"
"$NVCC" -std=c++20 -O3 -arch=sm_$arch -lineinfo --extended-lambda --expt-relaxed-constexpr -Iinclude -Ikernels \
  kernels/gpu_check.cu -o "$build/gpu_check" -lcublas -Xptxas -v 2> "$build/ptxas.txt"
build_rc=$?
grep -E "registers|spill" "$build/ptxas.txt" | sort | uniq -c | sort -rn | head -12 > "$report/ptxas_summary.txt" || true

check_rc=125
if [[ $build_rc -eq 0 ]]; then
  log "run gpu_check"
  args=()
  [[ ${MSRL_GPU_QUICK:-0} == 1 ]] && args+=(--quick)
  "$build/gpu_check" "${args[@]}" | tee "$report/gpu_check.jsonl"
  check_rc=${PIPESTATUS[0]}
fi

log "GRPO core on the GPU: Thrust backend against the reference backend (test/cuda/test_thrust_cuda.cu)"
run_built test_thrust_cuda "$pid_core" core_thrust_cuda.txt --log_level=message
core_rc=$?

log "libtorch ops' CUDA kernel set against the host set (test/cuda/test_cuda_kernel_set.cu)"
run_built test_cuda_kernel_set "$pid_set" cuda_kernel_set.txt --log_level=message
set_rc=$?

log "torch baselines"
pyargs=()
[[ ${MSRL_GPU_NO_COMPILE:-0} == 1 ]] && pyargs+=(--no-compile)
if [[ ${MSRL_GPU_QUICK:-0} != 1 ]]; then
  PYTHONUNBUFFERED=1 timeout 240 python3 kernels/torch_baseline.py "${pyargs[@]}" 2> "$report/torch_baseline.err" | tee "$report/torch_baseline.jsonl"
fi

log "Liger-Kernel baselines (benchmarks/liger_gpu.py; its wheel travels in .whl, scripts/gpu_wheels.sh)"
if [[ ${MSRL_GPU_QUICK:-0} != 1 ]]; then
  liger_site=$build/liger-site
  if compgen -G ".whl/liger_kernel-*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$liger_site" .whl/liger_kernel-*.whl \
      2> "$report/liger_install.err" || echo "liger wheel did not install (see liger_install.err)"
  fi
  rm -f "$report/liger.jsonl"
  PYTHONPATH="$liger_site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 timeout 240 python3 benchmarks/liger_gpu.py \
    --out "$report/liger.jsonl" 2> "$report/liger.err" || echo "liger baselines failed (see liger.err)"
fi

trainer_rc=skipped
log "example trainer: one GRPO step on CUDA, fp32 and bf16 autocast (test/trainer/gpu_grpo_step.cpp)"
# Built against the machine's PyTorch (its wheel carries libtorch); needs nlohmann/json.hpp on the
# include path (/usr/include, or MSRL_EXTRA_INCLUDE).
json_inc=${MSRL_EXTRA_INCLUDE:-/usr/include}
if [[ -n $torch_dir && -f $json_inc/nlohmann/json.hpp ]]; then
  json_flag=()
  [[ $json_inc != /usr/include ]] && json_flag=(-isystem "$json_inc") # never -isystem the system dir itself
  if g++ -std=c++20 -O2 -D_GLIBCXX_USE_CXX11_ABI=$abi -DMSRL_TRAINER_FIXTURES="\"$PWD/test/trainer/fixtures\"" -Iinclude \
       "${json_flag[@]}" -isystem "$torch_dir/include" -isystem "$torch_dir/include/torch/csrc/api/include" \
       test/trainer/gpu_grpo_step.cpp -o "$build/gpu_grpo_step" -L"$torch_dir/lib" -Wl,-rpath,"$torch_dir/lib" \
       -Wl,--no-as-needed -ltorch_cuda -ltorch -ltorch_cpu -lc10_cuda -lc10 2> "$build/trainer_build.txt"; then
    "$build/gpu_grpo_step" | tee "$report/trainer_gpu_step.jsonl"
    trainer_rc=${PIPESTATUS[0]}
  else
    tail -20 "$build/trainer_build.txt" | tee "$report/trainer_gpu_step.txt"
    trainer_rc=125
  fi
else
  echo "skipped: needs python3 torch and nlohmann/json.hpp (set MSRL_EXTRA_INCLUDE)" | tee "$report/trainer_gpu_step.txt"
fi

torch_ops_rc=skipped
log "libtorch ops on CUDA tensors (test/torch/gpu_torch_ops.cpp + cuda_kernels_install.cu)"
if [[ -n $torch_dir ]]; then
  run_built gpu_torch_ops "$pid_ops" torch_ops_cuda.jsonl
  torch_ops_rc=$?
else
  echo "skipped: needs python3 torch" | tee "$report/torch_ops_cuda.txt"
fi

boost_rc=skipped
# Boost.Test: the headers alone are not enough (seen on the lent H200: headers present, library absent)
if [[ -f /usr/include/boost/test/unit_test.hpp ]] && compgen -G "/usr/lib/*/libboost_unit_test_framework.so*" >/dev/null &&
  command -v cmake >/dev/null; then
  log "Boost.Test CUDA tests"
  cmake -S . -B "$build/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMSRL_ENABLE_CUDA=ON -DCMAKE_CUDA_COMPILER="$NVCC" \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" -DMSRL_ENABLE_TORCH=OFF -DMSRL_BUILD_BENCHMARKS=OFF -DMSRL_BUILD_EXAMPLES=OFF \
    -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 >/dev/null &&
    cmake --build "$build/cmake" --target test_cuda_kernels && ctest --test-dir "$build/cmake" -R test_cuda_kernels --output-on-failure
  boost_rc=$?
fi

log "report"
python3 - "$report" "$build_rc" "$check_rc" "$boost_rc" "$core_rc" "$trainer_rc" "$set_rc" "$torch_ops_rc" <<'PY'
import json, os, sys
d, build_rc, check_rc, boost_rc, core_rc, trainer_rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
set_rc, torch_ops_rc = int(sys.argv[7]), sys.argv[8]
def lines(name):
    p = os.path.join(d, name)
    out = []
    if os.path.exists(p):
        for l in open(p):
            l = l.strip()
            if l.startswith("{"):
                try: out.append(json.loads(l))
                except ValueError: pass
    return out
g, t = lines("gpu_check.jsonl"), lines("torch_baseline.jsonl")
ours = {(r["bench"], r.get("dtype")): r for r in g if "bench" in r}
ratios = []
for r in t:
    if "bench" not in r: continue
    kind = "forward" if r["bench"].endswith("forward") else "grpo_loss_fwd_bwd"
    o = ours.get((kind, r.get("dtype")))
    if o: ratios.append({"ours": kind, "baseline": r["bench"], "dtype": r["dtype"], "speedup": r["time_ms_median"] / o["time_ms_median"]})
liger = lines("liger.jsonl")
for r in liger:  # Liger's rows against msrl's rows of the same work (bf16, 8192 tokens x 151,936)
    kind = {"liger_triton_grpo_loss_fwd_bwd": "grpo_loss_fwd_bwd", "liger_fused_linear_grpo_fwd_bwd": "linear_logprob_fwd_bwd"}.get(r.get("op"))
    o = ours.get((kind, "bf16")) if kind else None
    if o and "time_ms_median" in r:
        ratios.append({"ours": kind, "baseline": r["op"], "dtype": "bf16", "speedup": r["time_ms_median"] / o["time_ms_median"],
                       "note": "msrl's fused linear row is the log-prob's forward + backward, Liger's the GRPO loss's" if kind.startswith("linear") else ""})
rep = {"build_rc": build_rc, "gpu_check_rc": check_rc, "boost_tests": boost_rc, "core_thrust_cuda_rc": core_rc,
       "trainer_gpu_step_rc": trainer_rc, "trainer_gpu_step": lines("trainer_gpu_step.jsonl"),
       "cuda_kernel_set_rc": set_rc, "torch_ops_cuda_rc": torch_ops_rc, "torch_ops_cuda": lines("torch_ops_cuda.jsonl"),
       "checks": [r for r in g if "check" in r], "benchmarks": [r for r in g if "bench" in r or "device" in r],
       "baselines": t, "liger": liger, "speedups": ratios}
json.dump(rep, open(os.path.join(d, "gpu_report.json"), "w"), indent=1)
print(json.dumps({"speedups": ratios}, indent=None))
PY
log "done (gpu_check rc=$check_rc, core on GPU rc=$core_rc, kernel set rc=$set_rc, torch ops rc=$torch_ops_rc, trainer step rc=$trainer_rc)"
[[ $check_rc -eq 0 && $core_rc -eq 0 && $set_rc -eq 0 ]]
