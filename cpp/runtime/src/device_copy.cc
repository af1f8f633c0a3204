#include "device_copy.hpp"

#include <dlfcn.h>

#include <mutex>
#include <string>

#include "memx/errors.hpp"

namespace memx::detail {

namespace {
using MemcpyFn = int (*)(void*, const void*, std::size_t, int);
constexpr int kDeviceToHost = 2;  // cudaMemcpyDeviceToHost

MemcpyFn load_memcpy() {
  static std::once_flag once;
  static MemcpyFn fn = nullptr;
  std::call_once(once, [] {
    for (const char* name : {"libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"}) {
      if (void* lib = dlopen(name, RTLD_NOW | RTLD_LOCAL)) {
        fn = reinterpret_cast<MemcpyFn>(dlsym(lib, "cudaMemcpy"));
        if (fn) break;
      }
    }
  });
  return fn;
}
}  // namespace

void copy_device_to_host(void* dst, const void* src, std::size_t bytes) {
  MemcpyFn fn = load_memcpy();
  if (!fn) throw BackendUnavailableError("state is on a CUDA device but no CUDA runtime library could be loaded", "libcudart.so on the library path", "none found");
  if (int rc = fn(dst, src, bytes, kDeviceToHost)) throw BackendRunError("copying state from the device failed", "cudaSuccess (0)", "cudaError " + std::to_string(rc));
}

}  // namespace memx::detail
