# Cross-compiling memx's C++ (libmemx_ops, libmemx, memx-run, the GoogleTest suite) for aarch64
# Linux: Jetson's CPU (Cortex-A78AE on Orin, Carmel on Xavier), Graviton, Raspberry Pi 4/5.
#
#   cmake -S cpp/runtime -B build/aarch64/runtime --toolchain cpp/toolchains/aarch64-linux-gnu.cmake \
#         -DONNXRUNTIME_ROOT=.deps/aarch64/onnxruntime
#
# The compiler is, in this order: MEMX_AARCH64_DEPS/toolchain (what cpp/fetch_aarch64.sh unpacks;
# `make cpp-aarch64` passes it), then aarch64-linux-gnu-g++[-12] on PATH (Debian/Ubuntu's
# g++-aarch64-linux-gnu). Code generation targets plain ARMv8-A (NEON is part of it), never the
# build machine: -march=native means nothing when cross-compiling.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

if(NOT MEMX_AARCH64_DEPS)
  if(DEFINED ENV{MEMX_AARCH64_DEPS})
    set(MEMX_AARCH64_DEPS "$ENV{MEMX_AARCH64_DEPS}")
  elseif(EXISTS "${CMAKE_CURRENT_LIST_DIR}/../../.deps/aarch64/toolchain")
    get_filename_component(MEMX_AARCH64_DEPS "${CMAKE_CURRENT_LIST_DIR}/../../.deps/aarch64" ABSOLUTE)  # this checkout's
  endif()
endif()
set(MEMX_AARCH64_DEPS "${MEMX_AARCH64_DEPS}" CACHE PATH "prefix made by cpp/fetch_aarch64.sh (toolchain/, sysroot/, onnxruntime/)")
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES MEMX_AARCH64_DEPS)  # the compiler checks' own projects see it too
set(_memx_bin "")
if(MEMX_AARCH64_DEPS AND EXISTS "${MEMX_AARCH64_DEPS}/toolchain/usr/bin/aarch64-linux-gnu-g++-12")
  set(_memx_bin "${MEMX_AARCH64_DEPS}/toolchain/usr/bin/")
  set(CMAKE_C_COMPILER "${_memx_bin}aarch64-linux-gnu-gcc-12")
  set(CMAKE_CXX_COMPILER "${_memx_bin}aarch64-linux-gnu-g++-12")
  set(CMAKE_AR "${_memx_bin}aarch64-linux-gnu-ar" CACHE FILEPATH "")
  set(CMAKE_RANLIB "${_memx_bin}aarch64-linux-gnu-ranlib" CACHE FILEPATH "")
  set(CMAKE_STRIP "${_memx_bin}aarch64-linux-gnu-strip" CACHE FILEPATH "")
  set(CMAKE_FIND_ROOT_PATH "${MEMX_AARCH64_DEPS}/sysroot")
  # the libraries' own dependencies (ONNX Runtime's libdl, librt, libpthread) resolve in the sysroot
  set(CMAKE_EXE_LINKER_FLAGS_INIT "-Wl,-rpath-link,${MEMX_AARCH64_DEPS}/sysroot/lib")
  set(CMAKE_SHARED_LINKER_FLAGS_INIT "-Wl,-rpath-link,${MEMX_AARCH64_DEPS}/sysroot/lib")
  # binaries built here run under qemu-user with this sysroot (tests, try_run)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${MEMX_AARCH64_DEPS}/qemu/qemu-aarch64;-cpu;cortex-a76;-L;${MEMX_AARCH64_DEPS}/sysroot")
else()
  find_program(_memx_gxx NAMES aarch64-linux-gnu-g++ aarch64-linux-gnu-g++-12)
  if(NOT _memx_gxx)
    message(FATAL_ERROR "expected an aarch64 cross compiler: run cpp/fetch_aarch64.sh DEST PYTHON and pass -DMEMX_AARCH64_DEPS=DEST "
                        "(or apt-get install g++-aarch64-linux-gnu); got none on PATH")
  endif()
  set(CMAKE_CXX_COMPILER "${_memx_gxx}")
  string(REGEX REPLACE "g\\+\\+" "gcc" CMAKE_C_COMPILER "${_memx_gxx}")
  find_program(_memx_qemu NAMES qemu-aarch64-static qemu-aarch64)
  if(_memx_qemu)
    set(CMAKE_CROSSCOMPILING_EMULATOR "${_memx_qemu};-L;/usr/aarch64-linux-gnu")
  endif()
endif()

# what the project's own dependencies are searched for: headers/libraries in the target's root
# (plus the explicit paths the project passes), programs on the build machine
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
