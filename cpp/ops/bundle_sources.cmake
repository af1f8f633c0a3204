# The C++ sources `memx bundle` carries to a board, installed into the wheel at memx/edge/cpp/
# (where memx/edge/bundle.py looks when memx is not a source checkout):
#   memx/edge/cpp/runtime/                      cpp/runtime without its tests (libmemx, memx-run)
#   memx/edge/cpp/ops/                          cpp/ops (libmemx_ops)
#   memx/edge/cpp/deps/nlohmann/usr/            nlohmann-json's headers (.deps/nlohmann, when fetched)
#   memx/edge/cpp/deps/onnxruntime/include/     the ONNX Runtime headers libmemx_ops was built with
# Included by cpp/ops/CMakeLists.txt; does nothing outside scikit-build-core (SKBUILD), so a
# bundle's own copy of cpp/ops builds as before.
if(DEFINED SKBUILD)
  set(_memx_cpp "${CMAKE_CURRENT_LIST_DIR}/..")
  set(_memx_dest "memx/edge/cpp")
  if(EXISTS "${_memx_cpp}/runtime/CMakeLists.txt")
    install(DIRECTORY "${_memx_cpp}/runtime/" DESTINATION "${_memx_dest}/runtime"
            PATTERN "tests" EXCLUDE PATTERN "build*" EXCLUDE PATTERN "__pycache__" EXCLUDE)
  else()
    message(WARNING "memx bundle: ${_memx_cpp}/runtime is not in this source tree (an sdist without cpp/runtime?): "
                    "`memx bundle` from this wheel will not find libmemx's sources")
  endif()
  install(DIRECTORY "${CMAKE_CURRENT_LIST_DIR}/" DESTINATION "${_memx_dest}/ops"
          PATTERN "build*" EXCLUDE PATTERN "__pycache__" EXCLUDE PATTERN "*.so" EXCLUDE PATTERN "*.o" EXCLUDE)
  set(_memx_nlohmann "${_memx_cpp}/../.deps/nlohmann/usr")
  if(EXISTS "${_memx_nlohmann}/include/nlohmann/json.hpp")
    install(DIRECTORY "${_memx_nlohmann}/include/" DESTINATION "${_memx_dest}/deps/nlohmann/usr/include")
    if(EXISTS "${_memx_nlohmann}/share/cmake")
      install(DIRECTORY "${_memx_nlohmann}/share/cmake/" DESTINATION "${_memx_dest}/deps/nlohmann/usr/share/cmake")
    endif()
  else()
    message(STATUS "memx bundle: no nlohmann-json in .deps (cpp/fetch_cpp_deps.sh fetches it): bundles made from this wheel "
                   "need `apt-get install nlohmann-json3-dev` on the board")
  endif()
  if(ONNXRUNTIME_INCLUDE_DIR AND EXISTS "${ONNXRUNTIME_INCLUDE_DIR}/onnxruntime_cxx_api.h")
    install(DIRECTORY "${ONNXRUNTIME_INCLUDE_DIR}/" DESTINATION "${_memx_dest}/deps/onnxruntime/include")
  endif()
endif()
