# Finds ONNX Runtime and defines the imported target onnxruntime::onnxruntime.
#
# Order: ONNXRUNTIME_ROOT (variable or environment; headers in include/ or include/onnxruntime/, as release
# tarballs and Debian lay them out, library in lib/ or lib64/), then ONNX Runtime's own CMake config.
set(_ort_root "${ONNXRUNTIME_ROOT}")
if(NOT _ort_root AND DEFINED ENV{ONNXRUNTIME_ROOT})
  set(_ort_root "$ENV{ONNXRUNTIME_ROOT}")
endif()

if(_ort_root)
  find_path(ONNXRUNTIME_INCLUDE_DIR onnxruntime_cxx_api.h
    PATHS "${_ort_root}/include" "${_ort_root}/include/onnxruntime" NO_DEFAULT_PATH)
  find_library(ONNXRUNTIME_LIBRARY NAMES onnxruntime
    PATHS "${_ort_root}/lib" "${_ort_root}/lib64" NO_DEFAULT_PATH)
  include(FindPackageHandleStandardArgs)
  find_package_handle_standard_args(OnnxRuntime
    REQUIRED_VARS ONNXRUNTIME_LIBRARY ONNXRUNTIME_INCLUDE_DIR
    REASON_FAILURE_MESSAGE "ONNXRUNTIME_ROOT=${_ort_root} must hold include/[onnxruntime/]onnxruntime_cxx_api.h and lib/libonnxruntime.so")
  if(OnnxRuntime_FOUND AND NOT TARGET onnxruntime::onnxruntime)
    # UNKNOWN, not SHARED: install(EXPORT) would record a SHARED imported dependency of libhepzoo by its target
    # name (IMPORTED_LINK_DEPENDENT_LIBRARIES "onnxruntime::onnxruntime"), a target consumers do not have.
    add_library(onnxruntime::onnxruntime UNKNOWN IMPORTED)
    set_target_properties(onnxruntime::onnxruntime PROPERTIES
      IMPORTED_LOCATION "${ONNXRUNTIME_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${ONNXRUNTIME_INCLUDE_DIR}")
  endif()
else()
  find_package(onnxruntime CONFIG QUIET)
  include(FindPackageHandleStandardArgs)
  find_package_handle_standard_args(OnnxRuntime
    REQUIRED_VARS onnxruntime_DIR
    REASON_FAILURE_MESSAGE "set -DONNXRUNTIME_ROOT=<prefix> or add ONNX Runtime's CMake config to CMAKE_PREFIX_PATH (`make cpp` does this on Debian)")
endif()
