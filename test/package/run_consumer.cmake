# cmake -DMODE=<find_package|add_subdirectory|fetchcontent> -DSRC=<msrl source> -DWORK=<scratch dir> -P run_consumer.cmake
# Configures, builds and runs test/package/consumer against msrl consumed the given way.
file(REMOVE_RECURSE ${WORK})
set(extra)
if(MODE STREQUAL "find_package")
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${SRC} -B ${WORK}/msrl-build -G Ninja -DMSRL_BUILD_TESTS=OFF
                    -DMSRL_BUILD_EXAMPLES=OFF -DMSRL_BUILD_BENCHMARKS=OFF -DMSRL_INSTALL=ON
                    -DCMAKE_INSTALL_PREFIX=${WORK}/prefix
                  RESULT_VARIABLE rc)
  if(rc)
    message(FATAL_ERROR "configuring msrl for install failed")
  endif()
  execute_process(COMMAND ${CMAKE_COMMAND} --install ${WORK}/msrl-build RESULT_VARIABLE rc)
  if(rc)
    message(FATAL_ERROR "cmake --install failed")
  endif()
  set(extra -DCMAKE_PREFIX_PATH=${WORK}/prefix)
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SRC}/test/package/consumer -B ${WORK}/consumer-build -G Ninja
                  -DMSRL_CONSUME=${MODE} -DMSRL_SOURCE_DIR=${SRC} ${extra}
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the consumer (${MODE}) failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK}/consumer-build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the consumer (${MODE}) failed")
endif()
execute_process(COMMAND ${WORK}/consumer-build/consumer RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "the consumer (${MODE}) returned ${rc}")
endif()
if(EXISTS ${WORK}/consumer-build/consumer_trainer)
  execute_process(COMMAND ${WORK}/consumer-build/consumer_trainer RESULT_VARIABLE rc)
  if(rc)
    message(FATAL_ERROR "the trainer consumer (${MODE}) returned ${rc}")
  endif()
endif()
