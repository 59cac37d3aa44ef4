#pragma once
/// \file The head of every CUDA Boost test: Boost.Test (header-only where the GPU machine has the
/// headers but not the library: -DMSRL_BOOST_TEST_HEADER_ONLY) and a global fixture that exits 77
/// (skipped) when no CUDA device is present. Define BOOST_TEST_MODULE first.
#ifdef MSRL_BOOST_TEST_HEADER_ONLY
#include <boost/test/included/unit_test.hpp>
#else
#include <boost/test/unit_test.hpp>
#endif

#include <cstdlib>

#include <cuda_runtime.h>

struct msrl_require_gpu { // global: BOOST_TEST_GLOBAL_FIXTURE pastes the name into identifiers
  msrl_require_gpu() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) std::exit(77);
  }
};
BOOST_TEST_GLOBAL_FIXTURE(msrl_require_gpu);
