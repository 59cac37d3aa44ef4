#pragma once
/// \file stb_image_write for the pipeline headers that write PNGs (datagen.hpp, plot.hpp).
/// The implementation is compiled in with internal linkage (STB_IMAGE_WRITE_STATIC), once per
/// translation unit, unless <stb_image_write.h> was already included (the program then provides
/// the implementation, as stb asks) or MSRL_PIPELINE_NO_STB_IMPLEMENTATION /
/// MSRL_PIPELINE_NO_STB_WRITE_IMPLEMENTATION is defined.
#ifndef MSRL_STB_IMAGE_WRITE_DONE
#ifndef INCLUDE_STB_IMAGE_WRITE_H
#if !defined(MSRL_PIPELINE_NO_STB_IMPLEMENTATION) && !defined(MSRL_PIPELINE_NO_STB_WRITE_IMPLEMENTATION) && !defined(STB_IMAGE_WRITE_IMPLEMENTATION)
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define MSRL_PIPELINE_DEFINED_STBIW
#endif
#if __has_include(<stb/stb_image_write.h>) // Debian libstb-dev
#include <stb/stb_image_write.h>
#else
#include <stb_image_write.h>
#endif
#ifdef MSRL_PIPELINE_DEFINED_STBIW
#undef STB_IMAGE_WRITE_IMPLEMENTATION
#undef MSRL_PIPELINE_DEFINED_STBIW
#endif
#endif // INCLUDE_STB_IMAGE_WRITE_H
#define MSRL_STB_IMAGE_WRITE_DONE
#endif // MSRL_STB_IMAGE_WRITE_DONE
