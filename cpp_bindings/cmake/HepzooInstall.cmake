# `cmake --install <build> [--prefix P]`: the library (libhepzoo.so.<major>, SONAME libhepzoo.so.<major>, and the
# libhepzoo.so namelink), the public headers, a CMake package (find_package(hepzoo CONFIG) -> hepzoo::hepzoo) and a
# pkg-config file (hepzoo.pc).
#
# ONNX Runtime, nlohmann-json and OpenSSL are PRIVATE dependencies of the shared library and the public headers
# use the standard library only, so the exported target names none of them: a consumer needs neither their
# headers nor their CMake packages, and the package config calls no find_dependency. The linker of a consumer
# (which checks that libhepzoo's own dependencies resolve) and the loader at run time still need
# libonnxruntime.so.1: the installed library carries a RUNPATH to it, chosen by HEPZOO_ONNXRUNTIME_INSTALL:
#   rpath  the directory of the libonnxruntime it was linked against (an experiment stack's ONNX Runtime prefix);
#   link   <libdir>/hepzoo/ in the install prefix, holding symlinks (libonnxruntime.so.1, execution-provider
#          libraries) to the real files, RUNPATH $ORIGIN/hepzoo: the prefix does not depend on the build folder
#          (`make cpp` uses this: the real files are the venv's onnxruntime wheel);
#   none   no RUNPATH: the environment provides libonnxruntime.so.1 (LD_LIBRARY_PATH, ld.so.conf).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(HEPZOO_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/hepzoo")
set(HEPZOO_PRIVATE_LIBDIR "${CMAKE_INSTALL_LIBDIR}/hepzoo")

# The ONNX Runtime library file libhepzoo links against: our FindOnnxRuntime's, or the location recorded by
# ONNX Runtime's own CMake config (per configuration).
set(_hepzoo_ort_library "${ONNXRUNTIME_LIBRARY}")
if(NOT _hepzoo_ort_library)
  foreach(_property IN ITEMS IMPORTED_LOCATION IMPORTED_LOCATION_RELEASE IMPORTED_LOCATION_RELWITHDEBINFO
                             IMPORTED_LOCATION_MINSIZEREL IMPORTED_LOCATION_DEBUG IMPORTED_LOCATION_NOCONFIG)
    get_target_property(_location onnxruntime::onnxruntime ${_property})
    if(_location)
      set(_hepzoo_ort_library "${_location}")
      break()
    endif()
  endforeach()
endif()
get_filename_component(_hepzoo_ort_dir "${_hepzoo_ort_library}" DIRECTORY)

if(HEPZOO_ONNXRUNTIME_INSTALL STREQUAL "rpath")
  if(NOT _hepzoo_ort_dir)
    message(FATAL_ERROR "HEPZOO_ONNXRUNTIME_INSTALL=rpath: cannot tell where libonnxruntime lives; use =none or =link")
  endif()
  set_target_properties(hepzoo PROPERTIES INSTALL_RPATH "${_hepzoo_ort_dir}")
elseif(HEPZOO_ONNXRUNTIME_INSTALL STREQUAL "link")
  # The runtime files next to the linked library (the SONAME file libonnxruntime.so.<major>, the execution
  # providers ONNX Runtime loads from its own directory), each linked to the file it finally resolves to.
  file(GLOB _hepzoo_ort_files "${_hepzoo_ort_dir}/libonnxruntime.so.*" "${_hepzoo_ort_dir}/libonnxruntime_providers_*.so")
  if(NOT _hepzoo_ort_files)
    message(FATAL_ERROR "HEPZOO_ONNXRUNTIME_INSTALL=link: no libonnxruntime.so.* next to ${_hepzoo_ort_library}")
  endif()
  set(_hepzoo_links "")
  foreach(_file IN LISTS _hepzoo_ort_files)
    get_filename_component(_name "${_file}" NAME)
    get_filename_component(_real "${_file}" REALPATH)
    string(APPEND _hepzoo_links "  hepzoo_link(\"${_real}\" \"${_name}\")\n")
  endforeach()
  set_target_properties(hepzoo PROPERTIES INSTALL_RPATH "$ORIGIN/hepzoo")
  install(CODE "
function(hepzoo_link target name)
  set(link \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${HEPZOO_PRIVATE_LIBDIR}/\${name}\")
  message(STATUS \"Installing: \${link} -> \${target}\")
  get_filename_component(dir \"\${link}\" DIRECTORY)
  file(MAKE_DIRECTORY \"\${dir}\")
  file(REMOVE \"\${link}\")
  file(CREATE_LINK \"\${target}\" \"\${link}\" SYMBOLIC)
  list(APPEND CMAKE_INSTALL_MANIFEST_FILES \"\${link}\")
  set(CMAKE_INSTALL_MANIFEST_FILES \"\${CMAKE_INSTALL_MANIFEST_FILES}\" PARENT_SCOPE)
endfunction()
${_hepzoo_links}")
elseif(NOT HEPZOO_ONNXRUNTIME_INSTALL STREQUAL "none")
  message(FATAL_ERROR "HEPZOO_ONNXRUNTIME_INSTALL must be rpath, link or none, got '${HEPZOO_ONNXRUNTIME_INSTALL}'")
endif()

install(TARGETS hepzoo EXPORT hepzoo-targets LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY include/hepzoo DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# CMake package: hepzoo-config.cmake, hepzoo-config-version.cmake, hepzoo-targets[-<config>].cmake
install(EXPORT hepzoo-targets NAMESPACE hepzoo:: DESTINATION ${HEPZOO_CMAKE_DIR})
configure_package_config_file(cmake/hepzoo-config.cmake.in "${CMAKE_CURRENT_BINARY_DIR}/hepzoo-config.cmake"
  INSTALL_DESTINATION ${HEPZOO_CMAKE_DIR})
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/hepzoo-config-version.cmake"
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/hepzoo-config.cmake" "${CMAKE_CURRENT_BINARY_DIR}/hepzoo-config-version.cmake"
  DESTINATION ${HEPZOO_CMAKE_DIR})

# pkg-config: written at install time, so that its prefix is the one `cmake --install --prefix P` installs into
# (the template is configured now with everything else; %HEPZOO_PREFIX% is replaced then).
if(HEPZOO_WITH_CUDA)
  set(HEPZOO_PC_CFLAGS " -DHEPZOO_WITH_CUDA=1")
endif()
configure_file(cmake/hepzoo.pc.in "${CMAKE_CURRENT_BINARY_DIR}/hepzoo.pc.in" @ONLY)
install(CODE "
file(READ \"${CMAKE_CURRENT_BINARY_DIR}/hepzoo.pc.in\" _hepzoo_pc)
string(REPLACE \"%HEPZOO_PREFIX%\" \"\${CMAKE_INSTALL_PREFIX}\" _hepzoo_pc \"\${_hepzoo_pc}\")
set(_hepzoo_pc_file \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig/hepzoo.pc\")
message(STATUS \"Installing: \${_hepzoo_pc_file}\")
file(WRITE \"\${_hepzoo_pc_file}\" \"\${_hepzoo_pc}\")
list(APPEND CMAKE_INSTALL_MANIFEST_FILES \"\${_hepzoo_pc_file}\")
")
