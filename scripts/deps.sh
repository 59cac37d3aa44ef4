#!/usr/bin/env bash
# Installs what msrl needs on Debian 12, idempotently: only missing packages are installed.
#   scripts/deps.sh            build + test dependencies
#   scripts/deps.sh --minimal  only what the grpo_steps example needs (compiler, CMake, Ninja)
#   scripts/deps.sh --pipeline what msrl-train needs (libtorch, gloo, JSON, CLI11, stb, OpenBLAS)
# libopenblas0-pthread becomes the libblas.so.3 that Debian's libtorch calls for its matrix
# products (about 10x the reference BLAS on the tiny model's steps).
set -euo pipefail
minimal=0
pipeline=0
[[ "${1:-}" == "--minimal" ]] && minimal=1
[[ "${1:-}" == "--pipeline" ]] && minimal=1 && pipeline=1

pkgs=(g++ cmake ninja-build make)
if [[ $pipeline == 1 ]]; then
  pkgs+=(libtorch-dev libgloo-dev nlohmann-json3-dev libcli11-dev libstb-dev libopenblas0-pthread)
fi
if [[ $minimal == 0 ]]; then
  pkgs+=(libopenblas0-pthread)
  pkgs+=(libeigen3-dev xtensor-dev libboost-test-dev libtorch-dev libgloo-dev python3-torch nlohmann-json3-dev
         libcli11-dev libstb-dev clang libclang-rt-14-dev)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "msrl deps: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) != 0 ]] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "msrl deps: all present"
fi
