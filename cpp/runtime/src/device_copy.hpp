// Copies from device memory to the host for device-resident state (snapshots, finiteness
// checks). CUDA's runtime is loaded on first use with dlopen, so libmemx links against no
// CUDA library and a CPU-only build runs where CUDA is absent.
#pragma once

#include <cstddef>

namespace memx::detail {

// throws BackendUnavailableError when no CUDA runtime library can be loaded
void copy_device_to_host(void* dst, const void* src, std::size_t bytes);

}  // namespace memx::detail
