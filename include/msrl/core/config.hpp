#pragma once
/// \file Configuration macros shared by host and device code.

#if defined(__CUDACC__) || defined(__HIPCC__)
#define MSRL_HOST_DEVICE __host__ __device__
#define MSRL_DEVICE_COMPILE 1
#else
#define MSRL_HOST_DEVICE
#endif

#define MSRL_VERSION_MAJOR 0
#define MSRL_VERSION_MINOR 1
#define MSRL_VERSION_PATCH 0
