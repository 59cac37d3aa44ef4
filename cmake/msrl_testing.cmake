# msrl_add_test(<name> SOURCES <src>... [LIBS <lib>...] [LABELS <label>...] [ARGS <arg>...])
# One Boost.Test executable registered with CTest. Tests that need a GPU carry the label "gpu" and
# exit 77 when no device is present (ctest reports them as skipped).
function(msrl_add_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS;LABELS;ARGS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE msrl::msrl Boost::unit_test_framework ${T_LIBS})
  target_compile_definitions(${name} PRIVATE BOOST_TEST_DYN_LINK)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/test/support) # scratch.hpp
  msrl_apply_warnings(${name})
  add_test(NAME ${name} COMMAND ${name} ${T_ARGS})
  set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77 LABELS "${T_LABELS}")
endfunction()

function(msrl_apply_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion -Wno-missing-field-initializers>)
  endif()
  if(MSRL_NATIVE)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-march=native>)
    # GCC 12 warns about _mm256_undefined_pd() inside its own avx512fintrin.h when it lowers
    # vector conversions (GCC PR 105593, fixed in GCC 13); the warning points into the compiler's
    # header, not at msrl code.
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
      target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wno-maybe-uninitialized>)
    endif()
  endif()
endfunction()
