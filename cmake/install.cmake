# Installs libkiln (static + shared), the public headers, the kiln tool, the embedded default model, a pkg-config
# file and an exported CMake package (find_package(kiln): kiln::kiln, kiln::kiln_shared, kiln::kiln_static).
# Everything installed is relocatable: the pkg-config file and the CMake package find the prefix from their own
# location, so `cmake --install BUILD --prefix P` (what `make install PREFIX=P` runs) works whatever prefix the
# build was configured with.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
install(TARGETS kiln_static kiln_shared EXPORT kilnTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/kiln DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(TARGET kiln)
  install(TARGETS kiln RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
# The default model goes where an installed kiln looks for it (BINDIR/../share/kiln/models/default).
if(EXISTS ${PROJECT_SOURCE_DIR}/models/default/config.json)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/models/default/ DESTINATION ${CMAKE_INSTALL_DATADIR}/kiln/models/default)
endif()

install(EXPORT kilnTargets NAMESPACE kiln:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/kilnConfig.cmake.in
  ${CMAKE_BINARY_DIR}/kilnConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/kilnConfigVersion.cmake COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_BINARY_DIR}/kilnConfig.cmake ${CMAKE_BINARY_DIR}/kilnConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)

# pkg-config: the prefix relative to the .pc file's own directory (LIBDIR/pkgconfig).
file(RELATIVE_PATH KILN_PC_TO_PREFIX "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
string(REGEX REPLACE "/$" "" KILN_PC_TO_PREFIX "${KILN_PC_TO_PREFIX}")
set(KILN_PC_REQUIRES "jansson libpcre2-8 libutf8proc libmicrohttpd")
set(KILN_PC_LIBS_PRIVATE "-lm -lpthread")
if(KILN_CUDA)
  # A static link needs the CUDA runtime and cuBLAS (and the C++ runtime the nvcc-compiled objects use).
  set(KILN_PC_LIBS_PRIVATE
    "-L${CUDAToolkit_LIBRARY_DIR} -lcudart -lcublas -lcublasLt -lstdc++ ${KILN_PC_LIBS_PRIVATE}")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/kiln.pc.in ${CMAKE_BINARY_DIR}/kiln.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/kiln.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
