include(CMakePackageConfigHelpers)
install(TARGETS msrl EXPORT msrlTargets)
install(DIRECTORY include/msrl DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT msrlTargets NAMESPACE msrl:: DESTINATION ${CMAKE_INSTALL_DATADIR}/cmake/msrl)
configure_package_config_file(cmake/msrlConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/msrlConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_DATADIR}/cmake/msrl)
# Header-only: any architecture may consume it.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/msrlConfigVersion.cmake
  COMPATIBILITY SameMajorVersion ARCH_INDEPENDENT)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/msrlConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/msrlConfigVersion.cmake
  cmake/msrl_components.cmake
  DESTINATION ${CMAKE_INSTALL_DATADIR}/cmake/msrl)
